/*
 * dp_icmp.h: ICMP input (echo to our addresses, echo through FNAT, errors
 * about conns) and ICMP errors the appliance itself sends. Worker only;
 * every function consumes the mbuf it is given, except
 * dp_icmp_send_error, which only reads the packet it quotes.
 */
#ifndef RETRACE_DP_ICMP_H
#define RETRACE_DP_ICMP_H

#include "dp_conn.h"
#include "dp_internal.h"

#define RTE_IP_ICMP_DEST_UNREACH  3
#define RTE_IP_ICMP_TIME_EXCEEDED 11
#define RTE_IP_ICMP_PARAM_PROBLEM 12
#define RTE_IP_ICMP_FRAG_NEEDED	  4 /* code of DEST_UNREACH */

void dp_icmp_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m);

/* The first half of dp_icmp_input: parse and check; an echo request or
 * reply is left (true, l4 filled) for the FNAT engine's batch
 * (dp_fnat_batch_add), anything else is handled or dropped here (false). */
struct dp_l4;
bool dp_icmp_take(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4);

/* Send an ICMP error about `orig` (as received on pidx) back to its
 * sender: out of pidx to the sender's MAC (or routed, when the ICMP
 * switch is off). mtu is the next-hop MTU for fragmentation-needed.
 * Rate-limited per port. `from` may be NULL. */
void dp_icmp_send_error(struct dp_worker *w, uint16_t pidx, const struct rte_mbuf *orig,
	const struct dp_side *from, uint8_t type, uint8_t code, uint16_t mtu);

/* Token bucket for ICMP the appliance generates; true = may send. */
bool dp_icmp_rate_ok(struct dp_worker *w, uint16_t pidx);

#endif
