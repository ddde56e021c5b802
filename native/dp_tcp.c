/*
 * dp_tcp.c: TCP for the FNAT engine.
 *
 * State is tracked from flags only (no sequence checking), enough to pick
 * timeouts the way IPVS does:
 *   SYN_SENT    client SYN seen                     timeout tcp_syn
 *   SYN_RECV    server SYN-ACK seen                 timeout tcp_syn
 *   ESTABLISHED client ACK after SYN-ACK, or data   timeout tcp_established
 *   FIN_WAIT    one side sent FIN                   timeout tcp_fin
 *   TIME_WAIT   both sides sent FIN                 timeout tcp_close
 *   CLOSE       RST from either side                timeout tcp_close
 * Only a SYN (without ACK) opens a conn; any other segment for no conn is
 * dropped (tcp_no_conn). With a SYN proxy (dp_synproxy.c) the appliance
 * answers the SYN and an ACK with a valid cookie opens the conn instead.
 * A SYN on a conn in TIME_WAIT or CLOSE replaces it.
 *
 * Sequence translation (a conn with DP_CONN_F_SEQ, see seq_off in
 * dp_conn.h) renumbers seq, ack and SACK edges as the segment is rewritten.
 */
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>

#include <rte_tcp.h>

#include "dp_csum.h"
#include "dp_fnat.h"
#include "dp_synproxy.h"

DP_PKT_INLINE enum dp_drop
dp_tcp_parse(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct dp_l4 *l4)
{
	/* From the header just read, not m->l2_len/l3_len: reading back the
	 * bit-fields just stored costs a store-forwarding stall per packet. */
	const uint32_t l2 = sizeof(struct rte_ether_hdr);
	uint32_t off = l2 + (ip->version_ihl & 0x0f) * 4u;
	uint32_t ip_end = l2 + rte_be_to_cpu_16(ip->total_length);
	struct rte_tcp_hdr *th;

	if (unlikely(off + sizeof(*th) > ip_end))
		return DP_DROP_l4_truncated;
	th = rte_pktmbuf_mtod_offset(m, struct rte_tcp_hdr *, off);
	if (unlikely(((th->data_off >> 4) * 4u) < sizeof(*th) || off + (th->data_off >> 4) * 4u > ip_end))
		return DP_DROP_l4_truncated;
	l4->hdr = th;
	l4->sport = th->src_port;
	l4->dport = th->dst_port;
	l4->flags = th->tcp_flags;
	l4->svc_port = th->dst_port;
	return DP_DROP_MAX;
}

DP_PKT_INLINE bool
dp_tcp_may_create(const struct dp_l4 *l4)
{
	return (l4->flags & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG | RTE_TCP_RST_FLAG)) == RTE_TCP_SYN_FLAG;
}

DP_PKT_INLINE bool
dp_tcp_stale(const struct dp_conn *c, const struct dp_l4 *l4)
{
	(void)l4;
	return c->state == DP_TCP_TIME_WAIT || c->state == DP_TCP_CLOSE;
}

DP_PKT_INLINE void
dp_tcp_update(struct dp_conn *c, enum dp_side_id from, const struct dp_l4 *l4)
{
	uint8_t f = l4->flags;

	if (f & RTE_TCP_RST_FLAG) {
		c->state = DP_TCP_CLOSE;
	} else if (f & RTE_TCP_FIN_FLAG) {
		c->flags |= from == DP_SIDE_CLIENT ? DP_CONN_F_CLIENT_FIN : DP_CONN_F_SERVER_FIN;
		c->state = (c->flags & (DP_CONN_F_CLIENT_FIN | DP_CONN_F_SERVER_FIN)) ==
					   (DP_CONN_F_CLIENT_FIN | DP_CONN_F_SERVER_FIN)
				   ? DP_TCP_TIME_WAIT
				   : DP_TCP_FIN_WAIT;
	} else if (from == DP_SIDE_CLIENT) {
		if ((f & RTE_TCP_SYN_FLAG) && c->state == DP_TCP_NONE)
			c->state = DP_TCP_SYN_SENT;
		else if ((f & RTE_TCP_ACK_FLAG) && c->state == DP_TCP_SYN_RECV)
			c->state = DP_TCP_ESTABLISHED;
	} else {
		if ((f & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)) == (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG) &&
			(c->state == DP_TCP_SYN_SENT || c->state == DP_TCP_NONE))
			c->state = DP_TCP_SYN_RECV;
		else if (c->state == DP_TCP_SYN_RECV && !(f & RTE_TCP_SYN_FLAG))
			c->state = DP_TCP_ESTABLISHED;
	}
	/* The state picks the idle timeout, at expiry (dp_conn.c). */
}

/*
 * Add d to the 32-bit big-endian number at p, which may lie at any byte
 * offset from the header (option bytes have no alignment). The checksum
 * sums 16-bit words from the header's start, so the difference is taken
 * over the even-aligned words the number covers: two, or three when odd.
 */
uint32_t
dp_tcp_add32_at(uint8_t *th, uint32_t off, uint32_t d, uint32_t acc)
{
	uint32_t lo = off & ~1u, hi = (off + 5) & ~1u; /* [lo, hi) covers [off, off + 4) */
	uint16_t old[3], new_[3];
	uint32_t v;

	memcpy(old, th + lo, hi - lo);
	memcpy(&v, th + off, 4);
	v = rte_cpu_to_be_32(rte_be_to_cpu_32(v) + d);
	memcpy(th + off, &v, 4);
	memcpy(new_, th + lo, hi - lo);
	for (uint32_t i = 0; i < (hi - lo) / 2; i++)
		acc = dp_csum_acc16(acc, old[i], new_[i]);
	return acc;
}

/*
 * Renumber a segment: seq += seq_add; when it carries an ACK, ack and every
 * SACK edge -= ack_sub. Options were bounded by tcp_parse (data offset
 * inside the datagram); a malformed option list ends the walk and the rest
 * is forwarded as it is: a peer ignores SACK blocks it cannot parse, and
 * dropping would punish the client for our translation.
 */
static uint32_t
tcp_seq_translate(struct rte_tcp_hdr *th, uint32_t seq_add, uint32_t ack_sub, uint32_t acc)
{
	uint8_t *b = (uint8_t *)th;
	uint32_t end = (th->data_off >> 4) * 4u;

	if (seq_add != 0)
		acc = dp_tcp_add32_at(b, offsetof(struct rte_tcp_hdr, sent_seq), seq_add, acc);
	if (ack_sub == 0 || !(th->tcp_flags & RTE_TCP_ACK_FLAG))
		return acc;
	acc = dp_tcp_add32_at(b, offsetof(struct rte_tcp_hdr, recv_ack), -ack_sub, acc);
	for (uint32_t o = sizeof(*th); o < end;) {
		uint8_t kind = b[o];
		if (kind == 0) /* end of option list */
			break;
		if (kind == 1) { /* no-op */
			o++;
			continue;
		}
		if (o + 2 > end || b[o + 1] < 2 || o + b[o + 1] > end)
			break;
		if (kind == 5 && (b[o + 1] - 2) % 8 == 0) /* SACK: left, right edges */
			for (uint32_t e = o + 2; e < o + b[o + 1]; e += 4)
				acc = dp_tcp_add32_at(b, e, -ack_sub, acc);
		o += b[o + 1];
	}
	return acc;
}

DP_PKT_INLINE void
dp_tcp_rewrite(struct dp_conn *c, enum dp_side_id from, struct dp_l4 *l4, uint16_t sport, uint16_t dport,
	uint32_t acc)
{
	struct rte_tcp_hdr *th = l4->hdr;

	/* One test for the common conn, which has neither. */
	if (unlikely(c->flags & (DP_CONN_F_SEQ | DP_CONN_F_SYNPROXY))) {
		if (c->flags & DP_CONN_F_SEQ) {
			const struct dp_conn_cold *cc = dp_conn_cold(c);
			acc = tcp_seq_translate(
				th, (uint32_t)cc->seq_off[from], (uint32_t)cc->seq_off[from ^ 1], acc);
		}
		if (c->flags & DP_CONN_F_SYNPROXY)
			acc = dp_synproxy_fix(c, from, th, acc);
	}
	acc = dp_csum_acc16(acc, th->src_port, sport);
	acc = dp_csum_acc16(acc, th->dst_port, dport);

	th->src_port = sport;
	th->dst_port = dport;
	th->cksum = dp_csum_apply(th->cksum, acc);
}

const struct dp_fnat_ops dp_fnat_tcp = {
	.ipproto = IPPROTO_TCP,
	.proto = DP_PROTO_tcp,
	.parse = dp_tcp_parse,
	.may_create = dp_tcp_may_create,
	.stale = dp_tcp_stale,
	.update = dp_tcp_update,
	.rewrite = dp_tcp_rewrite,
	.local = dp_fnat_local_drop,
};
