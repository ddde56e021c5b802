/*
 * dp_caddr.h: the client's address at the real, through full NAT
 * (docs/design.md, "The client's address at the real"). A conn carries the
 * mode of its service at creation (dp_conn.ca, with DP_CONN_F_CA); conns
 * with mode none never enter this file: dp_fnat_forward_conn tests one bit.
 *
 *   PROXY v2 / v1, TCP  the header is sent as its own segment at the client's
 *                       first byte (ISN + 1), just before the segment that
 *                       carries the client's first payload; from then on the
 *                       client's seq is shifted by the header's length
 *                       (dp_conn.seq_off[client], applied by the FNAT rewrite).
 *   PROXY v2, UDP       a header before the payload of every client datagram.
 *   TOA, TCP            option 254 (DPVS's format) on the client's segments
 *                       with ACK until the server sends data.
 *
 * Worker only.
 */
#ifndef RETRACE_DP_CADDR_H
#define RETRACE_DP_CADDR_H

#include "dp_conn.h"
#include "dp_internal.h"

/* Longest header: "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n". */
#define DP_CA_HDR_MAX 56
#define DP_CA_V2_LEN  28 /* 16-byte fixed part + IPv4 addresses and ports */
#define DP_CA_TOA_LEN 8	 /* kind 254, length 8, port, IPv4 address */

/* Write the PROXY header of c's mode into out (DP_CA_HDR_MAX bytes); returns
 * its length, 0 for modes without one. */
unsigned dp_ca_header(const struct dp_conn *c, uint8_t *out);

/*
 * Before the rewrite, for a TCP or UDP packet of a conn with a mode (after the
 * TTL and MTU checks; `out` is the egress port or -1, in_side the record of
 * the side it came from). May grow the packet (TOA, the UDP header): pointers
 * into it must be taken again. Returns false when m was dropped (counted).
 * *hdr gets an mbuf for a TCP PROXY header segment, which dp_ca_post fills
 * and which must leave just before m.
 */
bool dp_ca_pre(struct dp_worker *w, uint16_t pidx, struct dp_conn *c, enum dp_side_id from,
	struct rte_mbuf *m, int out, struct rte_mbuf **hdr);

/* After the rewrite (addresses, ports, seq translation): build *hdr from m's
 * headers, count shifted segments. */
void dp_ca_post(struct dp_worker *w, struct dp_conn *c, enum dp_side_id from, struct rte_mbuf *m,
	struct rte_mbuf *hdr);

#endif
