/*
 * dp_ipv4.c: IPv4 input. Validates the header the way a router must
 * (RFC 1812 5.2.2: length, version, header length, checksum) before anything
 * reads past it, then dispatches by protocol.
 *
 * L4 checksums are not verified: a load balancer updates them incrementally
 * and the lab's kernel peers may hand partial checksums to offload.
 * Fragments are dropped and counted (no reassembly).
 */
#include <netinet/in.h>
#include <string.h>

#include <rte_byteorder.h>
#include <rte_ip.h>

#include "dp_fnat.h"
#include "dp_internal.h"
#include "dp_proto.h"

/*
 * A correct header sums to 0xffff. The usual 20-byte header is summed as
 * five 32-bit words and folded (a one's complement sum comes out the same in
 * any word size): a handful of instructions against rte_raw_cksum's generic
 * loop, on every packet. Headers with options take the generic way.
 */
static inline bool
dp_ipv4_csum_ok(const struct rte_ipv4_hdr *ip, uint32_t ihl)
{
	if (likely(ihl == sizeof(*ip))) {
		uint32_t p[5];

		memcpy(p, ip, sizeof(p)); /* 2-byte aligned behind Ethernet: plain loads on x86 */
		uint64_t s = (uint64_t)p[0] + p[1] + p[2] + p[3] + p[4];

		s = (s & 0xffffffff) + (s >> 32);
		s = (s & 0xffffffff) + (s >> 32);
		s = (s & 0xffff) + (s >> 16);
		s = (s & 0xffff) + (s >> 16);
		return s == 0xffff;
	}
	return rte_raw_cksum(ip, ihl) == 0xffff;
}

bool
dp_ipv4_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m)
{
	const uint32_t l2 = sizeof(struct rte_ether_hdr);
	const uint32_t len = rte_pktmbuf_data_len(m);
	const struct rte_ipv4_hdr *ip;
	uint32_t ihl, total;

	if (unlikely(len < l2 + sizeof(struct rte_ipv4_hdr))) {
		dp_drop(w, pidx, DP_DROP_ip_truncated, m);
		return false;
	}
	ip = rte_pktmbuf_mtod_offset(m, const struct rte_ipv4_hdr *, l2);
	if (unlikely((ip->version_ihl >> 4) != 4)) {
		dp_drop(w, pidx, DP_DROP_ip_bad_version, m);
		return false;
	}
	ihl = (uint32_t)(ip->version_ihl & 0x0f) * 4;
	if (unlikely(ihl < sizeof(struct rte_ipv4_hdr))) {
		dp_drop(w, pidx, DP_DROP_ip_bad_ihl, m);
		return false;
	}
	total = rte_be_to_cpu_16(ip->total_length);
	if (unlikely(total < ihl || l2 + total > len)) {
		dp_drop(w, pidx, DP_DROP_ip_truncated, m);
		return false;
	}
	if (unlikely(!dp_ipv4_csum_ok(ip, ihl))) {
		dp_drop(w, pidx, DP_DROP_ip_bad_checksum, m);
		return false;
	}
	if (unlikely(ip->fragment_offset & RTE_BE16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK))) {
		dp_drop(w, pidx, DP_DROP_ip_fragment, m);
		return false;
	}
	/* Ethernet padding of short frames is not part of the packet. */
	if (len > l2 + total)
		rte_pktmbuf_trim(m, (uint16_t)(len - l2 - total));
	/* One store for both bit-fields (fresh from rx, the other offload
	 * fields are 0), not two read-modify-writes. */
	m->tx_offload = rte_mbuf_tx_offload(l2, ihl, 0, 0, 0, 0, 0);

	switch (ip->next_proto_id) {
	case IPPROTO_TCP: w->ctr->path[DP_PROTO_tcp][pidx][DP_PATH_rx]++; return true;
	case IPPROTO_UDP: w->ctr->path[DP_PROTO_udp][pidx][DP_PATH_rx]++; return true;
	case IPPROTO_ICMP: w->ctr->path[DP_PROTO_icmp][pidx][DP_PATH_rx]++; return true;
	default:
		/* Other protocols to a port address are the kernel's (GRE, OSPF, ...). */
		if (unlikely(dp.nb_kni != 0) && dp_kni_wants(pidx, ip->dst_addr))
			dp_kni_up(w, pidx, m);
		else
			dp_drop(w, pidx, DP_DROP_no_handler, m);
		return false;
	}
}
