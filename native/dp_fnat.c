/*
 * dp_fnat.c: the full-NAT engine (see dp_fnat.h).
 *
 *   from the client:  caddr:cport -> vaddr:vport  becomes  laddr:lport -> raddr:rport
 *   from the server:  raddr:rport -> laddr:lport  becomes  vaddr:vport -> caddr:cport
 *
 * The IP header checksum is recomputed (20 bytes, cheap); the L4 checksum
 * is updated incrementally from the address and port differences, which is
 * exact and also right for partial (offload) checksums from the lab's veths.
 */
#include <netinet/in.h>

#include <rte_byteorder.h>
#include <rte_ip.h>

#include "dp_csum.h"
#include "dp_fnat.h"
#include "dp_xmit.h"

static inline struct dp_service *
dp_service_lookup(uint32_t vaddr, uint16_t vport, uint8_t proto)
{
	struct dp_service_key k = { .vaddr = vaddr, .vport = vport, .proto = proto, .pad = 0 };
	void *d;

	return rte_hash_lookup_data(dpt.services, &k, &d) >= 0 ? d : NULL;
}

void
dp_fnat_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, const struct dp_fnat_ops *ops)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	struct dp_l4 l4;
	struct dp_conn_key k;
	enum dp_side_id from;
	enum dp_drop why;
	struct dp_conn *c;

	why = ops->parse(m, ip, &l4);
	if (unlikely(why != DP_DROP_MAX)) {
		dp_drop(w, pidx, why, m);
		return;
	}
	memset(&k, 0, sizeof(k));
	k.saddr = ip->src_addr;
	k.daddr = ip->dst_addr;
	k.sport = l4.sport;
	k.dport = l4.dport;
	k.proto = ops->ipproto;

	c = dp_conn_lookup(w, &k, &from);
	if (c != NULL && from == DP_SIDE_CLIENT && ops->may_create(&l4) && ops->stale(c, &l4)) {
		/* The client reuses a finished conn's tuple: start afresh. */
		dp_conn_destroy(w, c);
		c = NULL;
	}
	if (c == NULL && dp.nb_workers > 1) {
		/* A reply to a LIP port another worker handed out: that worker
		 * owns the conn (port % nb_workers names it). */
		uint64_t av;
		if (dp_addr_lookup(ip->dst_addr, &av) >= 0 && (dp_addr_kinds(av) & DP_ADDR_LIP)) {
			unsigned owner = rte_be_to_cpu_16(l4.dport) % dp.nb_workers;
			if (owner != w->index) {
				m->port = pidx;
				if (rte_ring_enqueue(dp.workers[owner]->redirect, m) != 0)
					dp_drop(w, pidx, DP_DROP_redirect_full, m);
				return;
			}
		}
	}
	if (c == NULL) {
		struct dp_service *svc = dp_service_lookup(ip->dst_addr, l4.dport, ops->ipproto);

		if (svc == NULL) {
			dp_drop(w, pidx, DP_DROP_no_handler, m);
			return;
		}
		if (!ops->may_create(&l4)) {
			dp_drop(w, pidx, ops->ipproto == IPPROTO_TCP ? DP_DROP_tcp_no_conn : DP_DROP_no_handler, m);
			return;
		}
		c = dp_conn_create(w, svc, &k, &why);
		if (c == NULL) {
			dp_drop(w, pidx, why, m);
			return;
		}
		from = DP_SIDE_CLIENT;
	}

	if (unlikely(ip->time_to_live <= 1)) {
		/* Time-exceeded back to the sender belongs to dp_icmp.c. */
		dp_drop(w, pidx, DP_DROP_ip_ttl_exceeded, m);
		return;
	}

	struct dp_side *in_side = &c->side[from];
	uint32_t in_peer = from == DP_SIDE_CLIENT ? c->caddr : c->raddr;
	dp_side_record(w, in_side, pidx, eh, in_peer, ops->proto);

	c->timeout_s = ops->update(c, from, &l4);
	c->last_tsc = w->now_tsc;
	c->pkts[from]++;
	c->bytes[from] += rte_pktmbuf_pkt_len(m);

	uint32_t nsrc, ndst;
	uint16_t nsport, ndport;
	if (from == DP_SIDE_CLIENT) {
		nsrc = c->laddr, ndst = c->raddr, nsport = c->lport, ndport = c->rport;
	} else {
		nsrc = c->vaddr, ndst = c->caddr, nsport = c->vport, ndport = c->cport;
	}
	/* The L4 pseudo-header covers both addresses; ports sit in the header. */
	uint32_t acc = 0;
	acc = dp_csum_acc32(acc, ip->src_addr, nsrc);
	acc = dp_csum_acc32(acc, ip->dst_addr, ndst);
	acc = dp_csum_acc16(acc, l4.sport, nsport);
	acc = dp_csum_acc16(acc, l4.dport, ndport);
	ops->rewrite(&l4, nsport, ndport, acc);

	ip->src_addr = nsrc;
	ip->dst_addr = ndst;
	ip->time_to_live--;
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);

	enum dp_side_id to = from == DP_SIDE_CLIENT ? DP_SIDE_SERVER : DP_SIDE_CLIENT;
	dp_xmit_to_side(w, &c->side[to], ndst, ops->proto, m);
}
