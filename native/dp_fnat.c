/*
 * dp_fnat.c: the full-NAT engine (see dp_fnat.h).
 *
 *   from the client:  caddr:cport -> vaddr:vport  becomes  laddr:lport -> raddr:rport
 *   from the server:  raddr:rport -> laddr:lport  becomes  vaddr:vport -> caddr:cport
 *
 * The IP header checksum is recomputed (20 bytes, cheap); the L4 checksum
 * is updated incrementally from the address and port differences.
 *
 * Before anything is rewritten, the packet is checked against the TTL and
 * the egress port's MTU: ICMP time-exceeded and fragmentation-needed must
 * quote the packet as its sender sent it (dp_icmp_send_error).
 */
#include <netinet/in.h>

#include <rte_byteorder.h>
#include <rte_ip.h>

#include "dp_csum.h"
#include "dp_fnat.h"
#include "dp_icmp.h"
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
dp_fnat_local_drop(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4,
		   struct dp_conn *local_conn)
{
	(void)l4, (void)local_conn;
	dp_drop(w, pidx, DP_DROP_no_handler, m);
}

/* Egress port the packet toward `to` would use, or -1 when unknown (no
 * route): the MTU check then happens at transmit. */
static inline int
dp_egress_port(const struct dp_side *to, enum dp_proto proto, uint32_t dst)
{
	const struct dp_nexthop *nh;

	if (to->valid && atomic_load_explicit(&dpt.symmetric[proto], memory_order_relaxed))
		return to->pidx;
	return dp_route_lookup(dst, &nh) == 0 ? nh->pidx : -1;
}

void
dp_fnat_forward(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, const struct dp_fnat_ops *ops,
		struct dp_l4 *l4)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	struct dp_conn_key k;
	enum dp_side_id from;
	enum dp_drop why;
	struct dp_conn *c;
	bool fresh = false;

	memset(&k, 0, sizeof(k));
	k.saddr = ip->src_addr;
	k.daddr = ip->dst_addr;
	k.sport = l4->sport;
	k.dport = l4->dport;
	k.proto = ops->ipproto;

	c = dp_conn_lookup(w, &k, &from);
	if (c != NULL && (c->flags & DP_CONN_F_LOCAL)) {
		ops->local(w, pidx, m, l4, c);
		return;
	}
	if (c != NULL && from == DP_SIDE_CLIENT && ops->may_create(l4) && ops->stale(c, l4)) {
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
		if (!ops->may_create(l4)) {
			dp_drop(w, pidx, ops->ipproto == IPPROTO_TCP ? DP_DROP_tcp_no_conn : DP_DROP_no_handler, m);
			return;
		}
		c = dp_conn_create(w, svc, &k, &why);
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
	int out = dp_egress_port(&c->side[to], ops->proto, ndst);
	if (unlikely(out >= 0 && rte_be_to_cpu_16(ip->total_length) > dp.ports[out].conf.mtu)) {
		if (ip->fragment_offset & RTE_BE16(RTE_IPV4_HDR_DF_FLAG))
			dp_icmp_send_error(w, pidx, m, in_side, RTE_IP_ICMP_DEST_UNREACH, RTE_IP_ICMP_FRAG_NEEDED,
					   dp.ports[out].conf.mtu);
		/* Without DF the packet would need fragmenting, which we do not
		 * do: counted the same way. */
		dp_drop(w, (uint16_t)out, DP_DROP_mtu_exceeded, m);
		if (fresh)
			dp_conn_destroy_silent(w, c);
		return;
	}

	uint8_t prev_state = c->state;
	c->timeout_s = ops->update(c, from, l4);
	if (fresh)
		dp_event_emit(w, c, DP_EV_CREATED, 0);
	else if (c->state != prev_state)
		dp_event_emit(w, c, DP_EV_STATE, 0);
	c->last_tsc = w->now_tsc;
	uint32_t len = rte_pktmbuf_pkt_len(m);
	c->pkts[from]++;
	c->bytes[from] += len;
	c->real->stats[w->index].pkts[from]++;
	c->real->stats[w->index].bytes[from] += len;

	uint32_t nsrc;
	uint16_t nsport, ndport;
	if (from == DP_SIDE_CLIENT)
		nsrc = c->laddr, nsport = c->lport, ndport = c->rport;
	else
		nsrc = c->vaddr, nsport = c->vport, ndport = c->cport;
	uint32_t acc = dp_csum_acc32(0, ip->src_addr, nsrc);
	acc = dp_csum_acc32(acc, ip->dst_addr, ndst);
	ops->rewrite(l4, nsport, ndport, acc);

	ip->src_addr = nsrc;
	ip->dst_addr = ndst;
	ip->time_to_live--;
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);

	dp_xmit_to_side(w, &c->side[to], ndst, ops->proto, m);
}

void
dp_fnat_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, const struct dp_fnat_ops *ops)
{
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
	struct dp_l4 l4;
	enum dp_drop why = ops->parse(m, ip, &l4);

	if (unlikely(why != DP_DROP_MAX)) {
		dp_drop(w, pidx, why, m);
		return;
	}
	dp_fnat_forward(w, pidx, m, ops, &l4);
}
