/*
 * dp_events.c: conn events and the per-worker mailbox (see dp_events.h).
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include <rte_cycles.h>
#include <rte_hash.h>
#include <rte_ring.h>

#include "dp_conn.h"
#include "dp_events.h"
#include "dp_internal.h"

#define DP_MB_DUMP		1
#define DP_MB_DELETE		2
#define DP_MB_GET		3
#define DP_MB_ENTRIES_PER_ROUND 4096

atomic_bool dp_events_on;
static pthread_mutex_t mb_lock = PTHREAD_MUTEX_INITIALIZER;

/* CLOCK_REALTIME at a known TSC, so workers convert without syscalls. */
static uint64_t base_tsc, base_ns;

void
dp_events_clock_init(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	base_tsc = rte_get_tsc_cycles();
	base_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t
dp_tsc_to_ns(uint64_t tsc)
{
	uint64_t hz = rte_get_tsc_hz();
	uint64_t d = tsc - base_tsc;

	return base_ns + (d / hz) * 1000000000ull + (d % hz) * 1000000000ull / hz;
}

static void
dp_conn_info_fill(const struct dp_worker *w, const struct dp_conn *c, struct dp_conn_info *e)
{
	memset(e, 0, sizeof(*e));
	e->time_ns = dp_tsc_to_ns(w->now_tsc);
	const struct dp_conn_cold *cc = dp_conn_cold(c);
	/* The record keeps its last packet's time as the low 32 bits of its
	 * tick (dp_tick): the whole tick is the latest one with those bits up
	 * to now, and its start is the time, never before the conn's creation.
	 * Not "now minus the ticks elapsed": that moves with now's own
	 * fraction of a tick, and two reads of one conn must agree. */
	const uint64_t now_tick = w->now_tsc >> DP_TICK_SHIFT;
	uint64_t last_tsc = (now_tick - (uint32_t)((uint32_t)now_tick - c->last)) << DP_TICK_SHIFT;
	if ((int64_t)(last_tsc - cc->created_tsc) < 0)
		last_tsc = cc->created_tsc;
	e->created_ns = dp_tsc_to_ns(cc->created_tsc);
	e->last_ns = dp_tsc_to_ns(last_tsc);
	for (int s = 0; s < 2; s++) {
		e->pkts[s] = cc->pkts[s];
		e->bytes[s] = cc->bytes[s];
		e->side_pidx[s] = c->side[s].pidx; /* DP_SIDE_NONE (0xff) before its first packet */
		memcpy(e->peer_mac[s], c->side[s].peer_mac.addr_bytes, 6);
	}
	e->caddr = c->caddr, e->vaddr = c->vaddr, e->laddr = c->laddr, e->raddr = c->raddr;
	e->cport = c->cport, e->vport = c->vport, e->lport = c->lport, e->rport = c->rport;
	e->proto = c->proto;
	e->state = c->state;
	e->flags = c->flags;
	e->worker = (uint8_t)w->index;
}

void
dp_event_emit(struct dp_worker *w, const struct dp_conn *c, enum dp_event_type type, uint8_t changed_side)
{
	struct dp_conn_info e;

	if (!atomic_load_explicit(&dp_events_on, memory_order_relaxed))
		return;
	dp_conn_info_fill(w, c, &e);
	e.type = (uint8_t)type;
	e.changed_side = changed_side;
	if (unlikely(rte_ring_enqueue_elem(w->events, &e, sizeof(e)) != 0))
		w->events_dropped++;
}

void
dp_events_enable(int on)
{
	atomic_store(&dp_events_on, on != 0);
}

unsigned
dp_nb_workers(void)
{
	return dp.nb_workers;
}

unsigned
dp_events_drain(struct dp_conn_info *out, unsigned max, uint64_t *dropped)
{
	unsigned n = 0;

	*dropped = 0;
	if (dp_get_state() != DP_STATE_RUNNING)
		return 0;
	for (unsigned i = 0; i < dp.nb_workers; i++) {
		struct dp_worker *w = dp.workers[i];
		if (n < max)
			n += rte_ring_dequeue_burst_elem(w->events, out + n, sizeof(*out), max - n, NULL);
		*dropped += w->events_dropped;
	}
	return n;
}

static bool
dp_filter_match(const struct dp_conn_filter *f, const struct dp_conn *c)
{
	return (f->proto == 0 || f->proto == c->proto) && (f->caddr == 0 || f->caddr == c->caddr) &&
	       (f->vaddr == 0 || f->vaddr == c->vaddr) && (f->raddr == 0 || f->raddr == c->raddr) &&
	       (f->cport == 0 || f->cport == c->cport) && (f->vport == 0 || f->vport == c->vport) &&
	       (f->rport == 0 || f->rport == c->rport);
}

/* Worker side: serve the pending request, a bounded amount per round. */
void
dp_mailbox_serve(struct dp_worker *w)
{
	struct dp_mailbox *mb = &w->mb;
	void *data;
	unsigned budget = DP_MB_ENTRIES_PER_ROUND;

	if (mb->kind == DP_MB_GET) {
		/* One exact lookup of the client-side key; ICMP keys carry the echo id twice. */
		struct dp_conn_key k = {
			.saddr = mb->filter.caddr,
			.daddr = mb->filter.vaddr,
			.sport = mb->filter.cport,
			.dport = mb->filter.proto == IPPROTO_ICMP ? mb->filter.cport : mb->filter.vport,
			.proto = mb->filter.proto,
		};
		enum dp_side_id s;
		mb->count = 0;
		if (rte_hash_lookup_data(w->conns, &k, &data) >= 0) {
			struct dp_conn *c = dp_conn_untag(data, &s);
			if (s == DP_SIDE_CLIENT) {
				dp_conn_info_fill(w, c, &mb->out[0]);
				mb->out[0].type = DP_EV_SNAPSHOT;
				mb->count = 1;
			}
		}
		mb->walked_all = 1;
		budget = 0; /* answered: straight to completion */
	}
	/* Over the records (cursor = record index), like the expiry walk: bounded work per round
	 * however empty the table is, and every live record is exactly one conn. */
	while (budget-- > 0) {
		if (mb->kind == DP_MB_DUMP && mb->count >= mb->max)
			break;
		if (mb->cursor >= w->conn_hwm) { /* above it no record was ever used */
			mb->walked_all = 1;
			break;
		}
		struct dp_conn *c = &w->conn_recs[mb->cursor++];
		if (c->proto == 0)
			continue;
		if (mb->kind == DP_MB_DUMP) {
			dp_conn_info_fill(w, c, &mb->out[mb->count]);
			mb->out[mb->count].type = DP_EV_SNAPSHOT;
			mb->count++;
		} else if (dp_filter_match(&mb->filter, c)) {
			dp_conn_destroy(w, c);
			mb->count++;
		}
	}
	if (mb->walked_all || (mb->kind == DP_MB_DUMP && mb->count >= mb->max))
		atomic_store_explicit(&mb->done, atomic_load_explicit(&mb->req, memory_order_relaxed),
			memory_order_release);
}

/* Control side: post a request to worker w and wait for the answer. */
static int
dp_mailbox_call(struct dp_worker *w)
{
	uint32_t ticket = atomic_load(&w->mb.req) + 1;
	struct timespec nap = { 0, 50 * 1000 };

	atomic_store_explicit(&w->mb.req, ticket, memory_order_release);
	for (int i = 0; i < 40000; i++) { /* ~2 s at 50 us naps */
		if (atomic_load_explicit(&w->mb.done, memory_order_acquire) == ticket)
			return 0;
		if (!atomic_load(&dp.run))
			return -EBUSY;
		nanosleep(&nap, NULL);
	}
	/* The worker will still finish this request; later calls wait for it. */
	return -ETIMEDOUT;
}

static bool
dp_mailbox_idle(struct dp_worker *w)
{
	return atomic_load(&w->mb.done) == atomic_load(&w->mb.req);
}

int
dp_conns_dump(unsigned worker, uint32_t *cursor, struct dp_conn_info *out, unsigned max, int *done)
{
	int ret;

	if (dp_get_state() != DP_STATE_RUNNING)
		return -EBUSY;
	if (worker >= dp.nb_workers)
		return -EINVAL;
	pthread_mutex_lock(&mb_lock);
	struct dp_worker *w = dp.workers[worker];
	if (!dp_mailbox_idle(w)) {
		ret = -ETIMEDOUT; /* a timed-out request is still being served */
		goto out;
	}
	w->mb.kind = DP_MB_DUMP;
	w->mb.cursor = *cursor;
	w->mb.max = max;
	w->mb.out = out;
	w->mb.count = 0;
	w->mb.walked_all = 0;
	ret = dp_mailbox_call(w);
	if (ret == 0) {
		*cursor = w->mb.cursor;
		*done = w->mb.walked_all;
		ret = (int)w->mb.count;
	}
out:
	pthread_mutex_unlock(&mb_lock);
	return ret;
}

int64_t
dp_conns_delete(const struct dp_conn_filter *f)
{
	int64_t total = 0;

	if (dp_get_state() != DP_STATE_RUNNING)
		return -EBUSY;
	pthread_mutex_lock(&mb_lock);
	for (unsigned i = 0; i < dp.nb_workers; i++) {
		struct dp_worker *w = dp.workers[i];
		if (!dp_mailbox_idle(w)) {
			total = -ETIMEDOUT;
			break;
		}
		w->mb.kind = DP_MB_DELETE;
		w->mb.filter = *f;
		w->mb.cursor = 0;
		w->mb.count = 0;
		w->mb.walked_all = 0;
		int ret = dp_mailbox_call(w);
		if (ret < 0) {
			total = ret;
			break;
		}
		total += w->mb.count;
	}
	pthread_mutex_unlock(&mb_lock);
	return total;
}

int
dp_conn_get(const struct dp_conn_filter *f, struct dp_conn_info *out)
{
	int ret = 0;

	if (dp_get_state() != DP_STATE_RUNNING)
		return -EBUSY;
	pthread_mutex_lock(&mb_lock);
	/* The owner of a client-side key is whichever worker RSS gave the flow: ask each. */
	for (unsigned i = 0; i < dp.nb_workers && ret == 0; i++) {
		struct dp_worker *w = dp.workers[i];
		if (!dp_mailbox_idle(w)) {
			ret = -ETIMEDOUT;
			break;
		}
		w->mb.kind = DP_MB_GET;
		w->mb.filter = *f;
		w->mb.out = out;
		w->mb.count = 0;
		w->mb.walked_all = 0;
		int r = dp_mailbox_call(w);
		if (r < 0)
			ret = r;
		else if (w->mb.count == 1)
			ret = 1;
	}
	pthread_mutex_unlock(&mb_lock);
	return ret;
}
