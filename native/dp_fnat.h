/*
 * dp_fnat.h: full NAT, shared by dp_tcp.c, dp_udp.c and dp_icmp.c (echo
 * ids stand in for ports).
 *
 * A protocol plugs in through an operation table; every slot is filled:
 *   parse       validate the L4 header, fill ports (network order), flags
 *   may_create  may this packet open a conn? (TCP: a SYN; UDP: any; ICMP:
 *               an echo request)
 *   stale       is this conn finished so a new opening should replace it?
 *   update      advance protocol state for a packet from `from` (the state
 *               picks the idle timeout: dp_conn.c)
 *   rewrite     store the new ports (TCP: and translate sequence numbers)
 *               and fix the L4 checksum, given the checksum difference of
 *               the address rewrite (for protocols whose checksum covers a
 *               pseudo-header)
 *   local       a packet for no conn and no service: answer it (ICMP echo
 *               to our own address) or drop it, counted
 */
#ifndef RETRACE_DP_FNAT_H
#define RETRACE_DP_FNAT_H

#include <rte_ip.h>

#include "dp_conn.h"
#include "dp_internal.h"

struct dp_l4 {
	void *hdr;	   /* L4 header */
	uint16_t sport;	   /* network order; ICMP: echo id */
	uint16_t dport;	   /* network order; ICMP: echo id */
	uint16_t svc_port; /* port a service is keyed by (ICMP: 0) */
	uint8_t flags;	   /* TCP flags; ICMP: type */
};

struct dp_fnat_ops {
	uint8_t ipproto;
	enum dp_proto proto;
	/* Returns DP_DROP_MAX when fine, else the drop reason. */
	enum dp_drop (*parse)(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct dp_l4 *l4);
	bool (*may_create)(const struct dp_l4 *l4);
	bool (*stale)(const struct dp_conn *c, const struct dp_l4 *l4);
	void (*update)(struct dp_conn *c, enum dp_side_id from, const struct dp_l4 *l4);
	void (*rewrite)(struct dp_conn *c, enum dp_side_id from, struct dp_l4 *l4, uint16_t sport,
		uint16_t dport, uint32_t addr_csum_acc);
	void (*local)(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4,
		struct dp_conn *local_conn);
};

/*
 * TCP's and UDP's slots, also by name: the engine's per-protocol copies
 * (dp_fnat.c) call them directly so that LTO can inline them into the
 * packet path; an indirect call through the table cannot be.
 */
enum dp_drop dp_tcp_parse(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct dp_l4 *l4);
bool dp_tcp_may_create(const struct dp_l4 *l4);
bool dp_tcp_stale(const struct dp_conn *c, const struct dp_l4 *l4);
void dp_tcp_update(struct dp_conn *c, enum dp_side_id from, const struct dp_l4 *l4);
void dp_tcp_rewrite(struct dp_conn *c, enum dp_side_id from, struct dp_l4 *l4, uint16_t sport, uint16_t dport,
	uint32_t addr_csum_acc);
enum dp_drop dp_udp_parse(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct dp_l4 *l4);
bool dp_udp_may_create(const struct dp_l4 *l4);
bool dp_udp_stale(const struct dp_conn *c, const struct dp_l4 *l4);
void dp_udp_update(struct dp_conn *c, enum dp_side_id from, const struct dp_l4 *l4);
void dp_udp_rewrite(struct dp_conn *c, enum dp_side_id from, struct dp_l4 *l4, uint16_t sport, uint16_t dport,
	uint32_t addr_csum_acc);

extern const struct dp_fnat_ops dp_fnat_tcp;
extern const struct dp_fnat_ops dp_fnat_udp;
extern const struct dp_fnat_ops dp_fnat_icmp;

/* Parse with ops and forward. Header validated, l2/l3 lengths set.
 * Consumes m. */
void dp_fnat_input(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, const struct dp_fnat_ops *ops);

/*
 * The batch of a burst's TCP, UDP and ICMP echo packets, filled as the burst
 * is validated (dp_l2_input: one pass over the packets) and forwarded with
 * one bulk conn lookup per DP_FNAT_BATCH packets.
 */
#define DP_FNAT_BATCH 64 /* RTE_HASH_LOOKUP_BULK_MAX */
struct dp_fnat_batch {
	uint16_t n;
	uint8_t ipproto[DP_FNAT_BATCH];
	struct rte_mbuf *m[DP_FNAT_BATCH];
	struct dp_l4 l4[DP_FNAT_BATCH];
	struct dp_conn_key keys[DP_FNAT_BATCH];
	const void *kptr[DP_FNAT_BATCH];
};

/* A TCP, UDP or ICMP packet from port pidx whose IPv4 header was validated
 * (l2/l3 lengths set): parse it into the batch (malformed: dropped and
 * counted; ICMP other than echo: handled at once); a full batch is
 * forwarded. Consumes m. */
void dp_fnat_batch_add(struct dp_worker *w, uint16_t pidx, struct dp_fnat_batch *b, struct rte_mbuf *m);

/* Look up and forward what the batch holds, in order; empties it. */
void dp_fnat_batch_run(struct dp_worker *w, uint16_t pidx, struct dp_fnat_batch *b);

/* Forward an already parsed packet. Consumes m. */
void dp_fnat_forward(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, const struct dp_fnat_ops *ops,
	struct dp_l4 *l4);

/* Forward with the conn a lookup of k found (c, from), or c = NULL for
 * none. Consumes m. */
void dp_fnat_forward_conn(struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m,
	const struct dp_fnat_ops *ops, struct dp_l4 *l4, const struct dp_conn_key *k, struct dp_conn *c,
	enum dp_side_id from);

/* dp_tcp.c: add d to the big-endian 32-bit number at byte offset off of
 * TCP header th; returns acc plus the checksum difference. */
uint32_t dp_tcp_add32_at(uint8_t *th, uint32_t off, uint32_t d, uint32_t acc);

/* If the packet's LIP destination port belongs to another worker, hand m
 * to it and return true. */
bool dp_fnat_redirect(
	struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, uint32_t daddr, uint16_t lport_be);

/* Drop for TCP/UDP packets that match nothing. */
void dp_fnat_local_drop(
	struct dp_worker *w, uint16_t pidx, struct rte_mbuf *m, struct dp_l4 *l4, struct dp_conn *local_conn);

#endif
