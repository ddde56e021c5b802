/*
 * dp_fnat.c: the full-NAT engine (see dp_fnat.h).
 *
 *   from the client:  caddr:cport -> vaddr:vport  becomes  laddr:lport -> raddr:rport
 *   from the server:  raddr:rport -> laddr:lport  becomes  vaddr:vport -> caddr:cport
 *
 * Both checksums are updated incrementally (RFC 1624) from the address, port
 * and TTL differences; dp_ipv4_input verified the header checksum.
 *
 * Before anything is rewritten, the packet is checked against the TTL and
 * the egress port's MTU: ICMP time-exceeded and fragmentation-needed must
 * quote the packet as its sender sent it (dp_icmp_send_error).
 */
#include <netinet/in.h>

#include <rte_byteorder.h>
#include <rte_hash.h>
#include <rte_ip.h>

#include "dp_caddr.h"
#include "dp_csum.h"
#include "dp_fnat.h"
#include "dp_icmp.h"
#include "dp_synproxy.h"
#include "dp_xmit.h"

static inline struct dp_service *
dp_service_lookup(uint32_t vaddr, uint16_t vport, uint8_t proto)
{
	struct dp_service_key k = { .vaddr = vaddr, .vport = vport, .proto = proto, .pad = 0 };
	void *d;

	return rte_hash_lookup_data(dpt.services, &k, &d) >= 0 ? d : NULL;
}

bool
dp_fnat_redirect(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, uint32_t daddr, uint16_t lport_be)
{
	uint64_t av;

	if (likely(dp.nb_workers == 1))
		return false;
	if (dp_addr_lookup(daddr, &av) < 0 || !(dp_addr_kinds(av) & DP_ADDR_LIP))
		return false;
	/* LIP port p was handed out by worker p % nb_workers, which owns the
	 * conn. */
	unsigned owner = rte_be_to_cpu_16(lport_be) % dp.nb_workers;
	if (owner == w->index)
		return false;
	m->port = pidx;
	if (rte_ring_enqueue(dp.workers[owner]->redirect, m) != 0)
		dp_drop(w, pidx, DP_DROP_redirect_full, m);
	return true;
}

void
dp_fnat_local_drop(
	struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4, struct dp_conn *local_conn)
{
	(void)l4, (void)local_conn;
	/* Nothing here takes it: the kernel may (TCP/UDP to a port address). */
	if (unlikely(dp.nb_kni != 0) &&
		dp_kni_wants(
			pidx, rte_pktmbuf_mtod_offset(m, const struct rte_ipv4_hdr *, m->l2_len)->dst_addr)) {
		dp_kni_up(w, pidx, m);
		return;
	}
	dp_drop(w, pidx, DP_DROP_no_handler, m);
}

/* Egress port the packet toward `to` would use, or -1 when unknown (no
 * route): the MTU check then happens at transmit. */
static inline int
dp_egress_port(struct dp_worker *w, const struct dp_side *to, enum dp_proto proto, uint32_t dst)
{
	if (dp_side_valid(to) && atomic_load_explicit(&dpt.symmetric[proto], memory_order_relaxed))
		return to->pidx;
	return dp_route_port(w, dst);
}

static inline void
dp_fnat_key(struct dp_conn_key *k, const struct rte_ipv4_hdr *ip, const struct dp_l4 *l4, uint8_t ipproto)
{
	k->saddr = ip->src_addr;
	k->daddr = ip->dst_addr;
	k->sport = l4->sport;
	k->dport = l4->dport;
	k->proto = ipproto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

/* A protocol's slot by IP protocol number, called directly for TCP and UDP
 * (see fnat_forward). */
static __rte_always_inline bool
l4_may_create(uint8_t p, const struct dp_l4 *l4)
{
	return p == IPPROTO_TCP	  ? dp_tcp_may_create(l4)
	       : p == IPPROTO_UDP ? dp_udp_may_create(l4)
				  : dp_fnat_icmp.may_create(l4);
}

static __rte_always_inline bool
l4_stale(uint8_t p, const struct dp_conn *c, const struct dp_l4 *l4)
{
	return p == IPPROTO_TCP	  ? dp_tcp_stale(c, l4)
	       : p == IPPROTO_UDP ? dp_udp_stale(c, l4)
				  : dp_fnat_icmp.stale(c, l4);
}

static __rte_always_inline void
l4_update(uint8_t p, struct dp_conn *c, enum dp_side_id from, const struct dp_l4 *l4)
{
	if (p == IPPROTO_TCP)
		dp_tcp_update(c, from, l4);
	else if (p == IPPROTO_UDP)
		dp_udp_update(c, from, l4);
	else
		dp_fnat_icmp.update(c, from, l4);
}

static __rte_always_inline void
l4_rewrite(uint8_t p, struct dp_conn *c, enum dp_side_id from, struct dp_l4 *l4, uint16_t sport,
	uint16_t dport, uint32_t acc)
{
	if (p == IPPROTO_TCP)
		dp_tcp_rewrite(c, from, l4, sport, dport, acc);
	else if (p == IPPROTO_UDP)
		dp_udp_rewrite(c, from, l4, sport, dport, acc);
	else
		dp_fnat_icmp.rewrite(c, from, l4, sport, dport, acc);
}

/*
 * Forward with the conn the key k found (c, from), or c = NULL for none.
 *
 * Always inlined with ops one of the three constant tables: each protocol
 * gets a copy of its own (fnat_forward_tcp, _udp, _icmp below) whose calls
 * into the protocol are direct (l4_update and the others), which LTO
 * inlines: no indirect call is left on the per-packet path.
 */
static __rte_always_inline void
fnat_forward(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, const struct dp_fnat_ops *ops,
	struct dp_l4 *l4, const struct dp_conn_key *k, struct dp_conn *c, enum dp_side_id from)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	enum dp_drop why;
	bool fresh = false;

	if (c != NULL && unlikely(c->flags & (DP_CONN_F_LOCAL | DP_CONN_F_SP_PENDING))) {
		if (c->flags & DP_CONN_F_LOCAL) {
			ops->local(w, pidx, m, l4, c);
			return;
		}
		if (dp_synproxy_pending(w, pidx, m, l4, c, from))
			return;
	}
	if (c != NULL && from == DP_SIDE_CLIENT && l4_may_create(ops->ipproto, l4) &&
		l4_stale(ops->ipproto, c, l4)) {
		/* The client reuses a finished conn's tuple: start afresh. */
		dp_conn_destroy(w, c);
		c = NULL;
	}
	if (c == NULL) {
		if (dp_fnat_redirect(w, pidx, m, ip->dst_addr, l4->dport))
			return;
		struct dp_service *svc = dp_service_lookup(ip->dst_addr, l4->svc_port, ops->ipproto);

		if (svc == NULL) {
			ops->local(w, pidx, m, l4, NULL);
			return;
		}
		/* A service with a SYN proxy answers SYNs itself and opens
		 * conns on valid cookies; one branch for the others. */
		if (ops->ipproto == IPPROTO_TCP &&
			unlikely(atomic_load_explicit(&svc->syn_proxy, memory_order_relaxed) !=
				 DP_SYN_PROXY_OFF) &&
			dp_synproxy_new(w, pidx, m, l4, svc, k))
			return;
		if (!l4_may_create(ops->ipproto, l4)) {
			dp_drop(w, pidx,
				ops->ipproto == IPPROTO_TCP ? DP_DROP_tcp_no_conn : DP_DROP_no_handler, m);
			return;
		}
		c = dp_conn_create(w, svc, k, &why);
		if (c == NULL) {
			dp_drop(w, pidx, why, m);
			return;
		}
		from = DP_SIDE_CLIENT;
		fresh = true;
	}

	struct dp_side *in_side = &c->side[from];
	uint32_t in_peer = from == DP_SIDE_CLIENT ? c->caddr : c->raddr;
	if (dp_side_record(w, in_side, pidx, eh, in_peer, ops->proto))
		dp_event_emit(w, c, DP_EV_PATH, (uint8_t)from);

	if (unlikely(ip->time_to_live <= 1)) {
		dp_icmp_send_error(w, pidx, m, in_side, RTE_IP_ICMP_TIME_EXCEEDED, 0, 0);
		dp_drop(w, pidx, DP_DROP_ip_ttl_exceeded, m);
		if (fresh) /* a conn whose first packet never left does not exist */
			dp_conn_destroy_silent(w, c);
		return;
	}
	enum dp_side_id to = from == DP_SIDE_CLIENT ? DP_SIDE_SERVER : DP_SIDE_CLIENT;
	uint32_t ndst = to == DP_SIDE_SERVER ? c->raddr : c->caddr;
	/* Which port the packet leaves by matters here only when it does not
	 * fit every port; the lookup is skipped for the others. */
	const uint16_t iplen = rte_be_to_cpu_16(ip->total_length);
	int out = likely(iplen <= dp.min_mtu) ? -1 : dp_egress_port(w, &c->side[to], ops->proto, ndst);
	if (unlikely(out >= 0 && iplen > dp.ports[out].conf.mtu)) {
		if (ip->fragment_offset & RTE_BE16(RTE_IPV4_HDR_DF_FLAG))
			dp_icmp_send_error(w, pidx, m, in_side, RTE_IP_ICMP_DEST_UNREACH,
				RTE_IP_ICMP_FRAG_NEEDED, dp.ports[out].conf.mtu);
		/* Without DF the packet would need fragmenting, which we do not
		 * do: counted the same way. */
		dp_drop(w, (uint16_t)out, DP_DROP_mtu_exceeded, m);
		if (fresh)
			dp_conn_destroy_silent(w, c);
		return;
	}

	/* Counted as received, before a client-address mode grows it. */
	uint32_t len = rte_pktmbuf_pkt_len(m);
	struct rte_mbuf *ca_hdr = NULL;
	if (unlikely(c->flags & DP_CONN_F_CA)) {
		/* It may grow past an MTU it fits now: dp_ca_pre needs the port. */
		if (out < 0)
			out = dp_egress_port(w, &c->side[to], ops->proto, ndst);
		if (!dp_ca_pre(w, pidx, c, from, m, out, &ca_hdr)) {
			if (fresh)
				dp_conn_destroy_silent(w, c);
			return;
		}
		/* The packet may have grown in place. */
		eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
		ip = (struct rte_ipv4_hdr *)(eh + 1);
		l4->hdr = (uint8_t *)ip + m->l3_len;
	}

	uint8_t prev_state = c->state;
	l4_update(ops->ipproto, c, from, l4);
	c->last = dp_tick(w->now_tsc);
	struct dp_conn_cold *cc = dp_conn_cold(c);
	cc->pkts[from]++;
	cc->bytes[from] += len;
	struct dp_real_stats *rs = &c->real->stats[w->index];
	rs->ctr[from == DP_SIDE_CLIENT ? DP_REAL_packets_to_real : DP_REAL_packets_from_real]++;
	rs->ctr[from == DP_SIDE_CLIENT ? DP_REAL_bytes_to_real : DP_REAL_bytes_from_real] += len;
	/* After the counting: an event shows the conn with this packet in it. */
	if (fresh) {
		dp_event_emit(w, c, DP_EV_CREATED, 0);
	} else if (c->state != prev_state) {
		dp_event_emit(w, c, DP_EV_STATE, 0);
		if (ops->ipproto == IPPROTO_TCP && prev_state <= DP_TCP_SYN_RECV &&
			c->state > DP_TCP_SYN_RECV)
			w->nb_half_open--; /* the handshake is over, or never will be */
	}

	uint32_t nsrc;
	uint16_t nsport, ndport;
	if (from == DP_SIDE_CLIENT)
		nsrc = c->laddr, nsport = c->lport, ndport = c->rport;
	else
		nsrc = c->vaddr, nsport = c->vport, ndport = c->cport;
	uint32_t acc = dp_csum_acc32(0, ip->src_addr, nsrc);
	acc = dp_csum_acc32(acc, ip->dst_addr, ndst);
	l4_rewrite(ops->ipproto, c, from, l4, nsport, ndport, acc);

	/* The header checksum was verified at input, so an incremental update
	 * is exact: the same address difference, plus the TTL/protocol word. */
	uint16_t ttl_proto = (uint16_t)(ip->time_to_live << 8 | ip->next_proto_id);
	acc = dp_csum_acc16(
		acc, rte_cpu_to_be_16(ttl_proto), rte_cpu_to_be_16((uint16_t)(ttl_proto - 0x100)));
	ip->src_addr = nsrc;
	ip->dst_addr = ndst;
	ip->time_to_live--;
	ip->hdr_checksum = dp_csum_apply(ip->hdr_checksum, acc);

	if (unlikely(c->flags & DP_CONN_F_CA)) {
		dp_ca_post(w, c, from, m, ca_hdr);
		/* The PROXY header first, by the same way (source-in, source-out). */
		if (ca_hdr != NULL)
			dp_xmit_to_side(w, &c->side[to], ndst, ops->proto, ca_hdr);
	}
	dp_xmit_to_side(w, &c->side[to], ndst, ops->proto, m);
}

static __rte_noinline void
fnat_forward_tcp(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4,
	const struct dp_conn_key *k, struct dp_conn *c, enum dp_side_id from)
{
	fnat_forward(w, pidx, m, &dp_fnat_tcp, l4, k, c, from);
}

static __rte_noinline void
fnat_forward_udp(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4,
	const struct dp_conn_key *k, struct dp_conn *c, enum dp_side_id from)
{
	fnat_forward(w, pidx, m, &dp_fnat_udp, l4, k, c, from);
}

static __rte_noinline void
fnat_forward_icmp(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4,
	const struct dp_conn_key *k, struct dp_conn *c, enum dp_side_id from)
{
	fnat_forward(w, pidx, m, &dp_fnat_icmp, l4, k, c, from);
}

/* By IP protocol number: the per-protocol copies above. */
static inline void
fnat_forward_by(uint8_t ipproto, struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4,
	const struct dp_conn_key *k, struct dp_conn *c, enum dp_side_id from)
{
	switch (ipproto) {
	case IPPROTO_TCP: fnat_forward_tcp(w, pidx, m, l4, k, c, from); break;
	case IPPROTO_UDP: fnat_forward_udp(w, pidx, m, l4, k, c, from); break;
	default: fnat_forward_icmp(w, pidx, m, l4, k, c, from); break;
	}
}

void
dp_fnat_forward_conn(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, const struct dp_fnat_ops *ops,
	struct dp_l4 *l4, const struct dp_conn_key *k, struct dp_conn *c, enum dp_side_id from)
{
	fnat_forward_by(ops->ipproto, w, pidx, m, l4, k, c, from);
}

void
dp_fnat_forward(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, const struct dp_fnat_ops *ops,
	struct dp_l4 *l4)
{
	const struct rte_ipv4_hdr *ip =
		rte_pktmbuf_mtod_offset(m, const struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
	struct dp_conn_key k;
	enum dp_side_id from = DP_SIDE_CLIENT;

	dp_fnat_key(&k, ip, l4, ops->ipproto);
	struct dp_conn *c = dp_conn_lookup(w, &k, &from);
	dp_fnat_forward_conn(w, pidx, m, ops, l4, &k, c, from);
}

void
dp_fnat_batch_add(struct dp_worker *w, uint16_t pidx, struct dp_fnat_batch *b, struct rte_mbuf *m)
{
	struct rte_ipv4_hdr *ip =
		rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
	const uint8_t ipproto = ip->next_proto_id;
	struct dp_l4 *l4 = &b->l4[b->n];
	enum dp_drop why;

	/* Direct calls, which LTO inlines. */
	if (ipproto == IPPROTO_TCP) {
		why = dp_tcp_parse(m, ip, l4);
	} else if (ipproto == IPPROTO_UDP) {
		why = dp_udp_parse(m, ip, l4);
	} else {
		/* Echo joins the batch; errors and the rest are done here. */
		if (!dp_icmp_take(w, pidx, m, l4))
			return;
		why = DP_DROP_MAX;
	}
	if (unlikely(why != DP_DROP_MAX)) {
		dp_drop(w, pidx, why, m);
		return;
	}
	dp_fnat_key(&b->keys[b->n], ip, l4, ipproto);
	b->kptr[b->n] = &b->keys[b->n];
	b->ipproto[b->n] = ipproto;
	b->m[b->n] = m;
	if (++b->n == DP_FNAT_BATCH)
		dp_fnat_batch_run(w, pidx, b);
}

/*
 * One rte_hash_lookup_bulk_data for the whole batch (dp_conn_lookup_bulk: it
 * computes the signatures and prefetches the buckets of every key, so the
 * cache misses overlap instead of queueing, and prefetches every record
 * found), then forward in order.
 *
 * A result is only as good as the table it came from: forwarding packet i
 * may remove a conn (a finished tuple reused, a fresh conn whose first packet
 * could not leave), and a freed record may be handed out again at once. So
 * after any removal (w->conn_gen moved) the remaining packets look up again.
 * Misses are looked up again once a conn was created: an earlier packet of
 * the batch may have created theirs.
 */
void
dp_fnat_batch_run(struct dp_worker *w, uint16_t pidx, struct dp_fnat_batch *b)
{
	struct dp_conn *found[DP_FNAT_BATCH];
	uint8_t side[DP_FNAT_BATCH];
	const unsigned n = b->n;

	b->n = 0;
	if (n == 0)
		return;
	uint64_t hits = dp_conn_lookup_bulk(w, b->kptr, n, found, side);
	const uint32_t gen = w->conn_gen, adds = w->conn_adds;
	for (unsigned j = 0; j < n; j++) {
		enum dp_side_id from = DP_SIDE_CLIENT;
		struct dp_conn *c = NULL;

		if (unlikely(w->conn_gen != gen))
			c = dp_conn_lookup(w, &b->keys[j], &from);
		else if (likely(hits & (1ull << j)))
			c = found[j], from = (enum dp_side_id)side[j];
		else if (w->conn_adds != adds)
			c = dp_conn_lookup(w, &b->keys[j], &from);
		fnat_forward_by(b->ipproto[j], w, pidx, b->m[j], &b->l4[j], &b->keys[j], c, from);
	}
}

void
dp_fnat_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, const struct dp_fnat_ops *ops)
{
	struct rte_ipv4_hdr *ip =
		rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
	struct dp_l4 l4;
	enum dp_drop why = ops->parse(m, ip, &l4);

	if (unlikely(why != DP_DROP_MAX)) {
		dp_drop(w, pidx, why, m);
		return;
	}
	dp_fnat_forward(w, pidx, m, ops, &l4);
}
