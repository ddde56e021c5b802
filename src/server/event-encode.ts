/**
 * Conn events straight from the dataplane's raw records (struct dp_conn_info) to the protobuf bytes
 * of WatchConnEventsResponse, for the whole drained batch into one Buffer: no ConnView, Date or
 * bigint per event. The conn-event stream is the one place where the control plane handles
 * hundreds of thousands of messages a second; ts-proto's encoder (object in, BinaryWriter with
 * forks out) costs tens of microseconds per event there.
 *
 * The output is byte-identical to ts-proto's encoding of `records.view(i)`
 * (test/helpers/event-oracle.ts), which a unit test checks on random records: same fields, same
 * order (field number), same defaults omitted, same millisecond Timestamps. Field numbers come from proto/retrace/v1/conn.proto; the
 * enum values come from the mapping functions in enums.ts, so nothing here restates them.
 */
import { CONN_FLAG_LOCAL, RECORD_CODES, type ConnRecords, type Dataplane } from '../dataplane';
import type { DrainedEvents, EventSource } from './event-hub';
import { connStateToProto, eventTypeToProto, protocolToProto, sideToProto } from './enums';
import { BATCH_ELEMENT_TAG, ProtoWriter, TWO32 } from './proto-wire';

// Wire tags: (field number << 3) | wire type (0 varint, 2 length-delimited).
const T = {
  resp: { seq: 8, time: 18, event: 26 },
  event: { type: 8, conn: 18, changedSide: 24, duration: 34 },
  conn: {
    protocol: 8,
    state: 16,
    local: 24,
    client: 34,
    clientPort: 40,
    vip: 50,
    vipPort: 56,
    localAddress: 66,
    localPort: 72,
    real: 82,
    realPort: 88,
    clientSide: 98,
    serverSide: 106,
    worker: 112,
    createdAt: 122,
    lastPacketAt: 130,
  },
  side: { port: 10, peerMac: 18, packets: 24, bytes: 32 },
  ts: { seconds: 8, nanos: 16 },
} as const;

/**
 * Record code → proto enum value for all 256 codes, built once from the mappings in enums.ts.
 * Codes the record tables lack get what ConnRecords.view() gives them (conns.ts): `other`.
 */
function table<K extends string | number, V>(codes: Record<K, V> | readonly V[], map: (v: V) => number, other: V): number[] {
  const out: number[] = new Array<number>(256).fill(map(other));
  for (const [k, v] of Object.entries(codes) as [string, V][]) out[Number(k)] = map(v);
  return out;
}
const EVENT_TYPE = table(RECORD_CODES.eventTypes, eventTypeToProto, 'snapshot');
const STATE = table(RECORD_CODES.tcpStates, connStateToProto, 'none');
const PROTOCOL = table(RECORD_CODES.protocols, protocolToProto, 'tcp');
const CODE_CLOSED = Number(Object.entries(RECORD_CODES.eventTypes).find(([, v]) => v === 'closed')?.[0]);
const CODE_PATH = Number(Object.entries(RECORD_CODES.eventTypes).find(([, v]) => v === 'path_changed')?.[0]);
const CODE_ICMP = Number(Object.entries(RECORD_CODES.protocols).find(([, v]) => v === 'icmp')?.[0]);
const SIDE_CLIENT = sideToProto('client');
const SIDE_SERVER = sideToProto('server');

/** ASCII of 0..255 in decimal and of a byte in two hex digits. */
const DEC = Array.from({ length: 256 }, (_, i) => Buffer.from(String(i), 'latin1'));
const HEX = Buffer.from(Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0')).join(''), 'latin1');

/** Largest encoding of one event without its two port names. */
const MAX_EVENT = 400;

/** The last Timestamp body encoded for one of a record's times, and the ns range it covers. */
interface TsCache {
  hi: number;
  xFrom: number;
  len: number;
  body: Buffer;
}

const tsCache = (): TsCache => ({ hi: -1, xFrom: 0, len: 0, body: Buffer.alloc(16) });

/** ProtoWriter plus the field kinds of a conn event: addresses, MACs, Timestamps, Durations. */
class Writer extends ProtoWriter {
  /** Timestamp caches for time_ns, created_ns and last_ns. */
  readonly tsTime = tsCache();
  readonly tsCreated = tsCache();
  readonly tsLast = tsCache();

  /** The body of a Timestamp or Duration (both are seconds = 1, nanos = 2). */
  secondsNanos(seconds: number, nanos: number): void {
    this.uint(T.ts.seconds, seconds);
    this.uint(T.ts.nanos, nanos);
  }

  /** A dotted quad from 4 bytes in network order (never empty). */
  ipv4(tag: number, dv: DataView, off: number): void {
    const b = this.buf;
    b[this.pos++] = tag;
    const at = this.pos++;
    for (let i = 0; i < 4; i++) {
      if (i > 0) b[this.pos++] = 0x2e;
      const d = DEC[dv.getUint8(off + i)];
      for (let j = 0; j < d.length; j++) b[this.pos++] = d[j];
    }
    b[at] = this.pos - at - 1;
  }

  /** aa:bb:cc:dd:ee:ff. */
  mac(tag: number, dv: DataView, off: number): void {
    const b = this.buf;
    b[this.pos++] = tag;
    b[this.pos++] = 17;
    for (let i = 0; i < 6; i++) {
      if (i > 0) b[this.pos++] = 0x3a;
      const x = dv.getUint8(off + i) * 2;
      b[this.pos++] = HEX[x];
      b[this.pos++] = HEX[x + 1];
    }
  }

  /**
   * A Timestamp with millisecond precision, like ts-proto's Date fields. Events of one batch
   * mostly fall in the same millisecond: the last encoding is reused while it does (per cache,
   * one for each of the record's three times).
   */
  timestampMs(tag: number, dv: DataView, off: number, c: TsCache): void {
    const lo = dv.getUint32(off, true);
    const hi = dv.getUint32(off + 4, true);
    // ns = hi * 2^32 + lo = hi * 4294 * 10^6 + (hi * 967296 + lo): ms exact in doubles.
    const x = hi * 967296 + lo;
    if (hi !== c.hi || x < c.xFrom || x >= c.xFrom + 1e6) {
      const xms = Math.floor(x / 1e6);
      const ms = hi * 4294 + xms;
      const seconds = Math.floor(ms / 1000);
      const nanos = (ms % 1000) * 1e6;
      c.hi = hi;
      c.xFrom = xms * 1e6;
      const save = this.pos;
      this.secondsNanos(seconds, nanos);
      c.len = this.pos - save;
      for (let i = 0; i < c.len; i++) c.body[i] = this.buf[save + i];
      this.pos = save;
    }
    this.varint(tag);
    this.buf[this.pos++] = c.len;
    for (let i = 0; i < c.len; i++) this.buf[this.pos++] = c.body[i];
  }

  /** A Duration of (a - b) ns (0 when negative), full nanosecond precision. */
  durationNs(tag: number, dv: DataView, offA: number, offB: number): void {
    let lo = dv.getUint32(offA, true) - dv.getUint32(offB, true);
    let hi = dv.getUint32(offA + 4, true) - dv.getUint32(offB + 4, true);
    if (lo < 0) {
      lo += TWO32;
      hi -= 1;
    }
    if (hi < 0) hi = lo = 0;
    let seconds: number;
    let nanos: number;
    if (hi < 0x200000) {
      // Below 2^53 ns (104 days): exact in a double.
      const d = hi * TWO32 + lo;
      seconds = Math.floor(d / 1e9);
      nanos = d % 1e9;
    } else {
      const d = (BigInt(hi) << 32n) | BigInt(lo);
      seconds = Number(d / 1_000_000_000n);
      nanos = Number(d % 1_000_000_000n);
    }
    const at = this.begin(tag);
    this.secondsNanos(seconds, nanos);
    this.end(at);
  }
}

/** Port names as UTF-8 by port index (0..254), cached per names array (the dataplane's is fixed). */
interface Names {
  names: readonly string[];
  bytes: Buffer[];
  /** The longest, in bytes: room to reserve per event for two of them. */
  longest: number;
}
let nameCache: Names | undefined;

function portNames(r: ConnRecords): Names {
  if (nameCache?.names !== r.portNames) {
    const bytes = Array.from({ length: 255 }, (_, pidx) => Buffer.from(r.portName(pidx) ?? '', 'utf8'));
    nameCache = { names: r.portNames, bytes, longest: Math.max(...bytes.map((b) => b.length)) };
  }
  return nameCache;
}

function side(w: Writer, r: ConnRecords, names: Names, tag: number, b: number, s: number): void {
  const { dv, layout: L } = r;
  const at = w.begin(tag);
  const pidx = dv.getUint8(b + L.side_pidx + s);
  if (pidx !== 0xff) {
    const name = names.bytes[pidx];
    if (name.length > 0) w.bytes(T.side.port, name);
    w.mac(T.side.peerMac, dv, b + L.peer_mac + 6 * s);
  }
  w.u64(T.side.packets, dv, b + L.pkts + 8 * s);
  w.u64(T.side.bytes, dv, b + L.bytes + 8 * s);
  w.end(at);
}

function conn(w: Writer, r: ConnRecords, names: Names, tag: number, b: number): void {
  const { dv, layout: L } = r;
  const C = T.conn;
  const protoCode = dv.getUint8(b + L.proto);
  const icmp = protoCode === CODE_ICMP;
  const local = (dv.getUint8(b + L.flags) & CONN_FLAG_LOCAL) !== 0;
  const at = w.begin(tag);
  w.uint(C.protocol, PROTOCOL[protoCode]);
  w.uint(C.state, STATE[dv.getUint8(b + L.state)]);
  w.uint(C.local, local ? 1 : 0);
  w.ipv4(C.client, dv, b + L.caddr);
  w.uint(C.clientPort, dv.getUint16(b + L.cport, false));
  w.ipv4(C.vip, dv, b + L.vaddr);
  w.uint(C.vipPort, icmp ? 0 : dv.getUint16(b + L.vport, false));
  if (!local) {
    w.ipv4(C.localAddress, dv, b + L.laddr);
    w.uint(C.localPort, dv.getUint16(b + L.lport, false));
    w.ipv4(C.real, dv, b + L.raddr);
  }
  w.uint(C.realPort, icmp ? 0 : dv.getUint16(b + L.rport, false));
  side(w, r, names, C.clientSide, b, 0);
  side(w, r, names, C.serverSide, b, 1);
  w.uint(C.worker, dv.getUint8(b + L.worker));
  w.timestampMs(C.createdAt, dv, b + L.created_ns, w.tsCreated);
  w.timestampMs(C.lastPacketAt, dv, b + L.last_ns, w.tsLast);
  w.end(at);
}

/** One varint below 2^53 from a bigint seq without allocating for the common case. */
function seqNumber(seq: bigint): number {
  if (seq > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`event seq ${seq} beyond 2^53`);
  return Number(seq);
}

/**
 * Encoded messages back to back, each behind the tag and length that make it one element of
 * WatchConnEventBatchesResponse.messages (field 1): message i is buf[starts[i] .. ends[i]), and
 * buf[ends[i - 1] (0 for i = 0) .. ends[i]) is the same message as a batch element. A run of
 * consecutive events is therefore already a batch, with no copying.
 */
export interface EncodedEvents {
  buf: Buffer;
  starts: Uint32Array;
  ends: Uint32Array;
}

/** Message i of an EncodedEvents as its own Buffer (a view). */
export function messageAt(e: EncodedEvents, i: number): Buffer {
  return e.buf.subarray(e.starts[i], e.ends[i]);
}

/**
 * Every record of `r` as a WatchConnEventsResponse carrying a ConnEvent, numbered firstSeq,
 * firstSeq + 1, …, back to back in one Buffer, each as a batch element.
 */
export function encodeEventRecords(r: ConnRecords, firstSeq: bigint): EncodedEvents {
  const starts = new Uint32Array(r.count);
  const ends = new Uint32Array(r.count);
  if (r.count === 0) return { buf: Buffer.alloc(0), starts, ends };
  const { dv, layout: L } = r;
  const names = portNames(r);
  const room = MAX_EVENT + 2 * names.longest;
  const w = new Writer(r.count * (192 + 2 * names.longest));
  let seq = seqNumber(firstSeq);
  for (let i = 0; i < r.count; i++, seq++) {
    w.reserve(room);
    const b = r.offset(i);
    const typeCode = dv.getUint8(b + L.type);
    const element = w.begin(BATCH_ELEMENT_TAG);
    w.uint(T.resp.seq, seq);
    w.timestampMs(T.resp.time, dv, b + L.time_ns, w.tsTime);
    const ev = w.begin(T.resp.event);
    w.uint(T.event.type, EVENT_TYPE[typeCode]);
    conn(w, r, names, T.event.conn, b);
    if (typeCode === CODE_PATH) w.uint(T.event.changedSide, dv.getUint8(b + L.changed_side) === 0 ? SIDE_CLIENT : SIDE_SERVER);
    if (typeCode === CODE_CLOSED) w.durationNs(T.event.duration, dv, b + L.time_ns, b + L.created_ns);
    w.end(ev);
    const len = w.pos - element - 1;
    w.end(element);
    ends[i] = w.pos;
    starts[i] = w.pos - len;
  }
  return { buf: w.buf, starts, ends };
}

/** The dataplane as the EventHub's source: raw records, encoded here, decoded only for filters. */
export function dataplaneEventSource(dp: Pick<Dataplane, 'enableEvents' | 'drainEvents'>): EventSource {
  return {
    enableEvents: (on) => dp.enableEvents(on),
    drainEvents: (max) => {
      const { records, dropped } = dp.drainEvents(max);
      const events: DrainedEvents = {
        count: records.count,
        key: (i) => records.view(i),
        encode: (firstSeq) => encodeEventRecords(records, firstSeq),
      };
      return { events, dropped };
    },
  };
}
