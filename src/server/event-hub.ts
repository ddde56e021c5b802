/**
 * EventHub: conn events from the dataplane to WatchConnEvents streams, in three bounded stages
 * (see proto/retrace/v1/conn.proto), each of which counts what it loses.
 *
 *   worker rings ──drain every 5 ms──▶ seq + encode once ──▶ history ring (grpc.event_history)
 *                                                      └──▶ per stream: filter → bounded queue
 *                                                             (grpc.subscriber_buffer) → write()
 *
 * - Production: the dataplane produces events only while at least one following stream is open.
 *   The first one turns it on (and starts the drain timer), the last one to leave turns it off
 *   (after a final drain, so nothing produced is left in the rings).
 * - Numbering: every drained event gets the next seq (bigint, from 1) and is encoded once to the
 *   bytes grpc-js sends; the same bytes go into the history and to every stream that wants them.
 * - Dataplane loss: the rings' running `dropped` total is compared with the last value seen; a
 *   positive difference becomes LostEvents{DATAPLANE_RING, count} for every following stream.
 * - Streams: each has a queue of at most `subscriberBuffer` events (loss notices do not count).
 *   Messages are written while write() returns true; on false the stream waits for 'drain'
 *   (HTTP/2 flow control reaches back to here). When the queue is full, new matching events are
 *   dropped and counted with their seq range; one LostEvents{SUBSCRIBER_BUFFER} with exactly that
 *   count goes into the queue just before the next event that fits.
 * - Replay (since_seq): the stream reads the history through its own cursor at its own pace;
 *   events the history no longer has become one LostEvents{HISTORY}. Once it has caught up, a
 *   following stream switches to its queue. Loss notices are never filtered.
 * - Snapshot (initial_state): a preamble written with the same backpressure; live events wait
 *   in the stream's queue meanwhile.
 *
 * Everything runs on the Node main thread; nothing here blocks or waits on a worker.
 */
import type { ConnView } from '../dataplane';
import { DataplaneError } from '../dataplane';
import type { Logger } from '../log';
import { encodeLost, LostEventsSource } from './conn-messages';
import { BATCH_ELEMENT_TAG, putVarint32, varintLength } from './proto-wire';

/** One drained batch of events, in ring order. */
export interface DrainedEvents {
  readonly count: number;
  /** The filter fields of event i; asked only for streams with a filter. */
  key(i: number): EventKey;
  /**
   * Every event as WatchConnEventsResponse bytes, numbered firstSeq, firstSeq + 1, …, back to
   * back in one Buffer, each behind its tag and length as an element of
   * WatchConnEventBatchesResponse.messages: event i is buf[starts[i]..ends[i]), its element
   * buf[ends[i - 1] (0 for i = 0)..ends[i]).
   */
  encode(firstSeq: bigint): { buf: Buffer; starts: Uint32Array; ends: Uint32Array };
}

/** What the hub needs from the dataplane (event-encode.ts adapts Dataplane to it). */
export interface EventSource {
  enableEvents(on: boolean): void;
  drainEvents(max: number): { events: DrainedEvents; dropped: bigint };
}

/** Where a stream's messages go: a grpc-js ServerWritableStream, or any object-mode Writable. */
export interface EventSink {
  write(chunk: Buffer): boolean;
  once(event: 'drain', listener: () => void): unknown;
}

/** The fields of an event that stream filters look at. */
export type EventKey = Pick<ConnView, 'type' | 'protocol' | 'state' | 'client' | 'vip' | 'real'>;

export interface HubOptions {
  /** Events kept for since_seq replays (0 = none). */
  historyCapacity: number;
  /** Events each stream's queue holds. */
  subscriberBuffer: number;
  /** Drain period while producing, ms. Default 5. */
  intervalMs?: number;
  log?: Logger;
}

export interface SubscribeOptions {
  /** Keep streaming live events; a stream without follow finishes after its replay/preamble. */
  follow: boolean;
  /** Replay kept events with a greater seq first. */
  sinceSeq?: bigint;
  /** Which events this stream wants (loss notices always pass); undefined: all of them. */
  match?: (e: EventKey) => boolean;
  /**
   * Messages written before anything else (the initial_state snapshot, ending with snapshot_end),
   * pulled one at a time with backpressure. Gets the seq of the last event numbered before it
   * began: every event queued for the stream meanwhile has a greater one.
   */
  preamble?: (lastSeq: bigint) => AsyncIterable<Buffer[]>;
  /**
   * Batch mode (WatchConnEventBatches): each write carries up to this many messages as one
   * WatchConnEventBatchesResponse. Unset: one message per write (WatchConnEvents).
   */
  maxBatch?: number;
  /** The client's address, for GetEventStatus. */
  peer?: string;
  /**
   * Called once when the stream is over from the hub's side: without an error when a stream
   * without follow has written everything (end the call), with one when the preamble failed,
   * the dataplane failed or the hub closed (end the call with that status).
   */
  onDone: (err?: unknown) => void;
}

export interface SubscriberStatus {
  id: bigint;
  peer: string;
  follow: boolean;
  startedAt: Date;
  queueLength: number;
  queuePeak: number;
  blocked: boolean;
  sent: bigint;
  lost: bigint;
}

export interface HubStatus {
  producing: boolean;
  producingSince?: Date;
  /** Events numbered so far = seq of the last one. */
  seen: bigint;
  /** The dataplane rings' running total of dropped events, as last read. */
  dataplaneLost: bigint;
  history: { capacity: number; size: number; firstSeq: bigint; lastSeq: bigint };
  subscriberBuffer: number;
  subscriberLost: bigint;
  subscribers: SubscriberStatus[];
}

/** A numbered event: its encoded message, and where to read the fields filters need. */
interface Entry {
  seq: bigint;
  /** The encoded message: buf[start..end), shared with the rest of its drained batch; as a batch element from `element`. */
  buf: Buffer;
  element: number;
  start: number;
  end: number;
  batch: DrainedEvents;
  index: number;
  /** The filter fields, once a stream with a filter has asked. */
  key?: EventKey;
}

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

/** A message to write: bytes of its own, or an event's place in its batch's buffer. */
type Message = Buffer | Entry;

const messageBytes = (m: Message): Buffer => (Buffer.isBuffer(m) ? m : m.buf.subarray(m.start, m.end));

/** Bytes of a message as an element of WatchConnEventBatchesResponse.messages. */
function elementLength(m: Message): number {
  return Buffer.isBuffer(m) ? 1 + varintLength(m.length) + m.length : m.end - m.element;
}

/**
 * WatchConnEventBatchesResponse from messages: each is field 1 (BATCH_ELEMENT_TAG), its length, its
 * bytes. Events already carry their tag and length (DrainedEvents.encode), so a run of events
 * that lie next to each other in one buffer is copied at once, and a batch that is one such run
 * is a view, not a copy. `bytes` is the sum of elementLength().
 */
export function encodeBatch(messages: readonly Message[], bytes: number): Buffer {
  const first = messages[0];
  const last = messages[messages.length - 1];
  if (!Buffer.isBuffer(first) && !Buffer.isBuffer(last) && last.buf === first.buf && last.end - first.element === bytes) {
    return first.buf.subarray(first.element, last.end); // one run: nothing between the events
  }
  const out = Buffer.allocUnsafe(bytes);
  let o = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i];
    if (Buffer.isBuffer(m)) {
      out[o++] = BATCH_ELEMENT_TAG;
      o = putVarint32(out, o, m.length);
      o += m.copy(out, o);
      continue;
    }
    // The longest run of adjacent events from here.
    let j = i;
    while (j + 1 < messages.length) {
      const next = messages[j + 1];
      const cur = messages[j] as Entry;
      if (Buffer.isBuffer(next) || next.buf !== cur.buf || next.element !== cur.end) break;
      j++;
    }
    o += m.buf.copy(out, o, m.element, (messages[j] as Entry).end);
    i = j;
  }
  return out;
}

/**
 * Drain batch bounds: small while idle (the addon allocates a buffer per call), larger under load,
 * never more than one stream's queue holds, so that a stream keeping up never loses events to the
 * batching itself. A full batch is followed by the next one after the event loop has turned (I/O,
 * 'drain' callbacks), not at once.
 */
const MIN_BATCH = 64;
const MAX_BATCH = 8192;

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

/** The last `capacity` entries, addressed by seq. */
class History {
  private readonly ring: (Entry | undefined)[];
  private readonly cap: bigint;
  /** Seq of the newest entry ever pushed (0 = none). */
  last = 0n;

  constructor(readonly capacity: number) {
    this.ring = new Array<Entry | undefined>(capacity);
    this.cap = BigInt(capacity);
  }

  /** Seq of the oldest entry kept (last + 1 when nothing is kept). */
  get first(): bigint {
    const f = this.last - this.cap + 1n;
    return f > 1n ? f : 1n;
  }

  get size(): number {
    return Number(this.last - this.first + 1n);
  }

  push(e: Entry): void {
    this.last = e.seq;
    if (this.capacity > 0) this.ring[Number((e.seq - 1n) % this.cap)] = e;
  }

  get(seq: bigint): Entry | undefined {
    if (seq < this.first || seq > this.last) return undefined;
    return this.ring[Number((seq - 1n) % this.cap)];
  }
}

class Subscriber {
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

/** A handle on one stream: close() when the call ends (cancelled, error, close). Idempotent. */
export interface Subscription {
  readonly id: bigint;
  close(): void;
}

export class EventHub {
  readonly history: History;
  readonly subscriberBuffer: number;
  private readonly intervalMs: number;
  private readonly subscribers = new Map<bigint, Subscriber>();
  private following = 0;
  private nextId = 1n;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private readonly minBatch: number;
  private readonly maxBatch: number;
  private producingSince: Date | undefined;
  private batch: number;
  private lastDropped = 0n;
  private subscriberLost = 0n;
  private closed = false;
  private readonly log: Logger | undefined;

  constructor(
    private readonly source: EventSource,
    opts: HubOptions,
  ) {
    this.history = new History(opts.historyCapacity);
    this.subscriberBuffer = opts.subscriberBuffer;
    this.intervalMs = opts.intervalMs ?? 5;
    this.maxBatch = Math.max(1, Math.min(MAX_BATCH, opts.subscriberBuffer));
    this.minBatch = Math.min(MIN_BATCH, this.maxBatch);
    this.batch = this.minBatch;
    this.log = opts.log;
  }

  /** Seq of the last event numbered (0 = none yet). */
  get lastSeq(): bigint {
    return this.history.last;
  }

  get producing(): boolean {
    return this.producingSince !== undefined;
  }

  /**
   * Attaches a stream. Throws (before anything is written) if the hub is closed or the dataplane
   * cannot produce events; the caller maps the error to a status.
   */
  subscribe(sink: EventSink, opts: SubscribeOptions): Subscription {
    if (this.closed) throw new DataplaneError('EUNAVAILABLE', 'the server is shutting down');
    if (opts.follow) {
      if (this.following === 0) this.startProducing();
      else {
        // Events waiting in the rings predate this stream: number them before it starts counting.
        this.drainOnce();
        for (const s of this.subscribers.values()) s.flush();
      }
    }
    const sub = new Subscriber(this.nextId++, this, sink, opts);
    this.subscribers.set(sub.id, sub);
    if (opts.follow) this.following++;
    sub.start(this.lastSeq);
    return { id: sub.id, close: () => this.detach(sub) };
  }

  /** The hub is done with a stream (complete, or failed with err): detach it, then tell its owner. */
  finish(sub: Subscriber, err?: unknown): void {
    if (this.detach(sub)) sub.opts.onDone(err);
  }

  /** Forgets a stream, frees its queue, stops production after the last following one. */
  private detach(sub: Subscriber): boolean {
    if (!this.subscribers.delete(sub.id)) return false;
    sub.release();
    if (sub.follow && --this.following === 0) this.stopProducing();
    return true;
  }

  countSubscriberLoss(): void {
    this.subscriberLost++;
  }

  status(): HubStatus {
    const h = this.history;
    const size = h.size;
    return {
      producing: this.producing,
      producingSince: this.producingSince,
      seen: h.last,
      dataplaneLost: this.lastDropped,
      history: { capacity: h.capacity, size, firstSeq: size > 0 ? h.first : 0n, lastSeq: size > 0 ? h.last : 0n },
      subscriberBuffer: this.subscriberBuffer,
      subscriberLost: this.subscriberLost,
      subscribers: [...this.subscribers.values()].map((s) => s.status()),
    };
  }

  /** Ends every stream with UNAVAILABLE and stops production and the timer. For server shutdown. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const err = new DataplaneError('EUNAVAILABLE', 'the server is shutting down');
    for (const s of [...this.subscribers.values()]) this.finish(s, err);
    this.stopProducing();
  }

  // ---- the pump ----

  private startProducing(): void {
    // Drops counted before now happened while nobody watched.
    this.lastDropped = this.source.drainEvents(0).dropped;
    this.source.enableEvents(true);
    this.producingSince = new Date();
    this.schedule(false);
  }

  private stopProducing(): void {
    clearTimeout(this.timer);
    clearImmediate(this.immediate);
    this.timer = this.immediate = undefined;
    if (!this.producing) return;
    this.producingSince = undefined;
    try {
      this.source.enableEvents(false);
      // What was produced so far still gets numbered and kept for since_seq.
      while (this.drainOnce()) {
        // until the rings are empty
      }
    } catch (err) {
      this.log?.warn({ err }, 'conn events: final drain failed');
    }
  }

  /** The next tick: after the drain period, or (the rings may hold more) once I/O has run. */
  private schedule(soon: boolean): void {
    // Not unref'd: an unref'd immediate lets the loop block in poll until some other timer or
    // I/O wakes it, which left a backlog in the rings waiting for milliseconds at a time.
    if (soon) this.immediate = setImmediate(() => this.tick());
    else this.timer = setTimeout(() => this.tick(), this.intervalMs).unref();
  }

  /** One batch, then every stream writes what it can. */
  private tick(): void {
    this.timer = this.immediate = undefined;
    if (!this.producing) return;
    let full: boolean;
    try {
      full = this.drainOnce();
    } catch (err) {
      this.log?.error({ err }, 'conn events: drain failed; ending every stream');
      for (const s of [...this.subscribers.values()]) this.finish(s, err);
      this.stopProducing();
      return;
    }
    for (const s of this.subscribers.values()) s.flush();
    if (this.producing) this.schedule(full);
  }

  /** One batch: loss check, numbering, history, fan-out. True if it came back full. */
  private drainOnce(): boolean {
    const max = this.batch;
    const { events, dropped } = this.source.drainEvents(max);
    if (dropped > this.lastDropped) {
      const lost = dropped - this.lastDropped;
      this.lastDropped = dropped;
      for (const s of this.subscribers.values()) if (s.follow) s.notifyDataplaneLoss(lost);
    }
    const n = events.count;
    if (n > 0) {
      const first = this.history.last + 1n;
      const { buf, starts, ends } = events.encode(first);
      let seq = first;
      let element = 0;
      for (let i = 0; i < n; i++, seq++) {
        this.publish({ seq, buf, element, start: starts[i], end: ends[i], batch: events, index: i });
        element = ends[i];
      }
    }
    // Adapt the batch: grow while batches come back full, shrink when mostly empty.
    const full = n === max;
    if (full) this.batch = Math.min(max * 4, this.maxBatch);
    else if (n < max / 4) this.batch = Math.max(Math.floor(max / 2), this.minBatch);
    return full;
  }

  private publish(e: Entry): void {
    this.history.push(e);
    for (const s of this.subscribers.values()) if (s.follow) s.offer(e);
  }
}
