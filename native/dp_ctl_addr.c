/*
 * dp_ctl_addr.c: local addresses. One hash maps an address to the kinds it
 * has (port address, VIP, LIP) and the port it lives on; a port address also
 * brings its subnet's connected route (dp_ctl_route.c). Thread and errno
 * rules: dp_ctl_internal.h.
 */
#include <errno.h>
#include <stdatomic.h>

#include "dp_ctl_internal.h"


/* After every change of the address table, never before it: workers file a
 * lookup under the generation they read before it (dp_addr_lookup_cached).
 * 0 is skipped (a zeroed cache slot's). */
static void
dp_addr_gen_bump(void)
{
	if (atomic_fetch_add(&dpt.addr_gen, 1) + 1 == 0)
		atomic_fetch_add(&dpt.addr_gen, 1);
}

/* Add kinds to a local address (creating it), keeping the port of the
 * first kind that set one. Caller holds ctl_lock. */
int
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
	dp_addr_gen_bump();
	return ret < 0 ? ret : 0;
}

int
dp_addr_clear_kind(uint32_t addr, unsigned kind)
{
	uint64_t cur;

	if (dp_addr_lookup(addr, &cur) < 0 || !(dp_addr_kinds(cur) & kind))
		return -ENOENT;
	unsigned kinds = dp_addr_kinds(cur) & ~kind;
	struct dp_addr_key k = dp_addr_key(addr);
	int ret = kinds == 0 ? (rte_hash_del_key(dpt.addrs, &k) < 0 ? -ENOENT : 0)
			     : rte_hash_add_key_data(dpt.addrs, &k,
				       (void *)(uintptr_t)dp_addr_pack(kinds, dp_addr_port(cur)));
	dp_addr_gen_bump();
	return ret < 0 ? ret : 0;
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
