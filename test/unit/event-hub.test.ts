/**
 * EventHub's queue and loss accounting, with a fake event source (the dataplane's rings) and a fake
 * sink (a stream whose write() says whether the transport wants more). Pure TypeScript: no
 * dataplane, no gRPC. Timers are jest's fake ones; each `tick()` is one drain period.
 *
 * One file (over 500 lines): the cases share the fake source and sink and the helpers that drive
 * them (above the first describe); they are one EventHub's behaviour, block by block.
 */
import { EventEmitter } from 'node:events';
import type { ConnEventType as DpEventType, ConnView } from '../../src/dataplane';
import { DataplaneError } from '../../src/dataplane';
import { ConnEventType, LostEventsSource, WatchConnEventBatchesResponse, WatchConnEventsResponse } from '../../src/gen/retrace/v1/conn';
import { encodeEvent } from '../helpers/event-oracle';
import { EventHub, type DrainedEvents, type EventKey, type EventSink, type SubscribeOptions } from '../../src/server/event-hub';

const NOW_NS = 1_700_000_000_000_000_000n;

function conn(i: number, type: DpEventType = 'created', client = '198.18.2.2'): ConnView {
  const side = { port: 'uplink-b', peerMac: '02:00:00:00:00:02', packets: 1n, bytes: 60n };
  return {
    type,
    protocol: 'tcp',
    state: type === 'closed' ? 'close' : 'syn_sent',
    local: false,
    client,
    clientPort: 10000 + i,
    vip: '198.19.0.1',
    vipPort: 80,
    localAddress: '198.18.30.100',
    localPort: 2000 + i,
    real: '198.18.30.11',
    realPort: 8080,
    client_side: side,
    server_side: { packets: 0n, bytes: 0n },
    worker: 0,
    timeNs: NOW_NS + BigInt(i) * 1000n,
    createdNs: NOW_NS,
    lastNs: NOW_NS,
  };
}

/** The dataplane's rings: events waiting to be drained and the running drop total. */
class FakeSource {
  enabled = false;
  enableCalls: boolean[] = [];
  pending: ConnView[] = [];
  dropped = 0n;
  failWith: Error | undefined;
  private n = 0;

  enableEvents(on: boolean): void {
    this.enabled = on;
    this.enableCalls.push(on);
  }

  drainEvents(max: number): { events: DrainedEvents; dropped: bigint } {
    if (this.failWith) throw this.failWith;
    const views = this.pending.splice(0, max);
    const events: DrainedEvents = {
      count: views.length,
      key: (i) => views[i],
      encode: (first) => {
        // Each message behind its batch-element tag and length, as DrainedEvents promises.
        const msgs = views.map((v, i) => encodeEvent(first + BigInt(i), v));
        const heads = msgs.map((m) => Buffer.from([0x0a, ...(m.length < 128 ? [m.length] : [(m.length & 127) | 128, m.length >> 7])]));
        const starts = new Uint32Array(msgs.length);
        const ends = new Uint32Array(msgs.length);
        let o = 0;
        msgs.forEach((m, i) => {
          starts[i] = o + heads[i].length;
          ends[i] = o += heads[i].length + m.length;
        });
        return { buf: Buffer.concat(msgs.flatMap((m, i) => [heads[i], m])), starts, ends };
      },
    };
    return { events, dropped: this.dropped };
  }

  /** The workers produce `count` events (only while enabled, like the real rings). */
  produce(count: number, type: DpEventType = 'created', client?: string): void {
    if (!this.enabled) return;
    for (let i = 0; i < count; i++) this.pending.push(conn(this.n++, type, client));
  }
}

/** A stream: records every message; write() returns false while paused, 'drain' on resume. */
class FakeSink extends EventEmitter implements EventSink {
  readonly got: WatchConnEventsResponse[] = [];
  paused = false;

  write(chunk: Buffer): boolean {
    this.got.push(WatchConnEventsResponse.decode(chunk));
    return !this.paused;
  }

  resume(): void {
    this.paused = false;
    this.emit('drain');
  }

  get seqs(): bigint[] {
    return this.got.filter((m) => m.event).map((m) => m.seq);
  }

  lost(source: LostEventsSource) {
    return this.got.filter((m) => m.lost?.source === source).map((m) => m.lost!);
  }
}

/** A WatchConnEventBatches stream: records each write as the batch of messages it carries. */
class BatchSink extends FakeSink {
  readonly batches: number[] = [];

  write(chunk: Buffer): boolean {
    const b = WatchConnEventBatchesResponse.decode(chunk);
    this.batches.push(b.messages.length);
    this.got.push(...b.messages);
    return !this.paused;
  }
}

const all = (): boolean => true;

function range(from: bigint, to: bigint): bigint[] {
  const out: bigint[] = [];
  for (let s = from; s <= to; s++) out.push(s);
  return out;
}

/**
 * Walks a stream as a client would: every gap between consecutive event seqs must be covered
 * exactly by the SUBSCRIBER_BUFFER notices between them (no filter: every seq was due).
 */
function checkGapsMatchLoss(msgs: WatchConnEventsResponse[]): { events: number; lost: bigint } {
  let prev = 0n;
  let lostSince = 0n;
  let events = 0;
  let lost = 0n;
  for (const m of msgs) {
    if (m.lost?.source === LostEventsSource.LOST_EVENTS_SOURCE_SUBSCRIBER_BUFFER) {
      expect(m.lost.count).toBe(m.lost.lastSeq - m.lost.firstSeq + 1n);
      expect(m.lost.firstSeq).toBe(prev + lostSince + 1n);
      lostSince += m.lost.count;
      lost += m.lost.count;
    } else if (m.event) {
      expect(m.seq).toBe(prev + lostSince + 1n);
      prev = m.seq;
      lostSince = 0n;
      events++;
    }
  }
  return { events, lost };
}

describe('EventHub', () => {
  let source: FakeSource;
  let hub: EventHub;
  const done: jest.Mock[] = [];

  const make = (opts: { history?: number; buffer?: number } = {}) => {
    hub = new EventHub(source, { historyCapacity: opts.history ?? 1000, subscriberBuffer: opts.buffer ?? 16 });
  };
  const subscribe = (sink: EventSink, o: Partial<SubscribeOptions> = {}) => {
    const onDone = jest.fn();
    done.push(onDone);
    const sub = hub.subscribe(sink, { follow: true, match: all, onDone, ...o });
    return { sub, onDone };
  };
  const tick = () => jest.advanceTimersByTime(5);
  /** Drain periods until the rings are empty (a batch never exceeds one stream's queue). */
  const settle = () => {
    for (let i = 0; i < 10000 && source.pending.length > 0; i++) tick();
    tick();
  };

  beforeEach(() => {
    jest.useFakeTimers();
    source = new FakeSource();
    done.length = 0;
    make();
  });

  afterEach(() => {
    hub.close();
    jest.useRealTimers();
  });

  describe('production', () => {
    it('turns events on for the first following stream and off after the last one leaves', () => {
      const a = subscribe(new FakeSink());
      const b = subscribe(new FakeSink());
      expect(source.enableCalls).toEqual([true]);
      expect(hub.status().producing).toBe(true);
      a.sub.close();
      expect(source.enabled).toBe(true);
      b.sub.close();
      expect(source.enableCalls).toEqual([true, false]);
      expect(hub.status()).toMatchObject({ producing: false, subscribers: [] });
    });

    it('numbers what the rings still hold when production stops, and drains nothing after', () => {
      const a = subscribe(new FakeSink());
      source.produce(5);
      a.sub.close();
      expect(hub.lastSeq).toBe(5n);
      expect(hub.status().history).toEqual({ capacity: 1000, size: 5, firstSeq: 1n, lastSeq: 5n });
      source.pending.push(conn(99));
      jest.advanceTimersByTime(100);
      expect(hub.lastSeq).toBe(5n);
    });

    it('does not produce for a replay without follow', () => {
      subscribe(new FakeSink(), { follow: false, sinceSeq: 0n });
      expect(source.enableCalls).toEqual([]);
    });

    it('fails the subscribe when the source cannot produce (nothing registered)', () => {
      source.enableEvents = () => {
        throw new DataplaneError('EUNAVAILABLE', 'dataplane is starting');
      };
      expect(() => subscribe(new FakeSink())).toThrow(/starting/);
      expect(hub.status().subscribers).toEqual([]);
    });
  });

  describe('a fast stream', () => {
    it('gets every event in seq order, 1, 2, 3, ... with no gaps', () => {
      const sink = new FakeSink();
      subscribe(sink);
      for (let i = 0; i < 10; i++) {
        source.produce(137);
        settle();
      }
      expect(sink.seqs).toEqual(range(1n, 1370n));
      expect(sink.got.every((m) => m.event?.type === ConnEventType.CONN_EVENT_TYPE_CREATED)).toBe(true);
      expect(hub.status().subscribers[0]).toMatchObject({ sent: 1370n, lost: 0n, queueLength: 0 });
    });

    it('loses nothing to batching: a backlog far larger than its queue arrives whole', () => {
      const sink = new FakeSink();
      subscribe(sink);
      source.produce(20000);
      settle();
      expect(sink.seqs).toEqual(range(1n, 20000n));
      expect(hub.status().subscribers[0].queuePeak).toBeLessThanOrEqual(16);
    });
  });

  describe('a slow stream', () => {
    it('keeps at most subscriber_buffer events and reports exactly what it dropped, with seq ranges', () => {
      const sink = new FakeSink();
      subscribe(sink);
      sink.paused = true;
      source.produce(100);
      settle();
      // One went to the transport, which then said "no more"; 16 wait; the rest were dropped.
      expect(sink.got.length).toBe(1);
      let st = hub.status().subscribers[0];
      expect(st).toMatchObject({ queueLength: 16, queuePeak: 16, blocked: true, lost: 83n });
      source.produce(50);
      settle();
      st = hub.status().subscribers[0];
      expect(st.queuePeak).toBe(16);
      expect(st.lost).toBe(133n);
      sink.resume();
      // The pending loss is reported before the next event that fits.
      source.produce(3);
      settle();
      const { events, lost } = checkGapsMatchLoss(sink.got);
      expect(events + Number(lost)).toBe(153);
      expect(lost).toBe(133n);
      expect(hub.status().subscriberLost).toBe(133n);
      expect(sink.seqs.at(-1)).toBe(153n);
    });

    it('reports a loss as soon as it has caught up, without waiting for another event', () => {
      const sink = new FakeSink();
      subscribe(sink);
      sink.paused = true;
      source.produce(40);
      settle();
      sink.resume();
      settle();
      // Nothing more is produced: the last thing the stream gets is the notice for 23 events.
      const { events, lost } = checkGapsMatchLoss(sink.got);
      expect(events).toBe(17);
      expect(lost).toBe(23n);
      expect(sink.got.at(-1)?.lost).toMatchObject({ count: 23n, firstSeq: 18n, lastSeq: 40n });
    });

    it('writes on drain only: nothing while the transport pushes back, everything after', () => {
      const sink = new FakeSink();
      subscribe(sink);
      sink.paused = true;
      source.produce(10);
      tick();
      expect(sink.got.length).toBe(1);
      tick();
      tick();
      expect(sink.got.length).toBe(1);
      sink.resume();
      expect(sink.seqs).toEqual(range(1n, 10n));
    });

    it('counts only events that match the filter, with their first and last seq', () => {
      const sink = new FakeSink();
      const match = (e: EventKey) => e.client === '198.18.2.9';
      subscribe(sink, { match });
      sink.paused = true;
      source.produce(5, 'created', '198.18.2.9'); // seq 1..5: queued
      source.produce(20, 'created', '198.18.1.1'); // 6..25: never due
      source.produce(30, 'created', '198.18.2.9'); // 26..55: 12 queued (26..37), 18 dropped (38..55)
      settle();
      sink.resume();
      source.produce(1, 'created', '198.18.2.9'); // 56
      settle();
      const lost = sink.lost(LostEventsSource.LOST_EVENTS_SOURCE_SUBSCRIBER_BUFFER);
      expect(lost).toEqual([{ source: LostEventsSource.LOST_EVENTS_SOURCE_SUBSCRIBER_BUFFER, count: 18n, firstSeq: 38n, lastSeq: 55n }]);
      expect(sink.seqs).toEqual([...range(1n, 5n), ...range(26n, 37n), 56n]);
    });

    it('never lets loss notices count toward the buffer or filters', () => {
      const sink = new FakeSink();
      subscribe(sink, { match: () => false });
      sink.paused = true;
      source.dropped = 4n;
      source.produce(10);
      tick();
      sink.resume();
      expect(sink.got.map((m) => m.lost)).toEqual([{ source: LostEventsSource.LOST_EVENTS_SOURCE_DATAPLANE_RING, count: 4n, firstSeq: 0n, lastSeq: 0n }]);
    });
  });

  describe('dataplane ring loss', () => {
    it('tells every following stream the new drops since the last drain, once', () => {
      const a = new FakeSink();
      const b = new FakeSink();
      source.dropped = 100n; // before anyone watched: not reported
      subscribe(a);
      subscribe(b);
      source.produce(2);
      source.dropped = 107n;
      tick();
      source.produce(1);
      tick();
      for (const s of [a, b]) {
        expect(s.lost(LostEventsSource.LOST_EVENTS_SOURCE_DATAPLANE_RING)).toEqual([
          { source: LostEventsSource.LOST_EVENTS_SOURCE_DATAPLANE_RING, count: 7n, firstSeq: 0n, lastSeq: 0n },
        ]);
        expect(s.seqs).toEqual([1n, 2n, 3n]);
      }
      expect(hub.status().dataplaneLost).toBe(107n);
    });

    it('merges notices while a blocked stream has nothing in between', () => {
      const sink = new FakeSink();
      subscribe(sink, { match: () => false });
      sink.paused = true;
      source.dropped = 1n;
      tick(); // written at once: the transport now pushes back
      source.dropped = 4n;
      tick();
      source.dropped = 10n;
      tick();
      sink.resume();
      expect(sink.lost(LostEventsSource.LOST_EVENTS_SOURCE_DATAPLANE_RING).map((l) => l.count)).toEqual([1n, 9n]);
    });
  });

  describe('since_seq', () => {
    beforeEach(() => {
      make({ history: 10 });
      const feeder = subscribe(new FakeSink());
      source.produce(25);
      tick();
      feeder.sub.close();
    });

    it('reports what the history no longer keeps, replays the rest, then ends without follow', () => {
      const sink = new FakeSink();
      const { onDone } = subscribe(sink, { follow: false, sinceSeq: 5n });
      expect(sink.lost(LostEventsSource.LOST_EVENTS_SOURCE_HISTORY)).toEqual([
        { source: LostEventsSource.LOST_EVENTS_SOURCE_HISTORY, count: 10n, firstSeq: 6n, lastSeq: 15n },
      ]);
      expect(sink.seqs).toEqual(range(16n, 25n));
      expect(sink.got[0].lost).toBeDefined();
      expect(onDone).toHaveBeenCalledWith(undefined);
      expect(hub.status().subscribers).toEqual([]);
    });

    it('replays only the events after since_seq', () => {
      const sink = new FakeSink();
      subscribe(sink, { follow: false, sinceSeq: 20n });
      expect(sink.seqs).toEqual(range(21n, 25n));
      expect(sink.lost(LostEventsSource.LOST_EVENTS_SOURCE_HISTORY)).toEqual([]);
    });

    it('continues with live events under follow, without a gap or a repeat', () => {
      const sink = new FakeSink();
      subscribe(sink, { sinceSeq: 22n });
      source.produce(4);
      tick();
      expect(sink.seqs).toEqual(range(23n, 29n));
    });

    it('replays at the client pace and reports entries overwritten meanwhile', () => {
      const sink = new FakeSink();
      sink.paused = true;
      subscribe(sink, { sinceSeq: 15n }); // writes 16, then waits
      source.produce(12); // 26..37: the history now keeps 28..37
      tick();
      sink.resume();
      expect(sink.seqs).toEqual([16n, ...range(28n, 37n)]);
      expect(sink.lost(LostEventsSource.LOST_EVENTS_SOURCE_HISTORY)).toEqual([
        { source: LostEventsSource.LOST_EVENTS_SOURCE_HISTORY, count: 11n, firstSeq: 17n, lastSeq: 27n },
      ]);
    });

    it('with no history, reports everything after since_seq as lost', () => {
      make({ history: 0 });
      const feeder = subscribe(new FakeSink());
      source.produce(3);
      tick();
      feeder.sub.close();
      const sink = new FakeSink();
      subscribe(sink, { follow: false, sinceSeq: 1n });
      expect(sink.got.map((m) => m.lost)).toEqual([{ source: LostEventsSource.LOST_EVENTS_SOURCE_HISTORY, count: 2n, firstSeq: 2n, lastSeq: 3n }]);
    });
  });

  describe('preamble (initial_state)', () => {
    it('writes the preamble first, holds live events in the queue meanwhile, then goes live', async () => {
      const sink = new FakeSink();
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let seenLastSeq = -1n;
      const snapshot = (n: number) => WatchConnEventsResponse.encode({ seq: 0n, time: undefined, snapshotEnd: { conns: BigInt(n), lastSeq: 0n } }).finish();
      subscribe(sink, {
        preamble: async function* (lastSeq) {
          seenLastSeq = lastSeq;
          yield [Buffer.from(snapshot(1))];
          await gate;
          yield [Buffer.from(snapshot(2))];
        },
      });
      source.produce(3);
      await jest.advanceTimersByTimeAsync(5);
      expect(sink.got.length).toBe(1);
      expect(hub.status().subscribers[0].queueLength).toBe(3);
      release();
      await jest.advanceTimersByTimeAsync(5);
      expect(seenLastSeq).toBe(0n);
      expect(sink.got.map((m) => (m.snapshotEnd ? `s${m.snapshotEnd.conns}` : `e${m.seq}`))).toEqual(['s1', 's2', 'e1', 'e2', 'e3']);
    });

    it('ends the stream with the preamble error', async () => {
      const { onDone } = subscribe(new FakeSink(), {
        // A preamble that fails before yielding anything is the case under test.
        // eslint-disable-next-line require-yield
        preamble: async function* () {
          throw new DataplaneError('EUNAVAILABLE', 'dataplane is stopping');
        },
      });
      await jest.advanceTimersByTimeAsync(0);
      expect(onDone).toHaveBeenCalledWith(expect.objectContaining({ code: 'EUNAVAILABLE' }));
      expect(hub.status().producing).toBe(false);
    });
  });

  describe('batches (WatchConnEventBatches)', () => {
    it('writes what is due as one batch, split at maxBatch, in seq order', () => {
      const sink = new BatchSink();
      subscribe(sink, { maxBatch: 4 });
      source.produce(10);
      tick();
      expect(sink.batches).toEqual([4, 4, 2]);
      expect(sink.seqs).toEqual(range(1n, 10n));
    });

    it('sends a lone event at once rather than wait for a batch to fill', () => {
      const sink = new BatchSink();
      subscribe(sink, { maxBatch: 256 });
      source.produce(1);
      tick();
      expect(sink.batches).toEqual([1]);
    });

    it('stops at backpressure and carries loss notices in the batches, gaps covered exactly', () => {
      make({ buffer: 8 });
      const sink = new BatchSink();
      subscribe(sink, { maxBatch: 4 });
      sink.paused = true;
      source.produce(30);
      for (let i = 0; i < 5; i++) tick();
      // One batch went out before write() said stop; a full queue waits, the rest are lost.
      expect(sink.batches).toEqual([4]);
      expect(hub.status().subscribers[0].queueLength).toBe(8);
      sink.resume();
      tick();
      expect(sink.batches.slice(1).every((n) => n <= 4)).toBe(true);
      const { events, lost } = checkGapsMatchLoss(sink.got);
      expect(events + Number(lost)).toBe(30);
      expect(lost).toBe(18n);
    });

    it('batches a snapshot page by page and ends it with snapshot_end', async () => {
      const sink = new BatchSink();
      const msg = (n: number) =>
        Buffer.from(WatchConnEventsResponse.encode({ seq: 0n, time: undefined, snapshotEnd: { conns: BigInt(n), lastSeq: 0n } }).finish());
      subscribe(sink, {
        maxBatch: 3,
        follow: false,
        preamble: async function* () {
          yield [msg(1), msg(2), msg(3), msg(4)];
          yield [msg(5)];
          yield [msg(6)];
        },
      });
      await jest.advanceTimersByTimeAsync(0);
      expect(sink.batches).toEqual([3, 1, 1, 1]);
      expect(sink.got.map((m) => Number(m.snapshotEnd?.conns))).toEqual([1, 2, 3, 4, 5, 6]);
      expect(done[done.length - 1]).toHaveBeenCalledWith(undefined);
    });
  });

  describe('ending', () => {
    it('frees a cancelled stream at once and never calls its onDone', () => {
      const sink = new FakeSink();
      const { sub, onDone } = subscribe(sink);
      sink.paused = true;
      source.produce(10);
      tick();
      sub.close();
      sub.close();
      expect(hub.status().subscribers).toEqual([]);
      sink.resume();
      expect(sink.got.length).toBe(1);
      expect(onDone).not.toHaveBeenCalled();
    });

    it('close() ends every stream with EUNAVAILABLE, stops production and refuses new streams', () => {
      const { onDone } = subscribe(new FakeSink());
      hub.close();
      expect(onDone).toHaveBeenCalledWith(expect.objectContaining({ code: 'EUNAVAILABLE' }));
      expect(source.enabled).toBe(false);
      expect(jest.getTimerCount()).toBe(0);
      expect(() => subscribe(new FakeSink())).toThrow(/shutting down/);
    });

    it('a failing drain ends every stream with its error', () => {
      const { onDone } = subscribe(new FakeSink());
      source.failWith = new DataplaneError('EUNAVAILABLE', 'dataplane is stopped');
      tick();
      expect(onDone).toHaveBeenCalledWith(source.failWith);
      expect(hub.status().producing).toBe(false);
    });
  });
});
