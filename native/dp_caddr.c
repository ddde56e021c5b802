/*
 * dp_caddr.c: the client's address at the real (see dp_caddr.h).
 *
 * TCP PROXY headers. The real's byte stream must start with our header, so
 * the header takes the client's first seq numbers [F, F + len) (F = the
 * client's ISN + 1, taken from its SYN) and every client byte moves up by
 * len (seq_off[client]; the real's acks and SACK blocks move down by the same
 * amount on the way back: dp_fnat's translation). The header always travels
 * as a segment of its own, sent just before the segment that made us send it:
 *   - the client's first payload segment (seq F, or later than F when the
 *     first one was lost before it reached us: the header still starts the
 *     real's stream, and the client fills the hole when it retransmits);
 *   - any later segment starting at F while the real has not acknowledged the
 *     header: a retransmission of the first segment, whole or partial, gets
 *     the header again (a duplicate the real discards if it had it).
 * So the first segment never grows: one that fills the MSS or the MTU still
 * reaches the real whole, and a header can never straddle a retransmission
 * boundary. Before the real has acknowledged the header, client payload that
 * starts before F is dropped (caddr_before_data): shifted, it would land on
 * the header's bytes. A FIN or RST before any payload sends no header.
 * A SYN's payload (TCP Fast Open) is cut off: it would reach the real before
 * the header; the client sends it again after the handshake.
 *
 * TOA (DPVS's TCP option: kind 254, length 8, client port, client IPv4). Like
 * DPVS, on every client segment with ACK (not SYN, not RST) until the server
 * sends its first payload byte: the ACK completing the handshake, which is
 * where the TOA kernel module reads it, and the first data segments in case
 * that ACK was lost. The options are walked first: malformed ones drop the
 * segment (tcp_bad_options); a kind 254 of length 8 already there (a client
 * forging its own TOA) is overwritten in place; otherwise ours goes where the
 * options end (at an end-of-list option, so the receiver does not stop before
 * it), growing the header when the data offset stays <= 60 bytes and the
 * packet within the egress MTU, else it is not added (toa_no_room).
 */
#include <stdio.h>
#include <string.h>

#include <netinet/in.h>

#include <rte_byteorder.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "dp_caddr.h"
#include "dp_csum.h"
#include "dp_icmp.h"

static const uint8_t pp2_sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

unsigned
dp_ca_header(const struct dp_conn *c, uint8_t *out)
{
	switch (c->ca & DP_CA_MODE_MASK) {
	case DP_CADDR_PROXY_V2:
		memcpy(out, pp2_sig, sizeof(pp2_sig));
		out[12] = 0x21;					 /* version 2, PROXY */
		out[13] = c->proto == IPPROTO_TCP ? 0x11 : 0x12; /* AF_INET, STREAM or DGRAM */
		out[14] = 0;
		out[15] = 12; /* addresses and ports */
		memcpy(out + 16, &c->caddr, 4);
		memcpy(out + 20, &c->vaddr, 4);
		memcpy(out + 24, &c->cport, 2);
		memcpy(out + 26, &c->vport, 2);
		return DP_CA_V2_LEN;
	case DP_CADDR_PROXY_V1: {
		const uint8_t *s = (const uint8_t *)&c->caddr, *d = (const uint8_t *)&c->vaddr;
		char buf[DP_CA_HDR_MAX + 1];
		int n = snprintf(buf, sizeof(buf), "PROXY TCP4 %u.%u.%u.%u %u.%u.%u.%u %u %u\r\n", s[0], s[1],
			s[2], s[3], d[0], d[1], d[2], d[3], rte_be_to_cpu_16(c->cport),
			rte_be_to_cpu_16(c->vport));
		memcpy(out, buf, (size_t)n);
		return (unsigned)n;
	}
	default: return 0;
	}
}

static inline struct dp_real_stats *
dp_ca_stats(struct dp_worker *w, struct dp_conn *c)
{
	return &c->real->stats[w->index];
}

/* Cut Ethernet padding so the frame ends where the IP datagram does. */
static inline void
dp_ca_trim(struct rte_mbuf *m, const struct rte_ipv4_hdr *ip)
{
	uint32_t want = m->l2_len + rte_be_to_cpu_16(ip->total_length);

	if (rte_pktmbuf_pkt_len(m) > want)
		rte_pktmbuf_trim(m, (uint16_t)(rte_pktmbuf_pkt_len(m) - want));
}

/* Open a gap of len bytes at offset off of a single-segment frame, moving the
 * shorter side (the headers into the headroom, usually). NULL when neither
 * the headroom nor the tailroom has len bytes. */
static uint8_t *
dp_ca_open(struct rte_mbuf *m, uint32_t off, uint16_t len)
{
	if (m->nb_segs != 1)
		return NULL;
	uint32_t tail = rte_pktmbuf_data_len(m) - off;
	if (rte_pktmbuf_headroom(m) >= len && (off <= tail || rte_pktmbuf_tailroom(m) < len)) {
		uint8_t *old = rte_pktmbuf_mtod(m, uint8_t *);
		uint8_t *p = (uint8_t *)rte_pktmbuf_prepend(m, len);
		memmove(p, old, off);
		return p + off;
	}
	if (rte_pktmbuf_tailroom(m) >= len) {
		uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
		rte_pktmbuf_append(m, len);
		memmove(p + off + len, p + off, tail);
		return p + off;
	}
	return NULL;
}

static inline void
dp_ca_ip_len(struct rte_ipv4_hdr *ip, uint16_t new_len)
{
	uint16_t nl = rte_cpu_to_be_16(new_len);

	ip->hdr_checksum = dp_csum_apply(ip->hdr_checksum, dp_csum_acc16(0, ip->total_length, nl));
	ip->total_length = nl;
}

/* ---- TCP ---- */

/* A SYN with payload (Fast Open): keep the SYN, cut the payload. */
static void
dp_ca_cut_syn_data(
	struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct rte_tcp_hdr *th, uint32_t thl, uint32_t plen)
{
	uint16_t old_tl = (uint16_t)(thl + plen), new_tl = (uint16_t)thl;
	/* The payload starts at an even offset (thl is a multiple of 4): its sum
	 * comes out of the checksum as it is. */
	uint16_t sum = rte_raw_cksum((uint8_t *)th + thl, plen);
	uint32_t acc = dp_csum_acc16(0, sum, 0);

	acc = dp_csum_acc16(acc, rte_cpu_to_be_16(old_tl), rte_cpu_to_be_16(new_tl));
	th->cksum = dp_csum_apply(th->cksum, acc);
	dp_ca_ip_len(ip, (uint16_t)(m->l3_len + thl));
	dp_ca_trim(m, ip);
}

static bool
dp_ca_toa(struct dp_worker *w, uint16_t pidx, struct dp_conn *c, struct rte_mbuf *m, int out)
{
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, m->l2_len);
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)((uint8_t *)ip + m->l3_len);
	uint32_t thl = (th->data_off >> 4) * 4u, olen = thl - sizeof(*th);
	uint8_t *opt = (uint8_t *)(th + 1);
	uint32_t ins = olen, i = 0;
	int have = -1;

	while (i < olen) {
		uint8_t kind = opt[i];
		if (kind == 0) { /* end of list: the rest is padding, ours goes here */
			ins = i;
			break;
		}
		if (kind == 1) {
			i++;
			continue;
		}
		if (i + 1 >= olen || opt[i + 1] < 2 || i + opt[i + 1] > olen) {
			dp_drop(w, pidx, DP_DROP_tcp_bad_options, m);
			return false;
		}
		if (kind == 254 && opt[i + 1] == DP_CA_TOA_LEN && have < 0)
			have = (int)i;
		i += opt[i + 1];
	}

	uint8_t toa[DP_CA_TOA_LEN] = { 254, DP_CA_TOA_LEN };
	memcpy(toa + 2, &c->cport, 2);
	memcpy(toa + 4, &c->caddr, 4);

	if (have >= 0) {
		/* A TOA the client wrote itself: ours replaces it, same size. */
		uint16_t before = rte_raw_cksum(th, thl);
		memcpy(opt + have, toa, sizeof(toa));
		th->cksum = dp_csum_apply(th->cksum, dp_csum_acc16(0, before, rte_raw_cksum(th, thl)));
		dp_ca_stats(w, c)->ctr[DP_REAL_toa_added]++;
		return true;
	}
	uint32_t nolen = (ins + DP_CA_TOA_LEN + 3) & ~3u;
	uint16_t grow = (uint16_t)(nolen > olen ? nolen - olen : 0);
	uint16_t iplen = rte_be_to_cpu_16(ip->total_length);
	if (sizeof(*th) + nolen > 60 || (out >= 0 && iplen + grow > dp.ports[out].conf.mtu)) {
		dp_ca_stats(w, c)->ctr[DP_REAL_toa_no_room]++;
		return true;
	}
	dp_ca_trim(m, ip);
	uint16_t before = rte_raw_cksum(th, thl);
	if (grow > 0) {
		uint32_t l4off = m->l2_len + m->l3_len;
		if (dp_ca_open(m, l4off + thl, grow) == NULL) {
			dp_ca_stats(w, c)->ctr[DP_REAL_toa_no_room]++;
			return true;
		}
		ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, m->l2_len);
		th = (struct rte_tcp_hdr *)((uint8_t *)ip + m->l3_len);
		opt = (uint8_t *)(th + 1);
	}
	memcpy(opt + ins, toa, sizeof(toa));
	memset(opt + ins + DP_CA_TOA_LEN, 0, nolen - ins - DP_CA_TOA_LEN); /* end of list, padding */
	th->data_off = (uint8_t)((((sizeof(*th) + nolen) / 4) << 4) | (th->data_off & 0x0f));
	/* The payload moved by a multiple of 4 bytes: its sum is unchanged. What
	 * changed is the header and the pseudo-header's TCP length. */
	uint32_t acc = dp_csum_acc16(0, before, rte_raw_cksum(th, sizeof(*th) + nolen));
	acc = dp_csum_acc16(acc, rte_cpu_to_be_16((uint16_t)(iplen - m->l3_len)),
		rte_cpu_to_be_16((uint16_t)(iplen - m->l3_len + grow)));
	th->cksum = dp_csum_apply(th->cksum, acc);
	if (grow > 0)
		dp_ca_ip_len(ip, (uint16_t)(iplen + grow));
	dp_ca_stats(w, c)->ctr[DP_REAL_toa_added]++;
	return true;
}

static bool
dp_ca_tcp_pre(struct dp_worker *w, uint16_t pidx, struct dp_conn *c, enum dp_side_id from, struct rte_mbuf *m,
	int out, struct rte_mbuf **hdr)
{
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, m->l2_len);
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)((uint8_t *)ip + m->l3_len);
	uint32_t thl = (th->data_off >> 4) * 4u;
	uint32_t plen = rte_be_to_cpu_16(ip->total_length) - m->l3_len - thl;
	uint8_t f = th->tcp_flags;
	unsigned mode = c->ca & DP_CA_MODE_MASK;

	if (from == DP_SIDE_SERVER) {
		if (mode == DP_CADDR_TOA) {
			if (plen > 0)
				c->ca |= DP_CA_F_TOA_DONE;
		} else if ((c->ca & (DP_CA_F_HDR_SENT | DP_CA_F_HDR_ACKED)) == DP_CA_F_HDR_SENT &&
			   (f & RTE_TCP_ACK_FLAG)) {
			/* The real's ack, in its own numbering: past the header? */
			uint32_t end =
				dp_conn_cold(c)->ca_seq + (uint32_t)dp_conn_cold(c)->seq_off[DP_SIDE_CLIENT];
			if ((int32_t)(rte_be_to_cpu_32(th->recv_ack) - end) >= 0)
				c->ca |= DP_CA_F_HDR_ACKED;
		}
		return true;
	}
	if (f & RTE_TCP_RST_FLAG)
		return true;
	if (f & RTE_TCP_SYN_FLAG) {
		if (!(f & RTE_TCP_ACK_FLAG) && !(c->ca & DP_CA_F_HDR_SENT))
			dp_conn_cold(c)->ca_seq = rte_be_to_cpu_32(th->sent_seq) + 1;
		if (plen > 0 && mode != DP_CADDR_TOA)
			dp_ca_cut_syn_data(m, ip, th, thl, plen);
		return true;
	}
	if (mode == DP_CADDR_TOA) {
		if ((c->ca & DP_CA_F_TOA_DONE) || !(f & RTE_TCP_ACK_FLAG))
			return true;
		return dp_ca_toa(w, pidx, c, m, out);
	}
	if ((c->ca & DP_CA_F_HDR_ACKED) || plen == 0)
		return true;
	int32_t d = (int32_t)(rte_be_to_cpu_32(th->sent_seq) - dp_conn_cold(c)->ca_seq);
	if (d < 0) {
		dp_drop(w, pidx, DP_DROP_caddr_before_data, m);
		return false;
	}
	if ((c->ca & DP_CA_F_HDR_SENT) && d != 0)
		return true;
	*hdr = rte_pktmbuf_alloc(dp.pool);
	if (*hdr == NULL) {
		/* Never the payload without the header: the client retransmits. */
		dp_drop(w, pidx, DP_DROP_caddr_no_mbuf, m);
		return false;
	}
	if (!(c->ca & DP_CA_F_HDR_SENT)) {
		uint8_t tmp[DP_CA_HDR_MAX];
		dp_conn_seq_off_add(c, DP_SIDE_CLIENT, (int32_t)dp_ca_header(c, tmp));
		c->ca |= DP_CA_F_HDR_SENT;
	}
	return true;
}

/* The header segment: m's headers as rewritten (addresses, ports, ack, window,
 * options), seq F, ACK|PSH, the PROXY header as payload. */
static void
dp_ca_tcp_hdr_segment(struct dp_worker *w, struct dp_conn *c, const struct rte_mbuf *m, struct rte_mbuf *h)
{
	const uint8_t *src = rte_pktmbuf_mtod(m, const uint8_t *);
	const struct rte_tcp_hdr *th = (const struct rte_tcp_hdr *)(src + m->l2_len + m->l3_len);
	uint32_t thl = (th->data_off >> 4) * 4u;
	uint32_t hl = m->l2_len + m->l3_len + thl;
	uint8_t ph[DP_CA_HDR_MAX];
	unsigned plen = dp_ca_header(c, ph);
	uint8_t *d = (uint8_t *)rte_pktmbuf_append(h, (uint16_t)(hl + plen));

	memcpy(d, src, hl);
	memcpy(d + hl, ph, plen);
	h->l2_len = m->l2_len;
	h->l3_len = m->l3_len;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(d + m->l2_len);
	struct rte_tcp_hdr *nth = (struct rte_tcp_hdr *)((uint8_t *)ip + m->l3_len);
	ip->total_length = rte_cpu_to_be_16((uint16_t)(m->l3_len + thl + plen));
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	nth->sent_seq = rte_cpu_to_be_32(dp_conn_cold(c)->ca_seq);
	nth->tcp_flags = (uint8_t)((th->tcp_flags & RTE_TCP_ACK_FLAG) | RTE_TCP_PSH_FLAG);
	nth->tcp_urp = 0;
	nth->cksum = 0;
	nth->cksum = rte_ipv4_udptcp_cksum(ip, nth);
	dp_ca_stats(w, c)->ctr[DP_REAL_proxy_headers]++;
}

/* ---- UDP: a PROXY v2 header in front of every client datagram ---- */

static bool
dp_ca_udp_pre(struct dp_worker *w, uint16_t pidx, struct dp_conn *c, struct rte_mbuf *m, int out)
{
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, m->l2_len);
	uint16_t iplen = rte_be_to_cpu_16(ip->total_length);
	uint32_t l4off = m->l2_len + m->l3_len;

	if (out >= 0 && iplen + DP_CA_V2_LEN > dp.ports[out].conf.mtu) {
		/* Without the header the real would read the client's bytes as
		 * one: never sent bare. A client doing path MTU discovery learns
		 * the room it has. */
		if (ip->fragment_offset & RTE_BE16(RTE_IPV4_HDR_DF_FLAG))
			dp_icmp_send_error(w, pidx, m, &c->side[DP_SIDE_CLIENT], RTE_IP_ICMP_DEST_UNREACH,
				RTE_IP_ICMP_FRAG_NEEDED, (uint16_t)(dp.ports[out].conf.mtu - DP_CA_V2_LEN));
		dp_drop(w, pidx, DP_DROP_caddr_no_room, m);
		return false;
	}
	dp_ca_trim(m, ip);
	uint8_t *gap = dp_ca_open(m, l4off + sizeof(struct rte_udp_hdr), DP_CA_V2_LEN);
	if (gap == NULL) {
		dp_drop(w, pidx, DP_DROP_caddr_no_mbuf, m);
		return false;
	}
	dp_ca_header(c, gap);
	ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, m->l2_len);
	struct rte_udp_hdr *uh = (struct rte_udp_hdr *)((uint8_t *)ip + m->l3_len);
	uint16_t old_ul = uh->dgram_len;
	uint16_t new_ul = rte_cpu_to_be_16((uint16_t)(rte_be_to_cpu_16(old_ul) + DP_CA_V2_LEN));
	if (uh->dgram_cksum != 0) {
		/* The header sits at an even offset, so the payload after it
		 * keeps its sum; the UDP length counts twice (header and
		 * pseudo-header). */
		uint32_t acc = dp_csum_acc16(0, 0, rte_raw_cksum(gap, DP_CA_V2_LEN));
		acc = dp_csum_acc16(acc, old_ul, new_ul);
		acc = dp_csum_acc16(acc, old_ul, new_ul);
		uint16_t cs = dp_csum_apply(uh->dgram_cksum, acc);
		uh->dgram_cksum = cs == 0 ? 0xffff : cs;
	}
	uh->dgram_len = new_ul;
	dp_ca_ip_len(ip, (uint16_t)(iplen + DP_CA_V2_LEN));
	dp_ca_stats(w, c)->ctr[DP_REAL_proxy_headers]++;
	return true;
}

bool
dp_ca_pre(struct dp_worker *w, uint16_t pidx, struct dp_conn *c, enum dp_side_id from, struct rte_mbuf *m,
	int out, struct rte_mbuf **hdr)
{
	if (c->proto == IPPROTO_TCP)
		return dp_ca_tcp_pre(w, pidx, c, from, m, out, hdr);
	if (c->proto == IPPROTO_UDP && from == DP_SIDE_CLIENT)
		return dp_ca_udp_pre(w, pidx, c, m, out);
	return true;
}

void
dp_ca_post(struct dp_worker *w, struct dp_conn *c, enum dp_side_id from, struct rte_mbuf *m,
	struct rte_mbuf *hdr)
{
	(void)from;
	if (hdr != NULL)
		dp_ca_tcp_hdr_segment(w, c, m, hdr);
	if (c->proto == IPPROTO_TCP && (c->ca & DP_CA_F_HDR_SENT))
		dp_ca_stats(w, c)->ctr[DP_REAL_segments_shifted]++;
}
