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
#include "dp_ctl.h"
#include "dp_synproxy.h"
#include "harness.h"

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
				uint32_t c = dp_synproxy_cookie(
					w, bench_client(i), VIP, bench_cport(i), vport, isn, 3);
				b[j] = bench_tcp_frame(1, bench_client(i), VIP, bench_cport(i), vport,
					isn + 1, c + 1, RTE_TCP_ACK_FLAG, 100, 0x17, 0);
			}
			round_timed(1, b, k);
		} else {
			for (uint16_t j = 0; j < k; j++) {
				uint32_t i = base + j;
				b[j] = bench_tcp_frame(1, bench_client(i), VIP, bench_cport(i), vport, isn, 0,
					RTE_TCP_SYN_FLAG, 100, 0, 0);
			}
			round_timed(1, b, k);
		}
		/* The real answers each SYN it got. */
		for (uint16_t j = 0; j < k; j++) {
			struct dp_conn *c = bench_conn_of(base + j, vport, IPPROTO_TCP);
			if (c == NULL)
				abort();
			b[j] = bench_tcp_frame(2, c->raddr, c->laddr, c->rport, c->lport, real_isn, isn + 1,
				RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG, 7000, 100, 0);
		}
		round_timed(2, b, k);
		if (!proxied) {
			for (uint16_t j = 0; j < k; j++) {
				uint32_t i = base + j;
				b[j] = bench_tcp_frame(1, bench_client(i), VIP, bench_cport(i), vport,
					isn + 1, real_isn + 1, RTE_TCP_ACK_FLAG, 101, 7000, 0);
			}
			round_timed(1, b, k);
		}
		batch_end();
	}
	return bench_rate(BURST);
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
	while (bench_total() < limit) {
		batch_start();
		for (uint16_t j = 0; j < BURST; j++)
			cs[j] = bench_conn_of((i + j) % n, vport, IPPROTO_TCP);
		/* Client data: acks what the real sent (in the client's numbering). */
		for (uint16_t j = 0; j < BURST; j++) {
			uint32_t ci = (i + j) % n;
			uint32_t srv =
				proxied ? (uint32_t)dp_conn_cold(cs[j])->seq_off[DP_SIDE_SERVER] + 500001
					: 500001;
			b[j] = bench_tcp_frame(1, bench_client(ci), VIP, bench_cport(ci), vport, 1001, srv,
				RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG, 200, 7000, 100);
		}
		round_timed(1, b, BURST);
		for (uint16_t j = 0; j < BURST; j++) {
			struct dp_conn *c = cs[j];
			b[j] = bench_tcp_frame(2, c->raddr, c->laddr, c->rport, c->lport, 500001, 1101,
				RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG, 7001, 200, 100);
		}
		round_timed(2, b, BURST);
		batch_end();
		i = (i + BURST) % n;
	}
	return bench_rate(2 * BURST);
}

int
main(int argc, char **argv)
{
	uint32_t n = (argc > 1 ? (uint32_t)atoi(argv[1]) : 20000) / BURST * BURST;
	double secs = argc > 2 ? atof(argv[2]) : 2.0;
	char err[DP_ERR_LEN] = "";

	bench_setup("spbench", 4 * n + 1024, 2 + 2 * n / 60000);
	CHECK(dp_ctl_service_set_syn_proxy(
		IPPROTO_TCP, VIP, htons(81), DP_SYN_PROXY_ARG_ON, 0, err, sizeof(err)));

	/* Cookies: unique SYNs for about `secs`, nothing kept. */
	struct rte_mbuf *b[BURST];
	uint64_t syns = 0, limit = (uint64_t)(secs * (double)rte_get_tsc_hz());
	for (uint32_t i = 0; bench_total() < limit; i += BURST) {
		for (uint16_t j = 0; j < BURST; j++)
			b[j] = bench_tcp_frame(1, bench_client(i + j), VIP, bench_cport(i + j), htons(81),
				1000, 0, RTE_TCP_SYN_FLAG, 100, 0, 0);
		batch_start();
		round_timed(1, b, BURST);
		batch_end();
		syns += BURST;
	}
	double cookies = bench_rate(BURST);
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
