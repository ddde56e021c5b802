/**
 * The native conn-event encoder (native/dp_event_wire.c) against ts-proto: for random raw records
 * (the addon's own layout of struct dp_conn_info) and for the edge values of every field under
 * every event type, the bytes must be identical to encodeEvent(seq, view), and decode back to the
 * same message.
 */
import { loadNative } from '../../src/dataplane/binding';
import { ConnRecords, type ConnLayout } from '../../src/dataplane';
import { encodeEvent } from '../helpers/event-oracle';
import { dataplaneEventSource, encodeEventRecords, messageAt, type EncodedEvents } from '../../src/server/event-encode';
import { WatchConnEventBatchesResponse, WatchConnEventsResponse } from '../../src/gen/retrace/v1/conn';
import { prng } from '../helpers/prng';

let layout: ConnLayout;
const PORTS = ['uplink-a', 'uplink-b', 'servers', 'näme-ütf8'];

beforeAll(() => {
  layout = loadNative().connInfoLayout();
});

function u64(rnd: () => number): bigint {
  // Mix of magnitudes: 0, small, around 2^32, around 2^53, up to 2^64 - 1.
  const k = Math.floor(rnd() * 6);
  const hi = BigInt(Math.floor(rnd() * 2 ** 32));
  const lo = BigInt(Math.floor(rnd() * 2 ** 32));
  if (k === 0) return 0n;
  if (k === 1) return lo & 0xffffn;
  if (k === 2) return lo;
  if (k === 3) return ((hi & 0x1fffffn) << 32n) | lo;
  if (k === 4) return (1n << 64n) - 1n;
  return (hi << 32n) | lo;
}

const NOW = 1_764_500_000_123_456_789n;

function randomRecords(n: number, seed: number): Buffer {
  const rnd = prng(seed);
  const L = layout;
  const buf = Buffer.alloc(n * L.size);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)];
  for (let i = 0; i < n; i++) {
    const b = i * L.size;
    const created = NOW - BigInt(Math.floor(rnd() * 1e15));
    // time before created sometimes (clamped to 0), long-lived conns sometimes (> 2^53 ns apart).
    const time = pick([created + BigInt(Math.floor(rnd() * 1e12)), created - 5n, created + (1n << 60n), created]);
    dv.setBigUint64(b + L.time_ns, time, true);
    dv.setBigUint64(b + L.created_ns, pick([created, 0n, 999_999n, 1_000_000n]), true);
    dv.setBigUint64(b + L.last_ns, pick([NOW, 0n, (1n << 64n) - 1n, NOW + 999_999n]), true);
    for (let s = 0; s < 2; s++) {
      dv.setBigUint64(b + L.pkts + 8 * s, u64(rnd), true);
      dv.setBigUint64(b + L.bytes + 8 * s, u64(rnd), true);
      dv.setUint8(b + L.side_pidx + s, pick([0, 1, 2, 3, 9, 0xff]));
      for (let j = 0; j < 6; j++) dv.setUint8(b + L.peer_mac + 6 * s + j, Math.floor(rnd() * 256));
    }
    for (const f of ['caddr', 'vaddr', 'laddr', 'raddr'])
      for (let j = 0; j < 4; j++) dv.setUint8(b + L[f] + j, pick([0, 9, 10, 99, 100, 255, Math.floor(rnd() * 256)]));
    for (const f of ['cport', 'vport', 'lport', 'rport']) dv.setUint16(b + L[f], pick([0, 1, 127, 128, 80, 65535, Math.floor(rnd() * 65536)]), false);
    dv.setUint8(b + L.type, pick([1, 2, 3, 4, 5, 0, 77]));
    dv.setUint8(b + L.proto, pick([6, 17, 1, 0, 99]));
    dv.setUint8(b + L.state, pick([0, 1, 2, 3, 4, 5, 6, 42]));
    dv.setUint8(b + L.flags, pick([0, 0x4, 0x1, 0xff]));
    dv.setUint8(b + L.changed_side, pick([0, 1]));
    dv.setUint8(b + L.worker, pick([0, 1, 7, 200]));
  }
  return buf;
}

describe('encodeEventRecords', () => {
  it('produces the bytes of ts-proto for 20,000 random records', () => {
    const n = 20_000;
    const recs = new ConnRecords(randomRecords(n, 7), n, layout, PORTS);
    const first = 123_456_789_012n;
    const fast = encodeEventRecords(recs, first);
    expect(fast.ends).toHaveLength(n);
    for (let i = 0; i < n; i++) {
      const ref = encodeEvent(first + BigInt(i), recs.view(i));
      const got = messageAt(fast, i);
      if (!got.equals(ref)) {
        // Show the difference as messages, which reads better than bytes.
        expect(WatchConnEventsResponse.decode(got)).toEqual(WatchConnEventsResponse.decode(ref));
        expect(got.toString('hex')).toBe(ref.toString('hex'));
      }
    }
  });

  it('lays the events out as batch elements: any run of them is a WatchConnEventBatchesResponse', () => {
    const n = 300;
    const recs = new ConnRecords(randomRecords(n, 5), n, layout, PORTS);
    const enc = encodeEventRecords(recs, 1n);
    const whole = WatchConnEventBatchesResponse.decode(enc.buf.subarray(0, enc.ends[n - 1]));
    expect(whole.messages).toEqual(Array.from({ length: n }, (_, i) => WatchConnEventsResponse.decode(messageAt(enc, i))));
    const run = WatchConnEventBatchesResponse.decode(enc.buf.subarray(enc.ends[99], enc.ends[199]));
    expect(run.messages.map((m) => m.seq)).toEqual(Array.from({ length: 100 }, (_, i) => BigInt(i + 101)));
  });

  it('encodes nothing for an empty batch, and seq 1 as the first', () => {
    expect(encodeEventRecords(new ConnRecords(Buffer.alloc(0), 0, layout, PORTS), 1n).ends).toHaveLength(0);
    const recs = new ConnRecords(randomRecords(1, 3), 1, layout, PORTS);
    expect(WatchConnEventsResponse.decode(messageAt(encodeEventRecords(recs, 1n), 0)).seq).toBe(1n);
  });

  it('adapts the dataplane: encode numbers from the given seq, key reads the filter fields', () => {
    const recs = new ConnRecords(randomRecords(3, 11), 3, layout, PORTS);
    let enabled: boolean | undefined;
    const src = dataplaneEventSource({
      enableEvents: (on: boolean) => {
        enabled = on;
      },
      drainEvents: () => ({ records: recs, dropped: 5n }),
    });
    src.enableEvents(true);
    expect(enabled).toBe(true);
    const { events, dropped } = src.drainEvents(3);
    expect(dropped).toBe(5n);
    expect(events.count).toBe(3);
    expect(events.key(2)).toMatchObject({ client: recs.view(2).client, type: recs.view(2).type });
    const enc: EncodedEvents = events.encode(10n);
    expect([0, 1, 2].map((i) => WatchConnEventsResponse.decode(messageAt(enc, i)).seq)).toEqual([10n, 11n, 12n]);
  });
});

/** One record with every field given (addresses as dotted quads, ports in host order). */
interface Rec {
  time: bigint;
  created: bigint;
  last: bigint;
  pkts: [bigint, bigint];
  bytes: [bigint, bigint];
  addrs: [string, string, string, string];
  ports: [number, number, number, number];
  type: number;
  proto: number;
  state: number;
  flags: number;
  pidx: [number, number];
  changedSide: number;
  worker: number;
  macs: [number[], number[]];
}

const BASE: Rec = {
  time: NOW,
  created: NOW - 1_500_000_000n,
  last: NOW - 1n,
  pkts: [3n, 2n],
  bytes: [180n, 120n],
  addrs: ['100.64.0.1', '198.18.1.10', '10.1.1.1', '10.1.0.11'],
  ports: [10000, 80, 1025, 8080],
  type: 1,
  proto: 6,
  state: 1,
  flags: 0,
  pidx: [0, 2],
  changedSide: 0,
  worker: 0,
  macs: [
    [2, 0, 0, 0, 0xc, 1],
    [0xde, 0xad, 0xbe, 0xef, 0, 0xff],
  ],
};

function writeRecords(recs: Rec[]): Buffer {
  const L = layout;
  const buf = Buffer.alloc(recs.length * L.size);
  recs.forEach((r, i) => {
    const b = i * L.size;
    buf.writeBigUInt64LE(r.time, b + L.time_ns);
    buf.writeBigUInt64LE(r.created, b + L.created_ns);
    buf.writeBigUInt64LE(r.last, b + L.last_ns);
    for (let s = 0; s < 2; s++) {
      buf.writeBigUInt64LE(r.pkts[s], b + L.pkts + 8 * s);
      buf.writeBigUInt64LE(r.bytes[s], b + L.bytes + 8 * s);
      buf.writeUInt8(r.pidx[s], b + L.side_pidx + s);
      Buffer.from(r.macs[s]).copy(buf, b + L.peer_mac + 6 * s);
    }
    (['caddr', 'vaddr', 'laddr', 'raddr'] as const).forEach((f, k) => Buffer.from(r.addrs[k].split('.').map(Number)).copy(buf, b + L[f]));
    (['cport', 'vport', 'lport', 'rport'] as const).forEach((f, k) => buf.writeUInt16BE(r.ports[k], b + L[f]));
    buf.writeUInt8(r.type, b + L.type);
    buf.writeUInt8(r.proto, b + L.proto);
    buf.writeUInt8(r.state, b + L.state);
    buf.writeUInt8(r.flags, b + L.flags);
    buf.writeUInt8(r.changedSide, b + L.changed_side);
    buf.writeUInt8(r.worker, b + L.worker);
  });
  return buf;
}

/** Every record encoded from firstSeq must match ts-proto byte for byte. */
function expectSameAsTsProto(recs: ConnRecords, firstSeq: bigint): void {
  const enc = encodeEventRecords(recs, firstSeq);
  expect(enc.ends).toHaveLength(recs.count);
  for (let i = 0; i < recs.count; i++) {
    const ref = encodeEvent(firstSeq + BigInt(i), recs.view(i));
    const got = messageAt(enc, i);
    if (!got.equals(ref)) {
      expect({ i, msg: WatchConnEventsResponse.decode(got) }).toEqual({ i, msg: WatchConnEventsResponse.decode(ref) });
      expect({ i, hex: got.toString('hex') }).toEqual({ i, hex: ref.toString('hex') });
    }
  }
}

const U64_EDGES = [0n, 1n, 127n, 128n, 16383n, 16384n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];
const NS_EDGES = [0n, 1n, 999_999n, 1_000_000n, 999_999_999n, 1_000_000_000n, 1_000_999_999n, NOW, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];

/** The base record with one field changed at a time, over its edge values, under every event type. */
function edgeRecords(): Rec[] {
  const variants: Partial<Rec>[] = [{}];
  for (const v of U64_EDGES) variants.push({ pkts: [v, 0n] }, { pkts: [0n, v] }, { bytes: [v, v] });
  for (const t of NS_EDGES) variants.push({ time: t }, { created: t }, { last: t }, { time: t, created: t });
  // Closed events: the duration around the second and ms boundaries, and negative (clamped to 0).
  for (const d of [0n, 1n, 999_999_999n, 1_000_000_000n, 1_000_000_001n, 2n ** 53n, 2n ** 60n]) variants.push({ time: NOW + d, created: NOW });
  variants.push({ time: NOW, created: NOW + 1n }, { time: 0n, created: 2n ** 64n - 1n });
  for (const a of ['0.0.0.0', '255.255.255.255', '1.2.3.4', '10.0.100.9', '99.100.101.199'])
    variants.push({ addrs: [a, a, a, a] }, { addrs: [a, '0.0.0.0', '0.0.0.0', a] });
  for (const p of [0, 1, 127, 128, 255, 256, 16383, 16384, 65535]) variants.push({ ports: [p, p, p, p] }, { ports: [p, 0, p, 0] });
  for (let c = 0; c < 256; c++) variants.push({ state: c }, { proto: c });
  for (const f of [0, 0x1, 0x2, 0x4, 0xff, 0xfb]) variants.push({ flags: f }, { flags: f, proto: 1 });
  for (const x of [0, 1, 2, 3, 4, 200, 254, 255]) variants.push({ pidx: [x, 0xff] }, { pidx: [0xff, x] }, { worker: x });
  for (const c of [0, 1, 2, 255]) variants.push({ changedSide: c });
  variants.push(
    {
      macs: [
        [0, 0, 0, 0, 0, 0],
        [255, 255, 255, 255, 255, 255],
      ],
    },
    {
      macs: [
        [0xa, 0xb, 0xc, 0x10, 0x9f, 0xf0],
        [1, 2, 3, 4, 5, 6],
      ],
    },
  );
  // Local ICMP echo and ICMP through a service (no ports but the echo id).
  variants.push({ proto: 1, flags: 0x4, ports: [7, 0, 0, 0], addrs: ['100.64.0.1', '198.18.0.1', '0.0.0.0', '0.0.0.0'] });
  variants.push({ proto: 1, flags: 0, ports: [7, 7, 1, 1] }, { proto: 17, state: 0 });
  const out: Rec[] = [];
  for (const type of [1, 2, 3, 4, 5, 0, 6, 77, 255]) for (const v of variants) out.push({ ...BASE, ...v, type });
  return out;
}

describe('the native encoder at the edges', () => {
  it('matches ts-proto for every event type with each field at its edge values', () => {
    const recs = edgeRecords();
    expect(recs.length).toBeGreaterThan(5000);
    expectSameAsTsProto(new ConnRecords(writeRecords(recs), recs.length, layout, PORTS), 1n);
  });

  it('matches ts-proto at the edges of seq, up to 2^64 - 1', () => {
    const recs = new ConnRecords(writeRecords([BASE, { ...BASE, type: 4 }]), 2, layout, PORTS);
    for (const s of [0n, 1n, 126n, 127n, 128n, 2n ** 32n - 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 2n]) expectSameAsTsProto(recs, s);
  });

  it('matches ts-proto with port names of every length, empty and multi-byte ones (lengths above 127 and 255)', () => {
    const names = ['', 'a', 'ü'.repeat(60), 'x'.repeat(255), 'é'.repeat(127), 'servers'];
    const recs: Rec[] = [];
    for (let a = 0; a < names.length; a++) for (const b of [0, 1, 2, 3, 4, 5, 9, 0xff]) recs.push({ ...BASE, pidx: [a, b], type: 3 });
    expectSameAsTsProto(new ConnRecords(writeRecords(recs), recs.length, layout, names), 77n);
  });

  it('rejects what it cannot encode with a clear error', () => {
    const recs = new ConnRecords(writeRecords([BASE]), 1, layout, ['x'.repeat(256)]);
    expect(() => encodeEventRecords(recs, 1n)).toThrow('encoder.names[0] is longer than 255 bytes');
    const ok = new ConnRecords(writeRecords([BASE]), 1, layout, PORTS);
    encodeEventRecords(ok, 1n);
    const n = loadNative();
    const enc = n.eventEncoder({
      eventType: new Array<number>(256).fill(0),
      state: new Array<number>(256).fill(0),
      protocol: new Array<number>(256).fill(0),
      sideClient: 1,
      sideServer: 2,
      codeClosed: 4,
      codePath: 3,
      codeIcmp: 1,
      flagLocal: 4,
      names: [],
    });
    expect(() => n.encodeEvents(enc, Buffer.alloc(layout.size), 2, 1n)).toThrow('records holds fewer than count records');
    expect(() => n.encodeEvents(enc, Buffer.alloc(layout.size), 1, -1n)).toThrow('firstSeq must be in 0..2^64-1');
    expect(() => n.encodeEvents(enc, Buffer.alloc(layout.size), 1, 2n ** 64n)).toThrow('firstSeq must be in 0..2^64-1');
    expect(() => n.eventEncoder({ eventType: [1] } as never)).toThrow('encoder.eventType must have 256 entries');
  });
});
