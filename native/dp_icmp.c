/*
 * dp_icmp.c: ICMP, the reason retrace exists.
 *
 * In DPVS, TCP/UDP replies leave by the port their request came in on but
 * ping replies and ICMP errors follow the default route (a triangle), and
 * ICMP cannot be load-balanced in FNAT at all. Here every ICMP path uses the
 * same per-side records as TCP/UDP (dp_conn.h), with the same refresh rule,
 * counters and per-protocol switch.
 *
 * Keys. ICMP has no ports; the echo id stands in for both. So an echo conn
 * is keyed, client side, by (client addr, dst addr, id, id) and, server side,
 * by (real addr, LIP, allocated id, allocated id); the allocated id comes
 * from the LIP's port pool for ICMP, like a TCP source port.
 *
 * 1. Echo request to one of our addresses (port address, LIP, or a VIP
 *    with no ICMP service): a local conn (client side only) is created or
 *    refreshed and the reply is built in place from the request; it leaves
 *    by the request's port toward its source MAC (dp_xmit_to_side).
 * 2. Echo request to a VIP with an ICMP service: FNAT through dp_fnat.c:
 *    request: caddr->vaddr id=cid  becomes  laddr->raddr id=lid
 *    reply:   raddr->laddr id=lid  becomes  vaddr->caddr id=cid
 *    Only the id enters the ICMP checksum (no pseudo-header in ICMPv4).
 * 3. Errors (destination unreachable incl. fragmentation needed, time
 *    exceeded, parameter problem) quoting a packet of a known conn. The
 *    quoted packet is one we sent, so its reversed tuple is one of the conn's
 *    keys, which also says which side the error came from. Rewritten for
 *    the other side: outer addresses, the quoted IP header (checksum
 *    recomputed), the quoted ports or echo id and, when quoted, the quoted
 *    L4 checksum; the outer ICMP checksum is recomputed. Sent with the
 *    destination side's record.
 * 4. Errors we generate (TTL expired, fragmentation needed) go back out of
 *    the port the offending packet came in on, to its source MAC.
 * All ICMP we originate (1 and 4) is rate-limited per port and worker.
 */
#include <netinet/in.h>

#include <rte_cycles.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_tcp.h>

#include "dp_csum.h"
#include "dp_fnat.h"
#include "dp_icmp.h"
#include "dp_xmit.h"

#define DP_ICMP_QUOTE_MAX 64 /* bytes of the offending packet after its IP header */

/* The bucket, for a rate that is set; apart so that no limit costs the
 * echo path one test, not a call. */
static __rte_noinline bool
icmp_rate_take(struct dp_worker *w, uint16_t pidx, uint32_t rate)
{
	/* Tokens are scaled by hz so refill is one multiply. */
	uint64_t hz = rte_get_tsc_hz();
	uint64_t per_worker = RTE_MAX(1u, rate / dp.nb_workers);
	uint64_t cap = (uint64_t)RTE_MAX(1u, dp.conf.icmp_burst) * hz;
	uint64_t elapsed = w->now_tsc - w->icmp_tb_tsc[pidx];
	uint64_t add, tokens;

	w->icmp_tb_tsc[pidx] = w->now_tsc;
	/* A long quiet time (or the first message: elapsed is then the TSC
	 * itself) times a high rate does not fit 64 bits: the bucket is full. */
	if (__builtin_mul_overflow(elapsed, per_worker, &add) ||
		__builtin_add_overflow(w->icmp_tokens[pidx], add, &tokens))
		tokens = cap;
	w->icmp_tokens[pidx] = RTE_MIN(cap, tokens);
	if (w->icmp_tokens[pidx] < hz) {
		w->ctr->drop[pidx][DP_DROP_icmp_rate_limited]++;
		return false;
	}
	w->icmp_tokens[pidx] -= hz;
	return true;
}

bool
dp_icmp_rate_ok(struct dp_worker *w, uint16_t pidx)
{
	uint32_t rate = dp.conf.icmp_rate;

	return rate == 0 || icmp_rate_take(w, pidx, rate);
}

/* Inlined into dp_icmp_take, the way echoes come in; icmp_parse is the
 * same for the ops table. */
static __rte_always_inline enum dp_drop
icmp_parse_inline(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct dp_l4 *l4)
{
	uint32_t off = m->l2_len + m->l3_len;
	uint32_t len = rte_be_to_cpu_16(ip->total_length) - m->l3_len;
	struct rte_icmp_hdr *ic;

	if (unlikely(len < sizeof(*ic)))
		return DP_DROP_icmp_truncated;
	ic = rte_pktmbuf_mtod_offset(m, struct rte_icmp_hdr *, off);
	if (unlikely(dp_csum_sum(ic, len) != 0xffff))
		return DP_DROP_icmp_bad_checksum;
	l4->hdr = ic;
	l4->sport = ic->icmp_ident;
	l4->dport = ic->icmp_ident;
	l4->svc_port = 0;
	l4->flags = ic->icmp_type;
	return DP_DROP_MAX;
}

static enum dp_drop
icmp_parse(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct dp_l4 *l4)
{
	return icmp_parse_inline(m, ip, l4);
}

static bool
icmp_may_create(const struct dp_l4 *l4)
{
	return l4->flags == RTE_IP_ICMP_ECHO_REQUEST;
}

static bool
icmp_stale(const struct dp_conn *c, const struct dp_l4 *l4)
{
	(void)c, (void)l4;
	return false;
}

static void
icmp_update(struct dp_conn *c, enum dp_side_id from, const struct dp_l4 *l4)
{
	(void)from, (void)l4;
	c->state = DP_TCP_ESTABLISHED;
}

static void
icmp_rewrite(struct dp_conn *c, enum dp_side_id from, struct dp_l4 *l4, uint16_t sport, uint16_t dport,
	uint32_t addr_acc)
{
	struct rte_icmp_hdr *ic = l4->hdr;

	(void)c, (void)from, (void)dport, (void)addr_acc; /* no pseudo-header in ICMPv4 */
	ic->icmp_cksum = dp_csum_apply(ic->icmp_cksum, dp_csum_acc16(0, ic->icmp_ident, sport));
	ic->icmp_ident = sport;
}

/* Case 1, not ours to answer (an echo reply, or not our address): the
 * kernel's, or nobody's. Out of line, as are the other rare paths below:
 * icmp_local's frame stays small. */
static __rte_noinline void
icmp_local_not_ours(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, uint32_t dst)
{
	/* Echo replies to a port address answer the kernel's own pings. */
	if (unlikely(dp.nb_kni != 0) && dp_kni_wants(pidx, dst))
		dp_kni_up(w, pidx, m);
	else
		dp_drop(w, pidx, DP_DROP_no_handler, m);
}

/* Case 1, the first echo of an id: a local conn, client side only (NULL
 * and m dropped when none can be had). */
static __rte_noinline struct dp_conn *
icmp_local_conn(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, const struct dp_l4 *l4)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)(eh + 1);
	struct dp_conn_key k = {
		.saddr = ip->src_addr,
		.daddr = ip->dst_addr,
		.sport = l4->sport,
		.dport = l4->dport,
		.proto = IPPROTO_ICMP,
	};
	enum dp_drop why;
	struct dp_conn *c = dp_conn_create_local(w, &k, &why);

	if (c == NULL) {
		dp_drop(w, pidx, why, m);
		return NULL;
	}
	dp_side_record(w, &c->side[DP_SIDE_CLIENT], pidx, eh, c->caddr, DP_PROTO_icmp);
	return c;
}

/* Case 1: echo to one of our addresses. */
static void
icmp_local(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4, struct dp_conn *c)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	struct rte_icmp_hdr *ic = l4->hdr;
	uint64_t av;

	if (unlikely(l4->flags != RTE_IP_ICMP_ECHO_REQUEST || !dp_addr_lookup_cached(w, ip->dst_addr, &av))) {
		icmp_local_not_ours(w, pidx, m, ip->dst_addr);
		return;
	}
	if (!dp_icmp_rate_ok(w, pidx)) {
		rte_pktmbuf_free(m);
		return;
	}
	bool created = false;
	if (unlikely(c == NULL)) {
		c = icmp_local_conn(w, pidx, m, l4);
		if (c == NULL)
			return;
		created = true;
	} else if (unlikely(dp_side_record(w, &c->side[DP_SIDE_CLIENT], pidx, eh, c->caddr, DP_PROTO_icmp))) {
		dp_event_emit(w, c, DP_EV_PATH, DP_SIDE_CLIENT);
	}
	uint32_t len = rte_pktmbuf_pkt_len(m);
	c->last = dp_tick(w->now_tsc);
	struct dp_conn_cold *cc = dp_conn_cold(c);
	cc->pkts[DP_SIDE_CLIENT]++;
	cc->bytes[DP_SIDE_CLIENT] += len;
	cc->pkts[DP_SIDE_SERVER]++; /* our reply */
	cc->bytes[DP_SIDE_SERVER] += len;
	if (unlikely(created)) /* after the counting: the event shows this exchange */
		dp_event_emit(w, c, DP_EV_CREATED, 0);

	/* The reply is the request turned around. Checksums are updated from
	 * the verified ones, words as they lie in memory (dp_csum.h). */
	uint16_t oldw = *(uint16_t *)ic;
	ic->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
	ic->icmp_code = 0;
	ic->icmp_cksum = dp_csum_apply(ic->icmp_cksum, dp_csum_acc16(0, oldw, *(uint16_t *)ic));
	uint32_t peer = ip->src_addr;
	/* Swapping the addresses leaves the header sum as it is (verified at
	 * input): only the TTL/protocol word changes. */
	uint16_t *ttl_proto = (uint16_t *)&ip->time_to_live;
	uint16_t old_tp = *ttl_proto;
	ip->src_addr = ip->dst_addr;
	ip->dst_addr = peer;
	ip->time_to_live = 64;
	ip->hdr_checksum = dp_csum_apply(ip->hdr_checksum, dp_csum_acc16(0, old_tp, *ttl_proto));
	dp_xmit_to_side(w, &c->side[DP_SIDE_CLIENT], peer, DP_PROTO_icmp, m);
}

const struct dp_fnat_ops dp_fnat_icmp = {
	.ipproto = IPPROTO_ICMP,
	.proto = DP_PROTO_icmp,
	.parse = icmp_parse,
	.may_create = icmp_may_create,
	.stale = icmp_stale,
	.update = icmp_update,
	.rewrite = icmp_rewrite,
	.local = icmp_local,
};

/* Case 3: an error quoting a packet of a conn. Not inlined: its frame
 * would be dp_icmp_take's, whose common case is an echo. */
static __rte_noinline void
icmp_error_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	struct rte_icmp_hdr *ic = l4->hdr;
	uint32_t icmp_len = rte_be_to_cpu_16(ip->total_length) - m->l3_len;
	struct rte_ipv4_hdr *in;
	uint8_t *inl4;
	uint32_t in_ihl, quoted;
	struct dp_conn_key k;

	/* The quoted IP header, then at least 8 bytes of its payload. */
	if (icmp_len < sizeof(*ic) + sizeof(*in)) {
		dp_drop(w, pidx, DP_DROP_icmp_error_truncated, m);
		return;
	}
	in = (struct rte_ipv4_hdr *)(ic + 1);
	in_ihl = (uint32_t)(in->version_ihl & 0x0f) * 4;
	if ((in->version_ihl >> 4) != 4 || in_ihl < sizeof(*in) || icmp_len < sizeof(*ic) + in_ihl + 8) {
		dp_drop(w, pidx, DP_DROP_icmp_error_truncated, m);
		return;
	}
	inl4 = (uint8_t *)in + in_ihl;
	quoted = icmp_len - sizeof(*ic) - in_ihl; /* bytes of the quoted L4 */

	memset(&k, 0, sizeof(k));
	k.saddr = in->dst_addr; /* reversed: the quoted packet is one we sent */
	k.daddr = in->src_addr;
	k.proto = in->next_proto_id;
	uint16_t *in_sport, *in_dport, *in_l4cksum = NULL;
	switch (in->next_proto_id) {
	case IPPROTO_TCP:
		in_sport = (uint16_t *)inl4;
		in_dport = (uint16_t *)(inl4 + 2);
		if (quoted >= 18)
			in_l4cksum = (uint16_t *)(inl4 + 16);
		k.sport = *in_dport;
		k.dport = *in_sport;
		break;
	case IPPROTO_UDP:
		in_sport = (uint16_t *)inl4;
		in_dport = (uint16_t *)(inl4 + 2);
		if (*(uint16_t *)(inl4 + 6) != 0)
			in_l4cksum = (uint16_t *)(inl4 + 6);
		k.sport = *in_dport;
		k.dport = *in_sport;
		break;
	case IPPROTO_ICMP:
		if (inl4[0] != RTE_IP_ICMP_ECHO_REQUEST && inl4[0] != RTE_IP_ICMP_ECHO_REPLY) {
			dp_drop(w, pidx, DP_DROP_icmp_error_no_conn, m);
			return;
		}
		in_sport = in_dport = (uint16_t *)(inl4 + 4); /* the echo id */
		in_l4cksum = (uint16_t *)(inl4 + 2);
		k.sport = k.dport = *in_sport;
		break;
	default: dp_drop(w, pidx, DP_DROP_icmp_error_no_conn, m); return;
	}

	enum dp_side_id from;
	struct dp_conn *c = dp_conn_lookup(w, &k, &from);
	if (c == NULL) {
		/* About a conn another worker owns? Its LIP port names it. */
		if (dp_fnat_redirect(w, pidx, m, ip->dst_addr, k.dport))
			return;
		/* About a packet the kernel sent (its traceroute, its TCP). */
		if (unlikely(dp.nb_kni != 0) && dp_kni_wants(pidx, ip->dst_addr)) {
			dp_kni_up(w, pidx, m);
			return;
		}
		dp_drop(w, pidx, DP_DROP_icmp_error_no_conn, m);
		return;
	}
	if (c->flags & DP_CONN_F_LOCAL) {
		/* About our own echo reply: nobody to tell. */
		dp_drop(w, pidx, DP_DROP_icmp_error_no_conn, m);
		return;
	}
	if (unlikely(ip->time_to_live <= 1)) {
		dp_drop(w, pidx, DP_DROP_ip_ttl_exceeded, m);
		return;
	}

	enum dp_side_id to = from == DP_SIDE_CLIENT ? DP_SIDE_SERVER : DP_SIDE_CLIENT;
	uint32_t osrc, odst, isrc, idst;
	uint16_t isport, idport;
	if (to == DP_SIDE_CLIENT) {
		/* Quoted: laddr:lport -> raddr:rport (we sent it to the real). */
		osrc = c->vaddr, odst = c->caddr;
		isrc = c->caddr, isport = c->cport, idst = c->vaddr, idport = c->vport;
	} else {
		/* Quoted: vaddr:vport -> caddr:cport (we sent it to the client). */
		osrc = c->laddr, odst = c->raddr;
		isrc = c->raddr, isport = c->rport, idst = c->laddr, idport = c->lport;
	}
	if (in->next_proto_id == IPPROTO_ICMP)
		idport = isport = to == DP_SIDE_CLIENT ? c->cport : c->lport;

	/*
	 * A quoted TCP segment went to `from` numbered as `from` sees the
	 * stream; `to` knows it by its own numbers: undo the translation
	 * (seq always quoted, ack when the flags are; SACK edges rarely are
	 * and stay as quoted).
	 */
	uint32_t seq_acc = 0;
	if (in->next_proto_id == IPPROTO_TCP && unlikely(c->flags & DP_CONN_F_SEQ)) {
		uint32_t v;
		memcpy(&v, inl4 + 4, 4);
		const int32_t *seq_off = dp_conn_cold(c)->seq_off;
		uint32_t nv = rte_cpu_to_be_32(rte_be_to_cpu_32(v) - (uint32_t)seq_off[to]);
		seq_acc = dp_csum_acc32(seq_acc, v, nv);
		memcpy(inl4 + 4, &nv, 4);
		if (quoted >= 14 && (inl4[13] & RTE_TCP_ACK_FLAG)) {
			memcpy(&v, inl4 + 8, 4);
			nv = rte_cpu_to_be_32(rte_be_to_cpu_32(v) + (uint32_t)seq_off[from]);
			seq_acc = dp_csum_acc32(seq_acc, v, nv);
			memcpy(inl4 + 8, &nv, 4);
		}
	}

	/* Quoted L4 checksum: pseudo-header (TCP/UDP), ports or id, numbers. */
	if (in_l4cksum != NULL) {
		uint32_t acc = seq_acc;
		if (in->next_proto_id != IPPROTO_ICMP) {
			acc = dp_csum_acc32(acc, in->src_addr, isrc);
			acc = dp_csum_acc32(acc, in->dst_addr, idst);
			acc = dp_csum_acc16(acc, *in_sport, isport);
			acc = dp_csum_acc16(acc, *in_dport, idport);
		} else {
			acc = dp_csum_acc16(acc, *in_sport, isport);
		}
		uint16_t v = dp_csum_apply(*in_l4cksum, acc);
		*in_l4cksum = (in->next_proto_id == IPPROTO_UDP && v == 0) ? 0xffff : v;
	}
	*in_sport = isport;
	*in_dport = idport;
	in->src_addr = isrc;
	in->dst_addr = idst;
	in->hdr_checksum = 0;
	in->hdr_checksum = (uint16_t)~rte_raw_cksum(in, in_ihl);

	ic->icmp_cksum = 0;
	ic->icmp_cksum = (uint16_t)~rte_raw_cksum(ic, icmp_len);
	ip->src_addr = osrc;
	ip->dst_addr = odst;
	ip->time_to_live--;
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	c->last = dp_tick(w->now_tsc);
	dp_xmit_to_side(w, &c->side[to], odst, DP_PROTO_icmp, m);
}

bool
dp_icmp_take(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4)
{
	struct rte_ipv4_hdr *ip =
		rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
	enum dp_drop why = icmp_parse_inline(m, ip, l4);

	if (unlikely(why != DP_DROP_MAX)) {
		dp_drop(w, pidx, why, m);
		return false;
	}
	switch (l4->flags) {
	case RTE_IP_ICMP_ECHO_REQUEST:
	case RTE_IP_ICMP_ECHO_REPLY: return true;
	case RTE_IP_ICMP_DEST_UNREACH:
	case RTE_IP_ICMP_TIME_EXCEEDED:
	case RTE_IP_ICMP_PARAM_PROBLEM: icmp_error_input(w, pidx, m, l4); return false;
	default:
		if (unlikely(dp.nb_kni != 0) && dp_kni_wants(pidx, ip->dst_addr))
			dp_kni_up(w, pidx, m);
		else
			dp_drop(w, pidx, DP_DROP_icmp_unsupported, m);
		return false;
	}
}

void
dp_icmp_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m)
{
	struct dp_l4 l4;

	if (dp_icmp_take(w, pidx, m, &l4))
		dp_fnat_forward(w, pidx, m, &dp_fnat_icmp, &l4);
}

void
dp_icmp_send_error(struct dp_worker *w, uint16_t pidx, const struct rte_mbuf *orig,
	const struct dp_side *from, uint8_t type, uint8_t code, uint16_t mtu)
{
	const struct rte_ether_hdr *oeh = rte_pktmbuf_mtod(orig, const struct rte_ether_hdr *);
	const struct rte_ipv4_hdr *oip = (const struct rte_ipv4_hdr *)(oeh + 1);
	uint32_t oihl = (uint32_t)(oip->version_ihl & 0x0f) * 4;
	uint32_t opay = rte_be_to_cpu_16(oip->total_length) - oihl;
	uint32_t quote = oihl + RTE_MIN(opay, (uint32_t)DP_ICMP_QUOTE_MAX);
	struct rte_mbuf *m;

	/* Never answer an error with an error (RFC 1122 3.2.2). */
	if (oip->next_proto_id == IPPROTO_ICMP) {
		const struct rte_icmp_hdr *oic = (const struct rte_icmp_hdr *)((const uint8_t *)oip + oihl);
		if (opay < 1 || (oic->icmp_type != RTE_IP_ICMP_ECHO_REQUEST &&
					oic->icmp_type != RTE_IP_ICMP_ECHO_REPLY))
			return;
	}
	if (!dp_icmp_rate_ok(w, pidx))
		return;
	m = rte_pktmbuf_alloc(dp.pool);
	if (m == NULL)
		return;
	uint32_t len = sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) +
		       sizeof(struct rte_icmp_hdr) + quote;
	uint8_t *p = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)len);
	if (p == NULL) {
		rte_pktmbuf_free(m);
		return;
	}
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)p;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	struct rte_icmp_hdr *ic = (struct rte_icmp_hdr *)(ip + 1);

	rte_ether_addr_copy(&oeh->src_addr, &eh->dst_addr);
	rte_ether_addr_copy(rte_is_unicast_ether_addr(&oeh->dst_addr) ? &oeh->dst_addr : &dp.ports[pidx].mac,
		&eh->src_addr);
	eh->ether_type = RTE_BE16(RTE_ETHER_TYPE_IPV4);
	memset(ip, 0, sizeof(*ip));
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(len - sizeof(*eh)));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_ICMP;
	/* From the address the offender was sent to: one of ours (VIP, LIP,
	 * port address). */
	ip->src_addr = oip->dst_addr;
	ip->dst_addr = oip->src_addr;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	ic->icmp_type = type;
	ic->icmp_code = code;
	ic->icmp_ident = 0;
	ic->icmp_seq_nb = rte_cpu_to_be_16(mtu); /* RFC 1191 next-hop MTU; 0 otherwise */
	memcpy(ic + 1, oip, quote);
	ic->icmp_cksum = 0;
	ic->icmp_cksum = (uint16_t)~rte_raw_cksum(ic, sizeof(*ic) + quote);

	/* The sender's side is where the offender came from: its ingress
	 * port and source MAC, i.e. the side record it just refreshed. */
	struct dp_side tmp;
	if (from == NULL) {
		memset(&tmp, 0, sizeof(tmp));
		tmp.pidx = (uint8_t)pidx;
		rte_ether_addr_copy(&eh->dst_addr, &tmp.peer_mac);
	} else {
		tmp = *from;
	}
	dp_xmit_to_side(w, &tmp, ip->dst_addr, DP_PROTO_icmp, m);
}
