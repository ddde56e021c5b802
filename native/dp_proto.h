/*
 * dp_proto.h: entry points of the per-protocol files of the packet path.
 * Worker lcore only; each consumes the mbuf it is given.
 */
#ifndef RETRACE_DP_PROTO_H
#define RETRACE_DP_PROTO_H

#include "dp_internal.h"

/* dp_arp.c: ARP for our addresses. */
void dp_arp_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m);

/* dp_ipv4.c: IPv4 header validation and dispatch by protocol. TCP, UDP and
 * ICMP are counted and left to the caller, which hands them to
 * dp_fnat_batch_add in one batch (returns true; m is not consumed then). */
bool dp_ipv4_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m);

#endif
