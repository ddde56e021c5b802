/*
 * dp_tables.h: the tables the control plane writes and every worker reads:
 * local addresses, routes, neighbours, virtual services with their reals,
 * local addresses for the server side (LIPs), per-protocol switches.
 *
 * Concurrency (one writer, lock-free readers):
 * - Writers: every dp_ctl_* function below, plus the housekeeping thread
 *   (neighbour learning and ageing). They serialise on one mutex taken
 *   inside each function; workers never take it.
 * - Readers: workers, without locks. rte_hash tables use
 *   RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF, the LPM and every pointer a
 *   worker may hold (service, real set) are retired through one RCU QSBR
 *   variable on which each worker reports a quiescent state once per poll
 *   round; writers free only after rte_rcu_qsbr_synchronize.
 *
 * Addresses are IPv4 in network byte order everywhere (uint32_t), ports too.
 */
#ifndef RETRACE_DP_TABLES_H
#define RETRACE_DP_TABLES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <rte_ether.h>
#include <rte_hash.h>
#include <rte_lpm.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>
#include <rte_spinlock.h>

#include "dp.h"
#include "dp_counters.h"
#include "dp_ctl.h"
#include "dp_internal.h"

#define DP_LPORT_MIN 1024 /* LIP source ports handed out: [MIN, MAX] */
#define DP_LPORT_MAX 65535

/* ---- local addresses ---- */
enum dp_addr_kind {
	DP_ADDR_PORT = 1, /* an address of a port (with a connected route) */
	DP_ADDR_VIP = 2,  /* a virtual service address (any port answers ARP) */
	DP_ADDR_LIP = 4,  /* a local address for the server side of FNAT */
};

/* Value stored in the address hash: kind bits | port << 8. */
static inline uint64_t
dp_addr_pack(unsigned kinds, uint16_t pidx)
{
	return kinds | ((uint64_t)pidx << 8);
}
static inline unsigned
dp_addr_kinds(uint64_t v)
{
	return (unsigned)(v & 0xff);
}
static inline uint16_t
dp_addr_port(uint64_t v)
{
	return (uint16_t)((v >> 8) & 0xffff);
}

/* ---- neighbours: the hash value packs MAC, port and flags into 64 bits so
 * a reader sees one consistent word without RCU on the value ---- */
#define DP_NEIGH_STATIC 0x1
static inline uint64_t
dp_neigh_pack(const struct rte_ether_addr *mac, uint8_t pidx, uint8_t flags)
{
	uint64_t v = 0;
	for (int i = 0; i < 6; i++)
		v |= (uint64_t)mac->addr_bytes[i] << (8 * i);
	return v | ((uint64_t)pidx << 48) | ((uint64_t)flags << 56);
}
static inline void
dp_neigh_mac(uint64_t v, struct rte_ether_addr *mac)
{
	for (int i = 0; i < 6; i++)
		mac->addr_bytes[i] = (uint8_t)(v >> (8 * i));
}
static inline uint8_t
dp_neigh_port(uint64_t v)
{
	return (uint8_t)(v >> 48);
}
static inline uint8_t
dp_neigh_flags(uint64_t v)
{
	return (uint8_t)(v >> 56);
}

struct dp_nexthop {
	uint32_t gw; /* 0 = directly connected: the destination is the neighbour */
	uint16_t pidx;
	uint16_t refs; /* routes using it (control only) */
};

/* ---- virtual services ---- */
enum dp_sched_kind {
	DP_SCHED_RR = 1,
	DP_SCHED_WRR,
	DP_SCHED_WLC,
	DP_SCHED_MAGLEV
};

/* Per-worker traffic of one real: one cache line per worker, plain adds. */
struct dp_real_stats {
	uint64_t ctr[DP_REAL_MAX]; /* enum dp_real_counter */
} __rte_cache_aligned;

struct dp_real {
	uint32_t addr;
	uint16_t port;
	_Atomic uint16_t weight; /* 0 = drain: no new conns; updated in place */
	/* Health check verdict DOWN: inhibited, no new conns whatever the
	 * weight (the operator's weight stays as set). Kept on the object, so
	 * across real set rebuilds; a new real starts not inhibited. */
	atomic_bool down;
	atomic_int_fast32_t active; /* live conns, for wlc */
	atomic_int_fast32_t refs;   /* the set + every conn using it */
	atomic_uint_fast64_t conns_total;
	struct dp_real_stats stats[]; /* nb_workers entries */
};

/* An immutable snapshot of a service's reals and scheduler tables. Replaced
 * whole (RCU) on every change. */
struct dp_real_set {
	uint32_t n;
	struct dp_real **reals; /* n entries, canonical order (addr, port) */
	uint32_t wrr_len;	/* weighted sequence of indices into reals */
	uint32_t *wrr;
	uint32_t maglev_len; /* prime; 0 unless scheduler is maglev */
	int32_t *maglev;     /* -1 = no real (all drained) */
};

struct dp_service_key {
	uint32_t vaddr;
	uint16_t vport; /* 0 for ICMP */
	uint8_t proto;	/* IPPROTO_* */
	uint8_t pad;
};

/* One token bucket of a service's conn_rate, shared by the workers (a
 * spinlock: only first packets of a rate-limited service take it). */
struct dp_rate_slot {
	rte_spinlock_t lock;
	uint32_t tokens_milli; /* thousandths of a conn */
	uint64_t tsc;	       /* last refill; 0 = never used */
};

/* A client prefix of an allow or deny list: network order, host bits clear. */
struct dp_svc_prefix {
	uint32_t addr, mask;
};

/* A service's admission limits: replaced whole (RCU); only the token
 * buckets change in place. Only the first packet of a conn reads them. */
struct dp_svc_limits {
	uint32_t max_conns;		/* 0 = no limit */
	uint32_t conn_rate, conn_burst; /* 0 = no rate limit */
	struct dp_rate_slot *slots;	/* DP_SVC_RATE_SLOTS with conn_rate, else NULL */
	uint32_t n_allow, n_deny;
	/* Network order, host bits clear; masks precomputed. A linear scan:
	 * the lists are short (DP_MAX_SVC_PREFIXES). */
	struct dp_svc_prefix allow[DP_MAX_SVC_PREFIXES], deny[DP_MAX_SVC_PREFIXES];
};

/* SYN flood defence of a service (dp_synproxy.c). */
enum dp_syn_proxy_mode {
	DP_SYN_PROXY_OFF = 0,
	DP_SYN_PROXY_ON,
	DP_SYN_PROXY_AUTO, /* on while the worker holds >= syn_proxy_threshold half-open conns */
};

/* Per-worker counters of one service: one cache line per worker, plain adds
 * by that worker only, summed on read (as struct dp_real_stats). Shared
 * atomics here cost every worker a locked add on one line per new conn. */
struct dp_svc_stats {
	uint64_t conns_total;
	uint64_t drops[DP_SVC_DROP_MAX]; /* refused conns, by reason */
	uint64_t syn[DP_SVC_SYN_MAX];	 /* the SYN proxy's cookies (enum dp_svc_syn) */
} __rte_cache_aligned;

struct dp_service {
	struct dp_service_key key;
	/* NULL when the service has no limits: the first packet of a conn
	 * then pays one branch. */
	struct dp_svc_limits *_Atomic limits;
	enum dp_sched_kind sched;
	uint32_t seed;
	struct dp_real_set *_Atomic set;
	uint32_t rr_cursor[DP_MAX_WORKERS]; /* per worker, written only by it */
	/* SYN proxy: set in place (one byte, one word), read on conn opening. */
	_Atomic uint8_t syn_proxy; /* enum dp_syn_proxy_mode */
	/* enum dp_caddr_mode, copied into each new conn (dp_conn_create). */
	_Atomic uint8_t ca_mode;
	_Atomic uint32_t syn_proxy_threshold;
	struct dp_svc_stats stats[]; /* nb_workers entries */
};

/* A real a scheduler may pick for a new conn: weight > 0 and not DOWN. */
static inline bool
dp_real_eligible(const struct dp_real *r)
{
	return atomic_load_explicit(&r->weight, memory_order_relaxed) > 0 &&
	       !atomic_load_explicit(&r->down, memory_order_relaxed);
}

/* The weight a scheduler table gives the real: 0 while DOWN. */
static inline uint32_t
dp_real_sched_weight(const struct dp_real *r)
{
	return atomic_load_explicit(&r->down, memory_order_relaxed) ? 0 : r->weight;
}

/* ---- LIPs: per worker a ring of free source ports, ports p with
 * p % nb_workers == worker, so a reply's destination port names the worker
 * that owns its conn ---- */

/*
 * The server side of every conn is found through its LIP, not the conn hash:
 * per protocol an array of 65536 slots indexed by the local port (host
 * order), each the conn using LIP:port (dp_conn.c encodes it in 4 bytes) or
 * 0. Slot p is written only by worker p % nb_workers, the owner of port p.
 */
#define DP_LIP_CONN_SLOTS 65536

struct dp_lip {
	uint32_t addr;
	uint16_t pidx; /* port the LIP lives on (for ARP); informational */
	/* [enum dp_proto << 16 | lport]: DP_PROTO_MAX * DP_LIP_CONN_SLOTS. */
	uint32_t *conns;
	struct rte_ring *free_ports[DP_MAX_WORKERS][DP_PROTO_MAX];
	uint32_t capacity[DP_MAX_WORKERS]; /* ports per worker per protocol */
};

/*
 * Address -> LIP for the packet path ("is this packet to one of our LIPs"):
 * open addressing with linear probing over DP_LIP_SLOTS, at most a quarter
 * full, built by the control thread with every new set. lip is an index into
 * lips[] plus one; 0 ends a probe.
 */
#define DP_LIP_SLOTS 256
_Static_assert(DP_LIP_SLOTS >= 4 * DP_MAX_LIPS, "LIP index too full");

struct dp_lip_slot {
	uint32_t addr;
	uint32_t lip;
};

struct dp_lip_set {
	uint32_t n;
	struct dp_lip *lips[DP_MAX_LIPS];
	struct dp_lip_slot slot[DP_LIP_SLOTS];
};

static inline uint32_t
dp_lip_hash(uint32_t addr)
{
	/* Fibonacci hashing: LIPs are often consecutive addresses, which differ
	 * in the top byte of the network-order word on a little-endian host. */
	return (addr * 0x9E3779B1u) >> 24;
}

/* Any thread: the LIP with address addr in ls, or NULL. */
static inline struct dp_lip *
dp_lip_of(const struct dp_lip_set *ls, uint32_t addr)
{
	for (uint32_t h = dp_lip_hash(addr);; h = (h + 1) & (DP_LIP_SLOTS - 1)) {
		const struct dp_lip_slot *s = &ls->slot[h];

		if (s->lip == 0)
			return NULL;
		if (s->addr == addr)
			return ls->lips[s->lip - 1];
	}
}

/* Control thread: rebuild ls->slot from ls->lips (before publishing ls). */
void dp_lip_set_index(struct dp_lip_set *ls);

/* Control thread: free a LIP no worker can reach any more. */
void dp_lip_free(struct dp_lip *lip);

struct dp_tables {
	struct rte_rcu_qsbr *qsbr; /* one thread id per worker */
	struct rte_hash *addrs;	   /* uint32 addr -> packed kinds/port */
	_Atomic uint32_t addr_gen; /* bumped after every change of addrs; starts at 1 */
	struct rte_lpm *lpm;	   /* prefix -> nexthop index */
	struct dp_nexthop nexthops[DP_MAX_NEXTHOPS];
	_Atomic uint32_t route_gen; /* bumped on every route change */
	_Atomic int32_t default_nh; /* 0.0.0.0/0 (rte_lpm has no depth 0); -1 = none */
	struct rte_hash *neigh;	    /* uint32 addr -> packed MAC/port/flags */
	_Atomic uint32_t neigh_gen; /* bumped when a neighbour appears, changes or goes */
	struct rte_hash *services;  /* dp_service_key -> struct dp_service * */
	struct dp_lip_set *_Atomic lips;
	atomic_bool symmetric[DP_PROTO_MAX];
	struct dp_timeouts timeouts; /* read by workers; 32-bit stores are atomic */
	struct rte_ring *learn;	     /* workers -> housekeeper: neighbour sightings */
};

extern struct dp_tables dpt;

/* Learned-neighbour message (fixed size, rte_ring_elem). */
struct dp_learn_msg {
	uint32_t addr;
	uint8_t pidx;
	uint8_t pad;
	struct rte_ether_addr mac;
};

/* Worker side: queue a sighting for the housekeeper and wake it if it
 * sleeps (dp_ctl.c). A full ring drops it. */
void dp_learn_post(struct dp_learn_msg *msg);

/* Lifecycle (dp_tables.c): create before workers launch, free after join. */
int dp_tables_create(unsigned nb_workers, char *err, size_t errlen);
void dp_tables_free(void);
/* Drop the set's reference on each real (freeing reals no conn holds) and
 * free the set. Control side, after a grace period. NULL is a no-op. */
void dp_real_set_free(struct dp_real_set *s);

/*
 * Key of the address table: 16 bytes, so rte_hash compares keys with its SSE
 * routine; a 4-byte key goes through a memcmp call (echo to a local address
 * looks one up per packet).
 */
struct dp_addr_key {
	uint32_t addr;
	uint32_t zero[3];
};

static inline struct dp_addr_key
dp_addr_key(uint32_t addr)
{
	return (struct dp_addr_key){ .addr = addr };
}

/* Worker-side helpers (hot path). */
static inline int
dp_addr_lookup(uint32_t addr, uint64_t *val)
{
	struct dp_addr_key k = dp_addr_key(addr);
	void *d;
	int ret = rte_hash_lookup_data(dpt.addrs, &k, &d);
	if (ret >= 0)
		*val = (uint64_t)(uintptr_t)d;
	return ret;
}

/*
 * dp_addr_lookup through the worker's small cache: true when addr is ours,
 * *val its kinds and port. The generation is read before the table, and the
 * control side bumps it after changing the table (dp_addr_set_kind,
 * dp_addr_clear_kind), so an answer the change may have overtaken is filed
 * under a generation that is already gone: a removed address stops being
 * answered with the next packet.
 */
#define DP_ADDR_CACHED_FOUND (1ull << 63)
static inline bool
dp_addr_lookup_cached(struct dp_worker *w, uint32_t addr, uint64_t *val)
{
	struct dp_addr_cache *e = &w->addr_cache[(addr * 2654435761u) >> 26];
	uint32_t gen = atomic_load_explicit(&dpt.addr_gen, memory_order_acquire);

	if (unlikely(e->addr != addr || e->gen != gen)) {
		uint64_t v;
		e->addr = addr;
		e->gen = gen;
		e->val = dp_addr_lookup(addr, &v) >= 0 ? v | DP_ADDR_CACHED_FOUND : 0;
	}
	*val = e->val & ~DP_ADDR_CACHED_FOUND;
	return e->val != 0;
}

static inline int
dp_route_lookup(uint32_t addr_be, const struct dp_nexthop **nh)
{
	uint32_t idx;

	if (rte_lpm_lookup(dpt.lpm, rte_be_to_cpu_32(addr_be), &idx) != 0) {
		int32_t d = atomic_load_explicit(&dpt.default_nh, memory_order_acquire);
		if (d < 0)
			return -ENOENT;
		idx = (uint32_t)d;
	}
	*nh = &dpt.nexthops[idx];
	return 0;
}

static inline int
dp_neigh_lookup(uint32_t addr, uint64_t *val)
{
	void *d;
	int ret = rte_hash_lookup_data(dpt.neigh, &addr, &d);
	if (ret >= 0)
		*val = (uint64_t)(uintptr_t)d;
	return ret;
}

#endif
