/*
 * dp_ctl_service.c: virtual services and their reals. A service's reals and
 * scheduler tables form one immutable set, replaced whole (RCU) on every
 * change; a real kept across changes keeps its object and counters. Thread
 * and errno rules: dp_ctl_internal.h.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>

#include <rte_hash.h>
#include <rte_malloc.h>

#include "dp_ctl_internal.h"
#include "dp_sched.h"

static void dp_svc_limits_free(struct dp_svc_limits *l);

/* Sum of the workers' counts. Control side; a count may be a conn stale. */
static uint64_t
dp_service_conns_total(const struct dp_service *svc)
{
	uint64_t sum = 0;

	for (unsigned w = 0; w < dp.nb_workers; w++)
		sum += svc->stats[w].conns_total;
	return sum;
}

static int
dp_sched_kind(int arg)
{
	switch (arg) {
	case DP_SCHED_ARG_RR: return DP_SCHED_RR;
	case DP_SCHED_ARG_WRR: return DP_SCHED_WRR;
	case DP_SCHED_ARG_WLC: return DP_SCHED_WLC;
	case DP_SCHED_ARG_MAGLEV: return DP_SCHED_MAGLEV;
	default: return -1;
	}
}

static int
dp_service_key_make(
	uint8_t proto, uint32_t vaddr, uint16_t vport, struct dp_service_key *k, char *err, size_t errlen)
{
	memset(k, 0, sizeof(*k));
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP) {
		dp_set_err(err, errlen, "protocol %u is not TCP, UDP or ICMP", proto);
		return -EINVAL;
	}
	if ((proto == IPPROTO_ICMP) != (vport == 0)) {
		dp_set_err(err, errlen,
			proto == IPPROTO_ICMP ? "ICMP services have no port" : "port must be 1..65535");
		return -EINVAL;
	}
	k->vaddr = vaddr;
	k->vport = vport;
	k->proto = proto;
	return 0;
}

static struct dp_service *
dp_service_find(const struct dp_service_key *k)
{
	void *d;
	return rte_hash_lookup_data(dpt.services, k, &d) >= 0 ? d : NULL;
}

static int
dp_real_cmp(const void *a, const void *b)
{
	const struct dp_real *x = *(struct dp_real *const *)a, *y = *(struct dp_real *const *)b;
	uint32_t xa = rte_be_to_cpu_32(x->addr), ya = rte_be_to_cpu_32(y->addr);
	if (xa != ya)
		return xa < ya ? -1 : 1;
	uint16_t xp = rte_be_to_cpu_16(x->port), yp = rte_be_to_cpu_16(y->port);
	return xp < yp ? -1 : xp > yp;
}

/* Build a new set from conf, reusing real objects (and so their counters)
 * of the old set where addr:port match. */
static int
dp_real_set_make(const struct dp_service *svc, const struct dp_real_set *old, const struct dp_real_conf *conf,
	unsigned n, struct dp_real_set **out)
{
	struct dp_real_set *s = rte_zmalloc("retrace_rset", sizeof(*s), 0);
	if (s == NULL)
		return -ENOMEM;
	s->reals = rte_zmalloc("retrace_rset_r", sizeof(struct dp_real *) * RTE_MAX(n, 1u), 0);
	if (s->reals == NULL) {
		rte_free(s);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++) {
		struct dp_real *r = NULL;
		for (uint32_t k = 0; old != NULL && k < old->n; k++) {
			if (old->reals[k]->addr == conf[i].addr && old->reals[k]->port == conf[i].port) {
				r = old->reals[k];
				break;
			}
		}
		if (r != NULL) {
			/* Same real: keep the object (its counters and its conns'
			 * references); a weight change applies in place. */
			atomic_fetch_add(&r->refs, 1);
			atomic_store(&r->weight, conf[i].weight);
		} else {
			r = rte_zmalloc("retrace_real", sizeof(*r) + sizeof(r->stats[0]) * dp.nb_workers,
				RTE_CACHE_LINE_SIZE);
			if (r == NULL) {
				s->n = i;
				dp_real_set_free(s);
				return -ENOMEM;
			}
			r->addr = conf[i].addr;
			r->port = conf[i].port;
			atomic_store(&r->weight, conf[i].weight);
			atomic_store(&r->refs, 1);
		}
		s->reals[i] = r;
	}
	s->n = n;
	qsort(s->reals, s->n, sizeof(s->reals[0]), dp_real_cmp);
	int ret = dp_sched_build(s, svc->sched, svc->seed);
	if (ret < 0) {
		dp_real_set_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

int
dp_ctl_service_add(
	uint8_t proto, uint32_t vaddr, uint16_t vport, int sched, uint32_t seed, char *err, size_t errlen)
{
	struct dp_service_key k;
	struct dp_service *svc = NULL;
	int ret = dp_service_key_make(proto, vaddr, vport, &k, err, errlen);
	int kind = dp_sched_kind(sched);

	if (ret < 0)
		return ret;
	if (kind < 0) {
		dp_set_err(err, errlen, "unknown scheduler %d", sched);
		return -EINVAL;
	}
	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	if (dp_service_find(&k) != NULL) {
		dp_set_err(err, errlen, "service exists");
		ret = -EEXIST;
		goto out;
	}
	svc = rte_zmalloc(
		"retrace_svc", sizeof(*svc) + sizeof(svc->stats[0]) * dp.nb_workers, RTE_CACHE_LINE_SIZE);
	if (svc == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	svc->key = k;
	svc->sched = (enum dp_sched_kind)kind;
	svc->seed = seed;
	struct dp_real_set *empty;
	ret = dp_real_set_make(svc, NULL, NULL, 0, &empty);
	if (ret < 0)
		goto out;
	atomic_store(&svc->set, empty);
	ret = dp_addr_set_kind(vaddr, DP_ADDR_VIP, 0);
	if (ret < 0)
		goto out;
	ret = rte_hash_add_key_data(dpt.services, &k, svc);
	if (ret < 0) {
		dp_set_err(err, errlen, "service table full");
		ret = -ENOSPC;
		goto out;
	}
	svc = NULL; /* published */
	ret = 0;
out:
	if (svc != NULL) {
		dp_real_set_free(atomic_load(&svc->set));
		rte_free(svc);
	}
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

/* Is vaddr still a VIP of some service? Caller holds ctl_lock. */
static bool
dp_vip_in_use(uint32_t vaddr)
{
	const void *key;
	void *data;
	uint32_t it = 0;

	while (rte_hash_iterate(dpt.services, &key, &data, &it) >= 0)
		if (((const struct dp_service_key *)key)->vaddr == vaddr)
			return true;
	return false;
}

int
dp_ctl_service_del(uint8_t proto, uint32_t vaddr, uint16_t vport, char *err, size_t errlen)
{
	struct dp_service_key k;
	int ret = dp_service_key_make(proto, vaddr, vport, &k, err, errlen);

	if (ret < 0)
		return ret;
	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	struct dp_service *svc = dp_service_find(&k);
	if (svc == NULL) {
		dp_set_err(err, errlen, "no such service");
		ret = -ENOENT;
		goto out;
	}
	rte_hash_del_key(dpt.services, &k); /* waits for a grace period */
	if (!dp_vip_in_use(vaddr))
		dp_addr_clear_kind(vaddr, DP_ADDR_VIP);
	/* Conns hold references to reals, not to the service. */
	dp_real_set_free(atomic_load(&svc->set));
	dp_svc_limits_free(atomic_load(&svc->limits));
	rte_free(svc);
out:
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

static int
dp_service_replace_set(struct dp_service *svc, const struct dp_real_conf *conf, unsigned n)
{
	struct dp_real_set *old = atomic_load(&svc->set), *nset;
	int ret = dp_real_set_make(svc, old, conf, n, &nset);

	if (ret < 0)
		return ret;
	atomic_store(&svc->set, nset);
	dp_grace_period();
	dp_real_set_free(old);
	return 0;
}

int
dp_ctl_service_set_sched(
	uint8_t proto, uint32_t vaddr, uint16_t vport, int sched, uint32_t seed, char *err, size_t errlen)
{
	struct dp_service_key k;
	int ret = dp_service_key_make(proto, vaddr, vport, &k, err, errlen);
	int kind = dp_sched_kind(sched);

	if (ret < 0)
		return ret;
	if (kind < 0) {
		dp_set_err(err, errlen, "unknown scheduler %d", sched);
		return -EINVAL;
	}
	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	struct dp_service *svc = dp_service_find(&k);
	if (svc == NULL) {
		dp_set_err(err, errlen, "no such service");
		ret = -ENOENT;
		goto out;
	}
	/* Workers read sched/seed without the lock: publish the new tables
	 * first under a set built for the new kind, then switch the kind. A
	 * pick racing the switch uses a table of the other kind for one conn,
	 * which is harmless (every table only names live reals). */
	struct dp_real_set *old = atomic_load(&svc->set);
	struct dp_real_conf *conf = calloc(RTE_MAX(old->n, 1u), sizeof(*conf));
	if (conf == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < old->n; i++)
		conf[i] = (struct dp_real_conf){ old->reals[i]->addr, old->reals[i]->port,
			old->reals[i]->weight };
	enum dp_sched_kind prev_kind = svc->sched;
	uint32_t prev_seed = svc->seed;
	svc->sched = (enum dp_sched_kind)kind;
	svc->seed = seed;
	ret = dp_service_replace_set(svc, conf, old->n);
	if (ret < 0) {
		svc->sched = prev_kind;
		svc->seed = prev_seed;
	}
	free(conf);
out:
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

int
dp_ctl_service_set_reals(uint8_t proto, uint32_t vaddr, uint16_t vport, const struct dp_real_conf *reals,
	unsigned n, char *err, size_t errlen)
{
	struct dp_service_key k;
	int ret = dp_service_key_make(proto, vaddr, vport, &k, err, errlen);

	if (ret < 0)
		return ret;
	if (n > DP_MAX_REALS) {
		dp_set_err(err, errlen, "at most %d reals per service", DP_MAX_REALS);
		return -E2BIG;
	}
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = 0; j < i; j++)
			if (reals[i].addr == reals[j].addr && reals[i].port == reals[j].port) {
				dp_set_err(err, errlen, "reals[%u] repeats reals[%u]", i, j);
				return -EINVAL;
			}
	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	struct dp_service *svc = dp_service_find(&k);
	if (svc == NULL) {
		dp_set_err(err, errlen, "no such service");
		ret = -ENOENT;
	} else {
		ret = dp_service_replace_set(svc, reals, n);
		if (ret < 0)
			dp_set_err(err, errlen, "out of memory building the real set");
	}
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

int
dp_ctl_service_set_real_down(uint8_t proto, uint32_t vaddr, uint16_t vport, uint32_t raddr, uint16_t rport,
	bool down, char *err, size_t errlen)
{
	struct dp_service_key k;
	int ret = dp_service_key_make(proto, vaddr, vport, &k, err, errlen);

	if (ret < 0)
		return ret;
	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	struct dp_service *svc = dp_service_find(&k);
	struct dp_real_set *old = svc == NULL ? NULL : atomic_load(&svc->set);
	struct dp_real *r = NULL;
	for (uint32_t i = 0; old != NULL && i < old->n; i++)
		if (old->reals[i]->addr == raddr && old->reals[i]->port == rport)
			r = old->reals[i];
	if (svc == NULL || r == NULL) {
		dp_set_err(err, errlen, svc == NULL ? "no such service" : "no such real");
		ret = -ENOENT;
		goto out;
	}
	if (atomic_load(&r->down) == down)
		goto out;
	/* rr and wlc see the flag at their next pick; wrr and maglev tables
	 * are rebuilt from the same reals (objects kept) without it. On
	 * failure the flag goes back, so tables and flag agree. */
	atomic_store(&r->down, down);
	struct dp_real_conf *conf = calloc(RTE_MAX(old->n, 1u), sizeof(*conf));
	if (conf == NULL) {
		atomic_store(&r->down, !down);
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < old->n; i++)
		conf[i] = (struct dp_real_conf){ old->reals[i]->addr, old->reals[i]->port,
			old->reals[i]->weight };
	ret = dp_service_replace_set(svc, conf, old->n);
	if (ret < 0) {
		atomic_store(&r->down, !down);
		dp_set_err(err, errlen, "out of memory building the real set");
	}
	free(conf);
out:
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

/*
 * The read getters' prologue: the service, found under ctl_lock. Returns 0
 * with the lock held (the caller unlocks) and *svc set, or a negative errno
 * without the lock.
 */
static int
svc_read_begin(uint8_t proto, uint32_t vaddr, uint16_t vport, struct dp_service **svc)
{
	struct dp_service_key k;
	int ret = dp_service_key_make(proto, vaddr, vport, &k, NULL, 0);

	if (ret < 0)
		return ret;
	if (dp_get_state() != DP_STATE_RUNNING)
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	*svc = dp_service_find(&k);
	if (*svc == NULL) {
		pthread_mutex_unlock(&ctl_lock);
		return -ENOENT;
	}
	return 0;
}

int
dp_ctl_service_reals(uint8_t proto, uint32_t vaddr, uint16_t vport, struct dp_real_info *out, unsigned max,
	uint64_t *conns_total)
{
	struct dp_service *svc;
	int ret = svc_read_begin(proto, vaddr, vport, &svc);

	if (ret < 0)
		return ret;
	struct dp_real_set *s = atomic_load(&svc->set);
	for (uint32_t i = 0; i < s->n && i < max; i++) {
		struct dp_real *r = s->reals[i];
		out[i] = (struct dp_real_info){
			.addr = r->addr,
			.port = r->port,
			.weight = r->weight,
			.active = (int64_t)atomic_load(&r->active),
			.conns_total = atomic_load(&r->conns_total),
			.down = atomic_load(&r->down),
		};
		for (unsigned w = 0; w < dp.nb_workers; w++)
			for (int k = 0; k < DP_REAL_MAX; k++)
				out[i].ctr[k] += r->stats[w].ctr[k];
	}
	*conns_total = dp_service_conns_total(svc);
	pthread_mutex_unlock(&ctl_lock);
	return (int)s->n;
}

int
dp_ctl_services_conns_total(uint64_t *total)
{
	const void *key;
	void *data;
	uint32_t it = 0;
	uint64_t sum = 0;

	if (dp_get_state() != DP_STATE_RUNNING)
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	while (rte_hash_iterate(dpt.services, &key, &data, &it) >= 0)
		sum += dp_service_conns_total(data);
	pthread_mutex_unlock(&ctl_lock);
	*total = sum;
	return 0;
}

static void
dp_svc_limits_free(struct dp_svc_limits *l)
{
	if (l != NULL)
		rte_free(l->slots);
	rte_free(l);
}

static int
dp_prefixes_copy(const char *list, const struct dp_prefix *in, unsigned n, uint32_t *n_out,
	struct dp_svc_prefix *out, char *err, size_t errlen)
{
	if (n > DP_MAX_SVC_PREFIXES) {
		dp_set_err(err, errlen, "%s: at most %d prefixes", list, DP_MAX_SVC_PREFIXES);
		return -E2BIG;
	}
	for (unsigned i = 0; i < n; i++) {
		if (in[i].plen > 32) {
			dp_set_err(err, errlen, "%s[%u]: prefix length %u > 32", list, i, in[i].plen);
			return -EINVAL;
		}
		uint32_t mask = in[i].plen == 0 ? 0 : rte_cpu_to_be_32(~0u << (32 - in[i].plen));
		if ((in[i].addr & ~mask) != 0) {
			dp_set_err(err, errlen, "%s[%u]: host bits set", list, i);
			return -EINVAL;
		}
		out[i].addr = in[i].addr;
		out[i].mask = mask;
	}
	*n_out = n;
	return 0;
}

int
dp_ctl_service_set_limits(uint8_t proto, uint32_t vaddr, uint16_t vport,
	const struct dp_svc_limits_conf *conf, char *err, size_t errlen)
{
	struct dp_service_key k;
	struct dp_svc_limits *l = NULL;
	int ret = dp_service_key_make(proto, vaddr, vport, &k, err, errlen);

	if (ret < 0)
		return ret;
	if (conf->conn_rate != 0 && conf->conn_burst == 0) {
		dp_set_err(err, errlen, "conn_rate needs a conn_burst of at least 1");
		return -EINVAL;
	}
	if (conf->max_conns != 0 || conf->n_allow != 0 || conf->n_deny != 0 || conf->conn_rate != 0) {
		l = rte_zmalloc("retrace_svc_limits", sizeof(*l), RTE_CACHE_LINE_SIZE);
		if (l == NULL)
			return -ENOMEM;
		l->max_conns = conf->max_conns;
		if (conf->conn_rate != 0) {
			/* Bounded so tokens in thousandths fit 32 bits. */
			l->conn_rate = RTE_MIN(conf->conn_rate, 1000000u);
			l->conn_burst = RTE_MIN(conf->conn_burst, 1000000u);
			l->slots = rte_zmalloc("retrace_svc_rate",
				sizeof(struct dp_rate_slot) * DP_SVC_RATE_SLOTS, RTE_CACHE_LINE_SIZE);
			if (l->slots == NULL) {
				rte_free(l);
				return -ENOMEM;
			}
			for (unsigned i = 0; i < DP_SVC_RATE_SLOTS; i++)
				rte_spinlock_init(&l->slots[i].lock);
		}
		ret = dp_prefixes_copy(
			"allow", conf->allow, conf->n_allow, &l->n_allow, l->allow, err, errlen);
		if (ret == 0)
			ret = dp_prefixes_copy(
				"deny", conf->deny, conf->n_deny, &l->n_deny, l->deny, err, errlen);
		if (ret < 0) {
			dp_svc_limits_free(l);
			return ret;
		}
	}
	if (!dp_running(err, errlen)) {
		dp_svc_limits_free(l);
		return -EBUSY;
	}
	pthread_mutex_lock(&ctl_lock);
	struct dp_service *svc = dp_service_find(&k);
	if (svc == NULL) {
		dp_set_err(err, errlen, "no such service");
		dp_svc_limits_free(l);
		ret = -ENOENT;
	} else {
		struct dp_svc_limits *old = atomic_exchange(&svc->limits, l);
		if (old != NULL) {
			dp_grace_period();
			dp_svc_limits_free(old);
		}
	}
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

int
dp_ctl_service_drops(
	uint8_t proto, uint32_t vaddr, uint16_t vport, uint64_t out[DP_SVC_DROP_MAX], uint64_t *active)
{
	struct dp_service *svc;
	int ret = svc_read_begin(proto, vaddr, vport, &svc);

	if (ret < 0)
		return ret;
	for (int i = 0; i < DP_SVC_DROP_MAX; i++) {
		out[i] = 0;
		for (unsigned w = 0; w < dp.nb_workers; w++)
			out[i] += svc->stats[w].drops[i];
	}
	*active = dp_service_active(atomic_load(&svc->set));
	pthread_mutex_unlock(&ctl_lock);
	return 0;
}

int
dp_ctl_service_set_syn_proxy(
	uint8_t proto, uint32_t vaddr, uint16_t vport, int mode, uint32_t threshold, char *err, size_t errlen)
{
	struct dp_service_key k;
	int ret = dp_service_key_make(proto, vaddr, vport, &k, err, errlen);

	if (ret < 0)
		return ret;
	if (mode != DP_SYN_PROXY_ARG_OFF && proto != IPPROTO_TCP) {
		dp_set_err(err, errlen, "a SYN proxy needs a TCP service");
		return -EINVAL;
	}
	if (mode < DP_SYN_PROXY_ARG_OFF || mode > DP_SYN_PROXY_ARG_AUTO) {
		dp_set_err(err, errlen, "unknown syn_proxy mode %d", mode);
		return -EINVAL;
	}
	if ((mode == DP_SYN_PROXY_ARG_AUTO) != (threshold > 0)) {
		dp_set_err(err, errlen, "a threshold goes with auto mode only, and auto needs one");
		return -EINVAL;
	}
	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	struct dp_service *svc = dp_service_find(&k);
	if (svc == NULL) {
		dp_set_err(err, errlen, "no such service");
		ret = -ENOENT;
	} else {
		/* Two independent words: a worker seeing the new mode with the old
		 * threshold for one packet is harmless. */
		atomic_store(&svc->syn_proxy_threshold, threshold);
		atomic_store(&svc->syn_proxy, (uint8_t)mode);
	}
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

int
dp_ctl_service_syn_proxy(uint8_t proto, uint32_t vaddr, uint16_t vport, int *mode, uint32_t *threshold,
	uint64_t out[DP_SVC_SYN_MAX])
{
	struct dp_service *svc;
	int ret = svc_read_begin(proto, vaddr, vport, &svc);

	if (ret < 0)
		return ret;
	*mode = atomic_load(&svc->syn_proxy);
	*threshold = atomic_load(&svc->syn_proxy_threshold);
	for (int i = 0; i < DP_SVC_SYN_MAX; i++) {
		out[i] = 0;
		for (unsigned w = 0; w < dp.nb_workers; w++)
			out[i] += svc->stats[w].syn[i];
	}
	pthread_mutex_unlock(&ctl_lock);
	return 0;
}

uint64_t
dp_ctl_half_open(void)
{
	uint64_t n = 0;

	if (dp_get_state() != DP_STATE_RUNNING)
		return 0;
	/* Plain 32-bit words written by their workers: a stale value, never a
	 * torn one. */
	for (unsigned i = 0; i < dp.nb_workers; i++)
		n += *(volatile uint32_t *)&dp.workers[i]->nb_half_open;
	return n;
}

int
dp_ctl_service_set_caddr(uint8_t proto, uint32_t vaddr, uint16_t vport, int mode, char *err, size_t errlen)
{
	struct dp_service_key k;
	int ret = dp_service_key_make(proto, vaddr, vport, &k, err, errlen);

	if (ret < 0)
		return ret;
	switch (mode) {
	case DP_CADDR_NONE: break;
	case DP_CADDR_PROXY_V2:
		if (proto == IPPROTO_ICMP) {
			dp_set_err(err, errlen, "PROXY protocol v2 is for TCP and UDP services");
			return -EINVAL;
		}
		break;
	case DP_CADDR_PROXY_V1:
	case DP_CADDR_TOA:
		if (proto != IPPROTO_TCP) {
			dp_set_err(err, errlen, "%s is for TCP services only",
				mode == DP_CADDR_TOA ? "TOA" : "PROXY protocol v1");
			return -EINVAL;
		}
		break;
	default: dp_set_err(err, errlen, "unknown client-address mode %d", mode); return -EINVAL;
	}
	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	struct dp_service *svc = dp_service_find(&k);
	if (svc == NULL) {
		dp_set_err(err, errlen, "no such service");
		ret = -ENOENT;
	} else {
		/* Read once per new conn; conns keep the mode they started with. */
		atomic_store(&svc->ca_mode, (uint8_t)mode);
	}
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

int
dp_ctl_service_get_caddr(uint8_t proto, uint32_t vaddr, uint16_t vport)
{
	struct dp_service *svc;
	int ret = svc_read_begin(proto, vaddr, vport, &svc);

	if (ret < 0)
		return ret;
	ret = atomic_load(&svc->ca_mode);
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}
