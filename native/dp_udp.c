/*
 * dp_udp.c: UDP for the FNAT engine. Any datagram to a UDP service opens a
 * conn; it lives while datagrams flow, plus the udp timeout. A zero
 * checksum means "none" (RFC 768) and stays zero.
 */
#include <netinet/in.h>

#include <rte_udp.h>

#include "dp_csum.h"
#include "dp_fnat.h"

DP_PKT_INLINE enum dp_drop
dp_udp_parse(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct dp_l4 *l4)
{
	/* From the header just read, not m->l2_len/l3_len: reading back the
	 * bit-fields just stored costs a store-forwarding stall per packet. */
	const uint32_t l2 = sizeof(struct rte_ether_hdr);
	uint32_t off = l2 + (ip->version_ihl & 0x0f) * 4u;
	uint32_t ip_end = l2 + rte_be_to_cpu_16(ip->total_length);
	struct rte_udp_hdr *uh;

	if (unlikely(off + sizeof(*uh) > ip_end))
		return DP_DROP_l4_truncated;
	uh = rte_pktmbuf_mtod_offset(m, struct rte_udp_hdr *, off);
	if (unlikely(rte_be_to_cpu_16(uh->dgram_len) < sizeof(*uh) ||
		     off + rte_be_to_cpu_16(uh->dgram_len) > ip_end))
		return DP_DROP_l4_truncated;
	l4->hdr = uh;
	l4->sport = uh->src_port;
	l4->dport = uh->dst_port;
	l4->flags = 0;
	l4->svc_port = uh->dst_port;
	return DP_DROP_MAX;
}

DP_PKT_INLINE bool
dp_udp_may_create(const struct dp_l4 *l4)
{
	(void)l4;
	return true;
}

DP_PKT_INLINE bool
dp_udp_stale(const struct dp_conn *c, const struct dp_l4 *l4)
{
	(void)c, (void)l4;
	return false;
}

DP_PKT_INLINE void
dp_udp_update(struct dp_conn *c, enum dp_side_id from, const struct dp_l4 *l4)
{
	(void)from, (void)l4;
	c->state = DP_TCP_ESTABLISHED; /* "seen traffic"; UDP has no states */
}

DP_PKT_INLINE void
dp_udp_rewrite(struct dp_conn *c, enum dp_side_id from, struct dp_l4 *l4, uint16_t sport, uint16_t dport,
	uint32_t acc)
{
	struct rte_udp_hdr *uh = l4->hdr;

	(void)c, (void)from;
	acc = dp_csum_acc16(acc, uh->src_port, sport);
	acc = dp_csum_acc16(acc, uh->dst_port, dport);

	uh->src_port = sport;
	uh->dst_port = dport;
	if (uh->dgram_cksum != 0) {
		uint16_t c = dp_csum_apply(uh->dgram_cksum, acc);
		uh->dgram_cksum = c == 0 ? 0xffff : c;
	}
}

const struct dp_fnat_ops dp_fnat_udp = {
	.ipproto = IPPROTO_UDP,
	.proto = DP_PROTO_udp,
	.parse = dp_udp_parse,
	.may_create = dp_udp_may_create,
	.stale = dp_udp_stale,
	.update = dp_udp_update,
	.rewrite = dp_udp_rewrite,
	.local = dp_fnat_local_drop,
};
