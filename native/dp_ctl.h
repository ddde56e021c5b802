/*
 * dp_ctl.h: control-plane mutations of the shared tables (dp_tables.h).
 *
 * Thread: the control thread (Node main thread). Each call takes the table
 * writer mutex for its duration, so calls may also come from the
 * housekeeping thread; workers never call these. State: RUNNING, else
 * -EBUSY. Errors: 0 or a negative errno listed per call, with a reason
 * written to err. Addresses and ports are in network byte order.
 */
#ifndef RETRACE_DP_CTL_H
#define RETRACE_DP_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dp_counters.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DP_MAX_ROUTES	    4096
#define DP_MAX_NEXTHOPS	    1024
#define DP_MAX_NEIGH	    16384
#define DP_MAX_ADDRS	    1024
#define DP_MAX_SERVICES	    4096
#define DP_MAX_REALS	    1024 /* per service */
#define DP_MAX_LIPS	    64
/* Per allow or deny list of a service: scanned linearly on the first packet
 * of a conn, so kept short. */
#define DP_MAX_SVC_PREFIXES 64
/* Token buckets of a service with conn_rate: client addresses hash into this
 * many slots; two clients that share a slot share a bucket. */
#define DP_SVC_RATE_SLOTS   4096
/* tbl8 groups of the route LPM: one per distinct /24 holding a prefix longer
 * than /24 (a static route or the connected route of an address). */
#define DP_LPM_TBL8S	    256

/* Per-protocol timeouts in seconds. */
struct dp_timeouts {
	uint32_t tcp_syn;
	uint32_t tcp_established;
	uint32_t tcp_fin;
	uint32_t tcp_close;
	uint32_t udp;
	uint32_t icmp;
};


/* Address on a port plus its connected route. -EEXIST (address already
 * local), -ENOENT (no such port), -ENOSPC (table full), -EINVAL. */
int dp_ctl_addr_add(uint32_t addr, uint8_t plen, uint16_t pidx, char *err, size_t errlen);
/* -ENOENT (not a port address). */
int dp_ctl_addr_del(uint32_t addr, uint8_t plen, char *err, size_t errlen);

/* Route prefix/plen via gw (0 = connected) out of port pidx. Over the
 * connected route of a port address's subnet it takes precedence (and the
 * connected route comes back when it is deleted).
 * -EEXIST (a static route for the same prefix exists), -ENOENT (no such port), -ENOSPC, -EINVAL. */
int dp_ctl_route_add(uint32_t prefix, uint8_t plen, uint16_t pidx, uint32_t gw, char *err, size_t errlen);
/* -ENOENT (no such route). */
int dp_ctl_route_del(uint32_t prefix, uint8_t plen, char *err, size_t errlen);

/* Static neighbour (replaces a learned one). -ENOENT (no such port), -ENOSPC. */
int dp_ctl_neigh_add(uint32_t addr, const uint8_t mac[6], uint16_t pidx, char *err, size_t errlen);
/* -ENOENT. */
int dp_ctl_neigh_del(uint32_t addr, char *err, size_t errlen);

struct dp_neigh_info {
	uint32_t addr;
	uint8_t mac[6];
	uint16_t pidx;
	bool is_static;
	uint32_t age_s; /* seconds since last seen (learned entries) */
};
/* Copies up to max entries; returns how many exist (may exceed max). */
int dp_ctl_neigh_list(struct dp_neigh_info *out, unsigned max);

/* LIP on port pidx. -EEXIST, -ENOENT (no such port), -ENOSPC, -ENOMEM. */
int dp_ctl_lip_add(uint32_t addr, uint16_t pidx, char *err, size_t errlen);
/* -ENOENT, -EBUSY (conns still use its ports). */
int dp_ctl_lip_del(uint32_t addr, char *err, size_t errlen);
/* Ports in use on a LIP, summed over workers and protocols. -ENOENT. */
int dp_ctl_lip_in_use(uint32_t addr, uint64_t *in_use, uint64_t *capacity);

enum {
	DP_SCHED_ARG_RR = 1,
	DP_SCHED_ARG_WRR,
	DP_SCHED_ARG_WLC,
	DP_SCHED_ARG_MAGLEV
};

/* Virtual service proto (IPPROTO_TCP/UDP/ICMP) vaddr:vport (vport 0 for
 * ICMP). -EEXIST, -ENOSPC, -EINVAL (bad proto, port or scheduler). */
int dp_ctl_service_add(
	uint8_t proto, uint32_t vaddr, uint16_t vport, int sched, uint32_t seed, char *err, size_t errlen);
/* Existing conns continue until they expire. -ENOENT. */
int dp_ctl_service_del(uint8_t proto, uint32_t vaddr, uint16_t vport, char *err, size_t errlen);
/* Change the scheduler (tables rebuilt). -ENOENT, -EINVAL. */
int dp_ctl_service_set_sched(
	uint8_t proto, uint32_t vaddr, uint16_t vport, int sched, uint32_t seed, char *err, size_t errlen);

struct dp_real_conf {
	uint32_t addr;
	uint16_t port;
	uint16_t weight;
};
/* Replace the whole set of reals (declarative). A real kept across calls
 * (same addr:port) keeps its conn counters. -ENOENT (no service), -EINVAL
 * (duplicate real), -E2BIG (more than DP_MAX_REALS), -ENOMEM. */
int dp_ctl_service_set_reals(uint8_t proto, uint32_t vaddr, uint16_t vport, const struct dp_real_conf *reals,
	unsigned n, char *err, size_t errlen);

struct dp_real_info {
	uint32_t addr;
	uint16_t port;
	uint16_t weight;
	int64_t active;
	uint64_t conns_total;
	uint64_t ctr[DP_REAL_MAX]; /* summed over workers; enum dp_real_counter */
	bool down;		   /* inhibited by its health check */
};
/* Reals of a service with live counters; returns the count or -ENOENT. */
int dp_ctl_service_reals(uint8_t proto, uint32_t vaddr, uint16_t vport, struct dp_real_info *out,
	unsigned max, uint64_t *conns_total);
/* Mark one real of a service DOWN (inhibited: no scheduler picks it for a
 * new conn; its conns continue) or not, and rebuild the service's scheduler
 * tables so wrr and maglev leave it out. The weight is untouched. A no-op
 * when the flag already has that value. -ENOENT (no service or no such
 * real), -ENOMEM. */
int dp_ctl_service_set_real_down(uint8_t proto, uint32_t vaddr, uint16_t vport, uint32_t raddr,
	uint16_t rport, bool down, char *err, size_t errlen);
/* Sum of conns_total over every service: one pass over the service table, no
 * per-real work (what WatchCounters' conns-per-second needs). -EBUSY if not running. */
int dp_ctl_services_conns_total(uint64_t *total);

struct dp_prefix {
	uint32_t addr; /* network order, host bits clear */
	uint8_t plen;  /* 0..32 */
};
struct dp_svc_limits_conf {
	uint32_t max_conns;  /* 0 = no limit */
	uint32_t conn_rate;  /* new conns per second per client address; 0 = no limit */
	uint32_t conn_burst; /* bucket size (conns); with conn_rate, >= 1 */
	unsigned n_allow, n_deny;
	const struct dp_prefix *allow; /* empty = every client */
	const struct dp_prefix *deny;  /* wins over allow */
};
/* Replace the admission limits of a service; they apply to new conns only.
 * All zero/empty removes them. -ENOENT, -EINVAL (host bits, plen > 32, a
 * conn_rate without a conn_burst),
 * -E2BIG (a list over DP_MAX_SVC_PREFIXES), -ENOMEM. */
int dp_ctl_service_set_limits(uint8_t proto, uint32_t vaddr, uint16_t vport,
	const struct dp_svc_limits_conf *conf, char *err, size_t errlen);
/* Conns refused by the service's limits, by enum dp_svc_drop, and its live
 * conns (the sum over its current reals). -ENOENT, -EBUSY. */
int dp_ctl_service_drops(
	uint8_t proto, uint32_t vaddr, uint16_t vport, uint64_t out[DP_SVC_DROP_MAX], uint64_t *active);

enum {
	DP_SYN_PROXY_ARG_OFF = 0,
	DP_SYN_PROXY_ARG_ON,
	DP_SYN_PROXY_ARG_AUTO
};
/* SYN flood defence of a TCP service (dp_synproxy.c): off, on, or auto (on
 * while the worker receiving a SYN holds at least threshold half-open TCP
 * conns; threshold >= 1 with auto, 0 otherwise). Applies to new conns.
 * -ENOENT, -EINVAL (not TCP, bad mode or threshold). */
int dp_ctl_service_set_syn_proxy(uint8_t proto, uint32_t vaddr, uint16_t vport, int mode, uint32_t threshold,
	char *err, size_t errlen);
/* The mode, threshold and cookie counters (enum dp_svc_syn) of a service.
 * -ENOENT, -EBUSY. */
int dp_ctl_service_syn_proxy(uint8_t proto, uint32_t vaddr, uint16_t vport, int *mode, uint32_t *threshold,
	uint64_t out[DP_SVC_SYN_MAX]);
/* Half-open TCP conns, summed over workers (what auto mode compares). */
uint64_t dp_ctl_half_open(void);
/* Client-address mode of a service (docs/design.md, "The client's address
 * at the real"): how a real learns the client's address through full NAT. */
enum dp_caddr_mode {
	DP_CADDR_NONE = 0,
	DP_CADDR_PROXY_V2 = 1, /* TCP: a PROXY v2 header before the first byte; UDP: one per datagram */
	DP_CADDR_PROXY_V1 = 2, /* TCP: a PROXY v1 text header before the first byte */
	DP_CADDR_TOA = 3,      /* TCP: option 254 (DPVS's TOA) on the client's first segments */
};
/* Set the client-address mode of a service; it applies to new conns only.
 * -ENOENT, -EINVAL (a mode the protocol cannot carry: v1 and TOA are TCP
 * only, ICMP takes none), -EBUSY. */
int dp_ctl_service_set_caddr(
	uint8_t proto, uint32_t vaddr, uint16_t vport, int mode, char *err, size_t errlen);
/* The current mode, or -ENOENT / -EBUSY. */
int dp_ctl_service_get_caddr(uint8_t proto, uint32_t vaddr, uint16_t vport);

/* Per-protocol source-in-source-out switch. proto is IPPROTO_*; -EINVAL. */
int dp_ctl_symmetric_set(uint8_t proto, bool on);
bool dp_ctl_symmetric_get(uint8_t proto);

/* Seconds; every value 1..86400*7. -EINVAL. */
int dp_ctl_timeouts_set(const struct dp_timeouts *t, char *err, size_t errlen);
void dp_ctl_timeouts_get(struct dp_timeouts *t);

/* Conns currently in the tables, summed over workers. */
uint64_t dp_ctl_conn_count(void);

#ifdef __cplusplus
}
#endif
#endif
