/*
 * dp_worker.c: the worker lcore loop.
 *
 * Each worker owns queue `queue_id` on every port: rx burst, hand the burst
 * to the packet path (dp_l2_input), which queues replies and forwards into
 * per-port tx buffers; at the end of every round the buffers are flushed so a
 * lone packet never waits for a burst to fill.
 *
 * Idle back-off: a busy-polling worker pins its CPU at 100%. On a small
 * machine that starves Node and the test lab, so after `idle_pause_after`
 * empty rounds it pauses between polls and after `idle_sleep_after` it sleeps
 * `idle_sleep_us` per round. Any packet resets it. Both thresholds 0 = pure
 * busy polling (benchmarks, production with dedicated cores).
 */
#include <errno.h>

#include <rte_cycles.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_prefetch.h>
#include <rte_ring.h>

#include <netinet/in.h>

#include "dp_conn.h"
#include "dp_fnat.h"
#include "dp_icmp.h"
#include "dp_internal.h"
#include "dp_synproxy.h"
#include "dp_tables.h"
#include "dp_xmit.h"


/* Packets other workers handed over (their conn is ours): already
 * validated and counted at rx, so straight into the FNAT engine. */
static inline uint32_t
dp_worker_redirected(struct dp_worker *w)
{
	struct rte_mbuf *pkts[32];
	unsigned n = rte_ring_dequeue_burst(w->redirect, (void **)pkts, RTE_DIM(pkts), NULL);

	for (unsigned i = 0; i < n; i++) {
		const struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(
			pkts[i], const struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
		if (ip->next_proto_id == IPPROTO_ICMP)
			dp_icmp_input(w, pkts[i]->port, pkts[i]);
		else
			dp_fnat_input(w, pkts[i]->port, pkts[i],
				ip->next_proto_id == IPPROTO_TCP ? &dp_fnat_tcp : &dp_fnat_udp);
	}
	return n;
}

/* Everything a poll round does after rx: hand-offs, ARP hold queue, conn
 * expiry, mailbox, tx flush. */
static inline uint32_t
dp_worker_housekeep(struct dp_worker *w, uint16_t nb_ports, unsigned nb_workers)
{
	uint32_t got = 0;

	if (unlikely(nb_workers > 1))
		got += dp_worker_redirected(w);
	if (unlikely(w->nb_held != 0))
		dp_xmit_hold_poll(w);
	if (unlikely(w->nb_sp_held != 0))
		dp_synproxy_poll(w);
	if (unlikely(dp.nb_kni != 0))
		dp_kni_poll(w);
	dp_conn_expire_step(w);
	if (unlikely(atomic_load_explicit(&w->mb.req, memory_order_acquire) !=
		     atomic_load_explicit(&w->mb.done, memory_order_relaxed)))
		dp_mailbox_serve(w);
	for (uint16_t pidx = 0; pidx < nb_ports; pidx++)
		rte_eth_tx_buffer_flush(dp.ports[pidx].port_id, w->queue_id, w->txb[pidx]);
	return got;
}

void
dp_worker_round(struct dp_worker *w, uint16_t pidx, struct rte_mbuf **pkts, uint16_t n)
{
	/* Online only while processing, so control-side grace periods never
	 * wait for a harness that is not running a round. */
	rte_rcu_qsbr_thread_online(dpt.qsbr, w->index);
	w->now_tsc = rte_rdtsc();
	if (n > 0)
		dp_l2_input(w, pidx, pkts, n);
	dp_worker_housekeep(w, dp.nb_ports, dp.nb_workers);
	rte_rcu_qsbr_thread_offline(dpt.qsbr, w->index);
}

struct dp_worker *
dp_manual_worker(void)
{
	static bool registered;

	if (!registered) {
		rte_rcu_qsbr_thread_register(dpt.qsbr, 0);
		registered = true;
	}
	return dp.workers[0];
}

static int
dp_worker_main(void *arg)
{
	struct dp_worker *w = arg;
	struct rte_mbuf *pkts[DP_MAX_BURST];
	const uint16_t burst = dp.conf.burst;
	const uint16_t nb_ports = dp.nb_ports;
	const unsigned nb_workers = dp.nb_workers;
	const uint32_t pause_after = dp.conf.idle_pause_after;
	const uint32_t sleep_after = dp.conf.idle_sleep_after;
	const uint32_t sleep_us = dp.conf.idle_sleep_us;
	uint32_t empty = 0;

	rte_rcu_qsbr_thread_register(dpt.qsbr, w->index);
	rte_rcu_qsbr_thread_online(dpt.qsbr, w->index);
	while (likely(atomic_load_explicit(&dp.run, memory_order_relaxed))) {
		uint32_t got = 0;

		w->now_tsc = rte_rdtsc();

		for (uint16_t pidx = 0; pidx < nb_ports; pidx++) {
			uint16_t n = rte_eth_rx_burst(dp.ports[pidx].port_id, w->queue_id, pkts, burst);

			if (n == 0)
				continue;
			got += n;
			dp_l2_input(w, pidx, pkts, n);
		}
		got += dp_worker_housekeep(w, nb_ports, nb_workers);
		/* Every table pointer this round may have held is dropped now. */
		rte_rcu_qsbr_quiescent(dpt.qsbr, w->index);

		if (likely(got != 0)) {
			w->busy_polls++;
			empty = 0;
			continue;
		}
		w->idle_polls++;
		if (empty < UINT32_MAX)
			empty++;
		if (sleep_after != 0 && empty > sleep_after) {
			/* Asleep we hold nothing: let grace periods pass meanwhile. */
			rte_rcu_qsbr_thread_offline(dpt.qsbr, w->index);
			rte_delay_us_sleep(sleep_us);
			rte_rcu_qsbr_thread_online(dpt.qsbr, w->index);
		} else if (pause_after != 0 && empty > pause_after)
			rte_pause();
	}
	dp_xmit_hold_flush(w);
	dp_synproxy_flush(w);
	for (uint16_t pidx = 0; pidx < nb_ports; pidx++)
		rte_eth_tx_buffer_flush(dp.ports[pidx].port_id, w->queue_id, w->txb[pidx]);
	rte_rcu_qsbr_thread_offline(dpt.qsbr, w->index);
	rte_rcu_qsbr_thread_unregister(dpt.qsbr, w->index);
	return 0;
}

int
dp_workers_launch(char *err, size_t errlen)
{
	for (unsigned i = 0; i < dp.nb_workers; i++) {
		struct dp_worker *w = dp.workers[i];
		int ret = rte_eal_remote_launch(dp_worker_main, w, w->lcore_id);

		if (ret < 0) {
			dp_set_err(err, errlen, "cannot launch worker on lcore %u: %s", w->lcore_id,
				rte_strerror(-ret));
			atomic_store(&dp.run, false);
			dp_workers_join();
			return ret;
		}
	}
	return 0;
}

void
dp_workers_join(void)
{
	for (unsigned i = 0; i < dp.nb_workers; i++)
		rte_eal_wait_lcore(dp.workers[i]->lcore_id);
}
