/*
 * dp.h: the dataplane's public contract, called by the Node binding
 * (binding/binding.cc) and by native tests.
 *
 * Threads. "control" means the one thread that called dp_eal_init (the Node
 * main thread, which EAL makes the main lcore) or a thread the control thread
 * serialises with (a libuv pool thread running a start/stop job while the
 * control thread waits for its promise). Nothing here is called from a worker
 * lcore; worker code lives behind dp_internal.h.
 *
 * Errors. Every int-returning function returns 0 or a negative errno from the
 * short list in its comment, and writes a human-readable reason into the
 * caller's err buffer (NUL-terminated, truncated to errlen).
 */
#ifndef RETRACE_DP_H
#define RETRACE_DP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DP_MAX_PORTS   32 /* logical ports; counters are sized by this */
#define DP_MAX_WORKERS 64
#define DP_MAX_BURST   256
#define DP_NAME_LEN    32
#define DP_DEVNAME_LEN 128
#define DP_ERR_LEN     256

/* Life cycle: INIT -(dp_eal_init)-> EAL_READY -(dp_start)-> RUNNING
 * -(dp_stop)-> STOPPED -(dp_cleanup)-> INIT. */
enum dp_state {
	DP_STATE_INIT = 0,
	DP_STATE_EAL_READY,
	DP_STATE_RUNNING,
	DP_STATE_STOPPED,
};

struct dp_port_conf {
	char name[DP_NAME_LEN];	      /* logical name, e.g. "uplink-a" */
	char devname[DP_DEVNAME_LEN]; /* ethdev name: vdev name or PCI address */
	uint16_t mtu;
	uint16_t rx_desc;
	uint16_t tx_desc;
	bool has_mac; /* false: keep the device's own MAC */
	uint8_t mac[6];
	bool promiscuous;
	/* Kernel interface (dp_kni.c): the ethdev of the port's exception path,
	 * "" = none. Frames for the port's addresses that the dataplane does not
	 * answer go up through it; what the kernel sends leaves by this port. */
	char kni_devname[DP_DEVNAME_LEN];
	uint32_t kni_queue; /* frames waiting to go up, per port (power of two) */
	uint32_t kni_rate;  /* frames per second each way, per port; 0 = no limit */
	uint32_t kni_burst; /* token bucket depth, in frames */
};

struct dp_conf {
	uint32_t nb_mbufs;
	uint32_t mbuf_cache;
	uint16_t burst;		   /* 1..DP_MAX_BURST */
	uint32_t idle_pause_after; /* empty polls before pausing; 0 = never */
	uint32_t idle_sleep_after; /* empty polls before sleeping; 0 = never */
	uint32_t idle_sleep_us;
	uint32_t max_conns; /* per worker */
	uint32_t icmp_rate; /* ICMP we originate, per port per second; 0 = no limit */
	uint32_t icmp_burst;
	uint32_t event_ring; /* per worker, power of two */
	/* Table pressure (dp_conn.c): embryonic TCP conns (SYN_SENT, SYN_RECV)
	 * are evicted, oldest first, to make room. Off: a full table or port
	 * pool refuses new conns as before. The percentages are of a worker's
	 * max_conns and of its TCP source ports over every LIP; 0 = pressure
	 * only when full. Below full, only embryonic conns at least
	 * evict_min_age_ms old go. */
	bool evict_embryonic;
	uint8_t pressure_conns_pct; /* 0..100 */
	uint8_t pressure_ports_pct; /* 0..100 */
	uint32_t evict_min_age_ms;
	bool manual; /* tests/fuzzing: one worker context, no lcore
				    * launched; the caller drives dp_worker_round */
	uint16_t nb_ports;
	struct dp_port_conf ports[DP_MAX_PORTS];
};

/* Initialise the EAL with argv (argv[0] is a program name). Control thread,
 * once per process. The calling thread becomes the main lcore and inherits
 * its CPU set. -EALREADY (called twice), -EINVAL (bad arguments; rte_errno
 * text in err), -ENODEV/-ENOMEM/-EPERM and others from rte_eal_init. */
int dp_eal_init(int argc, char **argv, char *err, size_t errlen);

/* Create the mbuf pool, configure and start every port, launch one worker
 * per EAL worker lcore. Control thread, state EAL_READY. On failure every
 * port it started is stopped again and the state stays EAL_READY.
 * -EBUSY (wrong state), -EINVAL (bad conf, or a port cannot take one queue
 * per worker), -ENODEV (device not probed), -ENOMEM, or a driver's errno. */
int dp_start(const struct dp_conf *conf, char *err, size_t errlen);

/* Tell the workers to return, wait for them, stop and close every port.
 * Control thread, state RUNNING. -EBUSY (wrong state). */
int dp_stop(void);

/* rte_eal_cleanup. Control thread, state EAL_READY or STOPPED. */
int dp_cleanup(void);

enum dp_state dp_get_state(void);

/* ---- read-only views (control thread, state RUNNING) ---- */

enum dp_link {
	DP_LINK_UNKNOWN = 0,
	DP_LINK_UP,
	DP_LINK_DOWN
};

struct dp_port_info {
	char name[DP_NAME_LEN];
	char devname[DP_DEVNAME_LEN];
	char driver[DP_NAME_LEN];
	uint16_t port_id; /* DPDK port id */
	uint8_t mac[6];
	uint16_t mtu;
	enum dp_link link;
	uint32_t speed_mbps;
	uint16_t rx_queues, tx_queues;
	uint64_t rx_packets, rx_bytes, tx_packets, tx_bytes;
	uint64_t rx_errors, tx_errors, rx_missed, rx_nombuf;
	uint64_t tx_dropped; /* refused by the driver at tx burst, freed by us */
	/* Kernel interface (zero without one). */
	bool has_kni;
	uint64_t to_kernel, from_kernel, kernel_dropped;
};

uint16_t dp_nb_ports(void);

/* Fill info for logical port idx. -ENOENT (no such port), -EBUSY (not
 * running), or the driver's errno from rte_eth_stats_get. */
int dp_port_info(uint16_t idx, struct dp_port_info *info);

struct dp_lcore_info {
	unsigned lcore_id;
	bool is_worker;
	uint64_t cpus; /* bitmask of the first 64 CPUs */
	uint64_t busy_polls, idle_polls;
};

/* Number of lcores in use (main + workers); fill up to max entries. */
unsigned dp_lcores(struct dp_lcore_info *out, unsigned max);

struct dp_mempool_info {
	uint64_t capacity, in_use;
	uint32_t mbuf_size;
};
int dp_mempool_info(struct dp_mempool_info *out);

/* DPDK's version string (rte_version()). Any thread. */
const char *dp_dpdk_version(void);

#ifdef __cplusplus
}
#endif
#endif
