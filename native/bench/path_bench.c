/*
 * path_bench.c: the packet path's cost per packet, without a NIC driver.
 *
 * The pcap cases (src/bench/cases/forwarding.ts and others) give the figure
 * that counts, a rate beside testpmd's on the same core; but half of what
 * they measure is net_pcap copying frames, their runs swing with the
 * machine, and they cannot tell one change's effect from the noise of a
 * shared machine. This harness times dp_worker_round alone on frames
 * written beforehand (harness.h), so it gives cycles per packet of
 * retrace's own work, and under callgrind (native/bench/instr.sh) a count
 * of instructions per packet that does not move with the machine's load.
 *
 * Figures (each on its own conns, warmed up first):
 *   tcp        established TCP, client to real, 66-byte segments
 *   udp        UDP datagrams, client to real
 *   tcp-reply  established TCP, real to client
 *   icmp-local echo requests to a port address, answered in place
 *   icmp-fnat  echo requests to the VIP, through FNAT
 *   new-conns  SYNs of unique tuples: each opens a conn
 * Usage: path_bench [figure[,figure]] [flows] [seconds | -b batches]
 * Prints one JSON object: per figure, cycles and ns per packet (median
 * batch) and packets per second.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "dp.h"
#include "harness.h"

static uint32_t flows = 1024;
static double secs = 1.0;
static uint64_t fixed_batches; /* -b: this many batches instead of secs */

/* A frame's bytes, copied into a fresh mbuf before every round. */
struct tmpl {
	uint8_t bytes[128];
	uint16_t len;
	uint16_t port;
};
static struct tmpl *tmpls;
static uint64_t fed; /* frames given to the dataplane in the current figure */

static void
tmpl_from(struct tmpl *t, struct rte_mbuf *m, uint16_t port)
{
	t->len = rte_pktmbuf_data_len(m);
	t->port = port;
	memcpy(t->bytes, rte_pktmbuf_mtod(m, void *), t->len);
	rte_pktmbuf_free(m);
}

static struct rte_mbuf *
mbuf_of(const struct tmpl *t)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(dp.pool);
	if (m == NULL)
		abort();
	memcpy(rte_pktmbuf_append(m, t->len), t->bytes, t->len);
	return m;
}

/* A UDP or ICMP echo frame (IPv4, DF) from the peer on port. */
static struct rte_mbuf *
l4_frame(uint16_t port, uint8_t proto, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(dp.pool);
	unsigned l4len =
		proto == IPPROTO_UDP ? sizeof(struct rte_udp_hdr) + 18 : sizeof(struct rte_icmp_hdr) + 18;
	struct rte_ipv4_hdr *iph = bench_ipv4_frame(m, port, proto, src, dst, l4len);
	uint8_t *l4 = (uint8_t *)(iph + 1);
	memset(l4, 'x', l4len);
	if (proto == IPPROTO_UDP) {
		struct rte_udp_hdr *uh = (struct rte_udp_hdr *)l4;
		uh->src_port = sport;
		uh->dst_port = dport;
		uh->dgram_len = htons((uint16_t)l4len);
		uh->dgram_cksum = 0;
		uh->dgram_cksum = rte_ipv4_udptcp_cksum(iph, uh);
	} else {
		struct rte_icmp_hdr *ih = (struct rte_icmp_hdr *)l4;
		ih->icmp_type = RTE_IP_ICMP_ECHO_REQUEST;
		ih->icmp_code = 0;
		ih->icmp_ident = sport;
		ih->icmp_seq_nb = htons(1);
		ih->icmp_cksum = 0;
		ih->icmp_cksum = (uint16_t)~rte_raw_cksum(ih, l4len);
	}
	return m;
}

/* Runs batches of BURST frames, template (first + i) % n for the i-th frame
 * of the figure, until the time or batch budget is spent; packets/batch is
 * BURST. Returns the median cycles of a batch. */
static double
run(uint32_t n)
{
	struct rte_mbuf *b[BURST];
	uint64_t limit = (uint64_t)(secs * (double)rte_get_tsc_hz());
	uint32_t i = 0;

	for (uint64_t k = 0; fixed_batches != 0 ? k < fixed_batches : bench_total() < limit; k++) {
		for (uint16_t j = 0; j < BURST; j++)
			b[j] = mbuf_of(&tmpls[(i + j) % n]);
		batch_start();
		round_timed(tmpls[i % n].port, b, BURST);
		fed += BURST;
		batch_end();
		i = (i + BURST) % n;
	}
	return bench_median_cycles();
}

/* One pass over the templates, untimed: opens the conns. */
static void
warm(uint32_t n)
{
	struct rte_mbuf *b[BURST];
	for (uint32_t i = 0; i < n; i += BURST) {
		uint16_t k = (uint16_t)RTE_MIN((uint32_t)BURST, n - i);
		for (uint16_t j = 0; j < k; j++)
			b[j] = mbuf_of(&tmpls[i + j]);
		dp_worker_round(w, tmpls[i].port, b, k);
		fed += k;
	}
}

static int printed;

/* Frames of every protocol sent so far, and drops of every reason. */
static uint64_t
sent_total(void)
{
	uint64_t n = 0;
	for (unsigned pr = 0; pr < DP_PROTO_MAX; pr++)
		for (unsigned p = 0; p < 3; p++)
			n += w->ctr->path[pr][p][DP_PATH_tx_symmetric] +
			     w->ctr->path[pr][p][DP_PATH_tx_routed];
	return n;
}
static uint64_t
drops_total(void)
{
	uint64_t n = 0;
	for (unsigned p = 0; p < 3; p++)
		for (unsigned d = 0; d < DP_DROP_MAX; d++)
			n += w->ctr->drop[p][d];
	return n;
}
static uint64_t sent_before;

/* A figure's rate means nothing if its frames were not forwarded: every
 * frame fed since the last report must have left, none dropped. */
static void
report(const char *name, double med)
{
	double hz = (double)rte_get_tsc_hz();
	uint64_t sent = sent_total() - sent_before;
	if (sent != fed || drops_total() != 0) {
		fprintf(stderr, "%s: %lu frames fed, %lu sent, %lu dropped\n", name, (unsigned long)fed,
			(unsigned long)sent, (unsigned long)drops_total());
		exit(1);
	}
	sent_before += sent;
	fed = 0;
	printf("%s\"%s\":{\"cycles_per_pkt\":%.1f,\"ns_per_pkt\":%.2f,\"pps\":%.0f}", printed++ ? "," : "",
		name, med / BURST, med / BURST / hz * 1e9, BURST / (med / hz));
}

/* Conns of figure f use client ports of their own: clients f*flows.. */
static bool wanted(const char *list, const char *name);
static const char *which;

static void
fig_tcp(uint32_t base)
{
	for (uint32_t i = 0; i < flows; i++)
		tmpl_from(&tmpls[i],
			bench_tcp_frame(PORT_UPLINK_A, bench_client(base + i), VIP, bench_cport(base + i),
				htons(80), 1, 0, RTE_TCP_SYN_FLAG, 100, 0, 0),
			PORT_UPLINK_A);
	warm(flows);
	for (uint32_t i = 0; i < flows; i++)
		tmpl_from(&tmpls[i],
			bench_tcp_frame(PORT_UPLINK_A, bench_client(base + i), VIP, bench_cport(base + i),
				htons(80), 2, 1, RTE_TCP_ACK_FLAG, 101, 7000, 0),
			PORT_UPLINK_A);
	warm(flows);
	if (wanted(which, "tcp"))
		report("tcp", run(flows));
	if (!wanted(which, "tcp-reply"))
		return;
	/* The real's side: its segments to the LIP ports its conns were given. */
	for (uint32_t i = 0; i < flows; i++) {
		struct dp_conn *c = bench_conn_of(base + i, htons(80), IPPROTO_TCP);
		if (c == NULL)
			abort();
		tmpl_from(&tmpls[i],
			bench_tcp_frame(PORT_SERVERS, c->raddr, c->laddr, c->rport, c->lport, 1, 2,
				RTE_TCP_ACK_FLAG, 7001, 101, 0),
			PORT_SERVERS);
	}
	warm(flows);
	report("tcp-reply", run(flows));
}

static void
fig_l4(const char *name, uint8_t proto, uint32_t dst, uint16_t dport, uint32_t base)
{
	for (uint32_t i = 0; i < flows; i++) {
		uint16_t sp = bench_cport(base + i);
		tmpl_from(&tmpls[i],
			l4_frame(PORT_UPLINK_A, proto, bench_client(base + i), dst, sp,
				proto == IPPROTO_ICMP ? sp : dport),
			PORT_UPLINK_A);
	}
	warm(flows);
	report(name, run(flows));
}

/* Unique SYNs: every frame a new conn, none warmed. */
static void
fig_new_conns(uint32_t base, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		tmpl_from(&tmpls[i],
			bench_tcp_frame(PORT_UPLINK_A, bench_client(base + i), VIP, bench_cport(base + i),
				htons(81), 1, 0, RTE_TCP_SYN_FLAG, 100, 0, 0),
			PORT_UPLINK_A);
	uint64_t saved = fixed_batches;
	double save_secs = secs;
	fixed_batches = n / BURST; /* one pass: a second would find the conns */
	double med = run(n);
	fixed_batches = saved;
	secs = save_secs;
	report("new-conns", med);
}

static bool
wanted(const char *list, const char *name)
{
	if (list == NULL)
		return true;
	size_t l = strlen(name);
	for (const char *p = list; (p = strstr(p, name)) != NULL; p += l)
		if ((p == list || p[-1] == ',') && (p[l] == ',' || p[l] == '\0'))
			return true;
	return false;
}

int
main(int argc, char **argv)
{
	which = argc > 1 && strcmp(argv[1], "all") != 0 ? argv[1] : NULL;
	if (argc > 2)
		flows = (uint32_t)atoi(argv[2]) / BURST * BURST;
	if (argc > 3 && strcmp(argv[3], "-b") == 0 && argc > 4)
		fixed_batches = (uint64_t)atoll(argv[4]);
	else if (argc > 3)
		secs = atof(argv[3]);
	const uint32_t new_conns = 262144;
	if (flows == 0 || flows > 200000) {
		fprintf(stderr, "flows: 32..200000\n");
		return 2;
	}
	bench_setup("pathbench", 4 * flows + new_conns + 1024, 8);
	tmpls = calloc(RTE_MAX(flows, new_conns), sizeof(*tmpls));
	if (tmpls == NULL)
		abort();
	printf("{\"flows\":%u,\"burst\":%u,\"tsc_hz\":%lu,", flows, BURST, (unsigned long)rte_get_tsc_hz());
	printf("\"figures\":{");
	if (wanted(which, "tcp") || wanted(which, "tcp-reply"))
		fig_tcp(0);
	if (wanted(which, "udp"))
		fig_l4("udp", IPPROTO_UDP, VIP, htons(53), flows);
	if (wanted(which, "icmp-local"))
		fig_l4("icmp-local", IPPROTO_ICMP, UPLINK_A_ADDR, 0, 2 * flows);
	if (wanted(which, "icmp-fnat"))
		fig_l4("icmp-fnat", IPPROTO_ICMP, VIP, 0, 3 * flows);
	if (wanted(which, "new-conns"))
		fig_new_conns(4 * flows, new_conns);
	printf("}}\n");
	return 0;
}
