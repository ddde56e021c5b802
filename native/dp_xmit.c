/*
 * dp_xmit.c: symmetric and routed transmission (see dp_xmit.h), the ARP
 * hold queue and ARP requests.
 */
#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_ip.h>

#include "dp_xmit.h"

#define DP_HOLD_TIMEOUT_MS     1000
#define DP_ARP_MIN_INTERVAL_MS 200

bool
dp_side_record_slow(struct dp_worker *w, struct dp_side *s, uint16_t pidx, const struct rte_ether_hdr *eh,
	uint32_t peer_addr, enum dp_proto proto)
{
	bool moved = dp_side_valid(s);

	if (moved)
		w->ctr->path[proto][pidx][DP_PATH_path_changes]++;
	s->pidx = (uint8_t)pidx;
	rte_ether_addr_copy(&eh->src_addr, &s->peer_mac);
	s->route_gen = 0; /* recompute the divergence reference */
	dp_side_route(s, peer_addr);
	return moved;
}

bool
dp_mtu_exceeded(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m)
{
	w->ctr->drop[pidx][DP_DROP_mtu_exceeded]++;
	rte_pktmbuf_free(m);
	return false;
}

static void
dp_arp_request(struct dp_worker *w, uint16_t pidx, uint32_t target)
{
	unsigned slot = (rte_be_to_cpu_32(target) * 2654435761u) % DP_ARP_RL_SLOTS;
	uint64_t min_gap = rte_get_tsc_hz() / 1000 * DP_ARP_MIN_INTERVAL_MS;

	if (w->arp_rl_addr[slot] == target && w->now_tsc - w->arp_rl_tsc[slot] < min_gap)
		return;
	w->arp_rl_addr[slot] = target;
	w->arp_rl_tsc[slot] = w->now_tsc;

	struct rte_mbuf *m = rte_pktmbuf_alloc(dp.pool);
	if (m == NULL)
		return;
	struct rte_ether_hdr *eh =
		(struct rte_ether_hdr *)rte_pktmbuf_append(m, sizeof(*eh) + sizeof(struct rte_arp_hdr));
	struct rte_arp_hdr *arp = (struct rte_arp_hdr *)(eh + 1);
	const struct rte_ether_addr *mac = &dp.ports[pidx].mac;

	memset(&eh->dst_addr, 0xff, sizeof(eh->dst_addr));
	rte_ether_addr_copy(mac, &eh->src_addr);
	eh->ether_type = RTE_BE16(RTE_ETHER_TYPE_ARP);
	arp->arp_hardware = RTE_BE16(RTE_ARP_HRD_ETHER);
	arp->arp_protocol = RTE_BE16(RTE_ETHER_TYPE_IPV4);
	arp->arp_hlen = RTE_ETHER_ADDR_LEN;
	arp->arp_plen = 4;
	arp->arp_opcode = RTE_BE16(RTE_ARP_OP_REQUEST);
	rte_ether_addr_copy(mac, &arp->arp_data.arp_sha);
	/* Source 0.0.0.0 (an ARP probe) if the port has no address yet. */
	arp->arp_data.arp_sip = atomic_load_explicit(&dp.ports[pidx].addr, memory_order_relaxed);
	memset(&arp->arp_data.arp_tha, 0, sizeof(arp->arp_data.arp_tha));
	arp->arp_data.arp_tip = target;
	dp_tx(w, pidx, m);
}

/*
 * A routed send costs an LPM lookup and a neighbour hash lookup (hash and key
 * compare), and routed traffic goes to few next hops (gateways, the reals of
 * conns whose server side has not answered yet, everything when a symmetric
 * switch is off). So the answers are remembered per destination, in a small
 * direct-mapped cache that any route or neighbour change voids.
 */
void
dp_xmit_routed_miss(struct dp_worker *w, uint32_t dst, enum dp_proto proto, const struct dp_side *to,
	struct rte_mbuf *m, struct dp_nh_cache *e, uint32_t rgen, uint32_t ngen)
{
	const struct dp_nexthop *nh;
	uint64_t nv;

	if (unlikely(dp_route_lookup(dst, &nh) != 0)) {
		/* Counted on the port the packet would have come from: we do
		 * not know another. */
		w->ctr->drop[to != NULL && dp_side_valid(to) ? to->pidx : 0][DP_DROP_no_route]++;
		rte_pktmbuf_free(m);
		return;
	}
	uint16_t pidx = nh->pidx;
	uint32_t nh_addr = nh->gw != 0 ? nh->gw : dst;

	if (unlikely(!dp_mtu_ok(w, pidx, m)))
		return;
	if (likely(dp_neigh_lookup(nh_addr, &nv) >= 0)) {
		/* The generations were read before the lookups: a change racing
		 * with them leaves an entry that is already void. */
		dp_neigh_mac(nv, &e->mac);
		e->dst = dst;
		e->pidx = pidx;
		e->route_gen = rgen;
		e->neigh_gen = ngen;
		e->valid = 1;
		dp_xmit_resolved(w, pidx, &e->mac, proto, dp_is_asymmetric(to, pidx), m);
		return;
	}
	if (w->nb_held >= DP_HOLD_MAX) {
		w->ctr->drop[pidx][DP_DROP_hold_full]++;
		rte_pktmbuf_free(m);
	} else {
		struct dp_held *h = &w->held[w->nb_held++];
		h->m = m;
		h->nh_addr = nh_addr;
		h->pidx = pidx;
		h->proto = (uint8_t)proto;
		h->deadline_tsc = w->now_tsc + rte_get_tsc_hz() / 1000 * DP_HOLD_TIMEOUT_MS;
		/* Decided now: the side record may be gone when the packet leaves. */
		h->asymmetric = dp_is_asymmetric(to, pidx);
	}
	dp_arp_request(w, pidx, nh_addr);
}

void
dp_xmit_hold_poll(struct dp_worker *w)
{
	uint32_t gen = atomic_load_explicit(&dpt.neigh_gen, memory_order_acquire);
	bool retry = gen != w->held_neigh_gen;
	unsigned keep = 0;

	w->held_neigh_gen = gen;
	for (unsigned i = 0; i < w->nb_held; i++) {
		struct dp_held *h = &w->held[i];
		uint64_t nv;

		if (retry && dp_neigh_lookup(h->nh_addr, &nv) >= 0) {
			struct rte_ether_addr mac;
			dp_neigh_mac(nv, &mac);
			dp_xmit_resolved(w, h->pidx, &mac, (enum dp_proto)h->proto, h->asymmetric, h->m);
			continue;
		}
		if (w->now_tsc > h->deadline_tsc) {
			w->ctr->drop[h->pidx][DP_DROP_neigh_unresolved]++;
			rte_pktmbuf_free(h->m);
			continue;
		}
		if (w->now_tsc - w->arp_rl_tsc[(rte_be_to_cpu_32(h->nh_addr) * 2654435761u) %
					       DP_ARP_RL_SLOTS] >
			rte_get_tsc_hz() / 1000 * DP_ARP_MIN_INTERVAL_MS)
			dp_arp_request(w, h->pidx, h->nh_addr);
		w->held[keep++] = *h;
	}
	w->nb_held = keep;
}

void
dp_xmit_hold_flush(struct dp_worker *w)
{
	for (unsigned i = 0; i < w->nb_held; i++)
		rte_pktmbuf_free(w->held[i].m);
	w->nb_held = 0;
}
