/*
 * dp_synproxy.h: SYN flood defence, SYN cookies with a SYN proxy
 * (dp_synproxy.c explains the design; docs/design.md "SYN proxy").
 *
 * Worker only, except dp_synproxy_init (control thread, before workers).
 */
#ifndef RETRACE_DP_SYNPROXY_H
#define RETRACE_DP_SYNPROXY_H

#include <rte_tcp.h>

#include "dp_fnat.h"
#include "dp_siphash.h"

/* The window scale our SYN-ACK announces, so the shift the client applies
 * to every window it reads from the real (dp_synproxy_fix rewrites them). */
#define DP_SP_WSCALE  7
/* No window scale option (a value a real option never has: at most 14). */
#define DP_SP_WS_NONE 0xf
/* Control thread, once before workers run: draw the master secret. */
void dp_synproxy_init(void);

/* A TCP segment for no conn, to service svc whose syn_proxy is not off.
 * A SYN (proxy active) is answered with a cookie; an ACK is checked as one
 * and, valid, opens the conn toward the real. Returns true when it took
 * m, false to let the normal path have it. */
bool dp_synproxy_new(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4,
	struct dp_service *svc, const struct dp_conn_key *k);

/* A segment of a conn still waiting for its real's SYN-ACK
 * (DP_CONN_F_SP_PENDING). Returns true when it took m. */
bool dp_synproxy_pending(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4,
	struct dp_conn *c, enum dp_side_id from);

/* Rewrite windows and timestamps of a segment of a spliced conn
 * (DP_CONN_F_SYNPROXY) from side `from`; returns acc plus the checksum
 * difference. */
uint32_t dp_synproxy_fix(const struct dp_conn *c, enum dp_side_id from, struct rte_tcp_hdr *th, uint32_t acc);

/* Drop held segments that waited too long or whose conn is gone. */
void dp_synproxy_poll(struct dp_worker *w);
/* Free everything held (worker exit). */
void dp_synproxy_flush(struct dp_worker *w);

/* The cookie for a SYN (saddr:sport -> daddr:dport, ISN isn) now, with
 * the MSS table index mss_idx (0..3). Exposed for the harnesses. */
uint32_t dp_synproxy_cookie(struct dp_worker *w, uint32_t saddr, uint32_t daddr, uint16_t sport,
	uint16_t dport, uint32_t isn, unsigned mss_idx);
/* The MSS index a cookie carries if it is valid now for that SYN, else -1. */
int dp_synproxy_cookie_check(struct dp_worker *w, uint32_t saddr, uint32_t daddr, uint16_t sport,
	uint16_t dport, uint32_t isn, uint32_t cookie);
/* The MSS of a cookie's index. */
uint16_t dp_synproxy_mss(unsigned mss_idx);
/* Harnesses only: use this master secret from now on; move the cookie
 * clock by s seconds. */
void dp_synproxy_set_secret(uint64_t k0, uint64_t k1);
void dp_synproxy_clock_skew(int64_t s);

#endif
