/*
 * synproxy_bench.c: the SYN proxy's costs, measured on the packet path itself
 * (src/bench/cases/synproxy.ts runs it; docs/bench.md has the method).
 *
 * Why not a pcap against a running appliance like the other cases: a
 * proxied conn needs the real's SYN-ACK to its LIP port, which the bench's
 * servers port (a sink) never sends and no pcap could know in advance (LIP
 * ports are drawn from a shuffled pool, cookies from a secret). Here the
 * dataplane runs in manual mode (one worker context on this thread, net_null
 * ports that free what is sent), like the fuzz harness; the bench looks the
 * conns up to answer as the real would. Frames are written into mbufs
 * outside the timed part; only dp_worker_round (parse, lookup, rewrite, tx,
 * housekeeping) is timed, per batch of BURST. A rate is BURST over the
 * median batch time: on a shared machine a batch during which this thread
 * was preempted is an outlier, not a slower dataplane.
 *
 * Prints one JSON object:
 *   cookies_per_s      SYNs answered with a cookie SYN-ACK (unique tuples)
 *   conns_on_per_s     conns opened through the proxy: the client's ACK with
 *                      the cookie (conn, LIP port, SYN to the real) and the
 *                      real's SYN-ACK (splice, held ACK forwarded)
 *   conns_off_per_s    the same conns without the proxy: client SYN, real
 *                      SYN-ACK, client ACK, each forwarded
 *   fwd_on_pps, fwd_off_pps   established conns, data both ways (timestamps
 *                      on every segment), proxied (seq, timestamp and window
 *                      rewrite) and not
 * Usage: synproxy_bench [conns] [seconds per figure]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>

#include "dp.h"
#include "dp_conn.h"
#include "dp_ctl.h"
#include "dp_internal.h"
#include "dp_synproxy.h"

#define BURST 32

static struct dp_worker *w;
static const uint8_t PORT_MAC[3][6] = { { 2, 0, 0, 0, 0, 1 }, { 2, 0, 0, 0, 0, 2 }, { 2, 0, 0, 0, 0, 3 } };
static const uint8_t PEER_MAC[6] = { 2, 0xaa, 0, 0, 0, 1 };
static uint32_t VIP, REAL, CLIENT_BASE;
static uint64_t cycles; /* of the current batch */
static uint64_t total;	/* of every batch of the current figure */

/* Batch times of the current figure. */
#define MAX_BATCHES (1u << 22)
static uint64_t *batches;
static uint32_t nb_batches;

static void
batch_start(void)
{
	cycles = 0;
}
static void
batch_end(void)
{
	total += cycles;
	if (nb_batches < MAX_BATCHES)
		batches[nb_batches++] = cycles;
}
static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}
/* Items per second from `per_batch` items per batch at the median batch time. */
static double
rate(double per_batch)
{
	qsort(batches, nb_batches, sizeof(batches[0]), cmp_u64);
	double med = (double)batches[nb_batches / 2];
	nb_batches = 0;
	total = 0;
	return per_batch / (med / (double)rte_get_tsc_hz());
}

static uint32_t
ip(const char *s)
{
	struct in_addr a;
	if (inet_pton(AF_INET, s, &a) != 1)
		abort();
	return a.s_addr;
}

#define CHECK(x)                                                                      \
	do {                                                                          \
		int _r = (x);                                                         \
		if (_r < 0) {                                                         \
			fprintf(stderr, "setup failed: %s = %d (%s)\n", #x, _r, err); \
			abort();                                                      \
		}                                                                     \
	} while (0)

/* A TCP frame with timestamps (and, on SYNs, Linux's other options). */
static struct rte_mbuf *
frame(uint16_t port, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
	uint8_t flags, uint32_t tsval, uint32_t tsecr, unsigned payload)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(dp.pool);
	if (m == NULL)
		abort();
	uint8_t opts[20];
	unsigned ol = 0;
	if (flags & RTE_TCP_SYN_FLAG) {
		const uint8_t o[] = { 2, 4, 0x05, 0xb4, 4, 2, 8, 10 };
		memcpy(opts, o, sizeof(o));
		ol = sizeof(o);
	} else {
		opts[0] = opts[1] = 1, opts[2] = 8, opts[3] = 10;
		ol = 4;
	}
	uint32_t ts[2] = { htonl(tsval), htonl(tsecr) };
	memcpy(opts + ol, ts, 8);
	ol += 8;
	if (flags & RTE_TCP_SYN_FLAG) {
		const uint8_t ws[] = { 1, 3, 3, 7 };
		memcpy(opts + ol, ws, 4);
		ol += 4;
	}
	unsigned len = 14 + 20 + 20 + ol + payload;
	uint8_t *p = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)len);
	memcpy(p, PORT_MAC[port], 6);
	memcpy(p + 6, PEER_MAC, 6);
	p[12] = 0x08, p[13] = 0;
	struct rte_ipv4_hdr *iph = (struct rte_ipv4_hdr *)(p + 14);
	memset(iph, 0, 20);
	iph->version_ihl = 0x45;
	iph->total_length = htons((uint16_t)(len - 14));
	iph->fragment_offset = htons(0x4000);
	iph->time_to_live = 64;
	iph->next_proto_id = IPPROTO_TCP;
	iph->src_addr = src;
	iph->dst_addr = dst;
	iph->hdr_checksum = rte_ipv4_cksum(iph);
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(iph + 1);
	memset(th, 0, 20);
	th->src_port = sport;
	th->dst_port = dport;
	th->sent_seq = htonl(seq);
	th->recv_ack = htonl(ack);
	th->data_off = (uint8_t)(((20 + ol) / 4) << 4);
	th->tcp_flags = flags;
	th->rx_win = htons(500);
	memcpy(th + 1, opts, ol);
	memset((uint8_t *)(th + 1) + ol, 'x', payload);
	th->cksum = rte_ipv4_udptcp_cksum(iph, th);
	return m;
}

static void
round_timed(uint16_t port, struct rte_mbuf **pkts, uint16_t n)
{
	uint64_t t = rte_rdtsc_precise();
	dp_worker_round(w, port, pkts, n);
	cycles += rte_rdtsc_precise() - t;
}

static uint32_t
client(uint32_t i)
{
	return htonl(ntohl(CLIENT_BASE) + i / 50000);
}
static uint16_t
cport(uint32_t i)
{
	return htons((uint16_t)(10000 + i % 50000));
}

static struct dp_conn *
conn_of(uint32_t i, uint16_t vport)
{
	struct dp_conn_key k = {
		.saddr = client(i), .daddr = VIP, .sport = cport(i), .dport = vport, .proto = IPPROTO_TCP
	};
	enum dp_side_id from;
	return dp_conn_lookup(w, &k, &from);
}

/* Open n conns (a multiple of BURST) to vport, proxied or not; returns conns per second. */
static double
open_conns(uint32_t n, uint16_t vport, bool proxied)
{
	struct rte_mbuf *b[BURST];
	const uint32_t isn = 1000, real_isn = 500000;
	for (uint32_t base = 0; base + BURST <= n; base += BURST) {
		uint16_t k = BURST;
		batch_start();
		if (proxied) {
			/* The client's ACK to our SYN-ACK: its cookie, and our TSval (options 0x17). */
			for (uint16_t j = 0; j < k; j++) {
				uint32_t i = base + j;
				uint32_t c = dp_synproxy_cookie(w, client(i), VIP, cport(i), vport, isn, 3);
				b[j] = frame(1, client(i), VIP, cport(i), vport, isn + 1, c + 1,
					RTE_TCP_ACK_FLAG, 100, 0x17, 0);
			}
			round_timed(1, b, k);
		} else {
			for (uint16_t j = 0; j < k; j++) {
				uint32_t i = base + j;
				b[j] = frame(1, client(i), VIP, cport(i), vport, isn, 0, RTE_TCP_SYN_FLAG,
					100, 0, 0);
			}
			round_timed(1, b, k);
		}
		/* The real answers each SYN it got. */
		for (uint16_t j = 0; j < k; j++) {
			struct dp_conn *c = conn_of(base + j, vport);
			if (c == NULL)
				abort();
			b[j] = frame(2, c->raddr, c->laddr, c->rport, c->lport, real_isn, isn + 1,
				RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG, 7000, 100, 0);
		}
		round_timed(2, b, k);
		if (!proxied) {
			for (uint16_t j = 0; j < k; j++) {
				uint32_t i = base + j;
				b[j] = frame(1, client(i), VIP, cport(i), vport, isn + 1, real_isn + 1,
					RTE_TCP_ACK_FLAG, 101, 7000, 0);
			}
			round_timed(1, b, k);
		}
		batch_end();
	}
	return rate(BURST);
}

/* Data both ways on n established conns for about `secs` of dataplane time;
 * returns packets per second. */
static double
forward(uint32_t n, uint16_t vport, bool proxied, double secs)
{
	struct rte_mbuf *b[BURST];
	struct dp_conn *cs[BURST];
	uint64_t limit = (uint64_t)(secs * (double)rte_get_tsc_hz());
	uint32_t i = 0;
	while (total < limit) {
		batch_start();
		for (uint16_t j = 0; j < BURST; j++)
			cs[j] = conn_of((i + j) % n, vport);
		/* Client data: acks what the real sent (in the client's numbering). */
		for (uint16_t j = 0; j < BURST; j++) {
			uint32_t ci = (i + j) % n;
			uint32_t srv = proxied ? (uint32_t)cs[j]->seq_off[DP_SIDE_SERVER] + 500001 : 500001;
			b[j] = frame(1, client(ci), VIP, cport(ci), vport, 1001, srv,
				RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG, 200, 7000, 100);
		}
		round_timed(1, b, BURST);
		for (uint16_t j = 0; j < BURST; j++) {
			struct dp_conn *c = cs[j];
			b[j] = frame(2, c->raddr, c->laddr, c->rport, c->lport, 500001, 1101,
				RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG, 7001, 200, 100);
		}
		round_timed(2, b, BURST);
		batch_end();
		i = (i + BURST) % n;
	}
	return rate(2 * BURST);
}

int
main(int argc, char **argv)
{
	uint32_t n = (argc > 1 ? (uint32_t)atoi(argv[1]) : 20000) / BURST * BURST;
	double secs = argc > 2 ? atof(argv[2]) : 2.0;
	char prefix[64], err[DP_ERR_LEN] = "";
	snprintf(prefix, sizeof(prefix), "spbench%d", getpid());
	char *eal[] = { "spbench", "--no-huge", "-m", "512", "--no-pci", "--no-shconf", "--file-prefix",
		prefix, "-l", "0", "--no-telemetry", "--log-level", "error", "--vdev", "net_null0", "--vdev",
		"net_null1", "--vdev", "net_null2", NULL };
	CHECK(dp_eal_init(RTE_DIM(eal) - 1, eal, err, sizeof(err)));
	struct dp_conf conf = {
		.nb_mbufs = 8191,
		.mbuf_cache = 0,
		.burst = BURST,
		.max_conns = 4 * n + 1024,
		.icmp_rate = 0,
		.icmp_burst = 1,
		.event_ring = 1024,
		.manual = true,
		.nb_ports = 3,
	};
	const char *names[] = { "uplink-a", "uplink-b", "servers" };
	for (int i = 0; i < 3; i++) {
		struct dp_port_conf *pc = &conf.ports[i];
		snprintf(pc->name, sizeof(pc->name), "%s", names[i]);
		snprintf(pc->devname, sizeof(pc->devname), "net_null%d", i);
		pc->mtu = 1500;
		pc->rx_desc = pc->tx_desc = 1024;
		pc->has_mac = true;
		memcpy(pc->mac, PORT_MAC[i], 6);
	}
	CHECK(dp_start(&conf, err, sizeof(err)));
	w = dp_manual_worker();
	VIP = ip("198.19.0.1");
	REAL = ip("198.18.30.11");
	CLIENT_BASE = ip("100.64.0.0");
	CHECK(dp_ctl_addr_add(ip("198.18.10.1"), 24, 0, err, sizeof(err)));
	CHECK(dp_ctl_addr_add(ip("198.18.20.1"), 24, 1, err, sizeof(err)));
	CHECK(dp_ctl_addr_add(ip("198.18.30.1"), 24, 2, err, sizeof(err)));
	CHECK(dp_ctl_route_add(0, 0, 1, ip("198.18.20.2"), err, sizeof(err)));
	CHECK(dp_ctl_neigh_add(ip("198.18.20.2"), PEER_MAC, 1, err, sizeof(err)));
	CHECK(dp_ctl_neigh_add(REAL, PEER_MAC, 2, err, sizeof(err)));
	char lip[32];
	for (uint32_t l = 0; l < 2 + 2 * n / 60000; l++) {
		snprintf(lip, sizeof(lip), "198.18.30.%u", 100 + l);
		CHECK(dp_ctl_lip_add(ip(lip), 2, err, sizeof(err)));
	}
	struct dp_real_conf rc = { REAL, htons(8080), 1 };
	for (uint16_t p = 80; p <= 81; p++) {
		CHECK(dp_ctl_service_add(IPPROTO_TCP, VIP, htons(p), DP_SCHED_ARG_RR, 0, err, sizeof(err)));
		CHECK(dp_ctl_service_set_reals(IPPROTO_TCP, VIP, htons(p), &rc, 1, err, sizeof(err)));
	}
	CHECK(dp_ctl_service_set_syn_proxy(
		IPPROTO_TCP, VIP, htons(81), DP_SYN_PROXY_ARG_ON, 0, err, sizeof(err)));

	/* Cookies: unique SYNs for about `secs`, nothing kept. */
	struct rte_mbuf *b[BURST];
	uint64_t syns = 0, limit = (uint64_t)(secs * (double)rte_get_tsc_hz());
	batches = calloc(MAX_BATCHES, sizeof(*batches));
	if (batches == NULL)
		abort();
	for (uint32_t i = 0; total < limit; i += BURST) {
		for (uint16_t j = 0; j < BURST; j++)
			b[j] = frame(1, client(i + j), VIP, cport(i + j), htons(81), 1000, 0,
				RTE_TCP_SYN_FLAG, 100, 0, 0);
		batch_start();
		round_timed(1, b, BURST);
		batch_end();
		syns += BURST;
	}
	double cookies = rate(BURST);
	uint64_t sent = 0;
	for (uint16_t p = 0; p < 3; p++)
		sent += w->ctr->path[DP_PROTO_tcp][p][DP_PATH_syn_cookies_sent];
	if (sent != syns || dp_conn_count(w) != 0) {
		fprintf(stderr, "cookies: %lu SYNs, %lu answered, %lu conns\n", (unsigned long)syns,
			(unsigned long)sent, (unsigned long)dp_conn_count(w));
		return 1;
	}

	double conns_on = open_conns(n, htons(81), true);
	double conns_off = open_conns(n, htons(80), false);
	if (dp_conn_count(w) != 2 * (uint64_t)n) {
		fprintf(stderr, "expected %u conns, have %lu\n", 2 * n, (unsigned long)dp_conn_count(w));
		return 1;
	}
	double fwd_on = forward(n, htons(81), true, secs);
	double fwd_off = forward(n, htons(80), false, secs);
	printf("{\"conns\":%u,\"cookies_per_s\":%.0f,\"conns_on_per_s\":%.0f,\"conns_off_per_s\":%.0f,"
	       "\"fwd_on_pps\":%.0f,\"fwd_off_pps\":%.0f}\n",
		n, cookies, conns_on, conns_off, fwd_on, fwd_off);
	return 0;
}
