/*
 * dp_tables.c: creation and release of the shared tables (see dp_tables.h
 * for who writes and who reads them).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_lcore.h>
#include <rte_lpm.h>
#include <rte_malloc.h>

#include "dp_internal.h"
#include "dp_synproxy.h"
#include "dp_tables.h"

struct dp_tables dpt;

static struct rte_hash *
dp_hash_create(const char *name, uint32_t entries, uint32_t key_len, char *err, size_t errlen)
{
	struct rte_hash_parameters p = {
		.name = name,
		.entries = entries,
		.key_len = key_len,
		.hash_func = rte_hash_crc, /* per packet for neighbours and addresses: cheap */
		.hash_func_init_val = 0,
		.socket_id = (int)rte_socket_id(),
		/* Lock-free readers, one writer at a time (the control mutex).
		 * The extendable bucket table makes `entries` an exact capacity:
		 * a plain cuckoo table can refuse a key before it is full, and the
		 * control plane validates documents against these limits. */
		.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF | RTE_HASH_EXTRA_FLAGS_EXT_TABLE,
	};
	struct rte_hash *h = rte_hash_create(&p);

	if (h == NULL) {
		dp_set_err(err, errlen, "cannot create hash %s: %s", name, rte_strerror(rte_errno));
		return NULL;
	}
	struct rte_hash_rcu_config rc = {
		.v = dpt.qsbr,
		/* Deletes are rare and come from the control side: wait for a
		 * grace period right there instead of keeping a defer queue. */
		.mode = RTE_HASH_QSBR_MODE_SYNC,
	};
	if (rte_hash_rcu_qsbr_add(h, &rc) != 0) {
		dp_set_err(err, errlen, "cannot attach RCU to hash %s: %s", name, rte_strerror(rte_errno));
		rte_hash_free(h);
		return NULL;
	}
	return h;
}

int
dp_tables_create(unsigned nb_workers, char *err, size_t errlen)
{
	size_t sz = rte_rcu_qsbr_get_memsize(nb_workers);
	char name[64];

	/* Address generations go on from the last dataplane's and never are 0
	 * (a zeroed cache slot's): no worker's cache can match a stale answer. */
	uint32_t addr_gen = atomic_load(&dpt.addr_gen);
	memset(&dpt, 0, sizeof(dpt));
	atomic_store(&dpt.addr_gen, addr_gen + 1 != 0 ? addr_gen + 1 : 1);
	dp_synproxy_init(); /* a new cookie secret with every dataplane */
	dpt.qsbr = rte_zmalloc("retrace_qsbr", sz, RTE_CACHE_LINE_SIZE);
	if (dpt.qsbr == NULL || rte_rcu_qsbr_init(dpt.qsbr, nb_workers) != 0) {
		dp_set_err(err, errlen, "cannot create the RCU variable");
		goto fail;
	}
	snprintf(name, sizeof(name), "rt_addrs_%d", getpid());
	dpt.addrs = dp_hash_create(name, DP_MAX_ADDRS, sizeof(struct dp_addr_key), err, errlen);
	snprintf(name, sizeof(name), "rt_neigh_%d", getpid());
	dpt.neigh = dpt.addrs ? dp_hash_create(name, DP_MAX_NEIGH, sizeof(uint32_t), err, errlen) : NULL;
	snprintf(name, sizeof(name), "rt_svc_%d", getpid());
	dpt.services =
		dpt.neigh ? dp_hash_create(name, DP_MAX_SERVICES, sizeof(struct dp_service_key), err, errlen)
			  : NULL;
	if (dpt.services == NULL)
		goto fail;

	struct rte_lpm_config lc = {
		.max_rules = DP_MAX_ROUTES,
		.number_tbl8s = DP_LPM_TBL8S,
	};
	snprintf(name, sizeof(name), "rt_lpm_%d", getpid());
	dpt.lpm = rte_lpm_create(name, (int)rte_socket_id(), &lc);
	if (dpt.lpm == NULL) {
		dp_set_err(err, errlen, "cannot create the route table: %s", rte_strerror(rte_errno));
		goto fail;
	}
	struct rte_lpm_rcu_config lrc = { .v = dpt.qsbr, .mode = RTE_LPM_QSBR_MODE_SYNC };
	if (rte_lpm_rcu_qsbr_add(dpt.lpm, &lrc) != 0) {
		dp_set_err(err, errlen, "cannot attach RCU to the route table");
		goto fail;
	}
	snprintf(name, sizeof(name), "rt_learn_%d", getpid());
	dpt.learn = rte_ring_create_elem(
		name, sizeof(struct dp_learn_msg), 1024, (int)rte_socket_id(), RING_F_SC_DEQ);
	if (dpt.learn == NULL) {
		dp_set_err(err, errlen, "cannot create the neighbour learning ring");
		goto fail;
	}
	dpt.lips = rte_zmalloc("retrace_lips", sizeof(struct dp_lip_set), 0);
	if (dpt.lips == NULL) {
		dp_set_err(err, errlen, "cannot allocate the LIP set");
		goto fail;
	}
	for (int p = 0; p < DP_PROTO_MAX; p++)
		atomic_store(&dpt.symmetric[p], true);
	atomic_store(&dpt.default_nh, -1);
	dpt.timeouts = (struct dp_timeouts){
		.tcp_syn = 30,
		.tcp_established = 900,
		.tcp_fin = 60,
		.tcp_close = 10,
		.udp = 300,
		.icmp = 60,
	};
	return 0;
fail:
	dp_tables_free();
	return -ENOMEM;
}

static void
dp_real_put(struct dp_real *r)
{
	if (atomic_fetch_sub(&r->refs, 1) == 1)
		rte_free(r);
}

void
dp_real_set_free(struct dp_real_set *s)
{
	if (s == NULL)
		return;
	for (uint32_t i = 0; i < s->n; i++)
		dp_real_put(s->reals[i]);
	rte_free(s->reals);
	rte_free(s->wrr);
	rte_free(s->maglev);
	rte_free(s);
}

void
dp_lip_set_index(struct dp_lip_set *ls)
{
	memset(ls->slot, 0, sizeof(ls->slot));
	for (uint32_t i = 0; i < ls->n; i++) {
		uint32_t h = dp_lip_hash(ls->lips[i]->addr);

		while (ls->slot[h].lip != 0)
			h = (h + 1) & (DP_LIP_SLOTS - 1);
		ls->slot[h] = (struct dp_lip_slot){ .addr = ls->lips[i]->addr, .lip = i + 1 };
	}
}

void
dp_lip_free(struct dp_lip *lip)
{
	if (lip == NULL)
		return;
	for (unsigned w = 0; w < DP_MAX_WORKERS; w++)
		for (int p = 0; p < DP_PROTO_MAX; p++)
			rte_ring_free(lip->free_ports[w][p]);
	rte_free(lip->conns);
	rte_free(lip);
}

void
dp_tables_free(void)
{
	if (dpt.services != NULL) {
		const void *key;
		void *data;
		uint32_t it = 0;

		while (rte_hash_iterate(dpt.services, &key, &data, &it) >= 0) {
			struct dp_service *svc = data;
			dp_real_set_free(atomic_load(&svc->set));
			rte_free(svc);
		}
	}
	if (dpt.lips != NULL) {
		struct dp_lip_set *ls = atomic_load(&dpt.lips);
		for (uint32_t i = 0; i < ls->n; i++)
			dp_lip_free(ls->lips[i]);
		rte_free(ls);
	}
	rte_hash_free(dpt.addrs);
	rte_hash_free(dpt.neigh);
	rte_hash_free(dpt.services);
	rte_lpm_free(dpt.lpm);
	rte_ring_free(dpt.learn);
	rte_free(dpt.qsbr);
	uint32_t addr_gen = atomic_load(&dpt.addr_gen);
	memset(&dpt, 0, sizeof(dpt));
	atomic_store(&dpt.addr_gen, addr_gen);
}
