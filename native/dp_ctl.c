/*
 * dp_ctl.c: the control side's common ground: the writer lock, the state
 * and port checks every dp_ctl_* call makes, the per-protocol switches and
 * timeouts, and the housekeeping thread (neighbour learning from the
 * workers' ring, neighbour ageing). The tables themselves live in
 * dp_ctl_addr.c, dp_ctl_route.c, dp_ctl_neigh.c, dp_ctl_lip.c and
 * dp_ctl_service.c; their shared rules are in dp_ctl_internal.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <netinet/in.h>

#include <rte_cycles.h>
#include <rte_ring.h>

#include "dp_conn.h"
#include "dp_ctl_internal.h"

pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t hk_thread;
static atomic_bool hk_run;
static bool hk_started;

bool
dp_running(char *err, size_t errlen)
{
	if (dp_get_state() != DP_STATE_RUNNING) {
		dp_set_err(err, errlen, "dataplane is not running");
		return false;
	}
	return true;
}

bool
dp_valid_port(uint16_t pidx, char *err, size_t errlen)
{
	if (pidx >= dp.nb_ports) {
		dp_set_err(err, errlen, "no port with index %u", pidx);
		return false;
	}
	return true;
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
		unsigned n =
			rte_ring_dequeue_burst_elem(dpt.learn, msgs, sizeof(msgs[0]), RTE_DIM(msgs), NULL);
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
	dp_neigh_reset();
	dp_route_reset();
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
