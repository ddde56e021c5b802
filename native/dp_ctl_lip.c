/*
 * dp_ctl_lip.c: local addresses for the server side of FNAT (LIPs). Each
 * LIP holds, per worker and protocol, a ring of its free source ports, and
 * per protocol the array of its conns by local port (how a packet from a
 * real finds its conn, dp_conn.c); the set of LIPs, with its address index,
 * is replaced whole (RCU). A LIP is removed only when no conn uses it, so
 * its arrays are empty when freed. Thread and errno rules:
 * dp_ctl_internal.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <rte_malloc.h>
#include <rte_random.h>
#include <rte_ring.h>

#include "dp_ctl_internal.h"

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
	/*
	 * The server-side index of the conns on this LIP (dp_tables.h), 4 bytes a
	 * slot: 768 KiB per LIP. Written here rather than zeroed by rte_zmalloc,
	 * which skips memory fresh from the OS: every page is faulted in now, so
	 * the first conn on a page does not take a page fault on the packet path
	 * (and the memory bench counts what a LIP costs).
	 */
	size_t conns_bytes = sizeof(*lip->conns) * DP_PROTO_MAX * DP_LIP_CONN_SLOTS;
	lip->conns = rte_malloc_socket(
		"retrace_lip_conns", conns_bytes, RTE_CACHE_LINE_SIZE, (int)rte_socket_id());
	if (lip->conns == NULL) {
		ret = -ENOMEM;
		goto nomem;
	}
	memset(lip->conns, 0, conns_bytes);
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
			snprintf(name, sizeof(name), "lp%x_%u_%d_%d", rte_be_to_cpu_32(addr), w, proto,
				getpid() % 1000);
			struct rte_ring *r =
				rte_ring_create_elem(name, sizeof(uint32_t), rte_align32pow2(cnt + 1),
					(int)rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
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
				uint32_t first =
					DP_LPORT_MIN +
					(w + dp.nb_workers - DP_LPORT_MIN % dp.nb_workers) % dp.nb_workers;
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
	dp_lip_set_index(nset);
	atomic_store(&dpt.lips, nset);
	dp_grace_period();
	rte_free(old);
	goto out;
nomem:
	dp_set_err(err, errlen, "out of memory for the LIP's port pools");
fail:
	dp_lip_free(lip);
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
	dp_lip_set_index(nset);
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
	/* No conn uses it and no worker still holds the old set: its conn
	 * slots are all empty and unreachable. */
	rte_free(old);
	dp_lip_free(lip);
out:
	pthread_mutex_unlock(&ctl_lock);
	return ret;
}
