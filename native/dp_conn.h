/*
 * dp_conn.h: connections, owned by one worker each.
 *
 * Naming follows the four parties of full NAT: the client (caddr:cport)
 * talks to a virtual service (vaddr:vport); we talk to the real server
 * (raddr:rport) from a local address (laddr:lport). A conn is hashed under
 * one key, the tuple a packet from the client carries; a packet from the
 * real server is to laddr:lport, and the LIP's array for its protocol holds
 * the conn at lport (dp_tables.h, dp_conn.c). A lookup yields the conn and
 * which side the packet came from.
 *
 * Each side has a record of where that side's packets arrive: port and the
 * peer's MAC (our next hop toward it). Packets to a side go out with that
 * record, from the port's MAC: no route lookup, no ARP. The record is
 * taken from the first packet of that side and refreshed, with a
 * path_changes count, when a later packet arrives on another port or from
 * another MAC.
 *
 * Thread: all functions here run on the owning worker only; the table has
 * no concurrent readers (counts are read via dp_conn_count).
 */
#ifndef RETRACE_DP_CONN_H
#define RETRACE_DP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rte_ether.h>

#include "dp_tables.h"

struct dp_worker;

/* Hash key: 16 bytes, explicit padding, always zeroed before use (the hash
 * compares raw bytes). For ICMP the ports carry the echo id (see dp_icmp.c). */
struct dp_conn_key {
	uint32_t saddr;
	uint32_t daddr;
	uint16_t sport;
	uint16_t dport;
	uint8_t proto;
	uint8_t pad[3];
};

enum dp_side_id {
	DP_SIDE_CLIENT = 0,
	DP_SIDE_SERVER = 1
};

/*
 * Where one side's packets arrive: 10 bytes, two of them in the hot line.
 * Our MAC is not kept: dp_l2 accepts only frames to the port's MAC (or
 * multicast), so replies leave from dp.ports[pidx].mac.
 */
#define DP_SIDE_NONE 0xff /* pidx of a side no packet has come from yet */
struct dp_side {
	struct rte_ether_addr peer_mac; /* L2 source of that side's packets */
	uint8_t pidx;			/* port they arrive on; DP_SIDE_NONE: none yet */
	uint8_t route_pidx;		/* where a route lookup would send; DP_SIDE_NONE: no route */
	uint16_t route_gen;		/* dp_route_gen16() route_pidx is from; 0: not computed */
};
_Static_assert(sizeof(struct dp_side) == 10, "struct dp_side grew");

static inline bool
dp_side_valid(const struct dp_side *s)
{
	return s->pidx != DP_SIDE_NONE;
}

enum dp_tcp_state {
	DP_TCP_NONE = 0,
	DP_TCP_SYN_SENT, /* client SYN forwarded */
	DP_TCP_SYN_RECV, /* server SYN-ACK forwarded */
	DP_TCP_ESTABLISHED,
	DP_TCP_FIN_WAIT,  /* one side sent FIN */
	DP_TCP_TIME_WAIT, /* both sides sent FIN */
	DP_TCP_CLOSE,	  /* RST seen */
};

#define DP_CONN_F_CLIENT_FIN 0x1
#define DP_CONN_F_SERVER_FIN 0x2
#define DP_CONN_F_LOCAL	     0x4 /* ICMP echo to one of our addresses: client side only */
#define DP_CONN_F_SEQ	     0x8 /* TCP: seq_off is in use */
/* SYN proxy (dp_synproxy.c): the conn was opened by a cookie. */
#define DP_CONN_F_SYNPROXY   0x10 /* windows and timestamps rewritten (sp_* below) */
#define DP_CONN_F_SP_PENDING 0x20 /* waiting for the real's SYN-ACK */
/* 0x40 is free. */
#define DP_CONN_F_CA	     0x80 /* a client-address mode: ca and ca_seq are in use */

/* dp_conn.sp: what the SYN proxy learnt from the client's cookie ACK. Only
 * read when DP_CONN_F_SYNPROXY is set, so kept out of the hot flags byte. */
#define DP_SP_F_TS   0x1 /* timestamps translated by sp_ts_off */
#define DP_SP_F_SACK 0x2 /* the client offered SACK (only before the splice) */

/* dp_conn.ca: the mode in the low two bits, then what has happened. */
#define DP_CA_MODE_MASK	  0x03
#define DP_CA_F_HDR_SENT  0x04 /* PROXY header sent: the client's seq is shifted */
#define DP_CA_F_HDR_ACKED 0x08 /* the real acknowledged the header: nothing left to check */
#define DP_CA_F_TOA_DONE  0x10 /* the server sent data: no more TOA */

/*
 * A conn is two 64-byte lines, each a slot of its own array in the owning
 * worker's record block (dp_conn.c): the hot line below, everything a packet
 * of an established conn reads, and the cold line (struct dp_conn_cold),
 * which a packet only writes (its counters) unless the conn uses a feature
 * (SYN proxy, client address, sequence translation). Both arrays are indexed
 * by the conn's id; dp_conn_cold() finds the cold line from the hot one.
 */
struct dp_conn {
	uint32_t caddr, vaddr, laddr, raddr;
	uint16_t cport, vport, lport, rport;
	struct dp_real *real;
	uint32_t last; /* dp_tick() of the last packet */
	uint8_t proto; /* IPPROTO_*; 0: a free record */
	uint8_t state;
	uint8_t flags;
	/* With DP_CONN_F_CA: the client-address mode (dp_caddr.c), enum
	 * dp_caddr_mode and the state bits DP_CA_F_*. */
	uint8_t ca;
	struct dp_side side[2];
	/*
	 * Read only with DP_CONN_F_SYNPROXY (dp_synproxy.c): the window scales
	 * the client and the real sent (DP_SP_WS_NONE: none) and DP_SP_F_* in
	 * sp. Here rather than cold because the cold line is full.
	 */
	uint8_t sp_client_ws, sp_real_ws, sp;
	uint8_t pad;
} __rte_cache_aligned;
_Static_assert(sizeof(struct dp_conn) == RTE_CACHE_LINE_SIZE, "the hot part of a conn outgrows one line");

struct dp_conn_cold {
	uint64_t pkts[2]; /* from client, from server */
	uint64_t bytes[2];
	uint64_t created_tsc;
	struct dp_lip *lip;
	/*
	 * Read only when DP_CONN_F_SEQ is set: TCP sequence translation, by
	 * side. When the appliance adds bytes to one side's stream (a PROXY
	 * protocol header) or answers one side's handshake itself (a SYN
	 * proxy's cookie ISN), the two ends number the same bytes differently.
	 * A segment from side s gets seq_off[s] added to its seq and
	 * seq_off[other side] taken off its ack and SACK edges, so each end
	 * sees its peer's numbering (tcp_seq_translate, dp_tcp.c). Set it with
	 * dp_conn_seq_off_add.
	 */
	int32_t seq_off[2];
	/* With DP_CONN_F_SYNPROXY: the real's TSval + sp_ts_off is what the
	 * client sees (before the splice: our TSval). */
	int32_t sp_ts_off;
	/* With DP_CONN_F_CA: the client's first payload byte's seq (its ISN + 1,
	 * from its SYN or, SYN-proxied, from its cookie ACK), where a PROXY
	 * header goes. */
	uint32_t ca_seq;
} __rte_cache_aligned;
_Static_assert(
	sizeof(struct dp_conn_cold) == RTE_CACHE_LINE_SIZE, "the cold part of a conn outgrows one line");

/*
 * A worker's records are one allocation: max_conns hot lines, then as many
 * cold lines. Every worker has the same max_conns, so the cold line of any
 * record lies dp.conn_cold_off bytes after its hot line (set when the tables
 * are created, before any worker runs).
 */
extern size_t dp_conn_cold_off;

static inline struct dp_conn_cold *
dp_conn_cold(const struct dp_conn *c)
{
	return (struct dp_conn_cold *)((uintptr_t)c + dp_conn_cold_off);
}

/*
 * Time of a conn's last packet, in ticks of 2^DP_TICK_SHIFT TSC cycles
 * (0.4 ms at 2.6 GHz): 32 bits cover the longest timeout (7 days) for a TSC
 * up to 7.4 GHz, and elapsed time is a wrapping subtraction.
 */
#define DP_TICK_SHIFT 20
static inline uint32_t
dp_tick(uint64_t tsc)
{
	return (uint32_t)(tsc >> DP_TICK_SHIFT);
}

/* The protocol's index (enum dp_proto) of a conn with LIP ports (TCP, UDP,
 * ICMP echo). */
static inline enum dp_proto
dp_conn_pproto(const struct dp_conn *c)
{
	return (enum dp_proto)dp_proto_index(c->proto);
}

/* The hash's data word: conn pointer with the side in bit 0 (only client
 * sides are hashed now; the tag keeps a lookup's answer in one word). */
static inline void *
dp_conn_tag(struct dp_conn *c, enum dp_side_id s)
{
	return (void *)((uintptr_t)c | (uintptr_t)s);
}
static inline struct dp_conn *
dp_conn_untag(void *d, enum dp_side_id *s)
{
	*s = (enum dp_side_id)((uintptr_t)d & 1);
	return (struct dp_conn *)((uintptr_t)d & ~(uintptr_t)1);
}

/* Worker: from now on, segments from side s are renumbered by off (see
 * seq_off). Offsets add up: a second call adds to the first. */
static inline void
dp_conn_seq_off_add(struct dp_conn *c, enum dp_side_id s, int32_t off)
{
	struct dp_conn_cold *cc = dp_conn_cold(c);

	cc->seq_off[s] = (int32_t)((uint32_t)cc->seq_off[s] + (uint32_t)off);
	c->flags |= DP_CONN_F_SEQ;
}

/* Per-worker table life cycle (control thread, before launch / after join). */
int dp_conn_table_create(struct dp_worker *w, uint32_t max_conns, char *err, size_t errlen);
void dp_conn_table_free(struct dp_worker *w);

/* Is c a TCP conn whose handshake is not done (SYN_SENT, SYN_RECV)? The
 * worker counts them (nb_half_open) for the SYN proxy's auto mode. */
static inline bool
dp_conn_half_open(const struct dp_conn *c)
{
	return c->proto == 6 /* IPPROTO_TCP */ && c->state <= DP_TCP_SYN_RECV &&
	       !(c->flags & DP_CONN_F_LOCAL);
}

/* Worker: lookup; NULL on miss. A key to one of our LIPs is looked for in
 * the LIP's array (the full tuple checked against the record), then in the
 * hash. */
struct dp_conn *dp_conn_lookup(struct dp_worker *w, const struct dp_conn_key *k, enum dp_side_id *from);

/* Worker: look up n <= RTE_HASH_LOOKUP_BULK_MAX keys (struct dp_conn_key *)
 * at once, so their cache misses overlap, and prefetch every record found:
 * conns[i] and from[i] (an enum dp_side_id), conns[i] = NULL on a miss.
 * Returns the mask of hits. */
uint64_t dp_conn_lookup_bulk(
	struct dp_worker *w, const void **keys, unsigned n, struct dp_conn **conns, uint8_t *from);

/* Worker: create a conn for a new client flow: picks the real, a LIP and a
 * source port, inserts the client key and fills the LIP slot. Returns NULL and sets *drop on failure.
 * Under table pressure it first evicts (destroys) an embryonic TCP conn of
 * this worker (dp_conn.c): callers hold no other conn pointer across it. */
struct dp_conn *dp_conn_create(
	struct dp_worker *w, struct dp_service *svc, const struct dp_conn_key *ck, enum dp_drop *drop);

/* Table pressure: embryonic FIFO entries looked at per eviction at most, and
 * how often a worker recomputes its TCP port threshold from the LIPs. */
#define DP_EVICT_SCAN	       32
#define DP_PRESSURE_REFRESH_MS 10

/* Worker: create a local conn (client key only, no real, no LIP). */
struct dp_conn *dp_conn_create_local(struct dp_worker *w, const struct dp_conn_key *ck, enum dp_drop *drop);

/* Worker: remove a conn now (hash key and LIP slot), return its port, drop
 * references. */
void dp_conn_destroy(struct dp_worker *w, struct dp_conn *c);

/* Worker: the same without a closed event (a conn that never sent). */
void dp_conn_destroy_silent(struct dp_worker *w, struct dp_conn *c);

/* Worker: expire idle conns. Every record is examined once per DP_EXPIRE_PASS_S seconds, at most
 * DP_EXPIRE_MAX_STEP per poll round: conns expire at most that late. */
#define DP_EXPIRE_PASS_S   1
#define DP_EXPIRE_MAX_STEP 512
void dp_conn_expire_step(struct dp_worker *w);

/* Any thread: conns currently owned by w. */
uint64_t dp_conn_count(const struct dp_worker *w);

#endif
