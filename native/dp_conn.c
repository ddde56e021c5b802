/*
 * dp_conn.c: the per-worker conn table (see dp_conn.h).
 *
 * Storage: one block of records per worker (max_conns hot lines, then as
 * many cold lines: dp_conn.h) with an rte_ring of the free record ids, an
 * rte_hash of the client-side keys (one insert per conn), and the server
 * side in the LIP's own arrays
 * (dp_tables.h): a packet to LIP:lport from a real finds its conn by a direct
 * index into the array of its protocol, then checks the real's address and
 * port against the record. Expiry: an incremental walk of the records, a
 * bounded number per poll round, so a table of millions of conns needs no
 * per-conn timer.
 *
 * Table pressure (IPVS's drop_entry, done at create time instead of by a
 * random walk): a SYN flood fills the table and the LIP source ports with
 * embryonic conns (SYN_SENT, SYN_RECV) that would sit there for tcp_syn
 * seconds. Every TCP conn enters a per-worker FIFO when created; when the
 * worker is under pressure a new conn first evicts the oldest embryonic conn
 * in it, so a flood recycles its own conns and never an established one.
 * The FIFO is not kept exact: a conn that is established or gone keeps its
 * entry, and the eviction skips such entries as it pops them. Each entry is
 * popped at most once, so the skipping costs one step per TCP conn created
 * over time, and at most DP_EVICT_SCAN per new conn. Nothing of it is in the
 * conn record (which has no room: dp_conn.h), and a worker not under pressure
 * pays one ring store per TCP conn and two compares per new conn.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>
#include <rte_prefetch.h>

#include "dp_conn.h"
#include "dp_internal.h"
#include "dp_sched.h"

size_t dp_conn_cold_off;
static unsigned dp_conn_tables; /* live tables: all have the same cold_off */

/*
 * A LIP array slot holds a conn in 4 bytes rather than a pointer's 8 (a LIP
 * has 3 x 65536 slots, and a table of millions of conns spreads over tens of
 * LIPs: 768 KiB each instead of 1.5 MiB): the record's id plus one; 0 is an
 * empty slot. Only the port's owner worker writes or decodes a slot, so the
 * id is into that worker's records.
 */
static inline uint32_t
dp_conn_enc(const struct dp_worker *w, const struct dp_conn *c)
{
	return (uint32_t)(c - w->conn_recs) + 1;
}

static inline struct dp_conn *
dp_conn_dec(const struct dp_worker *w, uint32_t v)
{
	return &w->conn_recs[v - 1];
}

/* Slot of LIP:lport_be for protocol proto (enum dp_proto). Host order keeps a
 * worker's consecutive ports on the same lines and pages. */
static inline uint32_t *
dp_conn_slot(const struct dp_lip *lip, unsigned proto, uint16_t lport_be)
{
	return &lip->conns[proto << 16 | rte_be_to_cpu_16(lport_be)];
}

/*
 * The slot a packet with key k to the LIP lip would find its conn in, or NULL
 * when none can be there: not a protocol with LIP ports, or a port another
 * worker owns (its conn is not in this worker's table; the caller redirects).
 */
static inline uint32_t *
dp_conn_lip_slot(const struct dp_worker *w, const struct dp_lip *lip, const struct dp_conn_key *k)
{
	const int proto = dp_proto_index(k->proto);

	if (proto < 0)
		return NULL;
	if (unlikely(dp.nb_workers > 1) && rte_be_to_cpu_16(k->dport) % dp.nb_workers != w->index)
		return NULL;
	return dp_conn_slot(lip, (unsigned)proto, k->dport);
}

/* The slot names LIP:lport only: the conn is the packet's if it comes from the
 * conn's real (address and port; for ICMP both ports are the echo id). */
static inline bool
dp_conn_server_match(const struct dp_conn *c, const struct dp_conn_key *k)
{
	return c->raddr == k->saddr && c->rport == k->sport;
}

/*
 * An entry of the embryonic FIFO: the record's id and the low 32 bits of the
 * conn's created_tsc, which tell the conn that entered from a later one in
 * the same record. A tag collision (two conns of one record created 2^32
 * cycles apart to the cycle) would make the eviction take a younger embryonic
 * conn than the oldest: still an embryonic one.
 */
static inline uint64_t
dp_embryo_entry(const struct dp_worker *w, const struct dp_conn *c)
{
	return (uint64_t)(c - w->conn_recs) << 32 | (uint32_t)dp_conn_cold(c)->created_tsc;
}

static inline void
dp_embryo_push(struct dp_worker *w, const struct dp_conn *c)
{
	w->embryo[w->embryo_tail++ & w->embryo_mask] = dp_embryo_entry(w, c);
	/* Full: the oldest entry was overwritten. Its conn, if still embryonic,
	 * is older than every other and expires on its own. */
	if (w->embryo_tail - w->embryo_head > w->embryo_mask + 1)
		w->embryo_head = w->embryo_tail - (w->embryo_mask + 1);
}

/* Table pressure setup: the FIFO and the thresholds, from dp.conf. */
static int
dp_conn_pressure_create(struct dp_worker *w, uint32_t max_conns, int socket, char *err, size_t errlen)
{
	const struct dp_conf *conf = &dp.conf;
	char name[RTE_MEMZONE_NAMESIZE];

	w->pressure_conns = UINT32_MAX;
	w->pressure_ports = UINT32_MAX;
	w->embryo = NULL;
	w->embryo_mask = 0;
	w->embryo_head = w->embryo_tail = 0;
	w->tcp_lports = 0;
	if (!conf->evict_embryonic)
		return 0;
	if (conf->pressure_conns_pct > 100 || conf->pressure_ports_pct > 100) {
		dp_set_err(err, errlen, "pressure percentages must be 0..100");
		return -EINVAL;
	}
	uint32_t size = rte_align32pow2(max_conns);
	snprintf(name, sizeof(name), "rt_embryo%u_%d", w->index, getpid() % 100000);
	/* Written whole, so its pages are faulted in now rather than by the worker as conns arrive
	 * (without hugepages a first touch is a page fault on the packet path; rte_zmalloc would skip
	 * the memset on memory it knows to be clean). */
	w->embryo = rte_malloc_socket(name, sizeof(*w->embryo) * size, 0, socket);
	if (w->embryo == NULL) {
		dp_set_err(err, errlen,
			"cannot create the embryonic conn queue of worker %u (%u entries) "
			"(raise eal.memory_mb or lower dataplane.max_conns)",
			w->index, size);
		return -ENOMEM;
	}
	memset(w->embryo, 0, sizeof(*w->embryo) * size);
	w->embryo_mask = size - 1;
	if (conf->pressure_conns_pct != 0)
		w->pressure_conns = (uint32_t)((uint64_t)max_conns * conf->pressure_conns_pct / 100);
	w->evict_min_age_tsc = rte_get_tsc_hz() / 1000 * conf->evict_min_age_ms;
	w->pressure_tsc = 0;
	return 0;
}

/*
 * A record from the free ring, both lines cleared. Ids are handed out in
 * ring order, so until the table has been full once they come in sequence
 * and conn_hwm bounds every record ever used: the walks stop there.
 */
static inline struct dp_conn *
dp_conn_alloc(struct dp_worker *w)
{
	uint32_t id;

	if (unlikely(rte_ring_sc_dequeue_elem(w->conn_free, &id, sizeof(id)) != 0))
		return NULL;
	if (id >= w->conn_hwm)
		w->conn_hwm = id + 1;
	struct dp_conn *c = &w->conn_recs[id];
	memset(c, 0, sizeof(*c));
	memset(dp_conn_cold(c), 0, sizeof(struct dp_conn_cold));
	c->side[DP_SIDE_CLIENT].pidx = c->side[DP_SIDE_SERVER].pidx = DP_SIDE_NONE;
	return c;
}

/* Every record goes back through here: proto 0 marks it free for the walks. */
static inline void
dp_conn_free(struct dp_worker *w, struct dp_conn *c)
{
	uint32_t id = (uint32_t)(c - w->conn_recs);

	c->proto = 0;
	rte_ring_sp_enqueue_elem(w->conn_free, &id, sizeof(id));
}

int
dp_conn_table_create(struct dp_worker *w, uint32_t max_conns, char *err, size_t errlen)
{
	char name[RTE_HASH_NAMESIZE];
	int socket = (int)rte_lcore_to_socket_id(w->lcore_id);

	/*
	 * One key per conn, the client side's (the server side is in the LIP arrays).
	 * rte_hash has entries + 1 key slots and entries rounded up to a power of two bucket slots.
	 * A full conn table must not be a full hash: at 100% load every insert runs the cuckoo
	 * displacement search, and under table pressure (a SYN flood keeps the table full, each SYN
	 * evicting one conn and inserting one) that made a new conn cost 3x as much at max_conns 65536
	 * as at 60000 (docs/bench.md, table-pressure). So when the bucket slots would be less than
	 * 9/8 of the keys, double them (+32 bytes per conn at most, for those sizes only).
	 */
	uint32_t entries = max_conns;
	if ((uint64_t)rte_align32pow2(entries) * 8 < (uint64_t)entries * 9)
		entries = rte_align32pow2(entries) + 1;
	snprintf(name, sizeof(name), "rt_conn%u_%d", w->index, getpid() % 100000);
	struct rte_hash_parameters p = {
		.name = name,
		.entries = entries,
		.key_len = sizeof(struct dp_conn_key),
		/*
		 * CRC32 (SSE4.2 crc32 instructions where present: a 16-byte key in a few cycles,
		 * against tens for jhash). The table hashes every packet's key. It is linear, so a
		 * seed does not stop crafted collisions; the extendable buckets bound what they do
		 * (longer chains, never a refused insert).
		 */
		.hash_func = rte_hash_crc,
		.hash_func_init_val = 0, /* dp_conn_lookup_bulk hashes with the same seed */
		.socket_id = socket,
		/*
		 * Single writer, single reader: the owning worker, so no concurrency flags. The
		 * extendable bucket table makes every one of the entries insertable: without it
		 * cuckoo displacement gives up a little below capacity, and a conn would be
		 * refused as conn_table_full with records still free (and then accepted on the
		 * next packet with another LIP port, which makes the counter lie).
		 */
		.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE,
	};
	w->conns = rte_hash_create(&p);
	if (w->conns == NULL) {
		dp_set_err(err, errlen,
			"cannot create the conn table of worker %u (%u conns): %s "
			"(raise eal.memory_mb or lower dataplane.max_conns)",
			w->index, max_conns, rte_strerror(rte_errno));
		return -ENOMEM;
	}
	/*
	 * The records: max_conns hot lines then max_conns cold lines in one block, so that a cold
	 * line is found from its hot line by a constant offset (dp_conn_cold). Written whole here, so
	 * every page is faulted in now: without hugepages a first touch by the worker is a page fault
	 * on the packet path (new conns ran at half speed when the block was left untouched), and
	 * rte_zmalloc skips the memset on memory it knows to be clean.
	 */
	const size_t cold_off = (size_t)max_conns * sizeof(struct dp_conn);
	if (dp_conn_tables != 0 && dp_conn_cold_off != cold_off) {
		dp_set_err(err, errlen, "worker %u: every worker's conn table must have the same size",
			w->index);
		rte_hash_free(w->conns);
		w->conns = NULL;
		return -EINVAL;
	}
	snprintf(name, sizeof(name), "rt_crec%u_%d", w->index, getpid() % 100000);
	w->conn_recs = rte_malloc_socket(name, 2 * cold_off, RTE_CACHE_LINE_SIZE, socket);
	snprintf(name, sizeof(name), "rt_cfree%u_%d", w->index, getpid() % 100000);
	w->conn_free = w->conn_recs == NULL
			       ? NULL
			       : rte_ring_create_elem(name, sizeof(uint32_t), rte_align32pow2(max_conns + 1),
					 socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
	if (w->conn_free == NULL) {
		dp_set_err(err, errlen,
			"cannot create the conn records of worker %u (%u conns) "
			"(raise eal.memory_mb or lower dataplane.max_conns)",
			w->index, max_conns);
		rte_free(w->conn_recs);
		rte_hash_free(w->conns);
		w->conn_recs = NULL;
		w->conns = NULL;
		return -ENOMEM;
	}
	memset(w->conn_recs, 0, 2 * cold_off);
	dp_conn_cold_off = cold_off;
	for (uint32_t id = 0; id < max_conns; id++)
		rte_ring_sp_enqueue_elem(w->conn_free, &id, sizeof(id));
	w->nb_conn_recs = max_conns;
	w->conn_hwm = 0;
	int ret = dp_conn_pressure_create(w, max_conns, socket, err, errlen);
	if (ret < 0) {
		rte_ring_free(w->conn_free);
		rte_free(w->conn_recs);
		rte_hash_free(w->conns);
		w->conn_free = NULL;
		w->conn_recs = NULL;
		w->conns = NULL;
		return ret;
	}
	dp_conn_tables++;
	return 0;
}
void
dp_conn_table_free(struct dp_worker *w)
{
	if (w->conn_recs == NULL) /* never created, or its creation failed and undid itself */
		return;
	/* Give back references held by conns still alive at stop. */
	for (uint32_t i = 0; i < w->conn_hwm; i++) {
		struct dp_conn *c = &w->conn_recs[i];
		if (c->proto != 0 && !(c->flags & DP_CONN_F_LOCAL) && c->real != NULL &&
			atomic_fetch_sub(&c->real->refs, 1) == 1)
			rte_free(c->real);
	}
	rte_hash_free(w->conns);
	w->conns = NULL;
	rte_ring_free(w->conn_free);
	w->conn_free = NULL;
	rte_free(w->conn_recs);
	w->conn_recs = NULL;
	w->nb_conn_recs = 0;
	w->conn_hwm = 0;
	dp_conn_tables--;
	rte_free(w->embryo);
	w->embryo = NULL;
}

uint64_t
dp_conn_count(const struct dp_worker *w)
{
	return atomic_load_explicit(&w->nb_conns, memory_order_relaxed);
}

/*
 * A key to one of our LIPs is looked for in that LIP's array first, so a
 * packet from a real costs no hash probe; when the array has no conn for it
 * the hash still answers (an echo request to a LIP address is a local conn,
 * keyed there like every client side).
 */
struct dp_conn *
dp_conn_lookup(struct dp_worker *w, const struct dp_conn_key *k, enum dp_side_id *from)
{
	const struct dp_lip_set *ls = atomic_load_explicit(&dpt.lips, memory_order_acquire);
	const struct dp_lip *lip = dp_lip_of(ls, k->daddr);
	void *d;

	if (lip != NULL) {
		const uint32_t *slot = dp_conn_lip_slot(w, lip, k);

		if (slot != NULL && *slot != 0) {
			struct dp_conn *c = dp_conn_dec(w, *slot);

			if (dp_conn_server_match(c, k)) {
				*from = DP_SIDE_SERVER;
				return c;
			}
		}
	}
	if (rte_hash_lookup_data(w->conns, k, &d) < 0)
		return NULL;
	return dp_conn_untag(d, from);
}

/* The hot line is read, the cold line's counters written by every packet. */
static inline void
dp_conn_prefetch(const struct dp_conn *c)
{
	rte_prefetch0(c);
	rte_prefetch0(dp_conn_cold(c));
}

/*
 * In stages, so the misses of the burst overlap: the LIP slots of the keys to
 * a LIP are prefetched, then read and their records prefetched; the other keys
 * go to the hash in one bulk lookup meanwhile; only then are the records
 * checked against their keys. A key to a LIP whose array has no conn for it
 * is looked up in the hash alone (rare: stray packets, echo to a LIP).
 */
uint64_t
dp_conn_lookup_bulk(struct dp_worker *w, const void **keys, unsigned n, struct dp_conn **conns, uint8_t *from)
{
	const struct dp_lip_set *ls = atomic_load_explicit(&dpt.lips, memory_order_acquire);
	const void *hkeys[RTE_HASH_LOOKUP_BULK_MAX];
	void *data[RTE_HASH_LOOKUP_BULK_MAX];
	hash_sig_t sig[RTE_HASH_LOOKUP_BULK_MAX];
	const uint32_t *slot[RTE_HASH_LOOKUP_BULK_MAX];
	uint8_t hidx[RTE_HASH_LOOKUP_BULK_MAX];
	uint64_t lipmask = 0, hits = 0, hhits = 0, m;
	unsigned nh = 0;

	for (unsigned j = 0; j < n; j++) {
		const struct dp_conn_key *k = keys[j];
		const struct dp_lip *lip = dp_lip_of(ls, k->daddr);

		slot[j] = lip != NULL ? dp_conn_lip_slot(w, lip, k) : NULL;
		if (slot[j] != NULL) {
			rte_prefetch0(slot[j]);
			lipmask |= 1ull << j;
		} else {
			hkeys[nh] = k;
			hidx[nh++] = (uint8_t)j;
		}
	}
	for (m = lipmask; m != 0; m &= m - 1) {
		unsigned j = (unsigned)__builtin_ctzll(m);
		uint32_t v = *slot[j];

		conns[j] = v != 0 ? dp_conn_dec(w, v) : NULL;
		if (v != 0)
			dp_conn_prefetch(conns[j]);
	}
	if (nh != 0) {
		/* The table's own hash (rte_hash_crc, seed 0), inline: two crc32
		 * instructions per key, where the library would make an indirect
		 * call to its hash function per key. */
		for (unsigned i = 0; i < nh; i++)
			sig[i] = rte_hash_crc(hkeys[i], sizeof(struct dp_conn_key), 0);
		rte_hash_lookup_with_hash_bulk_data(w->conns, hkeys, sig, nh, &hhits, data);
	}
	for (unsigned i = 0; i < nh; i++) {
		unsigned j = hidx[i];

		if (!(hhits & (1ull << i))) {
			conns[j] = NULL;
			continue;
		}
		enum dp_side_id s;
		struct dp_conn *c = dp_conn_untag(data[i], &s);
		dp_conn_prefetch(c);
		conns[j] = c;
		from[j] = (uint8_t)s;
		hits |= 1ull << j;
	}
	for (m = lipmask; m != 0; m &= m - 1) {
		unsigned j = (unsigned)__builtin_ctzll(m);
		const struct dp_conn_key *k = keys[j];
		void *d;

		if (likely(conns[j] != NULL && dp_conn_server_match(conns[j], k))) {
			from[j] = DP_SIDE_SERVER;
			hits |= 1ull << j;
		} else if (rte_hash_lookup_data(w->conns, k, &d) >= 0) {
			enum dp_side_id s;
			conns[j] = dp_conn_untag(d, &s);
			from[j] = (uint8_t)s;
			hits |= 1ull << j;
		} else {
			conns[j] = NULL;
		}
	}
	return hits;
}

static inline void
dp_conn_client_key(const struct dp_conn *c, struct dp_conn_key *k)
{
	memset(k, 0, sizeof(*k));
	k->saddr = c->caddr;
	k->daddr = c->vaddr;
	k->sport = c->cport;
	k->dport = c->vport;
	k->proto = c->proto;
}

/* Take a source port on some LIP, round-robin over LIPs from a per-worker
 * start so load spreads; NULL when every pool of this worker is empty. */
static struct dp_lip *
dp_lip_take(struct dp_worker *w, enum dp_proto proto, uint16_t *lport)
{
	struct dp_lip_set *ls = atomic_load_explicit(&dpt.lips, memory_order_acquire);
	static __thread uint32_t next;

	for (uint32_t k = 0; k < ls->n; k++) {
		struct dp_lip *lip = ls->lips[(next + k) % ls->n];
		uint32_t port;

		if (rte_ring_dequeue_elem(lip->free_ports[w->index][proto], &port, sizeof(port)) == 0) {
			next = (next + k + 1) % ls->n;
			*lport = (uint16_t)port;
			return lip;
		}
	}
	return NULL;
}

/*
 * Evict the oldest embryonic TCP conn of w that is at least min_age_tsc old;
 * false when there is none (in the first DP_EVICT_SCAN entries). Entries of
 * conns that are gone or past SYN_RECV are dropped on the way.
 */
static bool
dp_conn_evict_embryonic(struct dp_worker *w, uint64_t min_age_tsc, enum dp_conn_counter why)
{
	for (unsigned n = 0; n < DP_EVICT_SCAN && w->embryo_head != w->embryo_tail; n++) {
		uint64_t e = w->embryo[w->embryo_head & w->embryo_mask];
		struct dp_conn *c = &w->conn_recs[e >> 32];
		const uint64_t created = dp_conn_cold(c)->created_tsc;

		if (c->proto != IPPROTO_TCP || (c->flags & DP_CONN_F_LOCAL) ||
			(uint32_t)created != (uint32_t)e || c->state > DP_TCP_SYN_RECV) {
			w->embryo_head++; /* stale */
			continue;
		}
		/* The FIFO is in creation order: everything behind is younger. */
		if (w->now_tsc - created < min_age_tsc)
			return false;
		w->embryo_head++;
		w->ctr->conn[why]++;
		dp_conn_destroy(w, c);
		return true;
	}
	return false;
}

struct dp_conn *
dp_conn_create(struct dp_worker *w, struct dp_service *svc, const struct dp_conn_key *ck, enum dp_drop *drop)
{
	struct dp_real_set *set = atomic_load_explicit(&svc->set, memory_order_acquire);
	/* Services exist for TCP, UDP and ICMP only. */
	enum dp_proto proto = (enum dp_proto)dp_proto_index(ck->proto);
	const struct dp_svc_limits *lim = atomic_load_explicit(&svc->limits, memory_order_acquire);
	struct dp_real *real;
	struct dp_conn *c;
	struct dp_conn_cold *cc;

	/* A service without limits pays this one branch. */
	if (unlikely(lim != NULL) && !dp_svc_admit(svc, lim, set, w->index, ck->saddr, w->now_tsc, drop))
		return NULL;
	real = dp_sched_pick(svc, set, w->index, ck->saddr, ck->sport);
	if (unlikely(real == NULL)) {
		*drop = DP_DROP_no_real;
		return NULL;
	}
	/*
	 * Table pressure: nearly full, a new conn first makes room by evicting an
	 * embryonic conn old enough; full, by evicting the oldest whatever its age
	 * (below). Both thresholds are UINT32_MAX with eviction off.
	 */
	if (unlikely(atomic_load_explicit(&w->nb_conns, memory_order_relaxed) >= w->pressure_conns))
		dp_conn_evict_embryonic(w, w->evict_min_age_tsc, DP_CONN_evicted_embryonic_table);
	else if (unlikely(proto == DP_PROTO_tcp && w->tcp_lports >= w->pressure_ports))
		dp_conn_evict_embryonic(w, w->evict_min_age_tsc, DP_CONN_evicted_embryonic_ports);
	c = dp_conn_alloc(w);
	if (unlikely(c == NULL) && (!dp_conn_evict_embryonic(w, 0, DP_CONN_evicted_embryonic_table) ||
					   (c = dp_conn_alloc(w)) == NULL)) {
		*drop = DP_DROP_conn_table_full;
		return NULL;
	}
	cc = dp_conn_cold(c);
	cc->lip = dp_lip_take(w, proto, &c->lport);
	/* Only a TCP conn gives back a TCP port: UDP and ICMP pools are apart. */
	if (unlikely(cc->lip == NULL) && proto == DP_PROTO_tcp &&
		dp_conn_evict_embryonic(w, 0, DP_CONN_evicted_embryonic_ports))
		cc->lip = dp_lip_take(w, proto, &c->lport);
	if (unlikely(cc->lip == NULL)) {
		dp_conn_free(w, c);
		*drop = DP_DROP_no_lip_port;
		return NULL;
	}
	c->caddr = ck->saddr;
	c->vaddr = ck->daddr;
	c->cport = ck->sport;
	c->vport = ck->dport;
	c->laddr = cc->lip->addr;
	c->raddr = real->addr;
	/* ICMP echo keeps the id in the port slot and has no real port. */
	c->rport = ck->proto == IPPROTO_ICMP ? c->lport : real->port;
	c->proto = ck->proto;
	cc->created_tsc = w->now_tsc;
	c->last = dp_tick(w->now_tsc);
	c->real = real;
	/* The mode a conn starts with stays its mode: a header is all or nothing. */
	c->ca = atomic_load_explicit(&svc->ca_mode, memory_order_relaxed);
	if (c->ca != DP_CADDR_NONE)
		c->flags |= DP_CONN_F_CA;

	if (unlikely(rte_hash_add_key_data(w->conns, ck, dp_conn_tag(c, DP_SIDE_CLIENT)) < 0))
		goto full;
	/* The port came from this worker's free ring: its slot is empty and ours. */
	*dp_conn_slot(cc->lip, proto, c->lport) = dp_conn_enc(w, c);
	w->conn_adds++;
	if (c->proto == IPPROTO_TCP)
		w->nb_half_open++; /* until dp_fnat_forward_conn sees the handshake end */
	atomic_fetch_add_explicit(&real->refs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&real->active, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&real->conns_total, 1, memory_order_relaxed);
	svc->stats[w->index].conns_total++;
	atomic_fetch_add_explicit(&w->nb_conns, 1, memory_order_relaxed);
	if (proto == DP_PROTO_tcp) {
		w->tcp_lports++;
		if (w->embryo != NULL)
			dp_embryo_push(w, c);
	}
	return c;
full : {
	uint32_t p = c->lport;
	rte_ring_enqueue_elem(cc->lip->free_ports[w->index][proto], &p, sizeof(p));
}
	dp_conn_free(w, c);
	*drop = DP_DROP_conn_table_full;
	return NULL;
}

struct dp_conn *
dp_conn_create_local(struct dp_worker *w, const struct dp_conn_key *ck, enum dp_drop *drop)
{
	struct dp_conn *c = dp_conn_alloc(w);

	if (unlikely(c == NULL) && (!dp_conn_evict_embryonic(w, 0, DP_CONN_evicted_embryonic_table) ||
					   (c = dp_conn_alloc(w)) == NULL)) {
		*drop = DP_DROP_conn_table_full;
		return NULL;
	}
	c->caddr = ck->saddr;
	c->vaddr = ck->daddr;
	c->cport = ck->sport;
	c->vport = ck->dport;
	c->proto = ck->proto;
	c->flags = DP_CONN_F_LOCAL;
	c->state = DP_TCP_ESTABLISHED;
	dp_conn_cold(c)->created_tsc = w->now_tsc;
	c->last = dp_tick(w->now_tsc);
	if (unlikely(rte_hash_add_key_data(w->conns, ck, dp_conn_tag(c, DP_SIDE_CLIENT)) < 0)) {
		dp_conn_free(w, c);
		*drop = DP_DROP_conn_table_full;
		return NULL;
	}
	w->conn_adds++;
	atomic_fetch_add_explicit(&w->nb_conns, 1, memory_order_relaxed);
	return c;
}

void
dp_conn_destroy(struct dp_worker *w, struct dp_conn *c)
{
	dp_event_emit(w, c, DP_EV_CLOSED, 0);
	dp_conn_destroy_silent(w, c);
}

void
dp_conn_destroy_silent(struct dp_worker *w, struct dp_conn *c)
{
	struct dp_conn_key k;
	uint32_t port = c->lport;

	w->conn_gen++;
	if (dp_conn_half_open(c))
		w->nb_half_open--;
	dp_conn_client_key(c, &k);
	rte_hash_del_key(w->conns, &k);
	if (c->flags & DP_CONN_F_LOCAL) {
		atomic_fetch_sub_explicit(&w->nb_conns, 1, memory_order_relaxed);
		dp_conn_free(w, c);
		return;
	}
	struct dp_lip *lip = dp_conn_cold(c)->lip;
	const enum dp_proto proto = dp_conn_pproto(c);
	*dp_conn_slot(lip, proto, c->lport) = 0;
	rte_ring_enqueue_elem(lip->free_ports[w->index][proto], &port, sizeof(port));
	if (proto == DP_PROTO_tcp)
		w->tcp_lports--;
	atomic_fetch_sub_explicit(&c->real->active, 1, memory_order_relaxed);
	if (atomic_fetch_sub_explicit(&c->real->refs, 1, memory_order_acq_rel) == 1)
		rte_free(c->real); /* removed from its service while this conn lived */
	atomic_fetch_sub_explicit(&w->nb_conns, 1, memory_order_relaxed);
	dp_conn_free(w, c);
}

/*
 * The TCP source ports of this worker over every LIP, from which it is under
 * port pressure. LIPs come and go by the control plane; recomputed every
 * DP_PRESSURE_REFRESH_MS, not per conn (a sum over the LIPs).
 */
static void
dp_conn_pressure_refresh(struct dp_worker *w)
{
	const struct dp_lip_set *ls = atomic_load_explicit(&dpt.lips, memory_order_acquire);
	uint64_t total = 0;

	w->pressure_tsc = w->now_tsc;
	for (uint32_t k = 0; k < ls->n; k++)
		total += ls->lips[k]->capacity[w->index];
	w->pressure_ports = total == 0 || dp.conf.pressure_ports_pct == 0
				    ? UINT32_MAX
				    : (uint32_t)(total * dp.conf.pressure_ports_pct / 100);
}

/* A conn's idle timeout by its protocol and state (what dp_tcp_update and
 * the others apply): read at expiry, so a changed timeout applies to every
 * conn at once. */
static inline uint32_t
dp_conn_timeout_s(const struct dp_conn *c)
{
	const struct dp_timeouts *t = &dpt.timeouts;

	switch (c->proto) {
	case IPPROTO_TCP:
		switch (c->state) {
		case DP_TCP_ESTABLISHED: return t->tcp_established;
		case DP_TCP_FIN_WAIT: return t->tcp_fin;
		case DP_TCP_TIME_WAIT:
		case DP_TCP_CLOSE: return t->tcp_close;
		default: return t->tcp_syn;
		}
	case IPPROTO_UDP: return t->udp;
	default: return t->icmp;
	}
}

void
dp_conn_expire_step(struct dp_worker *w)
{
	const uint64_t pass_tsc = rte_get_tsc_hz() * DP_EXPIRE_PASS_S;
	const uint64_t hz = rte_get_tsc_hz();
	const uint64_t tick_hz = hz >> DP_TICK_SHIFT;
	const uint32_t now = dp_tick(w->now_tsc);
	/* Records above the high-water mark were never handed out. */
	const uint32_t n = w->conn_hwm;
	uint64_t dt = w->now_tsc - w->expire_tsc;
	uint32_t i = w->expire_cursor;
	unsigned budget;

	if (unlikely(w->embryo != NULL) && w->now_tsc - w->pressure_tsc > hz / 1000 * DP_PRESSURE_REFRESH_MS)
		dp_conn_pressure_refresh(w);
	if (n == 0)
		return;
	if (i >= n)
		i = 0;

	/*
	 * Paced by time, not by rounds: the whole pool is examined once per DP_EXPIRE_PASS_S
	 * whatever the poll rate, so a busy worker (many rounds a second) does not spend its
	 * cycles re-reading records, and an idle one still expires on time. The credit counts
	 * record x TSC cycles.
	 */
	if (dt > pass_tsc)
		dt = pass_tsc;
	w->expire_tsc = w->now_tsc;
	w->expire_credit += dt * n;
	budget = (unsigned)RTE_MIN(w->expire_credit / pass_tsc, (uint64_t)DP_EXPIRE_MAX_STEP);
	w->expire_credit -= (uint64_t)budget * pass_tsc;
	if (w->expire_credit > pass_tsc * DP_EXPIRE_MAX_STEP)
		w->expire_credit = 0; /* behind by more than a step: never save up a burst */

	for (; budget > 0; budget--) {
		struct dp_conn *c = &w->conn_recs[i];

		if (++i == n)
			i = 0;
		/* Records are walked in memory order: fetch a few ahead. */
		rte_prefetch0(&w->conn_recs[i + 4 < n ? i + 4 : i]);
		if (c->proto == 0)
			continue;
		if ((uint64_t)(uint32_t)(now - c->last) > (uint64_t)dp_conn_timeout_s(c) * tick_hz)
			dp_conn_destroy(w, c);
	}
	w->expire_cursor = i;
}
