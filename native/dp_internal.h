/*
 * dp_internal.h: what the packet-path files share (l3fwd's l3fwd.h): the
 * per-lcore context, the counter block, tunables and tiny inline helpers.
 * Not included by the binding.
 */
#ifndef RETRACE_DP_INTERNAL_H
#define RETRACE_DP_INTERNAL_H

#include <stdatomic.h>
#include <rte_common.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_mbuf.h>

#include "dp.h"
#include "dp_counters.h"
#include "dp_events.h"
#include "dp_siphash.h"

/* One counter block. Cache-aligned so two lcores never share a line. */
struct dp_counter_block {
	uint64_t path[DP_PROTO_MAX][DP_MAX_PORTS][DP_PATH_MAX];
	uint64_t drop[DP_MAX_PORTS][DP_DROP_MAX];
	/* Kernel interface traffic (dp_kni.c); its drops are in drop[][kernel_dropped]. */
	uint64_t to_kernel[DP_MAX_PORTS];
	uint64_t from_kernel[DP_MAX_PORTS];
	uint64_t conn[DP_CONN_CTR_MAX];
} __rte_cache_aligned;

/* A logical port as the packet path sees it. Written by the control thread
 * before workers launch; read-only afterwards. */
struct dp_port {
	uint16_t port_id;      /* DPDK port id */
	_Atomic uint32_t addr; /* first address configured on the port (ARP source) */
	struct rte_ether_addr mac;
	struct dp_port_conf conf;
	bool soft_mac; /* the driver cannot set a MAC; we own it in software */
	bool started;
	/* Kernel interface (dp_kni.c): its ethdev, owned by worker 0, and the
	 * ring every worker queues frames for the kernel on. */
	bool kni;
	bool kni_started;
	bool kni_attached; /* its ethdev was found (closed at teardown) */
	uint16_t kni_port_id;
	struct rte_ring *to_kernel;
};

/* A packet waiting for its next hop's MAC (ARP in flight). */
struct dp_held {
	struct rte_mbuf *m;
	uint64_t deadline_tsc;
	uint32_t nh_addr;
	uint16_t pidx;
	uint8_t proto;	    /* enum dp_proto, for the counters */
	uint8_t asymmetric; /* leaving by another port than its side's packets arrive on */
};

/* A client segment of a SYN-proxied conn waiting for the real's SYN-ACK
 * (dp_synproxy.c). */
struct dp_conn;
struct dp_sp_held {
	struct rte_mbuf *m;
	struct dp_conn *c;
	uint64_t created_tsc; /* c's, to tell a reused record apart */
	uint64_t deadline_tsc;
	uint16_t pidx;
};
#define DP_SP_HOLD_MAX 256 /* per worker */

#define DP_HOLD_MAX	64
#define DP_ARP_RL_SLOTS 64

/* Control -> worker requests (dp_events.c). The control side writes the
 * fields, then bumps req; the worker serves and sets done = req. */
struct dp_mailbox {
	_Atomic uint32_t req;
	_Atomic uint32_t done;
	int kind;
	uint32_t cursor;
	unsigned max;
	unsigned count;
	int walked_all;
	struct dp_conn_info *out;
	struct dp_conn_filter filter;
};

/*
 * One answer of "where does a routed packet to dst go": port and next-hop MAC,
 * valid while neither the routes nor the neighbours changed since (the
 * generation numbers). Values only, no table pointers, so RCU has nothing to
 * protect here.
 */
#define DP_NH_CACHE_SLOTS 256
struct dp_nh_cache {
	uint32_t dst;
	uint32_t route_gen;
	uint32_t neigh_gen;
	uint16_t pidx;
	struct rte_ether_addr mac;
	uint8_t valid;
};

/*
 * One answer of "is addr ours" (dp_addr_lookup_cached, dp_tables.h): the
 * address table's value with DP_ADDR_CACHED_FOUND set, or 0 for not ours,
 * valid while dpt.addr_gen is still gen. A generation is never 0, so a
 * zeroed slot never matches.
 */
#define DP_ADDR_CACHE_SLOTS 64
struct dp_addr_cache {
	uint32_t addr;
	uint32_t gen;
	uint64_t val;
};

/* Per-worker context, owned by one lcore. */
struct dp_worker {
	unsigned lcore_id;
	unsigned index;	   /* 0..nb_workers-1; RCU thread id; LIP port owner id */
	uint16_t queue_id; /* rx and tx queue index on every port */
	struct dp_counter_block *ctr;
	struct rte_eth_dev_tx_buffer *txb[DP_MAX_PORTS];
	uint64_t busy_polls;
	uint64_t idle_polls;
	uint64_t now_tsc; /* refreshed once per poll round */

	/* Conns (dp_conn.c). */
	struct rte_hash *conns;
	struct dp_conn *conn_recs;  /* max_conns hot lines, then their cold lines (dp_conn.h) */
	struct rte_ring *conn_free; /* ids of the free records */
	uint32_t nb_conn_recs;	    /* max_conns */
	uint32_t conn_hwm;	    /* every id ever handed out is below it */
	uint32_t expire_cursor;	    /* id the expiry walk looks at next */
	uint64_t expire_tsc;	    /* last expiry step */
	uint64_t expire_credit;	    /* records x TSC cycles owed to the walk */
	uint32_t conn_gen;	    /* bumped at every removal: voids bulk lookup results */
	uint32_t conn_adds;	    /* bumped at every insertion: voids bulk lookup misses */
	_Atomic uint64_t nb_conns;

	/*
	 * Table pressure (dp_conn.c): every TCP conn created enters this FIFO,
	 * a ring of tagged record pointers, oldest at head. Entries are not
	 * removed when their conn goes or becomes established; the eviction
	 * that pops them checks. Written and read by the owning worker only.
	 */
	uint64_t *embryo;
	uint32_t embryo_mask;
	uint32_t embryo_head, embryo_tail; /* free-running */
	uint32_t tcp_lports;		   /* TCP source ports this worker's conns hold */
	uint32_t pressure_conns;	   /* conns from which the table is under pressure */
	uint32_t pressure_ports;	   /* TCP ports in use from which ports are; recomputed */
	uint64_t pressure_tsc;		   /* last recomputation of pressure_ports */
	uint64_t evict_min_age_tsc;

	/* Routed sends: the last answers of route + neighbour lookup (dp_xmit.c). */
	struct dp_nh_cache nh_cache[DP_NH_CACHE_SLOTS];
	/* Echo to a local address asks "is it ours" per packet (dp_icmp.c). */
	struct dp_addr_cache addr_cache[DP_ADDR_CACHE_SLOTS];

	/* Packets waiting for ARP (dp_xmit.c). */
	struct dp_held held[DP_HOLD_MAX];
	unsigned nb_held;
	uint32_t held_neigh_gen;
	uint32_t arp_rl_addr[DP_ARP_RL_SLOTS];
	uint64_t arp_rl_tsc[DP_ARP_RL_SLOTS];

	/* Rate limit of ICMP we originate, per port (dp_icmp.c). */
	uint64_t icmp_tokens[DP_MAX_PORTS];
	uint64_t icmp_tb_tsc[DP_MAX_PORTS];

	/* Token buckets of the kernel interfaces, per port (dp_kni.c): frames
	 * up (every worker), frames down (worker 0 only). */
	uint64_t kni_tokens[DP_MAX_PORTS];
	uint64_t kni_tb_tsc[DP_MAX_PORTS];
	uint64_t kni_down_tokens[DP_MAX_PORTS];
	uint64_t kni_down_tsc[DP_MAX_PORTS];
	uint64_t kni_poll_tsc; /* worker 0: next read of idle kernel interfaces */

	/* Conn events toward the control plane (dp_events.c). */
	struct rte_ring *events;
	uint64_t events_dropped;
	struct dp_mailbox mb;

	/* SYN proxy (dp_synproxy.c): half-open TCP conns (dp_conn_half_open),
	 * the cookie keys of the current period and the one before, and client
	 * segments waiting for their conn's real. */
	uint32_t nb_half_open;
	uint32_t sp_key_gen;
	uint64_t sp_period;
	struct dp_siphash_key sp_key[2];
	uint64_t sp_poll_tsc;
	unsigned nb_sp_held;
	struct dp_sp_held sp_held[DP_SP_HOLD_MAX];

	/* Packets other workers received for conns this worker owns. */
	struct rte_ring *redirect;
} __rte_cache_aligned;
/* Global dataplane, set up by dp_eal.c / dp_port.c on the control thread. */
struct dp_global {
	_Atomic enum dp_state state;
	atomic_bool run; /* workers loop while true */
	struct dp_conf conf;
	struct rte_mempool *pool;
	uint16_t nb_ports;
	/* The smallest MTU of any port: a packet no longer fits every egress
	 * and needs no lookup of which one it takes (dp_fnat.c). Ports and
	 * their MTUs are fixed from dp_start to dp_stop. */
	uint16_t min_mtu;
	struct dp_port ports[DP_MAX_PORTS];
	uint16_t nb_kni; /* ports with a kernel interface: 0 keeps the poll loop as it was */
	unsigned nb_workers;
	struct dp_worker *workers[DP_MAX_WORKERS];
	/* [0..nb_workers) for workers, [nb_workers] for the control thread. */
	struct dp_counter_block *blocks;
};

extern struct dp_global dp;

void dp_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* dp_port.c */
int dp_ports_setup(const struct dp_conf *conf, unsigned nb_queues, char *err, size_t errlen);
void dp_ports_teardown(void);

/* dp_ctl.c: the housekeeping thread, started after the tables exist and
 * stopped before they are freed. -EAGAIN. */
int dp_ctl_start(char *err, size_t errlen);
void dp_ctl_stop(void);

/* dp_worker.c */
int dp_workers_launch(char *err, size_t errlen);
void dp_workers_join(void);
/* Harnesses (conf.manual): run one poll round over pkts received on pidx
 * (n may be 0), on the calling thread, as worker 0. */
void dp_worker_round(struct dp_worker *w, uint16_t pidx, struct rte_mbuf **pkts, uint16_t n);
struct dp_worker *dp_manual_worker(void);

/* dp_events.c (worker side) */
struct dp_conn;
extern atomic_bool dp_events_on;
void dp_event_emit(
	struct dp_worker *w, const struct dp_conn *c, enum dp_event_type type, uint8_t changed_side);
void dp_mailbox_serve(struct dp_worker *w);
void dp_events_clock_init(void);

/* dp_kni.c: the kernel interface of each port that has one. */
int dp_kni_setup(uint16_t pidx, char *err, size_t errlen);
void dp_kni_teardown(uint16_t pidx);
/* Queue m for the kernel interface of port pidx, bounded by the port's
 * ring and token bucket (kernel_dropped beyond). Consumes m. */
void dp_kni_up(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m);
/* A copy of m up (ARP mirrored after the dataplane answered it). */
void dp_kni_mirror(struct dp_worker *w, uint16_t pidx, const struct rte_mbuf *m);
/* Worker 0, every round while dp.nb_kni: frames queued up go to the
 * kernel, frames the kernel sent go out of their port. */
void dp_kni_poll(struct dp_worker *w);
/* Frames the kernel sent through port pidx's interface: out of pidx.
 * Consumes every mbuf. (Harnesses call it directly.) */
void dp_kni_from_kernel(struct dp_worker *w, uint16_t pidx, struct rte_mbuf **pkts, uint16_t n);
/* Does a packet to dst that nothing in the dataplane takes go up from pidx?
 * True when pidx has a kernel interface and dst is a port address. */
bool dp_kni_wants(uint16_t pidx, uint32_t dst);

/* dp_l2.c: entry of the packet path. Takes ownership of every mbuf. */
void dp_l2_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf **pkts, uint16_t n);

static inline void
dp_drop(struct dp_worker *w, uint16_t pidx, enum dp_drop reason, struct rte_mbuf *m)
{
	w->ctr->drop[pidx][reason]++;
	rte_pktmbuf_free(m);
}

/* Queue m for transmission on logical port pidx; the buffer flushes when full
 * and at the end of every poll round. Always consumes m. */
/*
 * On a protocol's per-packet function that the engine's per-protocol loop
 * (dp_fnat.c) calls from another file: with LTO (the addon, the benchmarks)
 * it is inlined at the call site, which saves the call and lets the
 * compiler fold what the caller already knows; elsewhere (the sanitizer
 * builds, no LTO) it stays an ordinary call.
 */
#define DP_PKT_INLINE __attribute__((always_inline)) inline

static inline void
dp_tx(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m)
{
	rte_eth_tx_buffer(dp.ports[pidx].port_id, w->queue_id, w->txb[pidx], m);
}

#endif
