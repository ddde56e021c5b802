/*
 * harness.c: the native benchmarks' shared set-up and timing (harness.h).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_ip.h>
#include <rte_tcp.h>

#include "dp.h"
#include "dp_ctl.h"
#include "harness.h"

struct dp_worker *w;
uint32_t VIP, REAL, CLIENT_BASE, UPLINK_A_ADDR;
const uint8_t PORT_MAC[3][6] = { { 2, 0, 0, 0, 0, 1 }, { 2, 0, 0, 0, 0, 2 }, { 2, 0, 0, 0, 0, 3 } };
const uint8_t PEER_MAC[6] = { 2, 0xaa, 0, 0, 0, 1 };

static uint64_t cycles; /* of the current batch */
static uint64_t total;	/* of every batch of the current figure */

/* Batch times of the current figure. */
#define MAX_BATCHES (1u << 22)
static uint64_t *batches;
static uint32_t nb_batches;

void
batch_start(void)
{
	cycles = 0;
}

void
batch_end(void)
{
	total += cycles;
	if (nb_batches < MAX_BATCHES)
		batches[nb_batches++] = cycles;
}

/* Not inlined: callgrind's --toggle-collect=round_timed counts the packet path alone. */
__attribute__((noinline)) void
round_timed(uint16_t port, struct rte_mbuf **pkts, uint16_t n)
{
	uint64_t t = rte_rdtsc_precise();
	/* The expiry walk is paced by time: a busy worker's rounds are a few
	 * thousand cycles apart and walk next to nothing. Under callgrind rounds
	 * are 50x as far apart and would walk hundreds of records each, so the
	 * pace starts now. */
	w->expire_tsc = t;
	dp_worker_round(w, port, pkts, n);
	cycles += rte_rdtsc_precise() - t;
}

uint64_t
bench_total(void)
{
	return total;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

double
bench_median_cycles(void)
{
	if (nb_batches == 0)
		return 0;
	qsort(batches, nb_batches, sizeof(batches[0]), cmp_u64);
	double med = (double)batches[nb_batches / 2];
	nb_batches = 0;
	total = 0;
	return med;
}

double
bench_rate(double per_batch)
{
	return per_batch / (bench_median_cycles() / (double)rte_get_tsc_hz());
}

uint32_t
bench_ip(const char *s)
{
	struct in_addr a;
	if (inet_pton(AF_INET, s, &a) != 1)
		abort();
	return a.s_addr;
}

uint32_t
bench_client(uint32_t i)
{
	return htonl(ntohl(CLIENT_BASE) + i / 50000);
}

uint16_t
bench_cport(uint32_t i)
{
	return htons((uint16_t)(10000 + i % 50000));
}

struct dp_conn *
bench_conn_of(uint32_t i, uint16_t vport, uint8_t proto)
{
	struct dp_conn_key k = { .saddr = bench_client(i),
		.daddr = VIP,
		.sport = bench_cport(i),
		.dport = vport,
		.proto = proto };
	enum dp_side_id from;
	return dp_conn_lookup(w, &k, &from);
}

struct rte_ipv4_hdr *
bench_ipv4_frame(struct rte_mbuf *m, uint16_t port, uint8_t proto, uint32_t src, uint32_t dst, unsigned l4len)
{
	unsigned len = 14 + 20 + l4len;
	uint8_t *p = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)len);
	if (p == NULL)
		abort();
	memcpy(p, PORT_MAC[port], 6);
	memcpy(p + 6, PEER_MAC, 6);
	p[12] = 0x08, p[13] = 0;
	struct rte_ipv4_hdr *iph = (struct rte_ipv4_hdr *)(p + 14);
	memset(iph, 0, 20);
	iph->version_ihl = 0x45;
	iph->total_length = htons((uint16_t)(len - 14));
	iph->fragment_offset = htons(0x4000);
	iph->time_to_live = 64;
	iph->next_proto_id = proto;
	iph->src_addr = src;
	iph->dst_addr = dst;
	iph->hdr_checksum = rte_ipv4_cksum(iph);
	return iph;
}

struct rte_mbuf *
bench_tcp_frame(uint16_t port, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint32_t seq,
	uint32_t ack, uint8_t flags, uint32_t tsval, uint32_t tsecr, unsigned payload)
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
	struct rte_ipv4_hdr *iph = bench_ipv4_frame(m, port, IPPROTO_TCP, src, dst, 20 + ol + payload);
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

void
bench_setup(const char *name, uint32_t max_conns, uint32_t lips)
{
	char prefix[64], err[DP_ERR_LEN] = "";
	snprintf(prefix, sizeof(prefix), "%s%d", name, getpid());
	char *eal[] = { (char *)name, "--no-huge", "-m", "1024", "--no-pci", "--no-shconf", "--file-prefix",
		prefix, "-l", "0", "--no-telemetry", "--log-level", "error", "--vdev", "net_null0", "--vdev",
		"net_null1", "--vdev", "net_null2", NULL };
	CHECK(dp_eal_init(RTE_DIM(eal) - 1, eal, err, sizeof(err)));
	struct dp_conf conf = {
		.nb_mbufs = 8191,
		.mbuf_cache = 256, /* as a production pool: frees and allocs mostly hit the cache */
		.burst = BURST,
		.max_conns = max_conns,
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
	VIP = bench_ip("198.19.0.1");
	REAL = bench_ip("198.18.30.11");
	CLIENT_BASE = bench_ip("100.64.0.0");
	UPLINK_A_ADDR = bench_ip("198.18.10.1");
	CHECK(dp_ctl_addr_add(UPLINK_A_ADDR, 24, 0, err, sizeof(err)));
	CHECK(dp_ctl_addr_add(bench_ip("198.18.20.1"), 24, 1, err, sizeof(err)));
	CHECK(dp_ctl_addr_add(bench_ip("198.18.30.1"), 24, 2, err, sizeof(err)));
	CHECK(dp_ctl_route_add(0, 0, 1, bench_ip("198.18.20.2"), err, sizeof(err)));
	CHECK(dp_ctl_neigh_add(bench_ip("198.18.20.2"), PEER_MAC, 1, err, sizeof(err)));
	CHECK(dp_ctl_neigh_add(REAL, PEER_MAC, 2, err, sizeof(err)));
	char lip[32];
	for (uint32_t l = 0; l < lips; l++) {
		snprintf(lip, sizeof(lip), "198.18.30.%u", 100 + l);
		CHECK(dp_ctl_lip_add(bench_ip(lip), 2, err, sizeof(err)));
	}
	struct dp_real_conf rc = { REAL, htons(8080), 1 };
	for (uint16_t p = 80; p <= 81; p++) {
		CHECK(dp_ctl_service_add(IPPROTO_TCP, VIP, htons(p), DP_SCHED_ARG_RR, 0, err, sizeof(err)));
		CHECK(dp_ctl_service_set_reals(IPPROTO_TCP, VIP, htons(p), &rc, 1, err, sizeof(err)));
	}
	struct dp_real_conf ru = { REAL, htons(5353), 1 };
	CHECK(dp_ctl_service_add(IPPROTO_UDP, VIP, htons(53), DP_SCHED_ARG_RR, 0, err, sizeof(err)));
	CHECK(dp_ctl_service_set_reals(IPPROTO_UDP, VIP, htons(53), &ru, 1, err, sizeof(err)));
	struct dp_real_conf ri = { REAL, 0, 1 };
	CHECK(dp_ctl_service_add(IPPROTO_ICMP, VIP, 0, DP_SCHED_ARG_RR, 0, err, sizeof(err)));
	CHECK(dp_ctl_service_set_reals(IPPROTO_ICMP, VIP, 0, &ri, 1, err, sizeof(err)));
	batches = calloc(MAX_BATCHES, sizeof(*batches));
	if (batches == NULL)
		abort();
}
