/*
 * harness.h: what the native benchmarks share (synproxy_bench.c,
 * path_bench.c). The dataplane runs in manual mode: one worker context on
 * the calling thread, three net_null ports (uplink-a, uplink-b, servers)
 * that free what is sent, a VIP with TCP and UDP services, one real behind
 * the servers port, LIPs, static neighbours (so nothing waits on ARP).
 *
 * Frames are written into mbufs outside the timed part; only
 * dp_worker_round is timed, per batch. A rate is the items of a batch over
 * the median batch time: on a shared machine a batch during which the thread
 * was preempted is an outlier, not a slower dataplane.
 */
#ifndef RETRACE_BENCH_HARNESS_H
#define RETRACE_BENCH_HARNESS_H

#include <stdbool.h>
#include <stdint.h>

#include <rte_ip.h>
#include <rte_mbuf.h>

#include "dp_conn.h"
#include "dp_internal.h"

#define BURST 32

/* Ports of the topology (logical indexes). */
enum {
	PORT_UPLINK_A = 0,
	PORT_UPLINK_B = 1,
	PORT_SERVERS = 2
};

extern struct dp_worker *w;
extern uint32_t VIP, REAL, CLIENT_BASE, UPLINK_A_ADDR;
extern const uint8_t PORT_MAC[3][6];
extern const uint8_t PEER_MAC[6];

/* EAL, dp_start (max_conns conns, manual mode) and the topology above;
 * lips LIPs on the servers port; services on VIP ports 80 and 81 (TCP) and
 * 53 (UDP), round robin to REAL:8080 (UDP: REAL:5353). Aborts on failure. */
void bench_setup(const char *name, uint32_t max_conns, uint32_t lips);

uint32_t bench_ip(const char *s);

/* Client i of a figure: its address and port (network order). */
uint32_t bench_client(uint32_t i);
uint16_t bench_cport(uint32_t i);

/* The conn of client i to vport, or NULL. */
struct dp_conn *bench_conn_of(uint32_t i, uint16_t vport, uint8_t proto);

/* Appends Ethernet (PEER_MAC to port's MAC) and IPv4 (DF, TTL 64, checksum
 * set) headers for l4len bytes of protocol proto to m; returns the IPv4
 * header, the L4 bytes following it are the caller's to write. */
struct rte_ipv4_hdr *bench_ipv4_frame(
	struct rte_mbuf *m, uint16_t port, uint8_t proto, uint32_t src, uint32_t dst, unsigned l4len);

/* A TCP frame arriving on port from the peer, with timestamps (and, on
 * SYNs, Linux's other options), payload bytes of 'x'. */
struct rte_mbuf *bench_tcp_frame(uint16_t port, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
	uint32_t seq, uint32_t ack, uint8_t flags, uint32_t tsval, uint32_t tsecr, unsigned payload);

/* Batch timing: round_timed adds the cycles of one dp_worker_round to the
 * current batch. */
void batch_start(void);
void batch_end(void);
void round_timed(uint16_t port, struct rte_mbuf **pkts, uint16_t n);
/* Cycles of every batch of the current figure so far. */
uint64_t bench_total(void);
/* Median cycles of a batch of the current figure, then a new figure. */
double bench_median_cycles(void);
/* Items per second from per_batch items per batch at the median batch time. */
double bench_rate(double per_batch);

#define CHECK(x)                                                                      \
	do {                                                                          \
		int _r = (x);                                                         \
		if (_r < 0) {                                                         \
			fprintf(stderr, "setup failed: %s = %d (%s)\n", #x, _r, err); \
			abort();                                                      \
		}                                                                     \
	} while (0)

#endif
