/*
 * dp_events.h: what the control plane learns about conns, without ever
 * making a worker wait for Node.
 *
 * Events. Each worker has a single-producer/single-consumer ring of
 * fixed-size records (rte_ring_elem). A worker enqueues created, state,
 * path-changed and closed events; when the ring is full the event is
 * dropped and counted (events_dropped), never waited for. The control side
 * drains the rings in batches (dp_events_drain), assigns sequence numbers
 * and fans out. Events are produced only while enabled (someone watches).
 *
 * Snapshots and commands. Conn tables belong to their worker, so the
 * control side never walks them. Instead each worker has a mailbox: the
 * control side posts a request (dump a page of conns from a cursor, or
 * delete conns matching a filter) and waits; the worker serves it between
 * bursts, a bounded amount of work per poll round. One request in flight
 * per worker, serialised by a mutex on the control side.
 */
#ifndef RETRACE_DP_EVENTS_H
#define RETRACE_DP_EVENTS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum dp_event_type {
	DP_EV_CREATED = 1,
	DP_EV_STATE = 2,
	DP_EV_PATH = 3, /* a side record moved to another port or MAC */
	DP_EV_CLOSED = 4,
	DP_EV_SNAPSHOT = 5, /* not an event: a conn listed by a dump */
};

/* One conn as the control plane sees it; also the event record. Addresses
 * and ports in network byte order. 96 bytes. */
struct dp_conn_info {
	uint64_t time_ns;    /* event time (or dump time), CLOCK_REALTIME ns */
	uint64_t created_ns; /* conn creation, CLOCK_REALTIME ns */
	uint64_t last_ns;    /* last packet, CLOCK_REALTIME ns */
	uint64_t pkts[2];    /* from client, from server (local echo: our replies) */
	uint64_t bytes[2];
	uint32_t caddr, vaddr, laddr, raddr;
	uint16_t cport, vport, lport, rport;
	uint8_t type;	      /* enum dp_event_type */
	uint8_t proto;	      /* IPPROTO_* */
	uint8_t state;	      /* enum dp_tcp_state */
	uint8_t flags;	      /* DP_CONN_F_* */
	uint8_t side_pidx[2]; /* port of each side's record; 0xff = none yet */
	uint8_t changed_side; /* DP_EV_PATH: which side moved */
	uint8_t worker;
	uint8_t peer_mac[2][6]; /* each side's peer MAC */
	uint32_t pad;
};

/* Control side. Enable/disable event production (all workers). */
void dp_events_enable(int on);

/* Drain up to max events from all workers into out; returns the count.
 * *dropped receives the total events dropped so far (monotonic). */
unsigned dp_events_drain(struct dp_conn_info *out, unsigned max, uint64_t *dropped);

/* Dump up to max conns of worker `worker` from *cursor (0 = start);
 * advances *cursor, returns the count; *done = 1 when the table has been
 * walked to its end. Blocks until the worker answers (at most ~1 s).
 * -EINVAL (no such worker), -EBUSY (not running), -ETIMEDOUT. */
int dp_conns_dump(unsigned worker, uint32_t *cursor, struct dp_conn_info *out, unsigned max, int *done);

/* Delete conns matching filter on every worker (0 fields = any). Returns
 * how many were deleted, or -EBUSY/-ETIMEDOUT. Each deleted conn produces a
 * closed event. */
struct dp_conn_filter {
	uint8_t proto;
	uint32_t caddr, vaddr, raddr;
	uint16_t cport, vport, rport;
};
int64_t dp_conns_delete(const struct dp_conn_filter *f);

/* Find the conn whose client-side key is (f->proto, f->caddr, f->cport,
 * f->vaddr, f->vport; ports in network order, vport ignored for ICMP where
 * cport is the echo id) on whichever worker owns it. Returns 1 and fills
 * *out when found, 0 when no worker has it, -EBUSY/-ETIMEDOUT. */
int dp_conn_get(const struct dp_conn_filter *f, struct dp_conn_info *out);

unsigned dp_nb_workers(void);

#ifdef __cplusplus
}
#endif
#endif
