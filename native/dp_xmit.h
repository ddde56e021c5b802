/*
 * dp_xmit.h: sending IPv4 packets, the two ways of the source-in, source-out rule
 * (docs/design.md, "Source-in, source-out").
 *
 *   symmetric  toward a conn side with a record, protocol switch on: out of
 *              the recorded port, to the recorded peer MAC, from the recorded
 *              local MAC. No route lookup, no ARP. Counted tx_symmetric, and
 *              route_divergence when the route would have picked another port.
 *   routed     no record yet, or the switch off: route lookup, neighbour
 *              lookup (ARP if unknown, the packet waits in a small hold
 *              queue). Counted tx_routed, and asymmetric when it leaves by a
 *              port other than the one the destination side's packets
 *              arrive on.
 *
 * Worker only. Both consume the mbuf. The mbuf holds a full Ethernet +
 * IPv4 frame whose IP header is final (addresses, TTL, checksums).
 */
#ifndef RETRACE_DP_XMIT_H
#define RETRACE_DP_XMIT_H

#include <rte_ip.h>

#include "dp_conn.h"
#include "dp_internal.h"


static inline struct dp_nh_cache *
dp_nh_cache_slot(struct dp_worker *w, uint32_t dst)
{
	return &w->nh_cache[(dst * 2654435761u) >> 24];
}

static inline bool
dp_nh_cache_fresh(const struct dp_nh_cache *e, uint32_t dst, uint32_t route_gen, uint32_t neigh_gen)
{
	return e->valid && e->dst == dst && e->route_gen == route_gen && e->neigh_gen == neigh_gen;
}

/* Port a routed packet to dst leaves by, or -1 without a route. */
static inline int
dp_route_port(struct dp_worker *w, uint32_t dst)
{
	const struct dp_nh_cache *e = dp_nh_cache_slot(w, dst);
	const struct dp_nexthop *nh;

	/* A fresh entry for dst answers for the route too. */
	if (likely(dp_nh_cache_fresh(e, dst, atomic_load_explicit(&dpt.route_gen, memory_order_acquire),
		    atomic_load_explicit(&dpt.neigh_gen, memory_order_acquire))))
		return e->pidx;
	return dp_route_lookup(dst, &nh) == 0 ? nh->pidx : -1;
}

bool dp_side_record_slow(struct dp_worker *w, struct dp_side *s, uint16_t pidx,
	const struct rte_ether_hdr *eh, uint32_t peer_addr, enum dp_proto proto);

/* Record (or refresh) the side a packet arrived from. Returns true when an
 * existing record moved (a path change, counted). Inline: nearly every
 * packet finds its side where it was, and pays two compares. */
static inline bool
dp_side_record(struct dp_worker *w, struct dp_side *s, uint16_t pidx, const struct rte_ether_hdr *eh,
	uint32_t peer_addr, enum dp_proto proto)
{
	/* A side no packet came from has pidx DP_SIDE_NONE, never a port. */
	if (likely(s->pidx == pidx && rte_is_same_ether_addr(&s->peer_mac, &eh->src_addr)))
		return false;
	return dp_side_record_slow(w, s, pidx, eh, peer_addr, proto);
}

/* Refresh the cached "what would the route say" for a side. */
static inline void
dp_side_route(struct dp_side *s, uint32_t peer_addr)
{
	const struct dp_nexthop *nh;
	/* The low 16 bits (the control thread skips 0 there): a side whose
	 * route was last computed exactly 65536 changes ago keeps its stale
	 * route_pidx, which only the route_divergence counter would see. */
	uint16_t gen = (uint16_t)atomic_load_explicit(&dpt.route_gen, memory_order_acquire);

	if (likely(s->route_gen == gen && gen != 0))
		return;
	s->route_pidx = dp_route_lookup(peer_addr, &nh) == 0 ? (uint8_t)nh->pidx : DP_SIDE_NONE;
	s->route_gen = gen;
}

/* Counts and frees a packet over the egress MTU; returns false. */
bool dp_mtu_exceeded(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m);

/* Does m fit port pidx's MTU? If not it is counted and freed (false).
 * dp_fnat_forward checked (and answered) before the rewrite; this is the
 * guard for paths where the egress port was not known then. */
static inline bool
dp_mtu_ok(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m)
{
	const struct rte_ipv4_hdr *ip =
		rte_pktmbuf_mtod_offset(m, const struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));

	return likely(rte_be_to_cpu_16(ip->total_length) <= dp.ports[pidx].conf.mtu) ||
	       dp_mtu_exceeded(w, pidx, m);
}

static inline bool
dp_is_asymmetric(const struct dp_side *to, uint16_t pidx)
{
	return to != NULL && dp_side_valid(to) && to->pidx != pidx;
}

/* Send with a resolved MAC; the common tail of routed sends. */
static inline void
dp_xmit_resolved(struct dp_worker *w, uint16_t pidx, const struct rte_ether_addr *dmac, enum dp_proto proto,
	bool asymmetric, struct rte_mbuf *m)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);

	rte_ether_addr_copy(dmac, &eh->dst_addr);
	rte_ether_addr_copy(&dp.ports[pidx].mac, &eh->src_addr);
	w->ctr->path[proto][pidx][DP_PATH_tx_routed]++;
	if (asymmetric)
		w->ctr->path[proto][pidx][DP_PATH_asymmetric]++;
	dp_tx(w, pidx, m);
}

/* The routed send when the next-hop cache has no fresh entry for dst: route
 * and neighbour lookups, the ARP hold queue (dp_xmit.c). */
void dp_xmit_routed_miss(struct dp_worker *w, uint32_t dst, enum dp_proto proto, const struct dp_side *to,
	struct rte_mbuf *m, struct dp_nh_cache *e, uint32_t rgen, uint32_t ngen);

/*
 * A routed send costs an LPM lookup and a neighbour hash lookup (hash and key
 * compare), and routed traffic goes to few next hops (gateways, the reals of
 * conns whose server side has not answered yet, everything when a symmetric
 * switch is off). So the answers are remembered per destination, in a small
 * direct-mapped cache that any route or neighbour change voids. A hit is
 * inline: the common routed packet pays no call.
 */
static inline void
dp_xmit_routed(
	struct dp_worker *w, uint32_t dst, enum dp_proto proto, const struct dp_side *to, struct rte_mbuf *m)
{
	const uint32_t rgen = atomic_load_explicit(&dpt.route_gen, memory_order_acquire);
	const uint32_t ngen = atomic_load_explicit(&dpt.neigh_gen, memory_order_acquire);
	struct dp_nh_cache *e = dp_nh_cache_slot(w, dst);

	if (unlikely(!dp_nh_cache_fresh(e, dst, rgen, ngen))) {
		dp_xmit_routed_miss(w, dst, proto, to, m, e, rgen, ngen);
		return;
	}
	if (unlikely(!dp_mtu_ok(w, e->pidx, m)))
		return;
	dp_xmit_resolved(w, e->pidx, &e->mac, proto, dp_is_asymmetric(to, e->pidx), m);
}

/* Inline, the common case being a conn's packet with both sides recorded:
 * a few loads and stores, then the tx buffer. */
static inline void
dp_xmit_to_side(
	struct dp_worker *w, struct dp_side *to, uint32_t peer_addr, enum dp_proto proto, struct rte_mbuf *m)
{
	if (unlikely(!dp_side_valid(to) ||
		     !atomic_load_explicit(&dpt.symmetric[proto], memory_order_relaxed))) {
		dp_xmit_routed(w, peer_addr, proto, to, m);
		return;
	}
	uint16_t pidx = to->pidx;
	if (unlikely(!dp_mtu_ok(w, pidx, m)))
		return;
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	rte_ether_addr_copy(&to->peer_mac, &eh->dst_addr);
	rte_ether_addr_copy(&dp.ports[pidx].mac, &eh->src_addr);
	w->ctr->path[proto][pidx][DP_PATH_tx_symmetric]++;
	dp_side_route(to, peer_addr);
	if (unlikely(to->route_pidx != pidx)) /* DP_SIDE_NONE: no route at all */
		w->ctr->path[proto][pidx][DP_PATH_route_divergence]++;
	dp_tx(w, pidx, m);
}

/* Retry held packets (neighbours learned) and drop the expired ones. */
void dp_xmit_hold_poll(struct dp_worker *w);

/* Free everything still held (worker exit). */
void dp_xmit_hold_flush(struct dp_worker *w);

#endif
