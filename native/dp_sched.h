/*
 * dp_sched.h: schedulers. A real set is built once per change on the
 * control side (dp_sched_build) and read by workers (dp_sched_pick).
 *
 *   rr      reals with weight > 0 in canonical order, one per new conn;
 *           a cursor per worker, so each worker spreads exactly evenly.
 *   wrr     a precomputed smooth weighted round-robin sequence (nginx's
 *           interleaving), so proportions are exact over one cycle.
 *   wlc     least active conns per unit of weight (IPVS wlc without the
 *           inactive-conn term).
 *   maglev  Maglev consistent hashing (Eisenbud et al., NSDI 2016): a
 *           lookup table of prime size >= 100 x reals, filled from each
 *           real's permutation, weighted by giving each real turns in
 *           proportion to its weight. Reals are taken in canonical order
 *           (address, port) and hashed with the service's seed, so every
 *           node with the same config builds the same table, and the same
 *           client (address, port) maps to the same real across restarts.
 * Weight 0 drains a real: no scheduler picks it; its conns continue. A
 * real whose health check says DOWN (dp_real.down) is treated as weight 0
 * by every scheduler (rr and wlc test the flag per pick; wrr and maglev
 * tables are rebuilt without it) while its weight stays as configured.
 */
#ifndef RETRACE_DP_SCHED_H
#define RETRACE_DP_SCHED_H

#include "dp_tables.h"

/* Control side: fill wrr/maglev tables of set (reals already sorted).
 * -ENOMEM. */
int dp_sched_build(struct dp_real_set *set, enum dp_sched_kind kind, uint32_t seed);

/* Worker side: a real for a new conn, or NULL when every real is drained. */
struct dp_real *dp_sched_pick(struct dp_service *svc, const struct dp_real_set *set, unsigned worker,
	uint32_t caddr, uint16_t cport);

/* Live conns of a service: the sum over its current reals (conns of a real
 * already removed from the set no longer count). */
uint64_t dp_service_active(const struct dp_real_set *set);

/* Worker side, first packet of a conn of a service with limits: true when
 * the client may open a conn, else false with the per-port drop reason in
 * *drop (the per-service counter of this worker is already counted). Deny wins over allow;
 * an empty allow list admits every client; then conn_rate takes a token from
 * the client's bucket (only for a conn the other limits admit). max_conns is
 * checked before the bucket, against the
 * live count without a lock, so workers racing for the last slot may
 * overshoot it by at most one conn each. */
bool dp_svc_admit(struct dp_service *svc, const struct dp_svc_limits *l, const struct dp_real_set *set,
	unsigned worker, uint32_t caddr, uint64_t now_tsc, enum dp_drop *drop);

/* Smallest prime >= n (n small enough for trial division). */
uint32_t dp_next_prime(uint32_t n);

#endif
