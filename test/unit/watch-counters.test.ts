/**
 * CounterSampler (WatchCounters) with a fake dataplane source that counts its reads and fake
 * calls whose write() says whether the transport wants more, as the event hub's tests do. Pure
 * TypeScript: no dataplane, no gRPC; jest's fake timers, so each advance of the interval is one
 * tick. test/e2e/control-load.test.ts checks the same sharing against a real appliance.
 */
import { EventEmitter } from 'node:events';
import { status, type ServiceError } from '@grpc/grpc-js';
import type { Dataplane } from '../../src/dataplane';
import { DataplaneError } from '../../src/dataplane';
import { WatchCountersResponse, type WatchCountersRequest } from '../../src/gen/retrace/v1/path';
import { createLogger } from '../../src/log';
import { CounterSampler } from '../../src/server/watch-counters';

/** What the sampler reads, counting the reads; rx grows by 100 per read. */
class FakeDataplane {
  reads = 0;
  rx = 0n;
  failWith: Error | undefined;
  counters() {
    if (this.failWith) throw this.failWith;
    this.reads++;
    this.rx += 100n;
    return { path: { tcp: { p0: { rx: this.rx } } }, drops: { p0: { no_route: 0n } }, conn: { evicted_embryonic_table: 0n } };
  }
  connCount() {
    return 0n;
  }
  ports() {
    return [{ name: 'p0', stats: { rxPackets: this.rx, txPackets: 0n, rxBytes: 0n, txBytes: 0n } }];
  }
  servicesConnsTotal() {
    return 0n;
  }
}

/** A server-streaming call: write() answers `ready`; messages are decoded as they are written. */
class FakeCall extends EventEmitter {
  ready = true;
  ended = false;
  error: ServiceError | undefined;
  messages: WatchCountersResponse[] = [];
  raw: Buffer[] = [];
  constructor(readonly request: WatchCountersRequest) {
    super();
    this.on('error', (e: ServiceError) => (this.error = e));
  }
  write(b: Buffer): boolean {
    this.raw.push(b);
    this.messages.push(WatchCountersResponse.decode(b));
    return this.ready;
  }
  end(): void {
    this.ended = true;
  }
}

const ms = (n: number) => ({ interval: { seconds: 0n, nanos: n * 1e6 }, count: 0 });

describe('CounterSampler', () => {
  let dp: FakeDataplane;
  let sampler: CounterSampler;
  const open = (req: Partial<WatchCountersRequest> = ms(100)) => {
    const c = new FakeCall({ count: 0, ...req } as WatchCountersRequest);
    sampler.handler()(c as never);
    return c;
  };

  beforeEach(() => {
    jest.useFakeTimers();
    dp = new FakeDataplane();
    sampler = new CounterSampler(dp as unknown as Dataplane, createLogger('silent'));
  });
  afterEach(() => {
    sampler.close();
    jest.useRealTimers();
  });

  it('reads once per tick for any number of streams, and writes them the same bytes', () => {
    const calls = Array.from({ length: 50 }, () => open());
    expect(dp.reads).toBe(1); // the first stream's starting sample; the others reuse it
    jest.advanceTimersByTime(1000);
    expect(dp.reads).toBe(11);
    for (const c of calls) expect(c.messages).toHaveLength(10);
    for (let i = 0; i < 10; i++) expect(new Set(calls.map((c) => c.raw[i])).size).toBe(1);
    expect(sampler.status()).toMatchObject({ streams: 50, samples: 11n, sent: 500n, skipped: 0n });
  });

  it('computes the rates over the time since each stream began', () => {
    const a = open();
    jest.advanceTimersByTime(100);
    const m = a.messages[0];
    expect(m.rates?.seconds).toBeCloseTo(0.1, 5);
    expect(m.rates?.tcp?.rxPps).toBeCloseTo(100 / 0.1, 3);
    expect(m.counters?.tcp?.total?.rx).toBe(200n);
  });

  it('keeps one group per interval', () => {
    open(ms(100));
    open(ms(200));
    jest.advanceTimersByTime(1000);
    // 10 ticks at 100 ms + 5 at 200 ms, plus the first start (the 200 ms stream reuses it).
    expect(dp.reads).toBe(16);
  });

  it('skips a stream whose last message has not left, then covers the gap in its rates', () => {
    const slow = open();
    const fast = open();
    slow.ready = false;
    jest.advanceTimersByTime(500);
    // The slow stream got its first message (which filled it) and nothing after; the other five.
    expect(slow.messages).toHaveLength(1);
    expect(fast.messages).toHaveLength(5);
    expect(sampler.status().skipped).toBe(4n);
    slow.ready = true;
    slow.emit('drain');
    jest.advanceTimersByTime(100);
    expect(slow.messages).toHaveLength(2);
    expect(slow.messages[1].rates?.seconds).toBeCloseTo(0.5, 5);
    expect(slow.messages[1].rates?.tcp?.rxPps).toBeCloseTo(500 / 0.5, 3);
  });

  it('reads nothing on a tick where no stream can take a message', () => {
    const c = open();
    c.ready = false;
    jest.advanceTimersByTime(100);
    const reads = dp.reads;
    jest.advanceTimersByTime(1000);
    expect(dp.reads).toBe(reads);
  });

  it('ends a stream after count messages and stops reading when none is left', () => {
    const c = open({ ...ms(100), count: 3 });
    jest.advanceTimersByTime(1000);
    expect(c.messages).toHaveLength(3);
    expect(c.ended).toBe(true);
    expect(sampler.status().streams).toBe(0);
    expect(dp.reads).toBe(4);
  });

  it('forgets a cancelled stream', () => {
    const c = open();
    c.emit('cancelled');
    jest.advanceTimersByTime(500);
    expect(c.messages).toHaveLength(0);
    expect(sampler.status().streams).toBe(0);
  });

  it('rejects a bad interval naming the field', () => {
    const c = open(ms(10));
    expect(c.error).toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/^interval:/) });
    expect(dp.reads).toBe(0);
  });

  it('ends every stream with UNAVAILABLE on close and refuses new ones', () => {
    const calls = [open(ms(100)), open(ms(1000))];
    sampler.close();
    for (const c of calls) expect(c.error).toMatchObject({ code: status.UNAVAILABLE, details: 'the server is shutting down' });
    const late = open();
    expect(late.error).toMatchObject({ code: status.UNAVAILABLE });
    jest.advanceTimersByTime(2000);
    expect(calls.map((c) => c.messages.length)).toEqual([0, 0]);
  });

  it('ends the streams of a group with the status of a failed read', () => {
    const c = open();
    dp.failWith = new DataplaneError('EUNAVAILABLE', 'dataplane is stopping');
    jest.advanceTimersByTime(100);
    expect(c.error).toMatchObject({ code: status.UNAVAILABLE, details: expect.stringContaining('stopping') });
    expect(sampler.status().streams).toBe(0);
  });
});
