/*
 * dp_ctl.c: the single writer of the shared tables, and the housekeeping
 * thread (neighbour learning from the workers' ring, neighbour ageing).
 *
 * Every mutation runs under ctl_lock and follows one pattern: build the new
 * object completely, publish it with one atomic store (or one rte_hash/LPM
 * call, which is safe against lock-free readers), wait for a grace period
 * (rte_rcu_qsbr_synchronize), then free what was unpublished. Cleanup has
 * one exit per function (goto out), never an unlock before each return.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>

#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_malloc.h>

#include "dp_conn.h"
#include "dp_ctl.h"
#include "dp_internal.h"
#include "dp_sched.h"
#include "dp_tables.h"

static pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t hk_thread;
static atomic_bool hk_run;
static bool hk_started;

/* Control-only shadow of learned neighbours' last-seen times, so ageing
 * needs no per-entry state on the worker side. Indexed by hash position. */
static uint64_t neigh_seen[DP_MAX_NEIGH];
#define DP_NEIGH_MAX_AGE_S 300

void dp_real_set_free(struct dp_real_set *s);

static inline void
dp_grace_period(void)
{
	rte_rcu_qsbr_synchronize(dpt.qsbr, RTE_QSBR_THRID_INVALID);
}

static bool
dp_running(char *err, size_t errlen)
{
	if (dp_get_state() != DP_STATE_RUNNING) {
		dp_set_err(err, errlen, "dataplane is not running");
		return false;
	}
	return true;
}

static uint32_t
dp_mask(uint8_t plen)
{
	return plen == 0 ? 0 : rte_cpu_to_be_32(~UINT32_C(0) << (32 - plen));
}

static bool
dp_valid_port(uint16_t pidx, char *err, size_t errlen)
{
	if (pidx >= dp.nb_ports) {
		dp_set_err(err, errlen, "no port with index %u", pidx);
		return false;
	}
	return true;
}

/* ---------------------------------------------------------------- addresses */

/* Add kinds to a local address (creating it), keeping the port of the
 * first kind that set one. Caller holds ctl_lock. */
static int
dp_addr_set_kind(uint32_t addr, unsigned kind, uint16_t pidx)
{
	uint64_t cur = 0;
	unsigned kinds = 0;
	uint16_t port = pidx;

	if (dp_addr_lookup(addr, &cur) >= 0) {
		kinds = dp_addr_kinds(cur);
		if (kinds & DP_ADDR_PORT || kinds & DP_ADDR_LIP)
			port = dp_addr_port(cur);
	}
	struct dp_addr_key k = dp_addr_key(addr);
	int ret = rte_hash_add_key_data(dpt.addrs, &k, (void *)(uintptr_t)dp_addr_pack(kinds | kind, port));
	return ret < 0 ? ret : 0;
}

static int
dp_addr_clear_kind(uint32_t addr, unsigned kind)
{
	uint64_t cur;

	if (dp_addr_lookup(addr, &cur) < 0 || !(dp_addr_kinds(cur) & kind))
		return -ENOENT;
	unsigned kinds = dp_addr_kinds(cur) & ~kind;
	struct dp_addr_key k = dp_addr_key(addr);
	if (kinds == 0)
		return rte_hash_del_key(dpt.addrs, &k) < 0 ? -ENOENT : 0;
	int ret = rte_hash_add_key_data(dpt.addrs, &k, (void *)(uintptr_t)dp_addr_pack(kinds, dp_addr_port(cur)));
	return ret < 0 ? ret : 0;
}

/* ------------------------------------------------------------------- routes */

/* Control-only registry of installed prefixes and who owns them: a route
 * the user created, and/or the connected route of port addresses (counted,
 * so two addresses in one subnet share it). The LPM holds the user's next
 * hop while one exists, else the connected one. */
struct dp_route_reg {
	uint32_t prefix;
	uint8_t plen;
	bool user;
	uint16_t conn_refs;  /* port addresses whose subnet this is */
	uint16_t conn_pidx;  /* port of the first such address */
	uint32_t nh;         /* next-hop index currently in the LPM */
};
static struct dp_route_reg route_reg[DP_MAX_ROUTES];
static unsigned nb_route_reg;

static struct dp_route_reg *
dp_route_reg_find(uint32_t prefix, uint8_t plen)
{
	for (unsigned i = 0; i < nb_route_reg; i++)
		if (route_reg[i].prefix == prefix && route_reg[i].plen == plen)
			return &route_reg[i];
	return NULL;
}

static void
dp_route_reg_remove(struct dp_route_reg *r)
{
	*r = route_reg[--nb_route_reg];
}

static int
dp_nexthop_get(uint16_t pidx, uint32_t gw, uint32_t *idx)
{
	int free_slot = -1;

	for (uint32_t i = 0; i < DP_MAX_NEXTHOPS; i++) {
		struct dp_nexthop *nh = &dpt.nexthops[i];
		if (nh->refs > 0 && nh->pidx == pidx && nh->gw == gw) {
			nh->refs++;
			*idx = i;
			return 0;
		}
		if (nh->refs == 0 && free_slot < 0)
			free_slot = (int)i;
	}
	if (free_slot < 0)
		return -ENOSPC;
	/* Written before the LPM points at it; LPM stores are release. */
	dpt.nexthops[free_slot] = (struct dp_nexthop){ .gw = gw, .pidx = pidx, .refs = 1 };
	*idx = (uint32_t)free_slot;
	return 0;
}

/* Install prefix -> (pidx, gw) in the LPM (or the default slot), replacing
 * what is there. Caller holds ctl_lock. */
static int
dp_lpm_install(uint32_t prefix, uint8_t plen, uint16_t pidx, uint32_t gw, uint32_t *nh_out,
	       char *err, size_t errlen)
{
	uint32_t nh;
	int ret = dp_nexthop_get(pidx, gw, &nh);

	if (ret < 0) {
		dp_set_err(err, errlen, "next-hop table full");
		return ret;
	}
	if (plen == 0) {
		atomic_store(&dpt.default_nh, (int32_t)nh);
	} else if (rte_lpm_add(dpt.lpm, rte_be_to_cpu_32(prefix), plen, nh) < 0) {
		dpt.nexthops[nh].refs--;
		dp_set_err(err, errlen, "route table full");
		return -ENOSPC;
	}
	atomic_fetch_add(&dpt.route_gen, 1);
	*nh_out = nh;
	return 0;
}

/* Remove prefix from the LPM and release its next hop after a grace
 * period (a worker may still hold the index it just looked up). */
static void
dp_lpm_remove(uint32_t prefix, uint8_t plen, uint32_t nh)
{
	if (plen == 0)
		atomic_store(&dpt.default_nh, -1);
	else
		rte_lpm_delete(dpt.lpm, rte_be_to_cpu_32(prefix), plen);
	atomic_fetch_add(&dpt.route_gen, 1);
	dp_grace_period();
	dpt.nexthops[nh].refs--;
}

static int
dp_route_check(uint32_t prefix, uint8_t plen, char *err, size_t errlen)
{
	if (plen > 32) {
		dp_set_err(err, errlen, "prefix length %u out of range", plen);
		return -EINVAL;
	}
	if ((prefix & ~dp_mask(plen)) != 0) {
		dp_set_err(err, errlen, "prefix has host bits set");
		return -EINVAL;
	}
	return 0;
}

/* A user route. Caller holds ctl_lock. */
static int
dp_route_add_locked(uint32_t prefix, uint8_t plen, uint16_t pidx, uint32_t gw, char *err, size_t errlen)
{
	int ret = dp_route_check(prefix, plen, err, errlen);

	if (ret < 0)
		return ret;
	if (!dp_valid_port(pidx, err, errlen))
		return -ENOENT;
	if (dp_route_reg_find(prefix, plen) != NULL) {
		dp_set_err(err, errlen, "a route for this prefix exists (a port address's subnet, or a route)");
		return -EEXIST;
	}
	if (nb_route_reg >= DP_MAX_ROUTES) {
		dp_set_err(err, errlen, "route table full");
		return -ENOSPC;
	}
	uint32_t nh;
	ret = dp_lpm_install(prefix, plen, pidx, gw, &nh, err, errlen);
	if (ret < 0)
		return ret;
	route_reg[nb_route_reg++] = (struct dp_route_reg){ .prefix = prefix, .plen = plen, .user = true, .nh = nh };
	return 0;
}

static int
dp_route_del_locked(uint32_t prefix, uint8_t plen, char *err, size_t errlen)
{
	struct dp_route_reg *r = dp_route_reg_find(prefix, plen);

	if (r == NULL || !r->user) {
		dp_set_err(err, errlen, r == NULL ? "no such route" : "this is a port address's connected route");
		return r == NULL ? -ENOENT : -EPERM;
	}
	if (r->conn_refs > 0) {
		/* Addresses in this subnet remain: fall back to the connected route. */
		uint32_t old = r->nh, nh;
		int ret = dp_lpm_install(prefix, plen, r->conn_pidx, 0, &nh, err, errlen);
		if (ret < 0)
			return ret;
		dp_grace_period();
		dpt.nexthops[old].refs--;
		r->nh = nh;
		r->user = false;
		return 0;
	}
	dp_lpm_remove(prefix, plen, r->nh);
	dp_route_reg_remove(r);
	return 0;
}

/* The connected route of a port address: shared, counted. */
static int
dp_route_connected_get(uint32_t net, uint8_t plen, uint16_t pidx, char *err, size_t errlen)
{
	struct dp_route_reg *r = dp_route_reg_find(net, plen);

	if (r != NULL) {
		r->conn_refs++;
		if (r->conn_refs == 1)
			r->conn_pidx = pidx;
		return 0;
	}
	if (nb_route_reg >= DP_MAX_ROUTES) {
		dp_set_err(err, errlen, "route table full");
		return -ENOSPC;
	}
	uint32_t nh;
	int ret = dp_lpm_install(net, plen, pidx, 0, &nh, err, errlen);
	if (ret < 0)
		return ret;
	route_reg[nb_route_reg++] = (struct dp_route_reg){
		.prefix = net, .plen = plen, .conn_refs = 1, .conn_pidx = pidx, .nh = nh,
	};
	return 0;
}

static void
dp_route_connected_put(uint32_t net, uint8_t plen)
{
	struct dp_route_reg *r = dp_route_reg_find(net, plen);

	if (r == NULL || r->conn_refs == 0)
		return;
	if (--r->conn_refs > 0 || r->user)
		return;
	dp_lpm_remove(net, plen, r->nh);
	dp_route_reg_remove(r);
}

int
dp_ctl_route_add(uint32_t prefix, uint8_t plen, uint16_t pidx, uint32_t gw, char *err, size_t errlen)
{
	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	int ret = dp_route_add_locked(prefix, plen, pidx, gw, err, errlen);
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

int
dp_ctl_route_del(uint32_t prefix, uint8_t plen, char *err, size_t errlen)
{
	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	int ret = dp_route_del_locked(prefix, plen, err, errlen);
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

int
dp_ctl_addr_add(uint32_t addr, uint8_t plen, uint16_t pidx, char *err, size_t errlen)
{
	uint64_t cur;
	int ret;

	if (!dp_running(err, errlen))
		return -EBUSY;
	if (plen == 0 || plen > 32) {
		dp_set_err(err, errlen, "prefix length must be 1..32");
		return -EINVAL;
	}
	if (!dp_valid_port(pidx, err, errlen))
		return -ENOENT;
	pthread_mutex_lock(&ctl_lock);
	if (dp_addr_lookup(addr, &cur) >= 0) {
		dp_set_err(err, errlen, "address is already local");
		ret = -EEXIST;
		goto out;
	}
	ret = dp_addr_set_kind(addr, DP_ADDR_PORT, pidx);
	if (ret < 0) {
		dp_set_err(err, errlen, "address table full");
		ret = -ENOSPC;
		goto out;
	}
	uint32_t none = 0;
	atomic_compare_exchange_strong(&dp.ports[pidx].addr, &none, addr);
	/* The connected route of the address's subnet, shared with other
	 * addresses in it (and overridden by a user route while one exists). */
	ret = dp_route_connected_get(addr & dp_mask(plen), plen, pidx, err, errlen);
	if (ret < 0)
		dp_addr_clear_kind(addr, DP_ADDR_PORT);
out:
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

int
dp_ctl_addr_del(uint32_t addr, uint8_t plen, char *err, size_t errlen)
{
	int ret;

	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	ret = dp_addr_clear_kind(addr, DP_ADDR_PORT);
	if (ret < 0) {
		dp_set_err(err, errlen, "not a port address");
		goto out;
	}
	for (uint16_t p = 0; p < dp.nb_ports; p++) {
		uint32_t a = addr;
		atomic_compare_exchange_strong(&dp.ports[p].addr, &a, 0);
	}
	if (plen >= 1 && plen <= 32)
		dp_route_connected_put(addr & dp_mask(plen), plen);
out:
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

/* --------------------------------------------------------------- neighbours */

int
dp_ctl_neigh_add(uint32_t addr, const uint8_t mac[6], uint16_t pidx, char *err, size_t errlen)
{
	struct rte_ether_addr m;
	int ret;

	if (!dp_running(err, errlen))
		return -EBUSY;
	if (!dp_valid_port(pidx, err, errlen))
		return -ENOENT;
	memcpy(m.addr_bytes, mac, 6);
	pthread_mutex_lock(&ctl_lock);
	ret = rte_hash_add_key_data(dpt.neigh, &addr, (void *)(uintptr_t)dp_neigh_pack(&m, (uint8_t)pidx, DP_NEIGH_STATIC));
	if (ret < 0) {
		dp_set_err(err, errlen, "neighbour table full");
		ret = -ENOSPC;
	} else {
		atomic_fetch_add(&dpt.neigh_gen, 1);
		ret = 0;
	}
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

int
dp_ctl_neigh_del(uint32_t addr, char *err, size_t errlen)
{
	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	int ret = rte_hash_del_key(dpt.neigh, &addr);
	if (ret >= 0)
		atomic_fetch_add(&dpt.neigh_gen, 1); /* voids the workers' next-hop caches */
	pthread_mutex_unlock(&ctl_lock);
	if (ret < 0) {
		dp_set_err(err, errlen, "no such neighbour");
		return -ENOENT;
	}
	return 0;
}

int
dp_ctl_neigh_list(struct dp_neigh_info *out, unsigned max)
{
	const void *key;
	void *data;
	uint32_t it = 0;
	int n = 0;
	uint64_t now = rte_get_tsc_cycles(), hz = rte_get_tsc_hz();

	if (dp_get_state() != DP_STATE_RUNNING)
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	int32_t pos;
	while ((pos = rte_hash_iterate(dpt.neigh, &key, &data, &it)) >= 0) {
		if ((unsigned)n < max) {
			uint64_t v = (uint64_t)(uintptr_t)data;
			struct rte_ether_addr mac;
			struct dp_neigh_info *ni = &out[n];

			dp_neigh_mac(v, &mac);
			ni->addr = *(const uint32_t *)key;
			memcpy(ni->mac, mac.addr_bytes, 6);
			ni->pidx = dp_neigh_port(v);
			ni->is_static = dp_neigh_flags(v) & DP_NEIGH_STATIC;
			ni->age_s = ni->is_static || neigh_seen[pos] == 0 ? 0 : (uint32_t)((now - neigh_seen[pos]) / hz);
		}
		n++;
	}
	pthread_mutex_unlock(&ctl_lock);
	return n;
}

/* Apply one sighting from a worker: learn or refresh, never override a
 * static entry. Caller holds ctl_lock. */
static void
dp_neigh_learn(const struct dp_learn_msg *msg, uint64_t now)
{
	uint64_t cur;
	uint64_t v = dp_neigh_pack(&msg->mac, msg->pidx, 0);
	int pos = dp_neigh_lookup(msg->addr, &cur);

	if (pos >= 0 && (dp_neigh_flags(cur) & DP_NEIGH_STATIC))
		return;
	if (pos < 0 || cur != v) {
		pos = rte_hash_add_key_data(dpt.neigh, &msg->addr, (void *)(uintptr_t)v);
		if (pos < 0)
			return; /* full: the next sighting retries */
		pos = rte_hash_lookup(dpt.neigh, &msg->addr);
		atomic_fetch_add(&dpt.neigh_gen, 1);
	}
	if (pos >= 0 && pos < DP_MAX_NEIGH)
		neigh_seen[pos] = now;
}

static void
dp_neigh_age(uint64_t now, uint64_t hz)
{
	const void *key;
	void *data;
	uint32_t it = 0;
	int32_t pos;
	uint32_t victims[64];
	unsigned nv = 0;

	while ((pos = rte_hash_iterate(dpt.neigh, &key, &data, &it)) >= 0 && nv < RTE_DIM(victims)) {
		uint64_t v = (uint64_t)(uintptr_t)data;
		if ((dp_neigh_flags(v) & DP_NEIGH_STATIC) || pos >= DP_MAX_NEIGH)
			continue;
		if (neigh_seen[pos] != 0 && now - neigh_seen[pos] > DP_NEIGH_MAX_AGE_S * hz)
			victims[nv++] = *(const uint32_t *)key;
	}
	for (unsigned i = 0; i < nv; i++) {
		pos = rte_hash_del_key(dpt.neigh, &victims[i]);
		if (pos >= 0 && pos < DP_MAX_NEIGH)
			neigh_seen[pos] = 0;
	}
	if (nv != 0)
		atomic_fetch_add(&dpt.neigh_gen, 1);
}

/* --------------------------------------------------------------------- LIPs */

int
dp_ctl_lip_add(uint32_t addr, uint16_t pidx, char *err, size_t errlen)
{
	struct dp_lip *lip = NULL;
	struct dp_lip_set *old, *nset = NULL;
	uint64_t cur;
	int ret = 0;

	if (!dp_running(err, errlen))
		return -EBUSY;
	if (!dp_valid_port(pidx, err, errlen))
		return -ENOENT;
	pthread_mutex_lock(&ctl_lock);
	old = atomic_load(&dpt.lips);
	if (dp_addr_lookup(addr, &cur) >= 0) {
		dp_set_err(err, errlen, "address is already local");
		ret = -EEXIST;
		goto out;
	}
	if (old->n >= DP_MAX_LIPS) {
		dp_set_err(err, errlen, "at most %d local addresses", DP_MAX_LIPS);
		ret = -ENOSPC;
		goto out;
	}
	lip = rte_zmalloc("retrace_lip", sizeof(*lip), RTE_CACHE_LINE_SIZE);
	nset = rte_zmalloc("retrace_lips", sizeof(*nset), 0);
	if (lip == NULL || nset == NULL) {
		ret = -ENOMEM;
		goto nomem;
	}
	lip->addr = addr;
	lip->pidx = pidx;
	/* Port p belongs to worker p % nb_workers: a reply to LIP:p can be
	 * steered to (or checked against) the worker owning its conn. */
	for (unsigned w = 0; w < dp.nb_workers; w++) {
		uint32_t cnt = 0;
		for (uint32_t p = DP_LPORT_MIN; p <= DP_LPORT_MAX; p++)
			if (p % dp.nb_workers == w)
				cnt++;
		lip->capacity[w] = cnt;
		for (int proto = 0; proto < DP_PROTO_MAX; proto++) {
			char name[RTE_RING_NAMESIZE];
			snprintf(name, sizeof(name), "lp%x_%u_%d_%d", rte_be_to_cpu_32(addr), w, proto, getpid() % 1000);
			struct rte_ring *r = rte_ring_create_elem(name, sizeof(uint32_t), rte_align32pow2(cnt + 1),
								  (int)rte_socket_id(),
								  RING_F_SP_ENQ | RING_F_SC_DEQ);
			if (r == NULL) {
				ret = -ENOMEM;
				goto nomem;
			}
			lip->free_ports[w][proto] = r;
			/* Shuffled start so consecutive conns do not reuse the
			 * same ports in lockstep across restarts. */
			uint32_t start = (uint32_t)(rte_rand() % cnt);
			for (uint32_t k = 0; k < cnt; k++) {
				uint32_t idx = (start + k) % cnt;
				uint32_t first = DP_LPORT_MIN + (w + dp.nb_workers - DP_LPORT_MIN % dp.nb_workers) % dp.nb_workers;
				uint32_t port = first + idx * dp.nb_workers;
				uint32_t be = rte_cpu_to_be_16((uint16_t)port);
				rte_ring_enqueue_elem(r, &be, sizeof(be));
			}
		}
	}
	ret = dp_addr_set_kind(addr, DP_ADDR_LIP, pidx);
	if (ret < 0) {
		dp_set_err(err, errlen, "address table full");
		ret = -ENOSPC;
		goto fail;
	}
	*nset = *old;
	nset->lips[nset->n++] = lip;
	atomic_store(&dpt.lips, nset);
	dp_grace_period();
	rte_free(old);
	goto out;
nomem:
	dp_set_err(err, errlen, "out of memory for the LIP's port pools");
fail:
	if (lip != NULL) {
		for (unsigned w = 0; w < DP_MAX_WORKERS; w++)
			for (int p = 0; p < DP_PROTO_MAX; p++)
				rte_ring_free(lip->free_ports[w][p]);
		rte_free(lip);
	}
	rte_free(nset);
out:
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

static int
dp_lip_find(const struct dp_lip_set *s, uint32_t addr)
{
	for (uint32_t i = 0; i < s->n; i++)
		if (s->lips[i]->addr == addr)
			return (int)i;
	return -1;
}

static void
dp_lip_usage(const struct dp_lip *lip, uint64_t *in_use, uint64_t *cap)
{
	*in_use = 0;
	*cap = 0;
	for (unsigned w = 0; w < dp.nb_workers; w++)
		for (int p = 0; p < DP_PROTO_MAX; p++) {
			*cap += lip->capacity[w];
			*in_use += lip->capacity[w] - rte_ring_count(lip->free_ports[w][p]);
		}
}

int
dp_ctl_lip_in_use(uint32_t addr, uint64_t *in_use, uint64_t *capacity)
{
	int ret = -ENOENT;

	if (dp_get_state() != DP_STATE_RUNNING)
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	struct dp_lip_set *s = atomic_load(&dpt.lips);
	int i = dp_lip_find(s, addr);
	if (i >= 0) {
		dp_lip_usage(s->lips[i], in_use, capacity);
		ret = 0;
	}
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

int
dp_ctl_lip_del(uint32_t addr, char *err, size_t errlen)
{
	int ret = 0;

	if (!dp_running(err, errlen))
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	struct dp_lip_set *old = atomic_load(&dpt.lips);
	int i = dp_lip_find(old, addr);
	if (i < 0) {
		dp_set_err(err, errlen, "no such local address");
		ret = -ENOENT;
		goto out;
	}
	struct dp_lip *lip = old->lips[i];
	uint64_t used, cap;
	dp_lip_usage(lip, &used, &cap);
	if (used > 0) {
		dp_set_err(err, errlen, "%" PRIu64 " conns still use this local address", used);
		ret = -EBUSY;
		goto out;
	}
	struct dp_lip_set *nset = rte_zmalloc("retrace_lips", sizeof(*nset), 0);
	if (nset == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t k = 0; k < old->n; k++)
		if ((int)k != i)
			nset->lips[nset->n++] = old->lips[k];
	atomic_store(&dpt.lips, nset);
	dp_addr_clear_kind(addr, DP_ADDR_LIP);
	dp_grace_period();
	/* A conn created just before the switch may have taken a port; the
	 * grace period guarantees it is visible now. */
	dp_lip_usage(lip, &used, &cap);
	if (used > 0) {
		/* Put it back rather than free memory a conn refers to. */
		atomic_store(&dpt.lips, old);
		dp_addr_set_kind(addr, DP_ADDR_LIP, lip->pidx);
		dp_grace_period();
		rte_free(nset);
		dp_set_err(err, errlen, "a conn started using this local address");
		ret = -EBUSY;
		goto out;
	}
	rte_free(old);
	for (unsigned w = 0; w < DP_MAX_WORKERS; w++)
		for (int p = 0; p < DP_PROTO_MAX; p++)
			rte_ring_free(lip->free_ports[w][p]);
	rte_free(lip);
out:
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}

/* ----------------------------------------------------------------- services */

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
dp_service_key_make(uint8_t proto, uint32_t vaddr, uint16_t vport, struct dp_service_key *k,
		    char *err, size_t errlen)
{
	memset(k, 0, sizeof(*k));
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP) {
		dp_set_err(err, errlen, "protocol %u is not TCP, UDP or ICMP", proto);
		return -EINVAL;
	}
	if ((proto == IPPROTO_ICMP) != (vport == 0)) {
		dp_set_err(err, errlen, proto == IPPROTO_ICMP ? "ICMP services have no port" : "port must be 1..65535");
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
dp_real_set_make(const struct dp_service *svc, const struct dp_real_set *old,
		 const struct dp_real_conf *conf, unsigned n, struct dp_real_set **out)
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
dp_ctl_service_add(uint8_t proto, uint32_t vaddr, uint16_t vport, int sched, uint32_t seed,
		   char *err, size_t errlen)
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
	svc = rte_zmalloc("retrace_svc", sizeof(*svc), RTE_CACHE_LINE_SIZE);
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
dp_ctl_service_set_sched(uint8_t proto, uint32_t vaddr, uint16_t vport, int sched, uint32_t seed,
			 char *err, size_t errlen)
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
		conf[i] = (struct dp_real_conf){ old->reals[i]->addr, old->reals[i]->port, old->reals[i]->weight };
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
dp_ctl_service_set_reals(uint8_t proto, uint32_t vaddr, uint16_t vport,
			 const struct dp_real_conf *reals, unsigned n, char *err, size_t errlen)
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
dp_ctl_service_reals(uint8_t proto, uint32_t vaddr, uint16_t vport, struct dp_real_info *out,
		     unsigned max, uint64_t *conns_total)
{
	struct dp_service_key k;
	int ret = dp_service_key_make(proto, vaddr, vport, &k, NULL, 0);

	if (ret < 0)
		return ret;
	if (dp_get_state() != DP_STATE_RUNNING)
		return -EBUSY;
	pthread_mutex_lock(&ctl_lock);
	struct dp_service *svc = dp_service_find(&k);
	if (svc == NULL) {
		ret = -ENOENT;
	} else {
		struct dp_real_set *s = atomic_load(&svc->set);
		for (uint32_t i = 0; i < s->n && i < max; i++) {
			struct dp_real *r = s->reals[i];
			out[i] = (struct dp_real_info){
				.addr = r->addr, .port = r->port, .weight = r->weight,
				.active = (int64_t)atomic_load(&r->active),
				.conns_total = atomic_load(&r->conns_total),
			};
			for (unsigned w = 0; w < dp.nb_workers; w++)
				for (int d = 0; d < 2; d++) {
					out[i].pkts[d] += r->stats[w].pkts[d];
					out[i].bytes[d] += r->stats[w].bytes[d];
				}
		}
		*conns_total = atomic_load(&svc->conns_total);
		ret = (int)s->n;
	}
	pthread_mutex_unlock(&ctl_lock);
	return ret;
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
		sum += atomic_load(&((struct dp_service *)data)->conns_total);
	pthread_mutex_unlock(&ctl_lock);
	*total = sum;
	return 0;
}

/* ----------------------------------------------------- switches, timeouts */

static int
dp_proto_index(uint8_t proto)
{
	switch (proto) {
	case IPPROTO_TCP: return DP_PROTO_tcp;
	case IPPROTO_UDP: return DP_PROTO_udp;
	case IPPROTO_ICMP: return DP_PROTO_icmp;
	default: return -1;
	}
}

int
dp_ctl_symmetric_set(uint8_t proto, bool on)
{
	int i = dp_proto_index(proto);
	if (i < 0)
		return -EINVAL;
	atomic_store(&dpt.symmetric[i], on);
	return 0;
}

bool
dp_ctl_symmetric_get(uint8_t proto)
{
	int i = dp_proto_index(proto);
	return i >= 0 && atomic_load(&dpt.symmetric[i]);
}

int
dp_ctl_timeouts_set(const struct dp_timeouts *t, char *err, size_t errlen)
{
	const uint32_t *v = (const uint32_t *)t;
	for (size_t i = 0; i < sizeof(*t) / sizeof(uint32_t); i++) {
		if (v[i] < 1 || v[i] > 7 * 86400) {
			dp_set_err(err, errlen, "timeouts must be 1..604800 seconds");
			return -EINVAL;
		}
	}
	pthread_mutex_lock(&ctl_lock);
	/* Word-sized stores; a worker may see a mix of old and new fields for
	 * one packet, which only matters to that packet's conn's deadline. */
	volatile uint32_t *dst = (volatile uint32_t *)&dpt.timeouts;
	for (size_t i = 0; i < sizeof(*t) / sizeof(uint32_t); i++)
		dst[i] = v[i];
	pthread_mutex_unlock(&ctl_lock);
	return 0;
}

void
dp_ctl_timeouts_get(struct dp_timeouts *t)
{
	*t = dpt.timeouts;
}

uint64_t
dp_ctl_conn_count(void)
{
	uint64_t n = 0;
	for (unsigned w = 0; w < dp.nb_workers; w++)
		n += dp_conn_count(dp.workers[w]);
	return n;
}

/* ------------------------------------------------------------ housekeeping */

static void *
dp_housekeeper(void *arg)
{
	struct dp_learn_msg msgs[64];
	uint64_t hz = rte_get_tsc_hz();
	uint64_t next_age = rte_get_tsc_cycles() + hz;

	(void)arg;
	while (atomic_load(&hk_run)) {
		unsigned n = rte_ring_dequeue_burst_elem(dpt.learn, msgs, sizeof(msgs[0]), RTE_DIM(msgs), NULL);
		uint64_t now = rte_get_tsc_cycles();

		if (n > 0) {
			pthread_mutex_lock(&ctl_lock);
			for (unsigned i = 0; i < n; i++)
				dp_neigh_learn(&msgs[i], now);
			pthread_mutex_unlock(&ctl_lock);
			continue;
		}
		if (now >= next_age) {
			pthread_mutex_lock(&ctl_lock);
			dp_neigh_age(now, hz);
			pthread_mutex_unlock(&ctl_lock);
			next_age = now + hz;
		}
		/* Neighbour learning latency is bounded by this nap; packets
		 * waiting on ARP sit in the workers' hold queues meanwhile. */
		struct timespec ts = { 0, 200 * 1000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int
dp_ctl_start(char *err, size_t errlen)
{
	memset(neigh_seen, 0, sizeof(neigh_seen));
	nb_route_reg = 0;
	atomic_store(&hk_run, true);
	if (pthread_create(&hk_thread, NULL, dp_housekeeper, NULL) != 0) {
		dp_set_err(err, errlen, "cannot start the housekeeping thread");
		return -EAGAIN;
	}
	pthread_setname_np(hk_thread, "retrace-hk");
	hk_started = true;
	return 0;
}

void
dp_ctl_stop(void)
{
	if (!hk_started)
		return;
	atomic_store(&hk_run, false);
	pthread_join(hk_thread, NULL);
	hk_started = false;
}
