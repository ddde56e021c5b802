/*
 * dp_ctl.c: the control side's common ground: the writer lock, the state
 * and port checks every dp_ctl_* call makes, the per-protocol switches and
 * timeouts, and the housekeeping thread (neighbour learning from the
 * workers' ring, neighbour ageing). The tables themselves live in
 * dp_ctl_addr.c, dp_ctl_route.c, dp_ctl_neigh.c, dp_ctl_lip.c and
 * dp_ctl_service.c; their shared rules are in dp_ctl_internal.h.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include <sys/eventfd.h>

#include <netinet/in.h>

#include <rte_cycles.h>
#include <rte_ring.h>

#include "dp_conn.h"
#include "dp_ctl_internal.h"

pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t hk_thread;
static atomic_bool hk_run;
static bool hk_started;
/* The housekeeper sleeps on this eventfd until a sighting arrives or the
 * next ageing pass is due; hk_sleeping says a worker must wake it. */
static int hk_efd = -1;
static atomic_bool hk_sleeping;

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

static void
dp_hk_wake(void)
{
	uint64_t one = 1;

	/* Non-blocking; a full counter (never, in practice) still wakes it. */
	if (write(hk_efd, &one, sizeof(one)) < 0)
		return;
}

void
dp_learn_post(struct dp_learn_msg *msg)
{
	if (rte_ring_enqueue_elem(dpt.learn, msg, sizeof(*msg)) != 0)
		return; /* ring full: learning waits for the host's next ARP */
	/* One syscall per quiet spell, not per sighting: only when the
	 * housekeeper has said it is going to sleep (pairs with the fence in
	 * dp_housekeeper: either it sees this message or we see its flag). */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_exchange(&hk_sleeping, false))
		dp_hk_wake();
}

/*
 * Sleeps in poll() between sightings rather than napping on a timer: it
 * used to wake every 200 us to look at the ring, 5000 wake-ups a second
 * that landed on the worker's CPU or the control thread's (docs/bench.md,
 * "Unary latency while forwarding"). A sighting wakes it at once instead.
 */
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
		atomic_store(&hk_sleeping, true);
		atomic_thread_fence(memory_order_seq_cst);
		if (rte_ring_count(dpt.learn) > 0) {
			atomic_store(&hk_sleeping, false);
			continue;
		}
		struct pollfd pfd = { .fd = hk_efd, .events = POLLIN };
		int ms = (int)((next_age > now ? next_age - now : 0) * 1000 / hz) + 1;
		if (poll(&pfd, 1, ms) > 0) {
			uint64_t v;
			if (read(hk_efd, &v, sizeof(v)) < 0)
				v = 0; /* nothing to do: the wake-up is what counted */
		}
		atomic_store(&hk_sleeping, false);
	}
	return NULL;
}

int
dp_ctl_start(char *err, size_t errlen)
{
	dp_neigh_reset();
	dp_route_reset();
	hk_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (hk_efd < 0) {
		dp_set_err(err, errlen, "cannot create the housekeeping eventfd");
		return -errno;
	}
	atomic_store(&hk_sleeping, false);
	atomic_store(&hk_run, true);
	if (pthread_create(&hk_thread, NULL, dp_housekeeper, NULL) != 0) {
		dp_set_err(err, errlen, "cannot start the housekeeping thread");
		close(hk_efd);
		hk_efd = -1;
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
	dp_hk_wake();
	pthread_join(hk_thread, NULL);
	close(hk_efd);
	hk_efd = -1;
	hk_started = false;
}
