/**
 * Memory arithmetic for the benchmark: how much EAL memory a run needs (-m / eal.memory_mb), and
 * what a conn costs according to the structures the dataplane allocates. Read off DPDK 22.11 on
 * this build with sizeof() and rte_mempool_calc_obj_size() (see docs/bench.md):
 *
 * - an mbuf is a 2368-byte mempool object: 64 header + 128 struct rte_mbuf + 128 headroom + 2048
 *   data room (retrace and testpmd both use 2176-byte buffers);
 * - a conn is two 64-byte lines, a hot one (struct dp_conn) and a cold one (struct dp_conn_cold),
 *   slots of one per-worker block of max_conns hot lines then max_conns cold lines (no per-object
 *   header, one allocation, written whole at start), with a ring of 4-byte free record ids;
 * - without hugepages (eal.hugepages false, --no-huge, what both sides run with here) and without
 *   PCI, rte_mempool_populate_default keeps every object inside one 4 KiB page (the pools do not
 *   set RTE_MEMPOOL_F_NO_IOVA_CONTIG): one mbuf per page, 4096 bytes each. With hugepages (the
 *   bench's --hugepages: 2 MiB pages in a hugetlbfs mount) the same rule keeps every object inside
 *   one 2 MiB page: 885 mbufs per page (2369.7 bytes each); every size below takes `huge`;
 * - the conn hash (rte_hash, 16-byte keys, entries = max_conns: each conn is hashed under its
 *   client tuple only, its server side being a slot of its LIP's array; raised to the next power
 *   of two + 1 when that leaves the buckets less than 1/9 spare at full: then twice the buckets) has a 32-byte key slot per entry (+1), 64-byte buckets
 *   of 8 entries over the next power of two of the entries, as many again for the extendable
 *   bucket table (RTE_HASH_EXTRA_FLAGS_EXT_TABLE) with a 4-byte free ring over them, and a
 *   free-slot ring of 4 bytes over the next power of two; and, with
 *   dataplane.table_pressure.evict_embryonic (the default), an 8-byte entry per conn over the next
 *   power of two (the embryonic FIFO);
 * - every LIP has, per worker and protocol, a ring of its 64512 free source ports (256 KiB), and
 *   per protocol an array of 65536 4-byte conn slots indexed by its port (768 KiB in all, every
 *   page written when the LIP is added).
 */

export const PAGE = 4096;
/** A 2 MiB hugepage: the page size of the bench's --hugepages runs. */
export const HUGE_PAGE = 2 * 2 ** 20;
export const MBUF_OBJ_BYTES = 2368;
/** The hot and the cold line of a conn (native/dp_conn.h). */
export const CONN_RECORD_BYTES = 128;
export const HASH_KEY_SLOT_BYTES = 32;
export const HASH_BUCKET_BYTES = 64;
export const HASH_BUCKET_ENTRIES = 8;
export const LIP_RING_BYTES = 4 * 65536;
export const LIP_CONN_SLOTS_BYTES = 3 * 4 * 65536;

/** What `lips` LIPs allocate on a one-worker appliance: three port rings and the conn slots each. */
export function lipBytes(lips: number): number {
  return lips * (3 * LIP_RING_BYTES + LIP_CONN_SLOTS_BYTES);
}

/** The page size EAL memory comes in: 4 KiB with --no-huge, 2 MiB with hugepages. */
export function pageBytes(huge = false): number {
  return huge ? HUGE_PAGE : PAGE;
}

/** Bytes per object of a pool populated in pages of `page` bytes without IOVA-contiguous spanning. */
export function perPageObjBytes(obj: number, page: number = PAGE): number {
  const perPage = Math.floor(page / obj);
  return perPage >= 1 ? page / perPage : Math.ceil(obj / page) * page;
}

export function pow2ceil(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Bytes of an mbuf pool of n mbufs (objects plus its ring of pointers), in 4 KiB pages or, with `huge`, 2 MiB ones. */
export function mbufPoolBytes(n: number, huge = false): number {
  return n * perPageObjBytes(MBUF_OBJ_BYTES, pageBytes(huge)) + 8 * pow2ceil(n + 1);
}

export interface ConnTableBytes {
  records: number;
  freeRing: number;
  hashBuckets: number;
  hashKeys: number;
  hashFreeRing: number;
  hashExtBuckets: number;
  embryoQueue: number;
  total: number;
  /** total / maxConns */
  perConn: number;
}

/** What one worker's conn table of max_conns conns allocates (see the file comment; the same in 4 KiB or 2 MiB pages: no pool packs its objects into pages). */
export function connTableBytes(maxConns: number): ConnTableBytes {
  // dp_conn_table_create: bucket slots at least 9/8 of the keys (doubled when they would not be).
  const entries = pow2ceil(maxConns) * 8 < maxConns * 9 ? pow2ceil(maxConns) + 1 : maxConns;
  const records = maxConns * CONN_RECORD_BYTES;
  const freeRing = 4 * pow2ceil(maxConns + 1);
  const hashBuckets = (pow2ceil(entries) / HASH_BUCKET_ENTRIES) * HASH_BUCKET_BYTES;
  const hashKeys = HASH_KEY_SLOT_BYTES * (entries + 1);
  const hashFreeRing = 4 * pow2ceil(entries + 1);
  const nbBuckets = pow2ceil(entries) / HASH_BUCKET_ENTRIES;
  const hashExtBuckets = nbBuckets * HASH_BUCKET_BYTES + 4 * pow2ceil(nbBuckets + 1);
  const embryoQueue = 8 * pow2ceil(maxConns);
  const total = records + freeRing + hashBuckets + hashKeys + hashFreeRing + hashExtBuckets + embryoQueue;
  return { records, freeRing, hashBuckets, hashKeys, hashFreeRing, hashExtBuckets, embryoQueue, total, perConn: total / maxConns };
}

/** LIPs needed for `conns` conns of one protocol on one worker (64512 source ports each). */
export function lipsFor(conns: number): number {
  return Math.max(1, Math.ceil(conns / 64512));
}

/** mbufs for a retrace run replaying `packets` frames: the pcap copy plus working room. */
export function mbufsFor(packets: number): number {
  // 2^q - 1 is the mempool's best size, when that does not waste much.
  const n = packets + 32767;
  const p = pow2ceil(n + 1) - 1;
  return p <= n * 1.1 ? p : n;
}

/** eal.memory_mb for a run (mbuf pool, conn table, LIP port rings, event rings, heap margin). */
export function retraceMemoryMb(opts: { mbufs: number; maxConns: number; lips: number; eventRing?: number; huge?: boolean }): number {
  const bytes =
    mbufPoolBytes(opts.mbufs, opts.huge) + connTableBytes(opts.maxConns).total + lipBytes(opts.lips) + (opts.eventRing ?? 65536) * 128 + 256 * 2 ** 20;
  return Math.ceil((bytes * 1.05) / 2 ** 20);
}

/** testpmd's -m for a pool of `mbufs` mbufs: the pool plus 256 MiB for the rest of EAL. */
export function testpmdMemoryMb(mbufs: number, huge = false): number {
  return Math.ceil(mbufPoolBytes(mbufs, huge) / 2 ** 20) + 256;
}

/** Pages reserved beyond -m (32 MiB). */
export const HUGEPAGE_MARGIN = 16;

/**
 * 2 MiB hugepages to reserve for an EAL process given -m `memoryMb`: EAL takes -m up front
 * (rounded up to whole pages), and allocates more at run time only if the heap runs out; the
 * margin covers that rounding per memseg list and the few pages EAL maps outside the heap.
 */
export function hugepagesFor(memoryMb: number): number {
  return Math.ceil((memoryMb * 2 ** 20) / HUGE_PAGE) + HUGEPAGE_MARGIN;
}
