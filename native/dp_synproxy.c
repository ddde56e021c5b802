/*
 * dp_synproxy.c: SYN cookies with a SYN proxy, the SYN flood defence of a
 * virtual service (syn_proxy on, or auto above a number of half-open
 * conns). Ideas from Linux's syncookies and DPVS's synproxy; see
 * docs/design.md "SYN proxy" for the whole story.
 *
 * 1. A SYN for no conn: the appliance answers it itself, in place, with a
 *    SYN-ACK whose ISN is a cookie, and forgets it: no conn, no LIP port.
 *    The SYN-ACK leaves by the SYN's port toward its source MAC.
 *      cookie = period(2 bits) | mss index(2 bits) | MAC(28 bits)
 *    MAC = SipHash-2-4 under the current period's key of the 4-tuple, the
 *    client's ISN and the MSS index. A period is 64 s; its key is derived
 *    from a master secret drawn at start (SipHash of the period number), so
 *    keys rotate without a writer and a cookie is good for 64 to 128 s.
 *    When the client sent timestamps, our TSval's low 6 bits carry its
 *    window scale (4 bits, 0xf = none) and SACK-permitted (1 bit), as Linux
 *    does; the ACK echoes them in TSecr. Without timestamps the conn has
 *    neither (the SYN-ACK offers neither).
 * 2. The client's ACK for no conn: ack - 1 must be a valid cookie for
 *    (tuple, seq - 1), else it is dropped (syn_cookie_invalid). Valid: the
 *    conn is created as for a SYN (scheduler, limits, LIP port), the ACK
 *    is held, and a SYN goes to the real with the client's ISN, MSS, window
 *    scale, SACK-permitted and TSval. The client's numbering thus passes
 *    unchanged; only the server's needs translating.
 * 3. The real's SYN-ACK: seq_off[SERVER] = cookie - real ISN (dp_conn.h,
 *    translated by dp_tcp.c), the SYN-ACK is consumed, and the held client
 *    segments go through: the client's ACK completes the real's handshake.
 *    A RST instead goes to the client, numbered as the client expects.
 * 4. For the conn's life (dp_synproxy_fix): timestamps and windows.
 *    - The client saw our TSval, the real has its own clock: the real's
 *      TSval gets sp_ts_off added, the client's TSecr gets it taken off.
 *    - Window scale: the client believes the server's shift is
 *      DP_SP_WSCALE (ours); the real's may differ. The real's windows are
 *      rewritten to our shift (rounded down, capped at 0xffff: never more
 *      window than the real offers). A real that does not scale at all
 *      reads the client's windows unscaled, so those are shifted up too.
 *
 * A real that never answers: the conn stays SYN_SENT and times out
 * (tcp_syn); the held segments are dropped after DP_SP_HOLD_MS.
 */
#include <sys/random.h>

#include <netinet/in.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_ip.h>
#include <rte_random.h>

#include "dp_csum.h"
#include "dp_synproxy.h"
#include "dp_xmit.h"

#define DP_SP_PERIOD_SHIFT 6	 /* 64-second periods */
#define DP_SP_WINDOW	   14600 /* our SYN-ACK's window: ten segments before the splice */
#define DP_SP_HOLD_MS	   2000
#define DP_SP_MSS_DEFAULT  536 /* RFC 879, for a SYN without MSS */

/* Linux's choice of common MSS values: the cookie has 2 bits for one. */
static const uint16_t sp_mss_table[4] = { 536, 1220, 1440, 1460 };

static struct dp_siphash_key sp_master;
static _Atomic uint32_t sp_master_gen = 1; /* bumped when the secret is replaced */
static int64_t sp_clock_skew_s;		   /* fixtures: move the cookie clock */

void
dp_synproxy_init(void)
{
	uint64_t k[2];

	if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k)) {
		/* Only without getrandom: rte_rand is seeded from the TSC and rdseed. */
		k[0] = rte_rand();
		k[1] = rte_rand();
	}
	sp_master.k0 = k[0];
	sp_master.k1 = k[1];
	atomic_fetch_add(&sp_master_gen, 1);
}

void
dp_synproxy_set_secret(uint64_t k0, uint64_t k1)
{
	sp_master.k0 = k0;
	sp_master.k1 = k1;
	atomic_fetch_add(&sp_master_gen, 1);
}

void
dp_synproxy_clock_skew(int64_t s)
{
	sp_clock_skew_s = s;
}

uint16_t
dp_synproxy_mss(unsigned mss_idx)
{
	return sp_mss_table[mss_idx & 3];
}

static unsigned
sp_mss_index(uint16_t mss)
{
	unsigned i = 3;

	while (i > 0 && sp_mss_table[i] > mss)
		i--;
	return i;
}

static uint64_t
sp_now_s(const struct dp_worker *w)
{
	return w->now_tsc / rte_get_tsc_hz() + (uint64_t)sp_clock_skew_s;
}

/* The keys of the current period and the one before, cached per worker. */
static const struct dp_siphash_key *
sp_keys(struct dp_worker *w, uint64_t period)
{
	uint32_t gen = atomic_load_explicit(&sp_master_gen, memory_order_relaxed);

	if (likely(w->sp_period == period && w->sp_key_gen == gen))
		return w->sp_key;
	for (unsigned i = 0; i < 2; i++) {
		uint64_t in[2] = { period - i, 0 };
		w->sp_key[i].k0 = dp_siphash(&sp_master, in, sizeof(in));
		in[1] = 1;
		w->sp_key[i].k1 = dp_siphash(&sp_master, in, sizeof(in));
	}
	w->sp_period = period;
	w->sp_key_gen = gen;
	return w->sp_key;
}

static uint32_t
sp_mac(const struct dp_siphash_key *key, uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport,
	uint32_t isn, unsigned mss_idx)
{
	struct {
		uint32_t saddr, daddr;
		uint16_t sport, dport;
		uint32_t isn, mss_idx;
	} in = { saddr, daddr, sport, dport, isn, mss_idx };

	return (uint32_t)dp_siphash(key, &in, sizeof(in)) & 0x0fffffff;
}

uint32_t
dp_synproxy_cookie(struct dp_worker *w, uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport,
	uint32_t isn, unsigned mss_idx)
{
	uint64_t period = sp_now_s(w) >> DP_SP_PERIOD_SHIFT;
	const struct dp_siphash_key *k = sp_keys(w, period);

	return (uint32_t)(period & 3) << 30 | (uint32_t)(mss_idx & 3) << 28 |
	       sp_mac(&k[0], saddr, daddr, sport, dport, isn, mss_idx & 3);
}

int
dp_synproxy_cookie_check(struct dp_worker *w, uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport,
	uint32_t isn, uint32_t cookie)
{
	uint64_t period = sp_now_s(w) >> DP_SP_PERIOD_SHIFT;
	const struct dp_siphash_key *k = sp_keys(w, period);
	unsigned idx = (cookie >> 28) & 3;

	/* The current period or the one before: the 2 period bits name it. */
	for (unsigned i = 0; i < 2; i++)
		if (((period - i) & 3) == cookie >> 30 &&
			sp_mac(&k[i], saddr, daddr, sport, dport, isn, idx) == (cookie & 0x0fffffff))
			return (int)idx;
	return -1;
}

/* ---- TCP options ---- */

struct sp_opts {
	uint16_t mss; /* 0 = absent */
	uint8_t ws;   /* DP_SP_WS_NONE = absent */
	uint8_t sack;
	uint8_t ts;
	uint16_t ts_at; /* offset of the option from the header */
	uint32_t tsval, tsecr;
};

/* The options of a header tcp_parse bounded (data offset inside the
 * datagram). A malformed list ends the walk with what was found. */
static void
sp_opts_parse(const struct rte_tcp_hdr *th, struct sp_opts *o)
{
	const uint8_t *b = (const uint8_t *)th;
	uint32_t end = (th->data_off >> 4) * 4u;

	memset(o, 0, sizeof(*o));
	o->ws = DP_SP_WS_NONE;
	for (uint32_t i = sizeof(*th); i < end;) {
		uint8_t kind = b[i];
		if (kind == 0)
			break;
		if (kind == 1) {
			i++;
			continue;
		}
		if (i + 2 > end || b[i + 1] < 2 || i + b[i + 1] > end)
			break;
		uint8_t len = b[i + 1];
		if (kind == 2 && len == 4)
			o->mss = (uint16_t)(b[i + 2] << 8 | b[i + 3]);
		else if (kind == 3 && len == 3)
			o->ws = RTE_MIN(b[i + 2], 14); /* RFC 7323 2.3: larger counts as 14 */
		else if (kind == 4 && len == 2)
			o->sack = 1;
		else if (kind == 8 && len == 10) {
			uint32_t v[2];
			memcpy(v, b + i + 2, 8);
			o->ts = 1;
			o->ts_at = (uint16_t)i;
			o->tsval = rte_be_to_cpu_32(v[0]);
			o->tsecr = rte_be_to_cpu_32(v[1]);
		}
		i += len;
	}
}

/* Linux's layout: MSS, SACK-permitted + timestamps (or NOP NOP + timestamps,
 * or NOP NOP + SACK-permitted), NOP + window scale. At most 20 bytes. */
static unsigned
sp_opts_write(uint8_t *p, uint16_t mss, uint8_t ws, bool sack, bool ts, uint32_t tsval, uint32_t tsecr)
{
	unsigned n = 0;

	p[n++] = 2, p[n++] = 4, p[n++] = (uint8_t)(mss >> 8), p[n++] = (uint8_t)mss;
	if (ts) {
		if (sack)
			p[n++] = 4, p[n++] = 2;
		else
			p[n++] = 1, p[n++] = 1;
		p[n++] = 8, p[n++] = 10;
		uint32_t v[2] = { rte_cpu_to_be_32(tsval), rte_cpu_to_be_32(tsecr) };
		memcpy(p + n, v, 8);
		n += 8;
	} else if (sack) {
		p[n++] = 1, p[n++] = 1, p[n++] = 4, p[n++] = 2;
	}
	if (ws != DP_SP_WS_NONE)
		p[n++] = 1, p[n++] = 3, p[n++] = 3, p[n++] = ws;
	return n;
}

/* Lay out Ethernet (MACs left to the sender), a 20-byte IPv4 header and
 * the TCP header at the start of m's first segment, checksums computed. */
static void
sp_frame(struct rte_mbuf *m, uint32_t src, uint32_t dst, const uint8_t *tcp, unsigned tcp_len)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(ip + 1);

	eh->ether_type = RTE_BE16(RTE_ETHER_TYPE_IPV4);
	memset(ip, 0, sizeof(*ip));
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof(*ip) + tcp_len));
	ip->fragment_offset = RTE_BE16(RTE_IPV4_HDR_DF_FLAG);
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_TCP;
	ip->src_addr = src;
	ip->dst_addr = dst;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	memcpy(th, tcp, tcp_len);
	th->cksum = 0;
	th->cksum = rte_ipv4_udptcp_cksum(ip, th);
	m->data_len = (uint16_t)(sizeof(*eh) + sizeof(*ip) + tcp_len);
	m->pkt_len = m->data_len;
	m->l2_len = sizeof(*eh);
	m->l3_len = sizeof(*ip);
}

static inline void
sp_count(struct dp_worker *w, uint16_t pidx, struct dp_service *svc, enum dp_svc_syn what)
{
	/* A flood's every SYN lands here: a plain add on this worker's line. */
	svc->stats[w->index].syn[what]++;
	if (what == DP_SVC_SYN_cookies_sent)
		w->ctr->path[DP_PROTO_tcp][pidx][DP_PATH_syn_cookies_sent]++;
	else if (what == DP_SVC_SYN_cookies_valid)
		w->ctr->path[DP_PROTO_tcp][pidx][DP_PATH_syn_cookies_valid]++;
}

/* 1. Answer a SYN with a cookie, in place. */
static void
sp_answer_syn(
	struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4, struct dp_service *svc)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)(eh + 1);
	const struct rte_tcp_hdr *th = l4->hdr;
	struct sp_opts o;
	uint8_t out[sizeof(struct rte_tcp_hdr) + 20];
	struct rte_tcp_hdr *oh = (struct rte_tcp_hdr *)out;

	sp_opts_parse(th, &o);
	uint32_t client = ip->src_addr, vip = ip->dst_addr;
	uint32_t isn = rte_be_to_cpu_32(th->sent_seq);
	unsigned idx = sp_mss_index(o.mss != 0 ? o.mss : DP_SP_MSS_DEFAULT);
	uint32_t cookie = dp_synproxy_cookie(w, client, vip, th->src_port, th->dst_port, isn, idx);
	uint16_t mss = (uint16_t)(dp.ports[pidx].conf.mtu - sizeof(struct rte_ipv4_hdr) - sizeof(*th));
	uint32_t tsval = 0;

	if (o.ts) {
		/* A millisecond clock whose low 6 bits carry the client's options;
		 * the real's clock replaces it after the splice (sp_ts_off). */
		uint64_t ms = w->now_tsc / (rte_get_tsc_hz() / 1000);
		tsval = ((uint32_t)ms & ~0x3fu) | (o.ws & 0xf) | (o.sack ? 0x10 : 0);
	}
	memset(oh, 0, sizeof(*oh));
	oh->src_port = th->dst_port;
	oh->dst_port = th->src_port;
	oh->sent_seq = rte_cpu_to_be_32(cookie);
	oh->recv_ack = rte_cpu_to_be_32(isn + 1);
	oh->tcp_flags = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG;
	oh->rx_win = RTE_BE16(DP_SP_WINDOW);
	/* Without timestamps there is nowhere to keep wscale and SACK: none. */
	unsigned olen = sp_opts_write(out + sizeof(*oh), mss,
		o.ts && o.ws != DP_SP_WS_NONE ? DP_SP_WSCALE : DP_SP_WS_NONE, o.ts && o.sack, o.ts, tsval,
		o.tsval);
	oh->data_off = (uint8_t)(((sizeof(*oh) + olen) / 4) << 4);

	/* Source in, source out: back by the SYN's port to its source MAC. */
	struct dp_side back;
	memset(&back, 0, sizeof(back));
	back.pidx = (uint8_t)pidx;
	rte_ether_addr_copy(&eh->src_addr, &back.peer_mac);

	/* The answer fits in the first segment, which held the SYN's headers. */
	if (m->next != NULL) {
		rte_pktmbuf_free(m->next);
		m->next = NULL;
		m->nb_segs = 1;
	}
	sp_frame(m, vip, client, out, (unsigned)sizeof(*oh) + olen);
	sp_count(w, pidx, svc, DP_SVC_SYN_cookies_sent);
	dp_xmit_to_side(w, &back, client, DP_PROTO_tcp, m);
}

/* 2. The SYN toward the real, from the client's ACK and the cookie. */
static void
sp_syn_to_real(struct dp_worker *w, struct dp_conn *c, const struct rte_tcp_hdr *ack, const struct sp_opts *o,
	unsigned mss_idx)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(dp.pool);
	uint8_t out[sizeof(struct rte_tcp_hdr) + 20];
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)out;

	if (m == NULL)
		return; /* as if lost: the conn times out in SYN_SENT */
	if (rte_pktmbuf_append(m, sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) + sizeof(out)) ==
		NULL) {
		rte_pktmbuf_free(m);
		return;
	}
	uint32_t win = rte_be_to_cpu_16(ack->rx_win);
	if (c->sp_client_ws != DP_SP_WS_NONE) /* a SYN's window is never scaled */
		win = RTE_MIN(win << c->sp_client_ws, 0xffffu);
	memset(th, 0, sizeof(*th));
	th->src_port = c->lport;
	th->dst_port = c->rport;
	th->sent_seq = rte_cpu_to_be_32(rte_be_to_cpu_32(ack->sent_seq) - 1);
	th->tcp_flags = RTE_TCP_SYN_FLAG;
	th->rx_win = rte_cpu_to_be_16((uint16_t)win);
	unsigned olen = sp_opts_write(out + sizeof(*th), dp_synproxy_mss(mss_idx), c->sp_client_ws,
		(c->sp & DP_SP_F_SACK) != 0, (c->sp & DP_SP_F_TS) != 0, o->tsval, 0);
	th->data_off = (uint8_t)(((sizeof(*th) + olen) / 4) << 4);
	sp_frame(m, c->laddr, c->raddr, out, (unsigned)sizeof(*th) + olen);
	dp_xmit_to_side(w, &c->side[DP_SIDE_SERVER], c->raddr, DP_PROTO_tcp, m);
}

/* 2. A client ACK for no conn: a cookie, or nothing. */
static void
sp_ack(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4, struct dp_service *svc,
	const struct dp_conn_key *k)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	const struct rte_tcp_hdr *th = l4->hdr;
	uint32_t isn = rte_be_to_cpu_32(th->sent_seq) - 1;
	uint32_t cookie = rte_be_to_cpu_32(th->recv_ack) - 1;
	int idx = dp_synproxy_cookie_check(w, k->saddr, k->daddr, k->sport, k->dport, isn, cookie);
	enum dp_drop why;
	struct sp_opts o;

	if (idx < 0) {
		svc->stats[w->index].syn[DP_SVC_SYN_cookies_invalid]++;
		dp_drop(w, pidx, DP_DROP_syn_cookie_invalid, m);
		return;
	}
	sp_count(w, pidx, svc, DP_SVC_SYN_cookies_valid);
	/* The ACK must wait for the real; with no room to hold it, open
	 * nothing: the client's next segment carries a valid cookie too. */
	if (w->nb_sp_held >= DP_SP_HOLD_MAX) {
		dp_drop(w, pidx, DP_DROP_syn_proxy_pending, m);
		return;
	}
	struct dp_conn *c = dp_conn_create(w, svc, k, &why);
	if (c == NULL) {
		dp_drop(w, pidx, why, m);
		return;
	}
	sp_opts_parse(th, &o);
	c->flags |= DP_CONN_F_SYNPROXY | DP_CONN_F_SP_PENDING;
	c->sp_client_ws = DP_SP_WS_NONE;
	c->sp_real_ws = DP_SP_WS_NONE;
	if (o.ts) {
		/* Our TSval comes back in TSecr with the client's options. */
		c->sp |= DP_SP_F_TS;
		if ((o.tsecr & 0xf) != DP_SP_WS_NONE)
			c->sp_client_ws = (uint8_t)RTE_MIN(o.tsecr & 0xf, 14u);
		if (o.tsecr & 0x10)
			c->sp |= DP_SP_F_SACK;
		dp_conn_cold(c)->sp_ts_off = (int32_t)o.tsecr; /* until the splice: our TSval */
	}
	/* A client-address mode saw no client SYN: the client's first byte is
	 * the one after its ISN, which the cookie vouched for. */
	if (c->flags & DP_CONN_F_CA)
		dp_conn_cold(c)->ca_seq = isn + 1;
	/* Until the splice seq_off[SERVER] holds the cookie (F_SEQ not set). */
	dp_conn_cold(c)->seq_off[DP_SIDE_SERVER] = (int32_t)cookie;
	c->state = DP_TCP_SYN_SENT;
	c->last = dp_tick(w->now_tsc);
	dp_side_record(w, &c->side[DP_SIDE_CLIENT], pidx, eh, c->caddr, DP_PROTO_tcp);
	dp_event_emit(w, c, DP_EV_CREATED, 0);

	struct dp_sp_held *h = &w->sp_held[w->nb_sp_held++];
	h->m = m;
	h->c = c;
	h->created_tsc = dp_conn_cold(c)->created_tsc;
	h->deadline_tsc = w->now_tsc + rte_get_tsc_hz() / 1000 * DP_SP_HOLD_MS;
	h->pidx = pidx;
	sp_syn_to_real(w, c, th, &o, (unsigned)idx);
}

bool
dp_synproxy_new(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4,
	struct dp_service *svc, const struct dp_conn_key *k)
{
	uint8_t f = l4->flags & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG | RTE_TCP_RST_FLAG);

	if (f == RTE_TCP_SYN_FLAG) {
		uint8_t mode = atomic_load_explicit(&svc->syn_proxy, memory_order_relaxed);
		if (mode == DP_SYN_PROXY_AUTO &&
			w->nb_half_open <
				atomic_load_explicit(&svc->syn_proxy_threshold, memory_order_relaxed))
			return false; /* not under pressure: an ordinary conn */
		sp_answer_syn(w, pidx, m, l4, svc);
		return true;
	}
	if (f == RTE_TCP_ACK_FLAG) {
		/* Any ACK for no conn may answer a cookie, also in auto mode
		 * after the pressure went. */
		sp_ack(w, pidx, m, l4, svc, k);
		return true;
	}
	return false;
}

/* Take the held segments of c out of the queue, in order, into out. */
static unsigned
sp_take_held(struct dp_worker *w, const struct dp_conn *c, struct dp_sp_held *out)
{
	unsigned keep = 0, n = 0;

	for (unsigned i = 0; i < w->nb_sp_held; i++) {
		struct dp_sp_held *h = &w->sp_held[i];
		if (h->c == c && h->created_tsc == dp_conn_cold(c)->created_tsc)
			out[n++] = *h;
		else
			w->sp_held[keep++] = *h;
	}
	w->nb_sp_held = keep;
	return n;
}

static void
sp_drop_held(struct dp_worker *w, const struct dp_conn *c)
{
	struct dp_sp_held mine[DP_SP_HOLD_MAX];
	unsigned n = sp_take_held(w, c, mine);

	for (unsigned i = 0; i < n; i++)
		dp_drop(w, mine[i].pidx, DP_DROP_syn_proxy_pending, mine[i].m);
}

/* 3. The real answered our SYN: splice. */
static void
sp_splice(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4, struct dp_conn *c)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	const struct rte_tcp_hdr *th = l4->hdr;
	uint32_t cookie = (uint32_t)dp_conn_cold(c)->seq_off[DP_SIDE_SERVER];
	struct sp_opts o;

	sp_opts_parse(th, &o);
	dp_conn_cold(c)->seq_off[DP_SIDE_SERVER] = 0;
	dp_conn_seq_off_add(c, DP_SIDE_SERVER, (int32_t)(cookie - rte_be_to_cpu_32(th->sent_seq)));
	if (c->sp & DP_SP_F_TS) {
		if (o.ts) {
			dp_conn_cold(c)->sp_ts_off =
				(int32_t)((uint32_t)dp_conn_cold(c)->sp_ts_off - o.tsval);
		} else {
			/* A real without timestamps: the client keeps sending its
			 * own, which the real ignores (RFC 7323 3.2). */
			c->sp &= (uint8_t)~DP_SP_F_TS;
			dp_conn_cold(c)->sp_ts_off = 0;
		}
	}
	c->sp_real_ws = o.ws;
	c->flags &= (uint8_t)~DP_CONN_F_SP_PENDING;
	if (dp_side_record(w, &c->side[DP_SIDE_SERVER], pidx, eh, c->raddr, DP_PROTO_tcp))
		dp_event_emit(w, c, DP_EV_PATH, DP_SIDE_SERVER);
	c->state = DP_TCP_SYN_RECV; /* half-open still, until the client's ACK goes through */
	c->last = dp_tick(w->now_tsc);
	dp_conn_cold(c)->pkts[DP_SIDE_SERVER]++;
	dp_conn_cold(c)->bytes[DP_SIDE_SERVER] += rte_pktmbuf_pkt_len(m);
	dp_event_emit(w, c, DP_EV_STATE, 0);
	/* The client had our SYN-ACK; the real's stops here. */
	rte_pktmbuf_free(m);

	struct dp_sp_held mine[DP_SP_HOLD_MAX];
	unsigned n = sp_take_held(w, c, mine);
	for (unsigned i = 0; i < n; i++) {
		struct rte_mbuf *hm = mine[i].m;
		struct rte_ipv4_hdr *ip =
			rte_pktmbuf_mtod_offset(hm, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
		struct dp_l4 hl4;
		struct dp_conn_key k;

		/* Parsed at arrival; the header is unchanged since. */
		dp_fnat_tcp.parse(hm, ip, &hl4);
		memset(&k, 0, sizeof(k));
		k.saddr = ip->src_addr;
		k.daddr = ip->dst_addr;
		k.sport = hl4.sport;
		k.dport = hl4.dport;
		k.proto = IPPROTO_TCP;
		dp_fnat_forward_conn(w, mine[i].pidx, hm, &dp_fnat_tcp, &hl4, &k, c, DP_SIDE_CLIENT);
	}
}

bool
dp_synproxy_pending(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4,
	struct dp_conn *c, enum dp_side_id from)
{
	if (l4->flags & RTE_TCP_RST_FLAG) {
		/* Either side gave up: the RST goes through like any, the real's
		 * numbered as the client expects (the next after the cookie). */
		sp_drop_held(w, c);
		uint32_t cookie = (uint32_t)dp_conn_cold(c)->seq_off[DP_SIDE_SERVER];
		dp_conn_cold(c)->seq_off[DP_SIDE_SERVER] = 0;
		c->flags &= (uint8_t)~DP_CONN_F_SP_PENDING;
		if (from == DP_SIDE_SERVER) {
			const struct rte_tcp_hdr *th = l4->hdr;
			dp_conn_seq_off_add(
				c, DP_SIDE_SERVER, (int32_t)(cookie + 1 - rte_be_to_cpu_32(th->sent_seq)));
		}
		return false;
	}
	if (from == DP_SIDE_SERVER) {
		if ((l4->flags & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)) ==
			(RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG))
			sp_splice(w, pidx, m, l4, c);
		else
			dp_drop(w, pidx, DP_DROP_syn_proxy_pending, m);
		return true;
	}
	/* The client's segments wait with its ACK, in order; a SYN has no place
	 * in a handshake the client already finished with us. */
	if (w->nb_sp_held >= DP_SP_HOLD_MAX || (l4->flags & RTE_TCP_SYN_FLAG)) {
		dp_drop(w, pidx, DP_DROP_syn_proxy_pending, m);
		return true;
	}
	struct dp_sp_held *h = &w->sp_held[w->nb_sp_held++];
	h->m = m;
	h->c = c;
	h->created_tsc = dp_conn_cold(c)->created_tsc;
	h->deadline_tsc = w->now_tsc + rte_get_tsc_hz() / 1000 * DP_SP_HOLD_MS;
	h->pidx = pidx;
	return true;
}

uint32_t
dp_synproxy_fix(const struct dp_conn *c, enum dp_side_id from, struct rte_tcp_hdr *th, uint32_t acc)
{
	if (c->sp_client_ws != DP_SP_WS_NONE && !(th->tcp_flags & RTE_TCP_SYN_FLAG)) {
		uint32_t win = rte_be_to_cpu_16(th->rx_win), nw = win;

		if (from == DP_SIDE_SERVER)
			nw = (win << (c->sp_real_ws == DP_SP_WS_NONE ? 0 : c->sp_real_ws)) >> DP_SP_WSCALE;
		else if (c->sp_real_ws == DP_SP_WS_NONE)
			nw = win << c->sp_client_ws;
		nw = RTE_MIN(nw, 0xffffu);
		if (nw != win) {
			uint16_t v = rte_cpu_to_be_16((uint16_t)nw);
			acc = dp_csum_acc16(acc, th->rx_win, v);
			th->rx_win = v;
		}
	}
	if ((c->sp & DP_SP_F_TS) && dp_conn_cold(c)->sp_ts_off != 0) {
		const uint8_t *b = (const uint8_t *)th;
		uint32_t at;
		/* Nearly every segment of a timestamped conn starts its options with
		 * NOP NOP TS (RFC 7323 appendix A): no walk for those. */
		if ((th->data_off >> 4) >= 8 && b[20] == 1 && b[21] == 1 && b[22] == 8 && b[23] == 10) {
			at = 22;
		} else {
			struct sp_opts o;
			sp_opts_parse(th, &o);
			if (!o.ts)
				return acc;
			at = o.ts_at;
		}
		uint32_t tsecr;
		memcpy(&tsecr, b + at + 6, 4);
		if (from == DP_SIDE_SERVER)
			acc = dp_tcp_add32_at(
				(uint8_t *)th, at + 2u, (uint32_t)dp_conn_cold(c)->sp_ts_off, acc);
		else if (tsecr != 0)
			acc = dp_tcp_add32_at(
				(uint8_t *)th, at + 6u, -(uint32_t)dp_conn_cold(c)->sp_ts_off, acc);
	}
	return acc;
}

void
dp_synproxy_poll(struct dp_worker *w)
{
	unsigned keep = 0;

	if (w->now_tsc < w->sp_poll_tsc)
		return;
	w->sp_poll_tsc = w->now_tsc + rte_get_tsc_hz() / 100;
	for (unsigned i = 0; i < w->nb_sp_held; i++) {
		struct dp_sp_held *h = &w->sp_held[i];
		const struct dp_conn *c = h->c;
		if (c->proto == 0 || dp_conn_cold(c)->created_tsc != h->created_tsc ||
			!(c->flags & DP_CONN_F_SP_PENDING) || w->now_tsc > h->deadline_tsc) {
			dp_drop(w, h->pidx, DP_DROP_syn_proxy_pending, h->m);
			continue;
		}
		w->sp_held[keep++] = *h;
	}
	w->nb_sp_held = keep;
}

void
dp_synproxy_flush(struct dp_worker *w)
{
	for (unsigned i = 0; i < w->nb_sp_held; i++)
		rte_pktmbuf_free(w->sp_held[i].m);
	w->nb_sp_held = 0;
}
