/*
 * dp_ctl_route.c: routes. The LPM (plus a default slot, which rte_lpm
 * lacks) maps a prefix to a next-hop index; next hops are shared and
 * counted. A control-only registry remembers who owns each prefix: the
 * user, and/or the port addresses of that subnet. Thread and errno rules:
 * dp_ctl_internal.h.
 */
#include <errno.h>
#include <stdatomic.h>

#include <rte_lpm.h>

#include "dp_ctl_internal.h"

/* ------------------------------------------------------------------- routes */

/* Control-only registry of installed prefixes and who owns them: a route
 * the user created, and/or the connected route of port addresses (counted,
 * so two addresses in one subnet share it). The LPM holds the user's next
 * hop while one exists, else the connected one. */
struct dp_route_reg {
	uint32_t prefix;
	uint8_t plen;
	bool user;
	uint16_t conn_refs; /* port addresses whose subnet this is */
	uint16_t conn_pidx; /* port of the first such address */
	uint32_t nh;	    /* next-hop index currently in the LPM */
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

/*
 * A conn's side keeps the low 16 bits of the generation its route_pidx is
 * from, 0 meaning "not computed" (dp_side_route): never publish one whose
 * low 16 bits are 0. Only this (control) thread writes route_gen.
 */
static void
dp_route_gen_bump(void)
{
	uint32_t g = atomic_load(&dpt.route_gen) + 1;

	if ((uint16_t)g == 0)
		g++;
	atomic_store(&dpt.route_gen, g);
}

static int
dp_lpm_install(
	uint32_t prefix, uint8_t plen, uint16_t pidx, uint32_t gw, uint32_t *nh_out, char *err, size_t errlen)
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
	dp_route_gen_bump();
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
	dp_route_gen_bump();
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
	struct dp_route_reg *r = dp_route_reg_find(prefix, plen);
	if (r != NULL && r->user) {
		dp_set_err(err, errlen, "a static route for this prefix exists");
		return -EEXIST;
	}
	if (r != NULL) {
		/* The connected route of port addresses: the static route takes
		 * its place in the LPM (as when it was created first) and
		 * dp_route_del_locked puts the connected one back. Either order
		 * of creation ends in the same state. */
		uint32_t old = r->nh, nh;
		ret = dp_lpm_install(prefix, plen, pidx, gw, &nh, err, errlen);
		if (ret < 0)
			return ret;
		dp_grace_period();
		dpt.nexthops[old].refs--;
		r->nh = nh;
		r->user = true;
		return 0;
	}
	if (nb_route_reg >= DP_MAX_ROUTES) {
		dp_set_err(err, errlen, "route table full");
		return -ENOSPC;
	}
	uint32_t nh;
	ret = dp_lpm_install(prefix, plen, pidx, gw, &nh, err, errlen);
	if (ret < 0)
		return ret;
	route_reg[nb_route_reg++] =
		(struct dp_route_reg){ .prefix = prefix, .plen = plen, .user = true, .nh = nh };
	return 0;
}

static int
dp_route_del_locked(uint32_t prefix, uint8_t plen, char *err, size_t errlen)
{
	struct dp_route_reg *r = dp_route_reg_find(prefix, plen);

	if (r == NULL || !r->user) {
		dp_set_err(err, errlen,
			r == NULL ? "no such route" : "this is a port address's connected route");
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
int
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
		.prefix = net,
		.plen = plen,
		.conn_refs = 1,
		.conn_pidx = pidx,
		.nh = nh,
	};
	return 0;
}

void
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

void
dp_route_reset(void)
{
	nb_route_reg = 0;
}
