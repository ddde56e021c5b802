/*
 * fuzz_packet.c: libFuzzer harness for the whole packet path.
 *
 * The dataplane runs in manual mode (one worker context driven from this
 * thread) on three net_null ports configured like the lab: port addresses,
 * a default route, two LIPs, TCP/UDP/ICMP services with static neighbours
 * for every next hop (so nothing waits on ARP), and one service per
 * client-address mode (PROXY v2/v1, TOA, UDP PROXY v2). uplink-a has a kernel
 * interface (another net_null). An input is a sequence of frames, each
 * [port:1][len:2 big-endian][frame:len], processed in order, so the fuzzer
 * can open a conn and then talk on it; port byte % 4 == 3 is a frame the
 * kernel sends through uplink-a's kernel interface. Packets leave through
 * net_null, which frees them; the mbuf pool is checked for leaks.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "dp.h"
#include "dp_ctl.h"
#include "dp_internal.h"

static struct dp_worker *w;

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

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char prefix[64], err[DP_ERR_LEN] = "";
	(void)argc, (void)argv;
	snprintf(prefix, sizeof(prefix), "fuzz%d", getpid());
	char *eal[] = { "fuzz", "--no-huge", "-m", "256", "--no-pci", "--no-shconf", "--file-prefix", prefix,
		"-l", "0", "--no-telemetry", "--log-level", "error", "--vdev", "net_null0", "--vdev",
		"net_null1", "--vdev", "net_null2", "--vdev", "net_null3,no-rx=1", NULL };
	CHECK(dp_eal_init(RTE_DIM(eal) - 1, eal, err, sizeof(err)));

	struct dp_conf conf = {
		.nb_mbufs = 4095,
		.mbuf_cache = 0,
		.burst = 32,
		.max_conns = 4096,
		.icmp_rate = 0,
		.icmp_burst = 1,
		.event_ring = 1024,
		/* Table pressure from 40 conns on, at any age: eviction runs under the fuzzer. */
		.evict_embryonic = true,
		.pressure_conns_pct = 1,
		.pressure_ports_pct = 1,
		.evict_min_age_ms = 0,
		.manual = true,
		.nb_ports = 3,
	};
	const char *names[] = { "uplink-a", "uplink-b", "servers" };
	for (int i = 0; i < 3; i++) {
		struct dp_port_conf *pc = &conf.ports[i];
		snprintf(pc->name, sizeof(pc->name), "%s", names[i]);
		snprintf(pc->devname, sizeof(pc->devname), "net_null%d", i);
		pc->mtu = i == 2 ? 1200 : 1500;
		pc->rx_desc = pc->tx_desc = 256;
		pc->has_mac = true;
		uint8_t mac[6] = { 0x02, 0, 0, 0, 0, (uint8_t)(i + 1) };
		memcpy(pc->mac, mac, 6);
	}
	/* uplink-a's kernel interface: what goes up is freed by net_null. */
	snprintf(conf.ports[0].kni_devname, sizeof(conf.ports[0].kni_devname), "net_null3");
	conf.ports[0].kni_queue = 64;
	conf.ports[0].kni_rate = 0;
	conf.ports[0].kni_burst = 1;
	CHECK(dp_start(&conf, err, sizeof(err)));
	w = dp_manual_worker();

	CHECK(dp_ctl_addr_add(ip("198.18.10.1"), 24, 0, err, sizeof(err)));
	CHECK(dp_ctl_addr_add(ip("198.18.20.1"), 24, 1, err, sizeof(err)));
	CHECK(dp_ctl_addr_add(ip("198.18.30.1"), 24, 2, err, sizeof(err)));
	CHECK(dp_ctl_route_add(0, 0, 0, ip("198.18.10.2"), err, sizeof(err)));
	CHECK(dp_ctl_lip_add(ip("198.18.30.100"), 2, err, sizeof(err)));
	CHECK(dp_ctl_lip_add(ip("198.18.30.101"), 2, err, sizeof(err)));
	const uint8_t nmac[6] = { 0x02, 0xaa, 0, 0, 0, 1 };
	CHECK(dp_ctl_neigh_add(ip("198.18.10.2"), nmac, 0, err, sizeof(err)));
	CHECK(dp_ctl_neigh_add(ip("198.18.20.2"), nmac, 1, err, sizeof(err)));
	const char *reals[] = { "198.18.30.11", "198.18.30.12", "198.18.30.13" };
	struct dp_real_conf rc[3];
	for (int i = 0; i < 3; i++) {
		CHECK(dp_ctl_neigh_add(ip(reals[i]), nmac, 2, err, sizeof(err)));
		rc[i] = (struct dp_real_conf){ ip(reals[i]), htons(8080), (uint16_t)(i + 1) };
	}
	CHECK(dp_ctl_service_add(
		IPPROTO_TCP, ip("198.19.0.1"), htons(80), DP_SCHED_ARG_WRR, 0, err, sizeof(err)));
	CHECK(dp_ctl_service_set_reals(IPPROTO_TCP, ip("198.19.0.1"), htons(80), rc, 3, err, sizeof(err)));
	CHECK(dp_ctl_service_add(
		IPPROTO_UDP, ip("198.19.0.1"), htons(80), DP_SCHED_ARG_MAGLEV, 7, err, sizeof(err)));
	CHECK(dp_ctl_service_set_reals(IPPROTO_UDP, ip("198.19.0.1"), htons(80), rc, 3, err, sizeof(err)));
	for (int i = 0; i < 3; i++)
		rc[i].port = 0;
	CHECK(dp_ctl_service_add(IPPROTO_ICMP, ip("198.19.0.1"), 0, DP_SCHED_ARG_RR, 0, err, sizeof(err)));
	CHECK(dp_ctl_service_set_reals(IPPROTO_ICMP, ip("198.19.0.1"), 0, rc, 3, err, sizeof(err)));
	/* One service per client-address mode (native/dp_caddr.c): TCP ports 81
	 * PROXY v2, 82 PROXY v1, 83 TOA; UDP port 81 PROXY v2. */
	for (int i = 0; i < 3; i++)
		rc[i].port = htons(8080);
	static const int modes[] = { DP_CADDR_PROXY_V2, DP_CADDR_PROXY_V1, DP_CADDR_TOA };
	for (int i = 0; i < 3; i++) {
		uint16_t vp = htons((uint16_t)(81 + i));
		CHECK(dp_ctl_service_add(
			IPPROTO_TCP, ip("198.19.0.1"), vp, DP_SCHED_ARG_RR, 0, err, sizeof(err)));
		CHECK(dp_ctl_service_set_reals(IPPROTO_TCP, ip("198.19.0.1"), vp, rc, 3, err, sizeof(err)));
		CHECK(dp_ctl_service_set_caddr(
			IPPROTO_TCP, ip("198.19.0.1"), vp, modes[i], err, sizeof(err)));
	}
	CHECK(dp_ctl_service_add(
		IPPROTO_UDP, ip("198.19.0.1"), htons(81), DP_SCHED_ARG_RR, 0, err, sizeof(err)));
	CHECK(dp_ctl_service_set_reals(IPPROTO_UDP, ip("198.19.0.1"), htons(81), rc, 3, err, sizeof(err)));
	CHECK(dp_ctl_service_set_caddr(
		IPPROTO_UDP, ip("198.19.0.1"), htons(81), DP_CADDR_PROXY_V2, err, sizeof(err)));
	dp_events_enable(1);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	while (off + 3 <= size) {
		uint16_t pidx = data[off] % 4;
		size_t len = ((size_t)data[off + 1] << 8) | data[off + 2];
		off += 3;
		if (len > size - off)
			len = size - off;
		struct rte_mbuf *m = rte_pktmbuf_alloc(dp.pool);
		if (m == NULL)
			abort(); /* the pool ran dry: a leak */
		if (len > rte_pktmbuf_tailroom(m))
			len = rte_pktmbuf_tailroom(m);
		memcpy(rte_pktmbuf_append(m, (uint16_t)len), data + off, len);
		off += len;
		if (pidx == 3) {
			/* From the kernel: what worker 0's poll does with a frame
			 * read from the interface; the round flushes it out. */
			w->now_tsc = rte_rdtsc();
			dp_kni_from_kernel(w, 0, &m, 1);
			dp_worker_round(w, 0, NULL, 0);
		} else {
			dp_worker_round(w, pidx, &m, 1);
		}
	}
	/* Events are drained like the control plane would. */
	struct dp_conn_info ev[64];
	uint64_t dropped;
	while (dp_events_drain(ev, RTE_DIM(ev), &dropped) > 0)
		;
	/* Nothing may stay allocated but what waits for ARP (nothing here). */
	if (rte_mempool_in_use_count(dp.pool) != w->nb_held) {
		fprintf(stderr, "mbuf leak: %u in use\n", rte_mempool_in_use_count(dp.pool));
		abort();
	}
	return 0;
}
