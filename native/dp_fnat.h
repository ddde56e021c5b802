/*
 * dp_fnat.h: full NAT for port-based protocols, shared by dp_tcp.c and
 * dp_udp.c (and, with echo ids as ports, dp_icmp.c).
 *
 * A protocol plugs in through an operation table; every slot is filled:
 *   parse       validate the L4 header, fill ports (network order), flags
 *   may_create  may this packet open a conn? (TCP: a SYN; UDP: any)
 *   stale       is this conn finished so a new opening should replace it?
 *   update      advance protocol state for a packet from `from`; returns
 *               the conn's idle timeout in seconds
 *   rewrite     store the new ports and fix the L4 checksum given the
 *               accumulated address+port difference
 */
#ifndef RETRACE_DP_FNAT_H
#define RETRACE_DP_FNAT_H

#include <rte_ip.h>

#include "dp_conn.h"
#include "dp_internal.h"

struct dp_l4 {
	void *hdr;        /* L4 header */
	uint16_t sport;   /* network order; ICMP: echo id */
	uint16_t dport;   /* network order; ICMP: echo id */
	uint8_t flags;    /* TCP flags */
};

struct dp_fnat_ops {
	uint8_t ipproto;
	enum dp_proto proto;
	/* Returns DP_DROP_MAX when fine, else the drop reason. */
	enum dp_drop (*parse)(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct dp_l4 *l4);
	bool (*may_create)(const struct dp_l4 *l4);
	bool (*stale)(const struct dp_conn *c, const struct dp_l4 *l4);
	uint32_t (*update)(struct dp_conn *c, enum dp_side_id from, const struct dp_l4 *l4);
	void (*rewrite)(struct dp_l4 *l4, uint16_t sport, uint16_t dport, uint32_t csum_acc);
};

extern const struct dp_fnat_ops dp_fnat_tcp;
extern const struct dp_fnat_ops dp_fnat_udp;

/* Handle an IPv4 packet of ops' protocol (header validated, l2/l3 lengths
 * set). Consumes m. */
void dp_fnat_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, const struct dp_fnat_ops *ops);

#endif
