/*
 * dp_eal.c: the dataplane's life cycle (EAL, mbuf pool, start/stop) and the
 * read-only views the control plane polls.
 *
 * EAL runs inside the Node process. rte_eal_init makes its calling thread
 * the main lcore and pins it to that lcore's CPU set, so it is called on the
 * Node main thread (the control thread) and the default --lcores gives the
 * main lcore every CPU: Node keeps running where it likes, workers get their
 * own CPUs.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_version.h>

#include "dp_conn.h"
#include "dp_internal.h"
#include "dp_tables.h"

struct dp_global dp;

void
dp_set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

const char *
dp_dpdk_version(void)
{
	return rte_version();
}

enum dp_state
dp_get_state(void)
{
	return atomic_load(&dp.state);
}

int
dp_eal_init(int argc, char **argv, char *err, size_t errlen)
{
	int ret;

	if (dp_get_state() != DP_STATE_INIT) {
		dp_set_err(err, errlen, "EAL already initialised in this process");
		return -EALREADY;
	}
	/* EAL logs to stdout and syslog by default; stdout belongs to the CLI's
	 * own output, so EAL goes to stderr like the rest of our logs. */
	rte_openlog_stream(stderr);
	ret = rte_eal_init(argc, argv);
	if (ret < 0) {
		int e = rte_errno ? rte_errno : EINVAL;
		dp_set_err(err, errlen, "rte_eal_init failed: %s", rte_strerror(e));
		return -e;
	}
	atomic_store(&dp.state, DP_STATE_EAL_READY);
	return 0;
}

/* Data room big enough for the largest frame any port may receive, so that a
 * frame never spans mbufs (the packet path assumes contiguous headers). */
static uint16_t
dp_mbuf_data_room(const struct dp_conf *conf)
{
	uint32_t room = RTE_MBUF_DEFAULT_DATAROOM;

	for (uint16_t i = 0; i < conf->nb_ports; i++) {
		uint32_t frame = (uint32_t)conf->ports[i].mtu + RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN +
				 2 * 4 /* two VLAN tags */;
		if (frame > room)
			room = frame;
	}
	return (uint16_t)(room + RTE_PKTMBUF_HEADROOM);
}

static int
dp_validate_conf(const struct dp_conf *conf, char *err, size_t errlen)
{
	if (conf->nb_ports == 0 || conf->nb_ports > DP_MAX_PORTS) {
		dp_set_err(err, errlen, "need 1..%d ports, got %u", DP_MAX_PORTS, conf->nb_ports);
		return -EINVAL;
	}
	if (conf->burst == 0 || conf->burst > DP_MAX_BURST) {
		dp_set_err(err, errlen, "burst must be 1..%d, got %u", DP_MAX_BURST, conf->burst);
		return -EINVAL;
	}
	if (conf->mbuf_cache > RTE_MEMPOOL_CACHE_MAX_SIZE) {
		dp_set_err(err, errlen, "mbuf_cache must be at most %d", RTE_MEMPOOL_CACHE_MAX_SIZE);
		return -EINVAL;
	}
	return 0;
}

static void
dp_release(void)
{
	for (unsigned i = 0; i < DP_MAX_WORKERS; i++) {
		struct dp_worker *w = dp.workers[i];
		if (w == NULL)
			continue;
		dp_conn_table_free(w);
		rte_ring_free(w->redirect);
		rte_ring_free(w->events);
		for (uint16_t p = 0; p < DP_MAX_PORTS; p++)
			rte_free(w->txb[p]);
		rte_free(w);
		dp.workers[i] = NULL;
	}
	dp_tables_free();
	rte_free(dp.blocks);
	dp.blocks = NULL;
	if (dp.pool != NULL) {
		rte_mempool_free(dp.pool);
		dp.pool = NULL;
	}
	dp.nb_workers = 0;
}

int
dp_start(const struct dp_conf *conf, char *err, size_t errlen)
{
	enum dp_state expected = DP_STATE_EAL_READY;
	/* Harnesses drive one worker context from their own thread. */
	unsigned nb_workers = conf->manual ? 1 : rte_lcore_count() - 1;
	int ret;

	if (dp_get_state() != DP_STATE_EAL_READY) {
		dp_set_err(err, errlen, "dataplane is not in the EAL_READY state");
		return -EBUSY;
	}
	ret = dp_validate_conf(conf, err, errlen);
	if (ret < 0)
		return ret;
	if (nb_workers == 0 || nb_workers > DP_MAX_WORKERS) {
		dp_set_err(err, errlen, "need 1..%d worker lcores besides the main lcore, EAL has %u",
			DP_MAX_WORKERS, nb_workers);
		return -EINVAL;
	}
	dp.conf = *conf;

	dp.pool = rte_pktmbuf_pool_create("retrace_mbufs", conf->nb_mbufs, conf->mbuf_cache, 0,
		dp_mbuf_data_room(conf), rte_socket_id());
	if (dp.pool == NULL) {
		dp_set_err(err, errlen,
			"cannot create a pool of %u mbufs: %s (raise eal.memory_mb or lower dataplane.mbufs)",
			conf->nb_mbufs, rte_strerror(rte_errno));
		ret = -ENOMEM;
		goto fail;
	}

	dp.blocks = rte_zmalloc(
		"retrace_counters", sizeof(struct dp_counter_block) * (nb_workers + 1), RTE_CACHE_LINE_SIZE);
	if (dp.blocks == NULL) {
		dp_set_err(err, errlen, "cannot allocate counter blocks");
		ret = -ENOMEM;
		goto fail;
	}

	/* One context per worker lcore, in lcore order; worker i uses queue i. */
	unsigned lcore, i = 0;
	for (lcore = conf->manual ? rte_get_main_lcore() : rte_get_next_lcore(-1, 1, 0);
		lcore < RTE_MAX_LCORE && i < nb_workers; lcore = rte_get_next_lcore(lcore, 1, 0)) {
		struct dp_worker *w = rte_zmalloc_socket(
			"retrace_worker", sizeof(*w), RTE_CACHE_LINE_SIZE, rte_lcore_to_socket_id(lcore));
		if (w == NULL) {
			dp_set_err(err, errlen, "cannot allocate worker context for lcore %u", lcore);
			ret = -ENOMEM;
			goto fail;
		}
		w->lcore_id = lcore;
		w->index = i;
		w->queue_id = (uint16_t)i;
		w->ctr = &dp.blocks[i];
		dp.workers[i++] = w;
	}
	dp.nb_workers = nb_workers;

	dp_events_clock_init();
	ret = dp_tables_create(nb_workers, err, errlen);
	if (ret < 0)
		goto fail;
	for (i = 0; i < nb_workers; i++) {
		struct dp_worker *w = dp.workers[i];
		char name[RTE_RING_NAMESIZE];

		ret = dp_conn_table_create(w, conf->max_conns, err, errlen);
		if (ret < 0)
			goto fail;
		snprintf(name, sizeof(name), "rt_ev%u_%d", i, getpid() % 100000);
		w->events = rte_ring_create_elem(name, sizeof(struct dp_conn_info), conf->event_ring,
			rte_lcore_to_socket_id(w->lcore_id), RING_F_SP_ENQ | RING_F_SC_DEQ);
		if (w->events == NULL) {
			dp_set_err(err, errlen, "cannot create the event ring of worker %u (%u entries): %s",
				i, conf->event_ring, rte_strerror(rte_errno));
			ret = -ENOMEM;
			goto fail;
		}
		snprintf(name, sizeof(name), "rt_redir%u_%d", i, getpid() % 100000);
		w->redirect = rte_ring_create(name, 1024, rte_lcore_to_socket_id(w->lcore_id), RING_F_SC_DEQ);
		if (w->redirect == NULL) {
			dp_set_err(err, errlen, "cannot create the redirect ring of worker %u", i);
			ret = -ENOMEM;
			goto fail;
		}
	}

	ret = dp_ports_setup(conf, nb_workers, err, errlen);
	if (ret < 0)
		goto fail;

	ret = dp_ctl_start(err, errlen);
	if (ret < 0) {
		dp_ports_teardown();
		goto fail;
	}
	atomic_store(&dp.run, true);
	ret = conf->manual ? 0 : dp_workers_launch(err, errlen);
	if (ret < 0) {
		dp_ctl_stop();
		dp_ports_teardown();
		goto fail;
	}
	atomic_compare_exchange_strong(&dp.state, &expected, DP_STATE_RUNNING);
	return 0;

fail:
	dp_release();
	return ret;
}

int
dp_stop(void)
{
	enum dp_state expected = DP_STATE_RUNNING;

	if (!atomic_compare_exchange_strong(&dp.state, &expected, DP_STATE_STOPPED))
		return -EBUSY;
	atomic_store(&dp.run, false);
	if (!dp.conf.manual)
		dp_workers_join();
	dp_ctl_stop();
	dp_ports_teardown();
	dp_release();
	return 0;
}

int
dp_cleanup(void)
{
	enum dp_state s = dp_get_state();

	if (s != DP_STATE_EAL_READY && s != DP_STATE_STOPPED)
		return -EBUSY;
	rte_eal_cleanup();
	atomic_store(&dp.state, DP_STATE_INIT);
	return 0;
}

static uint64_t
dp_cpuset_mask(const rte_cpuset_t *set)
{
	uint64_t mask = 0;

	for (unsigned c = 0; c < 64 && c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, set))
			mask |= UINT64_C(1) << c;
	return mask;
}

unsigned
dp_lcores(struct dp_lcore_info *out, unsigned max)
{
	unsigned n = 0;
	unsigned lcore;

	if (dp_get_state() == DP_STATE_INIT)
		return 0;
	RTE_LCORE_FOREACH(lcore)
	{
		if (n >= max)
			break;
		struct dp_lcore_info *li = &out[n++];
		rte_cpuset_t set = rte_lcore_cpuset(lcore);

		memset(li, 0, sizeof(*li));
		li->lcore_id = lcore;
		li->is_worker = lcore != rte_get_main_lcore();
		li->cpus = dp_cpuset_mask(&set);
		for (unsigned w = 0; w < dp.nb_workers; w++) {
			if (dp.workers[w] != NULL && dp.workers[w]->lcore_id == lcore) {
				li->busy_polls = dp.workers[w]->busy_polls;
				li->idle_polls = dp.workers[w]->idle_polls;
			}
		}
	}
	return n;
}

int
dp_mempool_info(struct dp_mempool_info *out)
{
	memset(out, 0, sizeof(*out));
	if (dp.pool == NULL)
		return -EBUSY;
	out->capacity = dp.pool->size;
	out->in_use = rte_mempool_in_use_count(dp.pool);
	out->mbuf_size = rte_pktmbuf_data_room_size(dp.pool);
	return 0;
}
