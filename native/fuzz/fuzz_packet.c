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
 *
 * SYN proxy: 198.19.0.1:443 has syn_proxy on, 198.19.0.1:444 auto (at one
 * half-open conn) with PROXY v2. A fuzzer cannot guess a SipHash cookie, so
 * when bit 7 of a record's port byte is set (the port is then the low 7
 * bits % 4) and the frame is TCP, the harness writes the
 * current cookie for its tuple and seq - 1 (MSS index from bits 4-5) into
 * its ack field, as the client of a SYN-ACK would: that reaches conn
 * creation, the SYN to the real and the splice. The invariant checked after
 * every frame: the proxied service gains a conn only from an ACK whose
 * cookie verifies (checked independently, at the round's time).
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
#include "dp_synproxy.h"

static struct dp_worker *w;

#define SP_PORT 443 /* syn_proxy on */

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
	for (int i = 0; i < 3; i++)
		rc[i].port = htons(8080);
	for (uint16_t p = SP_PORT; p <= SP_PORT + 1; p++) {
		CHECK(dp_ctl_service_add(
			IPPROTO_TCP, ip("198.19.0.1"), htons(p), DP_SCHED_ARG_RR, 0, err, sizeof(err)));
		CHECK(dp_ctl_service_set_reals(
			IPPROTO_TCP, ip("198.19.0.1"), htons(p), rc, 3, err, sizeof(err)));
	}
	CHECK(dp_ctl_service_set_syn_proxy(
		IPPROTO_TCP, ip("198.19.0.1"), htons(SP_PORT), DP_SYN_PROXY_ARG_ON, 0, err, sizeof(err)));
	CHECK(dp_ctl_service_set_syn_proxy(IPPROTO_TCP, ip("198.19.0.1"), htons(SP_PORT + 1),
		DP_SYN_PROXY_ARG_AUTO, 1, err, sizeof(err)));
	/* The auto one sends PROXY v2 headers too: a cookie-opened conn gets its
	 * header after the splice, at the ISN the cookie ACK vouched for. */
	CHECK(dp_ctl_service_set_caddr(
		IPPROTO_TCP, ip("198.19.0.1"), htons(SP_PORT + 1), DP_CADDR_PROXY_V2, err, sizeof(err)));
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

/* The TCP segment of an Ethernet frame, if it is one (bounds checked). */
struct seg {
	uint32_t saddr, daddr, seq, ack;
	uint16_t sport, dport;
	uint8_t flags;
	uint8_t *ack_at;
};

static bool
tcp_seg(uint8_t *f, size_t len, struct seg *s)
{
	if (len < 14 + 20 || f[12] != 0x08 || f[13] != 0x00 || (f[14] >> 4) != 4)
		return false;
	size_t ihl = (size_t)(f[14] & 0xf) * 4;
	if (ihl < 20 || f[14 + 9] != IPPROTO_TCP || len < 14 + ihl + 20)
		return false;
	uint8_t *t = f + 14 + ihl;
	memcpy(&s->saddr, f + 14 + 12, 4);
	memcpy(&s->daddr, f + 14 + 16, 4);
	memcpy(&s->sport, t, 2);
	memcpy(&s->dport, t + 2, 2);
	s->seq = (uint32_t)t[4] << 24 | (uint32_t)t[5] << 16 | (uint32_t)t[6] << 8 | t[7];
	s->ack = (uint32_t)t[8] << 24 | (uint32_t)t[9] << 16 | (uint32_t)t[10] << 8 | t[11];
	s->flags = t[13];
	s->ack_at = t + 8;
	return true;
}

static uint64_t
sp_conns(void)
{
	struct dp_real_info ri[3];
	uint64_t total = 0;
	if (dp_ctl_service_reals(IPPROTO_TCP, ip("198.19.0.1"), htons(SP_PORT), ri, 3, &total) < 0)
		abort();
	return total;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	while (off + 3 <= size) {
		uint8_t ctl = data[off];
		uint16_t pidx = (ctl & 0x7f) % 4;
		size_t len = ((size_t)data[off + 1] << 8) | data[off + 2];
		off += 3;
		if (len > size - off)
			len = size - off;
		struct rte_mbuf *m = rte_pktmbuf_alloc(dp.pool);
		if (m == NULL)
			abort(); /* the pool ran dry: a leak */
		if (len > rte_pktmbuf_tailroom(m))
			len = rte_pktmbuf_tailroom(m);
		uint8_t *f = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)len);
		memcpy(f, data + off, len);
		off += len;

		struct seg s;
		bool is_tcp = tcp_seg(f, len, &s);
		if (is_tcp && (ctl & 0x80)) {
			s.ack = dp_synproxy_cookie(
					w, s.saddr, s.daddr, s.sport, s.dport, s.seq - 1, (ctl >> 4) & 3) +
				1;
			uint32_t be = htonl(s.ack);
			memcpy(s.ack_at, &be, 4);
		}
		uint64_t before = sp_conns();
		if (pidx == 3) {
			/* From the kernel: what worker 0's poll does with a frame
			 * read from the interface; the round flushes it out. */
			w->now_tsc = rte_rdtsc();
			dp_kni_from_kernel(w, 0, &m, 1);
			dp_worker_round(w, 0, NULL, 0);
		} else {
			dp_worker_round(w, pidx, &m, 1);
		}
		if (sp_conns() != before) {
			/* Checked at the round's clock (w->now_tsc), like the dataplane did. */
			bool cookie = is_tcp && s.daddr == ip("198.19.0.1") && s.dport == htons(SP_PORT) &&
				      (s.flags & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG | RTE_TCP_RST_FLAG)) ==
					      RTE_TCP_ACK_FLAG &&
				      dp_synproxy_cookie_check(w, s.saddr, s.daddr, s.sport, s.dport,
					      s.seq - 1, s.ack - 1) >= 0;
			if (!cookie) {
				fprintf(stderr,
					"a conn of the SYN-proxied service opened without a valid cookie\n");
				abort();
			}
		}
	}
	/* Events are drained like the control plane would. */
	struct dp_conn_info ev[64];
	uint64_t dropped;
	while (dp_events_drain(ev, RTE_DIM(ev), &dropped) > 0)
		;
	/* Nothing may stay allocated but what waits for ARP (nothing here) or
	 * for a SYN-proxied conn's real. */
	if (rte_mempool_in_use_count(dp.pool) != w->nb_held + w->nb_sp_held) {
		fprintf(stderr, "mbuf leak: %u in use\n", rte_mempool_in_use_count(dp.pool));
		abort();
	}
	return 0;
}
