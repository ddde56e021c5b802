/*
 * dp_kni.c: the kernel interface of a port, the host's own path through the
 * dataplane ports (VPP linux-cp, DPVS KNI). DPDK deprecated KNI; this uses
 * net_tap: one more ethdev per port whose other end is a Linux netdev, read
 * and written with ordinary burst calls (docs/design.md, "Kernel interface").
 *
 * Up (toward the kernel): the packet path hands over what it does not answer
 * itself and that is addressed to a port address: TCP and UDP to a port
 * address without a conn or service, ICMP other than echo requests (echo
 * replies and errors for the kernel's own pings and traceroutes), other IP
 * protocols; and ARP, which the dataplane still answers and learns from, is
 * mirrored (requests for a port address, replies, gratuitous ARP) so the
 * kernel's neighbour table is right. Any worker may send up: frames go
 * through a multi-producer ring per port (its size is the queue bound) after
 * a token bucket per worker and port (rate / workers, like icmp_rate).
 * Worker 0 owns the net_tap queues: it empties the rings into the kernel.
 *
 * Down (from the kernel): worker 0 reads each interface at most `burst`
 * frames per round and no faster than the port's rate (the rest waits in the
 * tap's own queue, which the kernel bounds), every DP_KNI_POLL_US while idle
 * (a read is a system call), and sends them out of the port
 * as they are: the kernel chose the port by its routing and resolved the next
 * hop itself. Only IPv4 and ARP leave (the rest counts as kernel_dropped); an
 * ARP reply for an address the dataplane answers is not sent (the dataplane
 * answered already).
 *
 * Replies leave by the port their request came in on. The kernel picks the
 * interface by its routing, and with several kernel interfaces in one
 * namespace a reply to a peer behind port X may come down through port Y's.
 * So worker 0, as it hands frames up, remembers per flow (TCP/UDP 5-tuple,
 * and the address pair for everything else) the port and source MAC they
 * came from, in a direct-mapped table of its own; a kernel frame that is the
 * reverse of a remembered flow leaves by that port, to that MAC. Anything
 * else (a flow the kernel opens, an entry evicted by a collision or older
 * than DP_KNI_FLOW_TTL_S) follows the kernel's choice.
 *
 * Off (no port has one): the packet path is unchanged: the hooks sit where
 * a packet was about to be dropped, and the poll loop tests dp.nb_kni once.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>
#include <rte_ring.h>

#include <netinet/in.h>

#include "dp_conn.h"
#include "dp_internal.h"
#include "dp_tables.h"

#define DP_KNI_DESC	  512
#define DP_KNI_FLOW_SLOTS 4096 /* power of two */
#define DP_KNI_FLOW_TTL_S 600
#define DP_KNI_POLL_US	  200 /* idle interfaces are read this often */

/* A flow that went up: the reverse of the kernel's replies. */
struct dp_kni_flow {
	struct dp_conn_key key; /* saddr = peer, daddr = ours; ports 0 for the pair entry */
	uint64_t tsc;
	struct rte_ether_addr peer_mac;
	uint8_t pidx;
	uint8_t valid;
};

/* Worker 0's table (it alone hands frames to the kernel and reads its
 * replies); allocated with the first kernel interface. */
static struct dp_kni_flow *dp_kni_flows;

static inline struct dp_kni_flow *
dp_kni_flow_slot(const struct dp_conn_key *k)
{
	return &dp_kni_flows[rte_hash_crc(k, sizeof(*k), 0) & (DP_KNI_FLOW_SLOTS - 1)];
}

/* The flow key of an IPv4 frame from the peer's point of view: the
 * 5-tuple for TCP/UDP with `ports`, else (and without ports) the pair. */
static inline bool
dp_kni_flow_key(struct rte_mbuf *m, bool from_kernel, bool ports, struct dp_conn_key *k)
{
	const uint32_t l2 = sizeof(struct rte_ether_hdr);
	const struct rte_ipv4_hdr *ip;
	uint32_t ihl;

	if (rte_pktmbuf_data_len(m) < l2 + sizeof(*ip))
		return false;
	ip = rte_pktmbuf_mtod_offset(m, const struct rte_ipv4_hdr *, l2);
	ihl = (uint32_t)(ip->version_ihl & 0x0f) * 4;
	memset(k, 0, sizeof(*k));
	k->saddr = from_kernel ? ip->dst_addr : ip->src_addr;
	k->daddr = from_kernel ? ip->src_addr : ip->dst_addr;
	if (!ports)
		return true;
	if ((ip->next_proto_id != IPPROTO_TCP && ip->next_proto_id != IPPROTO_UDP) ||
		rte_pktmbuf_data_len(m) < l2 + ihl + 4)
		return false;
	const uint16_t *pp = rte_pktmbuf_mtod_offset(m, const uint16_t *, l2 + ihl);
	k->proto = ip->next_proto_id;
	k->sport = from_kernel ? pp[1] : pp[0];
	k->dport = from_kernel ? pp[0] : pp[1];
	return true;
}

/* m goes up from port pidx: remember where its flow came from. */
static void
dp_kni_flow_learn(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m)
{
	const struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);
	struct dp_conn_key k;

	if (eh->ether_type != RTE_BE16(RTE_ETHER_TYPE_IPV4))
		return;
	for (int ports = 1; ports >= 0; ports--) {
		if (!dp_kni_flow_key(m, false, ports, &k))
			continue;
		struct dp_kni_flow *f = dp_kni_flow_slot(&k);
		f->key = k;
		f->tsc = w->now_tsc;
		rte_ether_addr_copy(&eh->src_addr, &f->peer_mac);
		f->pidx = (uint8_t)pidx;
		f->valid = 1;
	}
}

/* The port a kernel frame replies through, if it answers a flow that came
 * in on another port than the interface it came down (*mac: the peer's). */
static int
dp_kni_flow_reply_port(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct rte_ether_addr *mac)
{
	const struct rte_ipv4_hdr *ip =
		rte_pktmbuf_mtod_offset(m, const struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
	bool ports = ip->next_proto_id == IPPROTO_TCP || ip->next_proto_id == IPPROTO_UDP;
	struct dp_conn_key k;

	if (!dp_kni_flow_key(m, true, ports, &k))
		return -1;
	const struct dp_kni_flow *f = dp_kni_flow_slot(&k);
	if (!f->valid || memcmp(&f->key, &k, sizeof(k)) != 0 || f->pidx == pidx ||
		w->now_tsc - f->tsc > (uint64_t)DP_KNI_FLOW_TTL_S * rte_get_tsc_hz())
		return -1;
	rte_ether_addr_copy(&f->peer_mac, mac);
	return f->pidx;
}

bool
dp_kni_wants(uint16_t pidx, uint32_t dst)
{
	uint64_t av;

	return dp.ports[pidx].kni && dp_addr_lookup(dst, &av) >= 0 && (dp_addr_kinds(av) & DP_ADDR_PORT);
}

/* Token bucket: tokens are scaled by hz so a refill is one multiply. */
static inline bool
dp_kni_take(uint64_t *tokens, uint64_t *last, uint64_t now, uint32_t rate, uint32_t burst, uint64_t n)
{
	if (rate == 0)
		return true;
	uint64_t hz = rte_get_tsc_hz();
	uint64_t cap = (uint64_t)RTE_MAX(1u, burst) * hz;
	uint64_t elapsed = now - *last;

	/* A long idle (or the first call) fills the bucket; the product could
	 * overflow at high rates. */
	*tokens = elapsed >= cap / rate ? cap : RTE_MIN(cap, *tokens + elapsed * rate);
	*last = now;
	if (*tokens < n * hz)
		return false;
	*tokens -= n * hz;
	return true;
}

void
dp_kni_up(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m)
{
	const struct dp_port *p = &dp.ports[pidx];
	uint32_t rate = p->conf.kni_rate == 0 ? 0 : RTE_MAX(1u, p->conf.kni_rate / dp.nb_workers);

	if (!dp_kni_take(&w->kni_tokens[pidx], &w->kni_tb_tsc[pidx], w->now_tsc, rate,
		    RTE_MAX(1u, p->conf.kni_burst / dp.nb_workers), 1) ||
		rte_ring_mp_enqueue(p->to_kernel, m) != 0)
		dp_drop(w, pidx, DP_DROP_kernel_dropped, m);
}

void
dp_kni_mirror(struct dp_worker *w, uint16_t pidx, const struct rte_mbuf *m)
{
	struct rte_mbuf *c = rte_pktmbuf_copy(m, dp.pool, 0, UINT32_MAX);

	if (c == NULL) {
		w->ctr->drop[pidx][DP_DROP_kernel_dropped]++;
		return;
	}
	dp_kni_up(w, pidx, c);
}

void
dp_kni_from_kernel(struct dp_worker *w, uint16_t pidx, struct rte_mbuf **pkts, uint16_t n)
{
	for (uint16_t i = 0; i < n; i++) {
		struct rte_mbuf *m = pkts[i];
		struct rte_ether_hdr *eh;

		if (unlikely(rte_pktmbuf_data_len(m) < sizeof(*eh))) {
			dp_drop(w, pidx, DP_DROP_eth_truncated, m);
			continue;
		}
		eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
		if (eh->ether_type == RTE_BE16(RTE_ETHER_TYPE_ARP)) {
			const struct rte_arp_hdr *arp = (const struct rte_arp_hdr *)(eh + 1);
			uint64_t av;

			if (rte_pktmbuf_data_len(m) < sizeof(*eh) + sizeof(*arp)) {
				dp_drop(w, pidx, DP_DROP_arp_malformed, m);
				continue;
			}
			/* The kernel answering a request the dataplane answered too
			 * (it answers every address the kernel has): one reply is
			 * enough. Requests and other replies go out. */
			if (arp->arp_opcode == RTE_BE16(RTE_ARP_OP_REPLY) &&
				dp_addr_lookup(arp->arp_data.arp_sip, &av) >= 0) {
				rte_pktmbuf_free(m);
				w->ctr->from_kernel[pidx]++;
				continue;
			}
		} else if (eh->ether_type != RTE_BE16(RTE_ETHER_TYPE_IPV4)) {
			/* IPv6 (an interface has it on until the control plane
			 * turns it off) and the rest: the dataplane speaks
			 * neither on its ports. Counted with the kernel path's
			 * drops, apart from what the port receives. */
			dp_drop(w, pidx, DP_DROP_kernel_dropped, m);
			continue;
		}
		uint16_t out = pidx;
		if (eh->ether_type == RTE_BE16(RTE_ETHER_TYPE_IPV4)) {
			struct rte_ether_addr peer;
			int rp = dp_kni_flow_reply_port(w, pidx, m, &peer);

			if (rp >= 0) {
				/* A reply the kernel routed elsewhere: out of the port
				 * its request came in on, to the MAC it came from. */
				out = (uint16_t)rp;
				rte_ether_addr_copy(&peer, &eh->dst_addr);
			}
		}
		/* The interface has the port's MAC; should someone change it, the
		 * port's frames still carry the port's. */
		rte_ether_addr_copy(&dp.ports[out].mac, &eh->src_addr);
		w->ctr->from_kernel[out]++;
		dp_tx(w, out, m);
	}
}

void
dp_kni_poll(struct dp_worker *w)
{
	struct rte_mbuf *pkts[DP_MAX_BURST];
	const uint16_t burst = dp.conf.burst;

	if (w->index != 0)
		return;
	/* Reading a net_tap is a system call even when the kernel sent nothing:
	 * while the interfaces are idle, read them once per DP_KNI_POLL_US, not
	 * every round; while a read fills a burst, every round. */
	const bool down = w->now_tsc >= w->kni_poll_tsc;
	bool full = false;

	for (uint16_t pidx = 0; pidx < dp.nb_ports; pidx++) {
		struct dp_port *p = &dp.ports[pidx];

		if (!p->kni)
			continue;
		/* Up: whatever the workers queued, already counted and rate-bound. */
		unsigned n = rte_ring_sc_dequeue_burst(p->to_kernel, (void **)pkts, burst, NULL);
		for (unsigned i = 0; i < n; i++)
			dp_kni_flow_learn(w, pidx, pkts[i]);
		if (n != 0) {
			uint16_t sent = rte_eth_tx_burst(p->kni_port_id, 0, pkts, (uint16_t)n);
			w->ctr->to_kernel[pidx] += sent;
			for (uint16_t i = sent; i < n; i++)
				dp_drop(w, pidx, DP_DROP_kernel_dropped, pkts[i]);
		}
		if (!down)
			continue;
		/* Down: as many as the bucket allows this round. */
		uint16_t want = burst;
		if (p->conf.kni_rate != 0) {
			uint64_t hz = rte_get_tsc_hz();
			dp_kni_take(&w->kni_down_tokens[pidx], &w->kni_down_tsc[pidx], w->now_tsc,
				p->conf.kni_rate, p->conf.kni_burst, 0);
			want = (uint16_t)RTE_MIN((uint64_t)burst, w->kni_down_tokens[pidx] / hz);
			if (want == 0)
				continue;
		}
		uint16_t got = rte_eth_rx_burst(p->kni_port_id, 0, pkts, want);
		if (got == 0)
			continue;
		full |= got == want;
		if (p->conf.kni_rate != 0)
			w->kni_down_tokens[pidx] -= (uint64_t)got * rte_get_tsc_hz();
		dp_kni_from_kernel(w, pidx, pkts, got);
	}
	if (down)
		w->kni_poll_tsc =
			full ? w->now_tsc : w->now_tsc + rte_get_tsc_hz() / 1000000 * DP_KNI_POLL_US;
}

int
dp_kni_setup(uint16_t pidx, char *err, size_t errlen)
{
	struct dp_port *p = &dp.ports[pidx];
	const struct dp_port_conf *pc = &p->conf;
	struct rte_eth_conf ec;
	char name[RTE_RING_NAMESIZE];
	uint16_t pid, nb_rxd = DP_KNI_DESC, nb_txd = DP_KNI_DESC;
	int ret;

	if (pc->kni_devname[0] == '\0')
		return 0;
	ret = rte_eth_dev_get_port_by_name(pc->kni_devname, &pid);
	if (ret < 0) {
		dp_set_err(err, errlen,
			"port %s: kernel interface device %s was not probed by EAL (see its log)", pc->name,
			pc->kni_devname);
		return -ENODEV;
	}
	if (pc->kni_queue == 0 || (pc->kni_queue & (pc->kni_queue - 1)) != 0) {
		dp_set_err(err, errlen, "port %s: kernel queue %u is not a power of two", pc->name,
			pc->kni_queue);
		return -EINVAL;
	}
	if (dp_kni_flows == NULL) {
		dp_kni_flows = rte_zmalloc(
			"retrace_kni_flows", sizeof(*dp_kni_flows) * DP_KNI_FLOW_SLOTS, RTE_CACHE_LINE_SIZE);
		if (dp_kni_flows == NULL) {
			dp_set_err(err, errlen, "port %s: cannot allocate the kernel flow table", pc->name);
			return -ENOMEM;
		}
	}
	p->kni_port_id = pid;
	p->kni_attached = true;
	snprintf(name, sizeof(name), "rt_kni%u_%d", pidx, getpid() % 100000);
	p->to_kernel = rte_ring_create(name, pc->kni_queue, rte_socket_id(), RING_F_SC_DEQ | RING_F_EXACT_SZ);
	if (p->to_kernel == NULL) {
		dp_set_err(err, errlen, "port %s: cannot create the kernel ring (%u): %s", pc->name,
			pc->kni_queue, rte_strerror(rte_errno));
		return -ENOMEM;
	}
	/* One queue pair, worker 0's. The interface's MAC, MTU, addresses and
	 * namespace are set from the control plane with iproute2
	 * (src/dataplane/kernel-if.ts): after start the netdev may live in
	 * another namespace, where net_tap's own ioctls cannot reach it. */
	memset(&ec, 0, sizeof(ec));
	ret = rte_eth_dev_configure(pid, 1, 1, &ec);
	if (ret == 0)
		ret = rte_eth_dev_adjust_nb_rx_tx_desc(pid, &nb_rxd, &nb_txd);
	if (ret == 0)
		ret = rte_eth_rx_queue_setup(pid, 0, nb_rxd, rte_socket_id(), NULL, dp.pool);
	if (ret == 0)
		ret = rte_eth_tx_queue_setup(pid, 0, nb_txd, rte_socket_id(), NULL);
	if (ret == 0)
		ret = rte_eth_dev_start(pid);
	if (ret < 0) {
		dp_set_err(err, errlen, "port %s: kernel interface %s: %s", pc->name, pc->kni_devname,
			rte_strerror(-ret));
		return ret;
	}
	p->kni_started = true;
	p->kni = true;
	dp.nb_kni++;
	return 0;
}

void
dp_kni_teardown(uint16_t pidx)
{
	struct dp_port *p = &dp.ports[pidx];
	struct rte_mbuf *m;

	if (p->kni_started) {
		/* Link down fails once the netdev was moved to another
		 * namespace; closing removes it wherever it is. */
		rte_eth_dev_stop(p->kni_port_id);
		p->kni_started = false;
	}
	if (p->kni_attached) {
		rte_eth_dev_close(p->kni_port_id);
		p->kni_attached = false;
	}
	if (p->to_kernel != NULL) {
		while (rte_ring_sc_dequeue(p->to_kernel, (void **)&m) == 0)
			rte_pktmbuf_free(m);
		rte_ring_free(p->to_kernel);
		p->to_kernel = NULL;
	}
	if (p->kni) {
		p->kni = false;
		dp.nb_kni--;
	}
	if (dp.nb_kni == 0 && dp_kni_flows != NULL) {
		rte_free(dp_kni_flows);
		dp_kni_flows = NULL;
	}
}
