/*
 * dp_ctl_internal.h: what the control-side table files share
 * (dp_ctl.c, dp_ctl_addr.c, dp_ctl_route.c, dp_ctl_neigh.c, dp_ctl_lip.c,
 * dp_ctl_service.c). Not included by workers or the binding.
 *
 * Threads. One writer at a time: every dp_ctl_* mutation and the
 * housekeeping thread take ctl_lock for their whole duration; workers never
 * take it and read the tables lock-free (dp_tables.h).
 *
 * Publication (RCU, QSBR). A mutation builds the new object completely,
 * publishes it with one atomic store (or one rte_hash/LPM call, which is
 * safe against lock-free readers), waits for a grace period
 * (dp_grace_period), then frees what it unpublished. A function has one exit
 * (goto out), never an unlock before each return.
 *
 * Errnos. Public calls return 0 or a negative errno listed in dp_ctl.h and
 * write a reason to err: -EBUSY when the dataplane is not running (checked
 * before the lock), -ENOENT for a missing object or port, -EEXIST,
 * -ENOSPC for a full table, -ENOMEM, -EINVAL for a malformed argument.
 * The helpers below that take ctl_lock's protection say "caller holds
 * ctl_lock".
 */
#ifndef RETRACE_DP_CTL_INTERNAL_H
#define RETRACE_DP_CTL_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rte_byteorder.h>
#include <rte_rcu_qsbr.h>

#include "dp_ctl.h"
#include "dp_internal.h"
#include "dp_tables.h"

/* The writer lock of every table (dp_ctl.c). */
extern pthread_mutex_t ctl_lock;

/* Wait until no worker can still hold what was just unpublished. */
static inline void
dp_grace_period(void)
{
	rte_rcu_qsbr_synchronize(dpt.qsbr, RTE_QSBR_THRID_INVALID);
}

/* Network-order mask of a prefix length 0..32. */
static inline uint32_t
dp_mask(uint8_t plen)
{
	return plen == 0 ? 0 : rte_cpu_to_be_32(~UINT32_C(0) << (32 - plen));
}

/* dp_ctl.c: false (with a reason in err) unless the state is RUNNING. */
bool dp_running(char *err, size_t errlen);
/* dp_ctl.c: false (with a reason in err) unless pidx names a port. */
bool dp_valid_port(uint16_t pidx, char *err, size_t errlen);

/* dp_ctl_addr.c: add kind to a local address (creating it), keeping the
 * port of the first kind that set one; clear kind (removing the address
 * with its last kind, -ENOENT if it lacked kind). Caller holds ctl_lock. */
int dp_addr_set_kind(uint32_t addr, unsigned kind, uint16_t pidx);
int dp_addr_clear_kind(uint32_t addr, unsigned kind);

/* dp_ctl_route.c: the connected route of a port address's subnet, shared
 * by every address in it (counted). -ENOSPC. Caller holds ctl_lock. */
int dp_route_connected_get(uint32_t net, uint8_t plen, uint16_t pidx, char *err, size_t errlen);
void dp_route_connected_put(uint32_t net, uint8_t plen);
/* Forget every route (start of a run: the LPM is new). */
void dp_route_reset(void);

/* dp_ctl_neigh.c: apply one sighting from a worker; expire learned entries
 * unseen for too long. Caller holds ctl_lock. */
void dp_neigh_learn(const struct dp_learn_msg *msg, uint64_t now);
void dp_neigh_age(uint64_t now, uint64_t hz);
/* Forget every last-seen time (start of a run). */
void dp_neigh_reset(void);

#endif
