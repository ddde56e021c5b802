/*
 * dp_l2.c: Ethernet input, the first step of the packet path.
 *
 * Frames are accepted when addressed to the port's MAC, broadcast or
 * multicast; af_packet and promiscuous NICs also hand us frames for other
 * hosts on the segment, which are not ours to answer. Then dispatch by
 * ethertype. VLAN-tagged frames are not supported yet and counted as
 * unsupported_ethertype.
 *
 * Ownership: every function here consumes the mbuf (tx or drop).
 */
#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_prefetch.h>

#include "dp_fnat.h"
#include "dp_internal.h"
#include "dp_proto.h"

#define DP_PREFETCH_OFFSET 4

/* Returns true when m is validated TCP, UDP or ICMP over IPv4, left for the batch. */
static inline bool
dp_l2_one(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m)
{
	const struct rte_ether_hdr *eh;

	if (unlikely(rte_pktmbuf_data_len(m) < sizeof(struct rte_ether_hdr))) {
		dp_drop(w, pidx, DP_DROP_eth_truncated, m);
		return false;
	}
	eh = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);
	if (unlikely(!rte_is_same_ether_addr(&eh->dst_addr, &dp.ports[pidx].mac) &&
		     !rte_is_multicast_ether_addr(&eh->dst_addr))) {
		/* Broadcast is a multicast address too. */
		dp_drop(w, pidx, DP_DROP_not_for_us, m);
		return false;
	}
	switch (eh->ether_type) {
	case RTE_BE16(RTE_ETHER_TYPE_IPV4): return dp_ipv4_input(w, pidx, m);
	case RTE_BE16(RTE_ETHER_TYPE_ARP): dp_arp_input(w, pidx, m); return false;
	default: dp_drop(w, pidx, DP_DROP_unsupported_ethertype, m); return false;
	}
}

/*
 * One pass over the burst: each packet is checked (Ethernet, IPv4) and, if
 * it is TCP, UDP or ICMP, parsed into the FNAT batch, which is looked up and
 * forwarded when full and at the end (dp_fnat_batch_run), so conn lookups
 * overlap. Other packets (ARP, drops) are done at once, and so are ICMP
 * errors: they may go ahead of packets of the same burst, but never of their
 * own flow.
 */
void
dp_l2_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf **pkts, uint16_t n)
{
	struct dp_fnat_batch b;
	uint16_t i;

	b.n = 0;
	for (i = 0; i < n && i < DP_PREFETCH_OFFSET; i++)
		rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
	for (i = 0; i < n; i++) {
		if (i + DP_PREFETCH_OFFSET < n)
			rte_prefetch0(rte_pktmbuf_mtod(pkts[i + DP_PREFETCH_OFFSET], void *));
		if (dp_l2_one(w, pidx, pkts[i]))
			dp_fnat_batch_add(w, pidx, &b, pkts[i]);
	}
	dp_fnat_batch_run(w, pidx, &b);
}
