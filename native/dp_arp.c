/*
 * dp_arp.c: ARP input. Validates the packet (Ethernet/IPv4 ARP only);
 * answering for our addresses and learning neighbours plug in here.
 */
#include <rte_arp.h>
#include <rte_byteorder.h>

#include "dp_internal.h"
#include "dp_proto.h"

void
dp_arp_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m)
{
	const struct rte_arp_hdr *arp;

	if (unlikely(rte_pktmbuf_data_len(m) < sizeof(struct rte_ether_hdr) + sizeof(*arp))) {
		dp_drop(w, pidx, DP_DROP_arp_malformed, m);
		return;
	}
	arp = rte_pktmbuf_mtod_offset(m, const struct rte_arp_hdr *, sizeof(struct rte_ether_hdr));
	if (unlikely(arp->arp_hardware != RTE_BE16(RTE_ARP_HRD_ETHER) ||
		     arp->arp_protocol != RTE_BE16(RTE_ETHER_TYPE_IPV4) ||
		     arp->arp_hlen != RTE_ETHER_ADDR_LEN || arp->arp_plen != 4)) {
		dp_drop(w, pidx, DP_DROP_arp_malformed, m);
		return;
	}
	dp_drop(w, pidx, DP_DROP_no_handler, m);
}
