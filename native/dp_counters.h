/*
 * dp_counters.h: every dataplane counter, named once.
 *
 * Each list below is an X-macro. It generates the enum used on the packet
 * path and the snake_case names that the binding, the proto fields, metrics
 * and logs reuse verbatim, so nothing is counted without a name (VPP lb's
 * foreach_lb_error). Adding a counter = one line here; the TS side discovers
 * names at load time.
 *
 * Storage: one cache-aligned block per worker lcore plus one spare block for
 * the control thread (the only writer that uses atomic adds). Workers do plain
 * increments on their own block; readers sum all blocks (DPDK mempool stats).
 * A reader may see a slightly stale value, never a torn one: blocks are
 * uint64_t and x86-64/aarch64 load and store them whole.
 */
#ifndef RETRACE_DP_COUNTERS_H
#define RETRACE_DP_COUNTERS_H

#include <stdint.h>
#include "dp.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Protocols with symmetric-path accounting. */
#define DP_PROTO_LIST(X) \
	X(tcp)           \
	X(udp)           \
	X(icmp)

/* Per protocol and per port: what happened on the path back to a side. */
#define DP_PATH_COUNTER_LIST(X)                                                                           \
	X(rx, "packets received for this protocol on this port")                                          \
	X(tx_symmetric, "sent with the side record of a conn: no route lookup")                           \
	X(tx_routed, "sent after a route + neighbour lookup")                                             \
	X(route_divergence,                                                                               \
		"symmetric sends where the route would have picked another port (a triangle prevented)")  \
	X(asymmetric,                                                                                     \
		"routed replies that left by a port other than the request's (a triangle that happened)") \
	X(path_changes, "side records refreshed because a side moved to another port or MAC")             \
	X(syn_cookies_sent, "TCP: SYNs the SYN proxy answered with a cookie on this port")                \
	X(syn_cookies_valid, "TCP: ACKs with a valid SYN cookie (conns opened by the SYN proxy)")

/* Per port: why a received packet was dropped. */
#define DP_DROP_LIST(X)                                                                               \
	X(eth_truncated, "frame shorter than an Ethernet header")                                     \
	X(not_for_us, "destination MAC is neither ours, broadcast nor multicast")                     \
	X(unsupported_ethertype, "neither IPv4 nor ARP (VLAN tags included)")                         \
	X(arp_malformed, "ARP packet too short or not Ethernet/IPv4")                                 \
	X(arp_not_ours, "ARP request for an address that is not ours")                                \
	X(ip_truncated, "frame shorter than the IPv4 header or total length")                         \
	X(ip_bad_version, "IP version is not 4")                                                      \
	X(ip_bad_ihl, "IPv4 header length below 20 bytes")                                            \
	X(ip_bad_checksum, "IPv4 header checksum does not verify")                                    \
	X(ip_fragment, "IPv4 fragments are not reassembled")                                          \
	X(ip_ttl_exceeded, "TTL reached zero")                                                        \
	X(no_handler, "no service, conn or local address takes this packet")                          \
	X(l4_truncated, "TCP/UDP header missing or shorter than it says")                             \
	X(tcp_no_conn, "TCP segment other than SYN for no known conn")                                \
	X(no_real, "service has no real with weight > 0")                                             \
	X(no_lip_port, "every LIP source port of this worker is in use")                              \
	X(conn_table_full, "the worker's conn table is full")                                         \
	X(no_route, "no route to the destination")                                                    \
	X(neigh_unresolved, "next hop did not answer ARP in time")                                    \
	X(hold_full, "too many packets already waiting for ARP")                                      \
	X(mtu_exceeded, "packet larger than the egress port's MTU")                                   \
	X(redirect_full, "hand-off ring to the conn's owner worker full")                             \
	X(icmp_truncated, "ICMP message shorter than its header")                                     \
	X(icmp_bad_checksum, "ICMP checksum does not verify")                                         \
	X(icmp_unsupported, "ICMP type we neither answer nor forward")                                \
	X(icmp_error_truncated, "ICMP error quoting less than an IP header + 8 bytes")                \
	X(icmp_error_no_conn, "ICMP error quoting a packet of no known conn")                         \
	X(icmp_rate_limited, "ICMP we would originate, over the per-port rate")                       \
	X(tx_full, "the driver refused the packet at tx burst")                                       \
	X(svc_max_conns, "new conn for a service already at its max_conns")                           \
	X(svc_denied, "new conn from a client in the service's deny list")                            \
	X(svc_not_allowed, "new conn from a client outside the service's allow list")                 \
	X(svc_rate_limited, "new conn from a client over the service's conn_rate")                    \
	X(syn_cookie_invalid, "TCP ACK for no conn whose SYN cookie does not verify")                 \
	X(syn_proxy_pending, "client segment of a SYN-proxied conn that could not wait for its real") \
	X(kernel_dropped, "kernel interface: over its queue or rate, or neither IPv4 nor ARP")        \
	X(tcp_bad_options, "TCP options malformed in a segment that was to carry TOA")                \
	X(caddr_before_data, "client payload before its first byte (PROXY services)")                 \
	X(caddr_no_room, "UDP datagram over the MTU once its PROXY header is added")                  \
	X(caddr_no_mbuf, "no mbuf for a PROXY header segment, or no room to grow one")

/* Per real: the traffic of its conns, per worker, by direction, then what
 * the client-address modes did on them (dp_caddr.c): PROXY headers sent
 * (TCP: once per conn plus each resend with a retransmitted first segment;
 * UDP: one per datagram), segments whose seq or ack was shifted by a header,
 * TOA options added, and segments that were to carry TOA but had no room.
 * The binding names them in camelCase (packets_to_real -> packetsToReal). */
#define DP_REAL_COUNTER_LIST(X) \
	X(packets_to_real)      \
	X(packets_from_real)    \
	X(bytes_to_real)        \
	X(bytes_from_real)      \
	X(proxy_headers)        \
	X(segments_shifted)     \
	X(toa_added)            \
	X(toa_no_room)

/* Per virtual service: why a new conn was refused by the service's limits.
 * Each has a per-port twin in DP_DROP_LIST (svc_<name>). */
#define DP_SVC_DROP_LIST(X) \
	X(max_conns)        \
	X(denied)           \
	X(not_allowed)      \
	X(rate_limited)

/* Per virtual service: the SYN proxy's cookies. */
#define DP_SVC_SYN_LIST(X) \
	X(cookies_sent)    \
	X(cookies_valid)   \
	X(cookies_invalid)
/* Per worker (not per port): what table pressure did (dp_conn.c). */
#define DP_CONN_COUNTER_LIST(X)                                                                         \
	X(evicted_embryonic_table, "embryonic TCP conns evicted because the worker's conn table was "   \
				   "(nearly) full")                                                     \
	X(evicted_embryonic_ports, "embryonic TCP conns evicted because the worker's TCP source ports " \
				   "were (nearly) all in use")

enum dp_proto {
#define X(n) DP_PROTO_##n,
	DP_PROTO_LIST(X)
#undef X
	DP_PROTO_MAX
};

/* enum dp_proto of an IP protocol number (IPPROTO_*), -1 for the others. */
static inline int
dp_proto_index(uint8_t ipproto)
{
	switch (ipproto) {
	case 6 /* IPPROTO_TCP */: return DP_PROTO_tcp;
	case 17 /* IPPROTO_UDP */: return DP_PROTO_udp;
	case 1 /* IPPROTO_ICMP */: return DP_PROTO_icmp;
	default: return -1;
	}
}

enum dp_path_counter {
#define X(n, d) DP_PATH_##n,
	DP_PATH_COUNTER_LIST(X)
#undef X
	DP_PATH_MAX
};

enum dp_drop {
#define X(n, d) DP_DROP_##n,
	DP_DROP_LIST(X)
#undef X
	DP_DROP_MAX
};

enum dp_svc_drop {
#define X(n) DP_SVC_DROP_##n,
	DP_SVC_DROP_LIST(X)
#undef X
	DP_SVC_DROP_MAX
};

enum dp_svc_syn {
#define X(n) DP_SVC_SYN_##n,
	DP_SVC_SYN_LIST(X)
#undef X
	DP_SVC_SYN_MAX
};

enum dp_conn_counter {
#define X(n, d) DP_CONN_##n,
	DP_CONN_COUNTER_LIST(X)
#undef X
	DP_CONN_CTR_MAX
};

enum dp_real_counter {
#define X(n) DP_REAL_##n,
	DP_REAL_COUNTER_LIST(X)
#undef X
	DP_REAL_MAX
};

/* Flat layout returned by dp_counters_read: path counters first, indexed
 * [proto][port][counter], then drops indexed [port][reason], then the conn
 * table counters [counter]. */
#define DP_COUNTERS_PATH_LEN ((size_t)DP_PROTO_MAX * DP_MAX_PORTS * DP_PATH_MAX)
#define DP_COUNTERS_DROP_LEN ((size_t)DP_MAX_PORTS * DP_DROP_MAX)
#define DP_COUNTERS_CONN_LEN ((size_t)DP_CONN_CTR_MAX)
#define DP_COUNTERS_LEN	     (DP_COUNTERS_PATH_LEN + DP_COUNTERS_DROP_LEN + DP_COUNTERS_CONN_LEN)

extern const char *const dp_proto_names[DP_PROTO_MAX];
extern const char *const dp_path_counter_names[DP_PATH_MAX];
extern const char *const dp_path_counter_help[DP_PATH_MAX];
extern const char *const dp_drop_names[DP_DROP_MAX];
extern const char *const dp_drop_help[DP_DROP_MAX];
extern const char *const dp_conn_counter_names[DP_CONN_CTR_MAX];
extern const char *const dp_conn_counter_help[DP_CONN_CTR_MAX];
extern const char *const dp_real_counter_names[DP_REAL_MAX];
extern const char *const dp_svc_drop_names[DP_SVC_DROP_MAX];
extern const char *const dp_svc_syn_names[DP_SVC_SYN_MAX];

/* Sum every block into out[DP_COUNTERS_LEN]. Control thread, any state
 * after dp_start (zeros before). */
void dp_counters_read(uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif
