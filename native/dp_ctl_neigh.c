/*
 * dp_ctl_neigh.c: neighbours. Static entries come from the control plane;
 * learned ones from the workers' sightings, applied and aged by the
 * housekeeping thread (dp_ctl.c). A hash value packs MAC, port and flags in
 * one word (dp_tables.h), so it needs no RCU. Thread and errno rules:
 * dp_ctl_internal.h.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_hash.h>

#include "dp_ctl_internal.h"

/* Control-only shadow of learned neighbours' last-seen times, so ageing
 * needs no per-entry state on the worker side. Indexed by hash position. */
static uint64_t neigh_seen[DP_MAX_NEIGH];
#define DP_NEIGH_MAX_AGE_S 300

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
	ret = rte_hash_add_key_data(
		dpt.neigh, &addr, (void *)(uintptr_t)dp_neigh_pack(&m, (uint8_t)pidx, DP_NEIGH_STATIC));
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
			ni->age_s = ni->is_static || neigh_seen[pos] == 0
					    ? 0
					    : (uint32_t)((now - neigh_seen[pos]) / hz);
		}
		n++;
	}
	pthread_mutex_unlock(&ctl_lock);
	return n;
}

/* Apply one sighting from a worker: learn or refresh, never override a
 * static entry. Caller holds ctl_lock. */
void
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

void
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

void
dp_neigh_reset(void)
{
	memset(neigh_seen, 0, sizeof(neigh_seen));
}
