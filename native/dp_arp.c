/*
 * dp_arp.c: ARP input.
 *
 * Requests for any of our addresses (port addresses, VIPs, LIPs) are
 * answered on the port they arrived on, from that port's MAC (like Linux
 * with arp_ignore=0: a VIP has no port of its own). Every ARP packet from a
 * host teaches us its MAC: the sighting goes to the housekeeping thread,
 * the neighbour table's single writer, through a ring; a full ring only
 * delays learning until the next ARP.
 */
#include <rte_arp.h>
#include <rte_byteorder.h>

#include "dp_internal.h"
#include "dp_proto.h"
#include "dp_tables.h"

static inline void
dp_arp_learn(uint16_t pidx, uint32_t addr, const struct rte_ether_addr *mac)
{
	uint64_t cur;
	struct dp_learn_msg msg;

	if (addr == 0 || !rte_is_unicast_ether_addr(mac))
		return;
	/* Skip the ring when nothing would change; ageing tolerates it
	 * because hosts that use us re-ARP on their own schedule. */
	if (dp_neigh_lookup(addr, &cur) >= 0 && dp_neigh_port(cur) == pidx) {
		struct rte_ether_addr known;
		dp_neigh_mac(cur, &known);
		if (rte_is_same_ether_addr(&known, mac))
			return;
	}
	msg.addr = addr;
	msg.pidx = (uint8_t)pidx;
	msg.pad = 0;
	rte_ether_addr_copy(mac, &msg.mac);
	dp_learn_post(&msg);
}

/*
 * The kernel interface's neighbour table needs what the dataplane learns
 * from: replies (to the kernel's requests or the dataplane's, both are
 * right), requests for a port address (the kernel learns the asker), and
 * gratuitous ARP. The dataplane still answers; the kernel's own answer is
 * dropped on the way down (dp_kni.c).
 */
static void
dp_arp_mirror(struct dp_worker *w, uint16_t pidx, const struct rte_mbuf *m, const struct rte_arp_hdr *arp)
{
	if (arp->arp_opcode == RTE_BE16(RTE_ARP_OP_REPLY) || arp->arp_data.arp_sip == arp->arp_data.arp_tip ||
		dp_kni_wants(pidx, arp->arp_data.arp_tip))
		if (dp.ports[pidx].kni)
			dp_kni_mirror(w, pidx, m);
}

void
dp_arp_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m)
{
	struct rte_ether_hdr *eh;
	struct rte_arp_hdr *arp;
	uint64_t av;

	if (unlikely(rte_pktmbuf_data_len(m) < sizeof(struct rte_ether_hdr) + sizeof(*arp))) {
		dp_drop(w, pidx, DP_DROP_arp_malformed, m);
		return;
	}
	eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	arp = (struct rte_arp_hdr *)(eh + 1);
	if (unlikely(arp->arp_hardware != RTE_BE16(RTE_ARP_HRD_ETHER) ||
		     arp->arp_protocol != RTE_BE16(RTE_ETHER_TYPE_IPV4) ||
		     arp->arp_hlen != RTE_ETHER_ADDR_LEN || arp->arp_plen != 4)) {
		dp_drop(w, pidx, DP_DROP_arp_malformed, m);
		return;
	}
	dp_arp_learn(pidx, arp->arp_data.arp_sip, &arp->arp_data.arp_sha);
	if (unlikely(dp.nb_kni != 0))
		dp_arp_mirror(w, pidx, m, arp);

	if (arp->arp_opcode != RTE_BE16(RTE_ARP_OP_REQUEST)) {
		/* A reply (or anything else) has done its work: learned above. */
		rte_pktmbuf_free(m);
		return;
	}
	if (dp_addr_lookup(arp->arp_data.arp_tip, &av) < 0) {
		dp_drop(w, pidx, DP_DROP_arp_not_ours, m);
		return;
	}
	/* Turn the request into the reply in place. */
	const struct rte_ether_addr *mac = &dp.ports[pidx].mac;
	uint32_t tip = arp->arp_data.arp_tip;

	arp->arp_opcode = RTE_BE16(RTE_ARP_OP_REPLY);
	rte_ether_addr_copy(&arp->arp_data.arp_sha, &arp->arp_data.arp_tha);
	arp->arp_data.arp_tip = arp->arp_data.arp_sip;
	rte_ether_addr_copy(mac, &arp->arp_data.arp_sha);
	arp->arp_data.arp_sip = tip;
	rte_ether_addr_copy(&eh->src_addr, &eh->dst_addr);
	rte_ether_addr_copy(mac, &eh->src_addr);
	dp_tx(w, pidx, m);
}
