/**
 * The health event hub: numbers every transition (one sequence from 1, no gaps) and feeds each
 * WatchHealthEvents stream through its own bounded queue, emptied only as fast as the stream
 * takes messages (grpc-js write() backpressure). A stream that falls behind loses the newest
 * transitions, never silently: it gets a LostHealthEvents with their count and seq range before
 * anything newer. Separate from the conn event hub on purpose: a few transitions a second at
 * most, no history, no dataplane rings.
 */
import type { HealthEvent, WatchHealthEventsResponse } from '../../gen/retrace/v1/health_check';

/** Where a subscriber's messages go: a grpc-js ServerWritableStream has this shape. */
export interface HealthSink {
  write(msg: WatchHealthEventsResponse): boolean;
  once(event: 'drain', fn: () => void): unknown;
}

export class HealthSubscriber {
  private readonly queue: WatchHealthEventsResponse[] = [];
  private lost: { count: bigint; first: bigint; last: bigint } | undefined;
  private waiting = false;
  private closed = false;
  /** Transitions this stream lost, in all. */
  lostTotal = 0n;

  constructor(
    private readonly sink: HealthSink,
    readonly capacity: number,
  ) {}

  /** Initial state: goes in whole (its size is the number of checked reals, not a rate). */
  pushSnapshot(msgs: WatchHealthEventsResponse[]): void {
    this.queue.push(...msgs);
    this.pump();
  }

  push(ev: HealthEvent): void {
    if (this.closed) return;
    this.flushLost();
    if (this.lost === undefined && this.queue.length < this.capacity) {
      this.queue.push({ event: ev });
    } else {
      this.lost ??= { count: 0n, first: ev.seq, last: ev.seq };
      this.lost.count++;
      this.lost.last = ev.seq;
      this.lostTotal++;
    }
    this.pump();
  }

  /** The loss notice takes a slot like an event, as soon as one is free. */
  private flushLost(): void {
    if (this.lost !== undefined && this.queue.length < this.capacity) {
      this.queue.push({ lost: { count: this.lost.count, firstSeq: this.lost.first, lastSeq: this.lost.last } });
      this.lost = undefined;
    }
  }

  private pump(): void {
    while (!this.waiting && !this.closed) {
      this.flushLost();
      const msg = this.queue.shift();
      if (msg === undefined) return;
      if (!this.sink.write(msg)) {
        this.waiting = true;
        this.sink.once('drain', () => {
          this.waiting = false;
          this.pump();
        });
      }
    }
  }

  get queued(): number {
    return this.queue.length;
  }

  close(): void {
    this.closed = true;
    this.queue.length = 0;
  }
}

export class HealthEventHub {
  private seqValue = 0n;
  private readonly subs = new Set<HealthSubscriber>();

  constructor(readonly subscriberBuffer: number) {}

  /** The seq of the last transition (0 = none yet). */
  get seq(): bigint {
    return this.seqValue;
  }

  get subscribers(): number {
    return this.subs.size;
  }

  /** Numbers the transition and hands it to every stream. */
  publish(ev: Omit<HealthEvent, 'seq'>): HealthEvent {
    const e: HealthEvent = { ...ev, seq: ++this.seqValue };
    for (const s of this.subs) s.push(e);
    return e;
  }

  subscribe(sink: HealthSink, snapshot: WatchHealthEventsResponse[] | undefined): HealthSubscriber {
    const s = new HealthSubscriber(sink, this.subscriberBuffer);
    if (snapshot !== undefined) s.pushSnapshot([...snapshot, { snapshotEnd: this.seqValue }]);
    this.subs.add(s);
    return s;
  }

  unsubscribe(s: HealthSubscriber): void {
    s.close();
    this.subs.delete(s);
  }

  close(): void {
    for (const s of this.subs) s.close();
    this.subs.clear();
  }
}
