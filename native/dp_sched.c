/*
 * dp_sched.c: scheduler tables and picks (see dp_sched.h).
 */
#include <errno.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_jhash.h>
#include <rte_malloc.h>

#include "dp_sched.h"

uint32_t
dp_next_prime(uint32_t n)
{
	if (n <= 2)
		return 2;
	for (uint32_t c = n | 1;; c += 2) {
		bool prime = true;
		for (uint32_t d = 3; (uint64_t)d * d <= c; d += 2) {
			if (c % d == 0) {
				prime = false;
				break;
			}
		}
		if (prime)
			return c;
	}
}

static uint32_t
gcd(uint32_t a, uint32_t b)
{
	while (b != 0) {
		uint32_t t = a % b;
		a = b;
		b = t;
	}
	return a;
}

/* Smooth weighted round robin: at each step every real gains its weight,
 * the richest is picked and pays the total. Yields an interleaved sequence
 * in which real i appears exactly w_i times per cycle. */
static int
dp_build_wrr(struct dp_real_set *s)
{
	uint32_t g = 0;
	uint64_t total = 0;

	for (uint32_t i = 0; i < s->n; i++)
		if (dp_real_sched_weight(s->reals[i]) > 0)
			g = gcd(g, dp_real_sched_weight(s->reals[i]));
	if (g == 0)
		return 0; /* all drained or down: empty sequence */
	for (uint32_t i = 0; i < s->n; i++)
		total += dp_real_sched_weight(s->reals[i]) / g;
	/* Keep the cycle bounded; beyond 2^20 slots proportions are scaled
	 * (each real keeps at least one slot). */
	uint64_t scale_div = total > (1u << 20) ? (total + (1u << 20) - 1) / (1u << 20) : 1;
	int64_t *cur = rte_zmalloc("retrace_wrr_tmp", sizeof(int64_t) * s->n, 0);
	uint32_t *w = rte_zmalloc("retrace_wrr_w", sizeof(uint32_t) * s->n, 0);
	if (cur == NULL || w == NULL) {
		rte_free(cur);
		rte_free(w);
		return -ENOMEM;
	}
	total = 0;
	for (uint32_t i = 0; i < s->n; i++) {
		uint32_t wi = dp_real_sched_weight(s->reals[i]) / g;
		w[i] = wi == 0 ? 0 : (uint32_t)RTE_MAX((uint64_t)1, wi / scale_div);
		total += w[i];
	}
	s->wrr = rte_malloc("retrace_wrr", sizeof(uint32_t) * total, 0);
	if (s->wrr == NULL) {
		rte_free(cur);
		rte_free(w);
		return -ENOMEM;
	}
	for (uint64_t step = 0; step < total; step++) {
		uint32_t best = UINT32_MAX;
		for (uint32_t i = 0; i < s->n; i++) {
			if (w[i] == 0)
				continue;
			cur[i] += w[i];
			if (best == UINT32_MAX || cur[i] > cur[best])
				best = i;
		}
		cur[best] -= (int64_t)total;
		s->wrr[step] = best;
	}
	s->wrr_len = (uint32_t)total;
	rte_free(cur);
	rte_free(w);
	return 0;
}

static int
dp_build_maglev(struct dp_real_set *s, uint32_t seed)
{
	uint32_t m = dp_next_prime(RTE_MAX(100u * s->n, 101u));
	uint32_t wmax = 0, filled = 0;

	for (uint32_t i = 0; i < s->n; i++)
		wmax = RTE_MAX(wmax, dp_real_sched_weight(s->reals[i]));
	s->maglev = rte_malloc("retrace_maglev", sizeof(int32_t) * m, 0);
	if (s->maglev == NULL)
		return -ENOMEM;
	s->maglev_len = m;
	for (uint32_t j = 0; j < m; j++)
		s->maglev[j] = -1;
	if (wmax == 0)
		return 0;

	uint32_t *offset = rte_malloc(NULL, sizeof(uint32_t) * s->n, 0);
	uint32_t *skip = rte_malloc(NULL, sizeof(uint32_t) * s->n, 0);
	uint32_t *next = rte_zmalloc(NULL, sizeof(uint32_t) * s->n, 0);
	uint64_t *credit = rte_zmalloc(NULL, sizeof(uint64_t) * s->n, 0);
	if (!offset || !skip || !next || !credit) {
		rte_free(offset), rte_free(skip), rte_free(next), rte_free(credit);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < s->n; i++) {
		/* Hash the real's identity in a fixed byte order so the table is
		 * the same on every host. */
		uint32_t a = rte_be_to_cpu_32(s->reals[i]->addr);
		uint32_t p = rte_be_to_cpu_16(s->reals[i]->port);
		offset[i] = rte_jhash_2words(a, p, seed) % m;
		skip[i] = rte_jhash_2words(a, p, seed ^ 0x9e3779b9u) % (m - 1) + 1;
	}
	while (filled < m) {
		for (uint32_t i = 0; i < s->n && filled < m; i++) {
			uint32_t wi = dp_real_sched_weight(s->reals[i]);
			if (wi == 0)
				continue;
			/* Weighted turns: a real fills a slot each time its credit
			 * reaches the largest weight. */
			credit[i] += wi;
			if (credit[i] < wmax)
				continue;
			credit[i] -= wmax;
			uint32_t c;
			do {
				c = (uint32_t)(((uint64_t)offset[i] + (uint64_t)next[i] * skip[i]) % m);
				next[i]++;
			} while (s->maglev[c] >= 0);
			s->maglev[c] = (int32_t)i;
			filled++;
		}
	}
	rte_free(offset), rte_free(skip), rte_free(next), rte_free(credit);
	return 0;
}

int
dp_sched_build(struct dp_real_set *set, enum dp_sched_kind kind, uint32_t seed)
{
	switch (kind) {
	case DP_SCHED_WRR: return dp_build_wrr(set);
	case DP_SCHED_MAGLEV: return dp_build_maglev(set, seed);
	default: return 0;
	}
}

struct dp_real *
dp_sched_pick(struct dp_service *svc, const struct dp_real_set *set, unsigned worker, uint32_t caddr,
	uint16_t cport)
{
	if (unlikely(set == NULL || set->n == 0))
		return NULL;

	switch (svc->sched) {
	case DP_SCHED_RR: {
		uint32_t c = svc->rr_cursor[worker];
		for (uint32_t k = 0; k < set->n; k++) {
			struct dp_real *r = set->reals[(c + k) % set->n];
			if (dp_real_eligible(r)) {
				svc->rr_cursor[worker] = (c + k + 1) % set->n;
				return r;
			}
		}
		return NULL;
	}
	case DP_SCHED_WRR: {
		if (set->wrr_len == 0)
			return NULL;
		uint32_t c = svc->rr_cursor[worker] % set->wrr_len;
		svc->rr_cursor[worker] = (c + 1) % set->wrr_len;
		return set->reals[set->wrr[c]];
	}
	case DP_SCHED_WLC: {
		struct dp_real *best = NULL;
		int64_t best_active = 0;
		for (uint32_t i = 0; i < set->n; i++) {
			struct dp_real *r = set->reals[i];
			if (!dp_real_eligible(r))
				continue;
			int64_t a = (int64_t)atomic_load_explicit(&r->active, memory_order_relaxed);
			/* a / w < best_a / best_w, without division. */
			if (best == NULL || a * best->weight < best_active * r->weight) {
				best = r;
				best_active = a;
			}
		}
		return best;
	}
	case DP_SCHED_MAGLEV: {
		if (set->maglev_len == 0)
			return NULL;
		uint32_t h = rte_jhash_2words(rte_be_to_cpu_32(caddr), rte_be_to_cpu_16(cport), svc->seed);
		int32_t idx = set->maglev[h % set->maglev_len];
		return idx < 0 ? NULL : set->reals[idx];
	}
	}
	return NULL;
}

uint64_t
dp_service_active(const struct dp_real_set *set)
{
	int64_t sum = 0;

	for (uint32_t i = 0; set != NULL && i < set->n; i++)
		sum += (int64_t)atomic_load_explicit(&set->reals[i]->active, memory_order_relaxed);
	return sum < 0 ? 0 : (uint64_t)sum;
}

static inline bool
dp_prefix_match(uint32_t n, const struct dp_svc_prefix *list, uint32_t addr)
{
	for (uint32_t i = 0; i < n; i++)
		if ((addr & list[i].mask) == list[i].addr)
			return true;
	return false;
}

/* Take one conn from the client's bucket: refilled at conn_rate per second
 * up to conn_burst, in thousandths of a conn. */
static bool
dp_rate_take(const struct dp_svc_limits *l, uint32_t caddr, uint64_t now_tsc)
{
	struct dp_rate_slot *s = &l->slots[rte_jhash_1word(caddr, 0x5eed) % DP_SVC_RATE_SLOTS];
	const uint64_t hz = rte_get_tsc_hz();
	const uint64_t cap = (uint64_t)l->conn_burst * 1000;
	bool ok;

	rte_spinlock_lock(&s->lock);
	uint64_t tokens = s->tokens_milli;
	if (s->tsc == 0) {
		tokens = cap;
		s->tsc = now_tsc;
	} else if (now_tsc > s->tsc) {
		/* Elapsed time capped to what fills the bucket: no overflow. */
		uint64_t dt = RTE_MIN(now_tsc - s->tsc, hz * (l->conn_burst / l->conn_rate + 1));
		uint64_t add = (uint64_t)((unsigned __int128)dt * l->conn_rate * 1000 / hz);
		/* Time that earned nothing yet stays banked: under a stream of SYNs
		 * closer together than a thousandth of a token, the bucket still
		 * refills at conn_rate. */
		if (add > 0) {
			tokens = RTE_MIN(cap, tokens + add);
			s->tsc = now_tsc;
		}
	}
	ok = tokens >= 1000;
	if (ok)
		tokens -= 1000;
	s->tokens_milli = (uint32_t)tokens;
	rte_spinlock_unlock(&s->lock);
	return ok;
}

bool
dp_svc_admit(struct dp_service *svc, const struct dp_svc_limits *l, const struct dp_real_set *set,
	unsigned worker, uint32_t caddr, uint64_t now_tsc, enum dp_drop *drop)
{
	enum dp_svc_drop why;

	if (l->n_deny != 0 && dp_prefix_match(l->n_deny, l->deny, caddr)) {
		why = DP_SVC_DROP_denied;
		*drop = DP_DROP_svc_denied;
	} else if (l->n_allow != 0 && !dp_prefix_match(l->n_allow, l->allow, caddr)) {
		why = DP_SVC_DROP_not_allowed;
		*drop = DP_DROP_svc_not_allowed;
	} else if (l->max_conns != 0 && dp_service_active(set) >= l->max_conns) {
		why = DP_SVC_DROP_max_conns;
		*drop = DP_DROP_svc_max_conns;
	} else if (l->conn_rate != 0 && !dp_rate_take(l, caddr, now_tsc)) {
		why = DP_SVC_DROP_rate_limited;
		*drop = DP_DROP_svc_rate_limited;
	} else {
		return true;
	}
	svc->stats[worker].drops[why]++;
	return false;
}
