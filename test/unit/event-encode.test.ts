/**
 * The fast conn-event encoder against ts-proto: for random raw records (the addon's own layout of
 * struct dp_conn_info), the bytes must be identical to encodeEvent(seq, view), and decode back to
 * the same message.
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
