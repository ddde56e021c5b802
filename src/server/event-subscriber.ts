/**
 * One WatchConnEvents stream of the EventHub (event-hub.ts describes the stages): its bounded
 * queue and loss accounting, replay from the history, the preamble, batching, backpressure.
 */
import { encodeLost, LostEventsSource } from './conn-messages';
import { elementLength, encodeBatch, messageBytes, type Entry, type Message } from './event-batch';
import type { EventHub, EventKey, EventSink, SubscribeOptions, SubscriberStatus } from './event-hub';

function wants(match: ((e: EventKey) => boolean) | undefined, e: Entry): boolean {
  if (match === undefined) return true;
  e.key ??= e.batch.key(e.index);
  return match(e.key);
}

/** A loss notice waiting in a queue (encoded when written, so consecutive ones can merge). */
interface Notice {
  source: LostEventsSource;
  count: bigint;
  firstSeq: bigint;
  lastSeq: bigint;
}

type Item = Entry | Notice;

const isEntry = (i: Item): i is Entry => 'buf' in i;

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
  /** Messages of a batch being gathered (batch mode only), and their bytes as batch elements. */
  private batch: Message[] = [];
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

  /** A new numbered event (following streams only). */
  offer(e: Entry): void {
    if (this.phase === 'done' || this.phase === 'replay' || !wants(this.opts.match, e)) return;
    if (this.queued >= this.hub.subscriberBuffer) {
      if (this.pending === undefined)
        this.pending = { source: LostEventsSource.LOST_EVENTS_SOURCE_SUBSCRIBER_BUFFER, count: 0n, firstSeq: e.seq, lastSeq: e.seq };
      this.pending.count++;
      this.pending.lastSeq = e.seq;
      this.lost++;
      this.hub.countSubscriberLoss();
      return;
    }
    if (this.pending !== undefined) {
      this.queue.push(this.pending);
      this.pending = undefined;
    }
    this.queue.push(e);
    this.queued++;
    if (this.queued > this.peak) this.peak = this.queued;
  }

  /** Events lost in the dataplane: merged into a notice still waiting at the tail, if any. */
  notifyDataplaneLoss(count: bigint): void {
    if (this.phase === 'done') return;
    const tail = this.queue.last();
    if (tail !== undefined && !isEntry(tail) && tail.source === LostEventsSource.LOST_EVENTS_SOURCE_DATAPLANE_RING) tail.count += count;
    else this.queue.push({ source: LostEventsSource.LOST_EVENTS_SOURCE_DATAPLANE_RING, count, firstSeq: 0n, lastSeq: 0n });
  }

  /** Writes what is due until the sink pushes back. */
  flush(): void {
    this.collect();
    this.writeBatch();
  }

  /** Takes what is due, message by message, into write(). */
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
        let item = this.queue.shift();
        if (item === undefined) {
          // Caught up after a loss: report it now rather than with the next matching event,
          // which may never come (a burst that ends, a filter that rarely matches).
          if (this.pending === undefined) return;
          item = this.pending;
          this.pending = undefined;
        }
        if (isEntry(item)) this.queued--;
        msg = isEntry(item) ? item : encodeLost(item.source, item.count, item.firstSeq, item.lastSeq);
      }
      if (!this.write(msg)) this.waitDrain();
    }
  }

  /**
   * One message to the stream: written at once, or in batch mode added to the batch, which is
   * written when full (and by flush() with whatever it holds once nothing more is due).
   */
  private write(msg: Message): boolean {
    this.sent++;
    const max = this.opts.maxBatch;
    if (max === undefined) return this.send(messageBytes(msg));
    this.batch.push(msg);
    this.batchBytes += elementLength(msg);
    return this.batch.length < max || this.writeBatch();
  }

  /** Writes the gathered batch, if any, as one WatchConnEventBatchesResponse. */
  private writeBatch(): boolean {
    if (this.batch.length === 0) return !this.blocked;
    const msg = encodeBatch(this.batch, this.batchBytes);
    this.batch = [];
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
      if (e !== undefined && wants(this.opts.match, e)) return e;
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
