/**
 * One WatchConnEvents stream of the EventHub (event-hub.ts describes the stages): its bounded
 * queue and loss accounting, replay from the history, the preamble, batching, backpressure.
 */
import { encodeLost, LostEventsSource } from './conn-messages';
import { elementLength, encodeBatch, keyOf, messageBytes, seqOf, type Message, type Run, type Span } from './event-batch';
import type { EventHub, EventSink, SubscribeOptions, SubscriberStatus } from './event-hub';

/** A loss notice waiting in a queue (encoded when written, so consecutive ones can merge). */
interface Notice {
  source: LostEventsSource;
  count: bigint;
  firstSeq: bigint;
  lastSeq: bigint;
}

/** Events (a span of a run, advanced as it is written) or a notice. */
type Item = Span | Notice;

const isSpan = (i: Item): i is Span => 'run' in i;

/** FIFO with O(1) shift and access to the tail. */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(v: T): void {
    this.items.push(v);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const v = this.items[this.head];
    this.items[this.head++] = undefined as T;
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return v;
  }

  first(): T | undefined {
    return this.length > 0 ? this.items[this.head] : undefined;
  }

  last(): T | undefined {
    return this.length > 0 ? this.items[this.items.length - 1] : undefined;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

export class Subscriber {
  readonly startedAt = new Date();
  /** preamble → live, replay → live (follow) or done, live → done. */
  phase: 'preamble' | 'replay' | 'live' | 'done' = 'live';
  readonly queue = new Fifo<Item>();
  /** Events (not notices) in the queue. */
  queued = 0;
  peak = 0;
  blocked = false;
  sent = 0n;
  lost = 0n;
  /** Events dropped since the last notice: count and seq range. */
  private pending: Notice | undefined;
  /** Replay: seq of the last history entry handled; replayEnd bounds a replay without follow. */
  private cursor = 0n;
  private replayEnd: bigint | undefined;
  /** Messages of a batch being gathered (batch mode only): spans count as their events. */
  private batch: Message[] = [];
  private batchMsgs = 0;
  private batchBytes = 0;
  /** A 'drain' listener is registered (flush() again when it fires). */
  private drainWait = false;
  /** Resolves a preamble waiting for 'drain' (also on close). */
  private wake: (() => void) | undefined;

  constructor(
    readonly id: bigint,
    private readonly hub: EventHub,
    private readonly sink: EventSink,
    readonly opts: SubscribeOptions,
  ) {}

  get follow(): boolean {
    return this.opts.follow;
  }

  start(lastSeq: bigint): void {
    if (this.opts.preamble !== undefined) {
      this.phase = 'preamble';
      void this.runPreamble(this.opts.preamble(lastSeq));
    } else if (this.opts.sinceSeq !== undefined) {
      this.phase = 'replay';
      this.cursor = this.opts.sinceSeq;
      this.replayEnd = this.follow ? undefined : lastSeq;
    }
    this.flush();
  }

  /**
   * A newly numbered run (following streams only): the matching events that fit in the queue go
   * in, the others are dropped and counted, in seq order, exactly as one by one.
   */
  offer(run: Run): void {
    if (this.phase === 'done' || this.phase === 'replay') return;
    const match = this.opts.match;
    if (match === undefined) return this.take(run, 0, run.count);
    // Matching events, a span per stretch of consecutive ones.
    let from = -1;
    for (let i = 0; i < run.count; i++) {
      if (match(keyOf(run, i))) {
        if (from < 0) from = i;
      } else if (from >= 0) {
        this.take(run, from, i);
        from = -1;
      }
    }
    if (from >= 0) this.take(run, from, run.count);
  }

  /** Events [from, to) of a run, all due: queued as far as the buffer holds them, the rest lost. */
  private take(run: Run, from: number, to: number): void {
    const fit = Math.min(to - from, this.hub.subscriberBuffer - this.queued);
    if (fit > 0) {
      if (this.pending !== undefined) {
        this.queue.push(this.pending);
        this.pending = undefined;
      }
      const tail = this.queue.last();
      // Extends the previous span when it ends where this one starts (a filter's gap closed).
      if (tail !== undefined && isSpan(tail) && tail.run === run && tail.to === from) tail.to = from + fit;
      else this.queue.push({ run, from, to: from + fit });
      this.queued += fit;
      if (this.queued > this.peak) this.peak = this.queued;
    }
    const lost = to - from - fit;
    if (lost > 0) {
      const first = seqOf(run, from + fit);
      const last = seqOf(run, to - 1);
      if (this.pending === undefined)
        this.pending = { source: LostEventsSource.LOST_EVENTS_SOURCE_SUBSCRIBER_BUFFER, count: 0n, firstSeq: first, lastSeq: last };
      this.pending.count += BigInt(lost);
      this.pending.lastSeq = last;
      this.lost += BigInt(lost);
      this.hub.countSubscriberLoss(lost);
    }
  }

  /** Events lost in the dataplane: merged into a notice still waiting at the tail, if any. */
  notifyDataplaneLoss(count: bigint): void {
    if (this.phase === 'done') return;
    const tail = this.queue.last();
    if (tail !== undefined && !isSpan(tail) && tail.source === LostEventsSource.LOST_EVENTS_SOURCE_DATAPLANE_RING) tail.count += count;
    else this.queue.push({ source: LostEventsSource.LOST_EVENTS_SOURCE_DATAPLANE_RING, count, firstSeq: 0n, lastSeq: 0n });
  }

  /** Writes what is due until the sink pushes back. */
  flush(): void {
    this.collect();
    this.writeBatch();
  }

  /** Takes what is due, message by message (a span's events as far as the batch has room), into write(). */
  private collect(): void {
    while (!this.blocked && (this.phase === 'replay' || this.phase === 'live')) {
      let msg: Message | undefined;
      if (this.phase === 'replay') {
        msg = this.nextReplay();
        if (msg === undefined) {
          if (!this.follow) return this.finish();
          this.phase = 'live';
          continue;
        }
      } else {
        const item = this.queue.first();
        if (item === undefined) {
          // Caught up after a loss: report it now rather than with the next matching event,
          // which may never come (a burst that ends, a filter that rarely matches).
          if (this.pending === undefined) return;
          msg = encodeLost(this.pending.source, this.pending.count, this.pending.firstSeq, this.pending.lastSeq);
          this.pending = undefined;
        } else if (isSpan(item)) {
          // One event, or as many as the batch has room for.
          const max = this.opts.maxBatch;
          const n = max === undefined ? 1 : Math.min(item.to - item.from, max - this.batchMsgs);
          if (n === item.to - item.from) {
            this.queue.shift();
            msg = item;
          } else {
            msg = { run: item.run, from: item.from, to: item.from + n };
            item.from += n;
          }
          this.queued -= n;
        } else {
          this.queue.shift();
          msg = encodeLost(item.source, item.count, item.firstSeq, item.lastSeq);
        }
      }
      if (!this.write(msg)) this.waitDrain();
    }
  }

  /**
   * One message (or a span of events) to the stream: written at once, or in batch mode added to
   * the batch, which is written when full (and by flush() with whatever it holds once nothing more
   * is due).
   */
  private write(msg: Message): boolean {
    const n = Buffer.isBuffer(msg) ? 1 : msg.to - msg.from;
    this.sent += n === 1 ? 1n : BigInt(n);
    const max = this.opts.maxBatch;
    if (max === undefined) return this.send(messageBytes(msg));
    this.batch.push(msg);
    this.batchMsgs += n;
    this.batchBytes += elementLength(msg);
    return this.batchMsgs < max || this.writeBatch();
  }

  /** Writes the gathered batch, if any, as one WatchConnEventBatchesResponse. */
  private writeBatch(): boolean {
    if (this.batch.length === 0) return !this.blocked;
    const msg = encodeBatch(this.batch, this.batchBytes);
    this.batch = [];
    this.batchMsgs = 0;
    this.batchBytes = 0;
    const ok = this.send(msg);
    if (!ok) this.waitDrain();
    return ok;
  }

  private send(msg: Buffer): boolean {
    const ok = this.sink.write(msg);
    this.blocked = !ok;
    return ok;
  }

  /** Blocked: flush again on 'drain' (once, however many writes returned false). */
  private waitDrain(): void {
    if (this.drainWait) return;
    this.drainWait = true;
    this.sink.once('drain', () => {
      this.drainWait = false;
      this.blocked = false;
      this.flush();
    });
  }

  /** The next replayed message (an event or a HISTORY notice); undefined once caught up. */
  private nextReplay(): Message | undefined {
    const h = this.hub.history;
    const end = this.replayEnd ?? h.last;
    while (this.cursor < end) {
      const next = this.cursor + 1n;
      if (next < h.first) {
        const last = h.first - 1n < end ? h.first - 1n : end;
        this.cursor = last;
        return encodeLost(LostEventsSource.LOST_EVENTS_SOURCE_HISTORY, last - next + 1n, next, last);
      }
      this.cursor = next;
      const e = h.get(next);
      if (e !== undefined && (this.opts.match === undefined || this.opts.match(keyOf(e.run, e.from)))) return e;
    }
    return undefined;
  }

  private async runPreamble(pages: AsyncIterable<Buffer[]>): Promise<void> {
    try {
      for await (const page of pages) {
        for (const msg of page) {
          if (this.phase === 'done') return;
          if (!this.write(msg)) await this.preambleDrain();
        }
        // A page is all that is ready now: its partial batch goes out rather than wait.
        if (this.phase === 'done') return;
        if (!this.writeBatch()) await this.preambleDrain();
      }
    } catch (err) {
      this.hub.finish(this, err);
      return;
    }
    if (this.phase === 'done') return;
    if (!this.follow) return this.finish();
    this.phase = 'live';
    this.flush();
  }

  /** The preamble waits for 'drain' (or for the stream to go). */
  private async preambleDrain(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.wake = resolve;
      this.sink.once('drain', resolve);
    });
    this.wake = undefined;
    this.blocked = false;
  }

  private finish(): void {
    this.writeBatch();
    this.hub.finish(this);
  }

  /** Frees the queue; the hub has already forgotten the stream. */
  release(): void {
    this.phase = 'done';
    this.queue.clear();
    this.queued = 0;
    this.pending = undefined;
    this.batch = [];
    this.batchMsgs = 0;
    this.batchBytes = 0;
    this.wake?.();
  }

  status(): SubscriberStatus {
    return {
      id: this.id,
      peer: this.opts.peer ?? '',
      follow: this.follow,
      startedAt: this.startedAt,
      queueLength: this.queued,
      queuePeak: this.peak,
      blocked: this.blocked,
      sent: this.sent,
      lost: this.lost,
    };
  }
}
