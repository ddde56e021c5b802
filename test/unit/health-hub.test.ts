/** The health event hub: one gap-free sequence, a bounded queue per stream, losses reported in order. */
import { EventEmitter } from 'node:events';
import type { HealthEvent, WatchHealthEventsResponse } from '../../src/gen/retrace/v1/health_check';
import { HealthEventHub } from '../../src/server/health/hub';

/** A stream that takes `room` messages, then reports backpressure until drained. */
class Sink extends EventEmitter {
  readonly got: WatchHealthEventsResponse[] = [];
  constructor(public room = Infinity) {
    super();
  }
  write(m: WatchHealthEventsResponse): boolean {
    this.got.push(m);
    return this.got.length < this.room;
  }
  drain(room: number): void {
    this.room = room;
    this.emit('drain');
  }
}

const ev = (real: string): Omit<HealthEvent, 'seq'> => ({
  time: new Date(),
  protocol: 1,
  vip: '198.18.0.10',
  vipPort: 80,
  real,
  realPort: 8080,
  from: 2,
  to: 3,
  lastError: 'connect ECONNREFUSED',
  connsClosed: 0n,
});

describe('HealthEventHub', () => {
  it('numbers transitions 1, 2, 3 for every stream', () => {
    const hub = new HealthEventHub(16);
    const a = new Sink();
    const b = new Sink();
    hub.subscribe(a, undefined);
    hub.publish(ev('10.1.0.11'));
    hub.subscribe(b, undefined);
    hub.publish(ev('10.1.0.12'));
    hub.publish(ev('10.1.0.13'));
    expect(a.got.map((m) => m.event?.seq)).toEqual([1n, 2n, 3n]);
    expect(b.got.map((m) => m.event?.seq)).toEqual([2n, 3n]);
    expect(hub.seq).toBe(3n);
  });

  it('a slow stream loses the newest, and is told how many and which before anything newer', () => {
    const hub = new HealthEventHub(4);
    const slow = new Sink(1); // takes one message, then waits for drain
    const fast = new Sink();
    hub.subscribe(slow, undefined);
    hub.subscribe(fast, undefined);
    for (let i = 0; i < 10; i++) hub.publish(ev(`10.1.0.${i}`));
    // 1 written, 4 queued, 5 lost (seq 6..10).
    expect(slow.got.map((m) => m.event?.seq)).toEqual([1n]);
    slow.drain(Infinity);
    hub.publish(ev('10.1.0.99'));
    expect(slow.got.map((m) => m.event?.seq ?? m.lost)).toEqual([1n, 2n, 3n, 4n, 5n, { count: 5n, firstSeq: 6n, lastSeq: 10n }, 11n]);
    expect(fast.got).toHaveLength(11);
  });

  it('initial state first, then snapshot_end with the last seq, then live transitions', () => {
    const hub = new HealthEventHub(4);
    hub.publish(ev('10.1.0.1'));
    const s = new Sink();
    hub.subscribe(s, [{ event: { ...ev('10.1.0.2'), seq: 0n } }]);
    hub.publish(ev('10.1.0.3'));
    expect(s.got.map((m) => (m.event ? m.event.seq : m.snapshotEnd !== undefined ? `end ${m.snapshotEnd}` : '?'))).toEqual([0n, 'end 1', 2n]);
  });

  it('an unsubscribed stream gets nothing more', () => {
    const hub = new HealthEventHub(4);
    const s = new Sink();
    const sub = hub.subscribe(s, undefined);
    hub.unsubscribe(sub);
    hub.publish(ev('10.1.0.1'));
    expect(s.got).toHaveLength(0);
    expect(hub.subscribers).toBe(0);
  });
});
