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
 *   A drained batch is numbered as a whole (a Run, event-batch.ts): the history and the streams'
 *   queues hold spans of runs, so nothing here makes an object per event.
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
 * Nothing here blocks or waits on a dataplane worker. In the server the hub runs in a
 * worker_thread of its own (event-thread.ts, event-worker.ts), so that its turns and its garbage
 * never delay the control thread's unary calls; the class itself is thread-agnostic and the unit
 * tests drive it in-process.
 *
 * Here: the hub (drain, numbering, history, fan-out). One stream's side is event-subscriber.ts;
 * numbered entries and batch encoding are event-batch.ts.
 */
import type { ConnView, ConnEventType } from '../dataplane';
import { DataplaneError } from '../dataplane';
import type { Logger } from '../log';
import type { Run, Span } from './event-batch';
import { Subscriber } from './event-subscriber';
import { isEmptyQuery, matchConn, type ConnQuery } from './validate';

export { encodeBatch } from './event-batch';

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

/**
 * A stream's filter as data (it crosses to the hub's thread): event types (empty: all) and a
 * conn query, as the request named them.
 */
export interface EventFilter {
  types: ReadonlySet<ConnEventType>;
  query: ConnQuery;
}

/** The filter as a predicate; undefined when it lets every event through. */
export function eventMatcher(f: EventFilter | undefined): ((e: EventKey) => boolean) | undefined {
  if (f === undefined || (f.types.size === 0 && isEmptyQuery(f.query))) return undefined;
  return (e) => (f.types.size === 0 || f.types.has(e.type)) && matchConn(f.query, e);
}

export interface SubscribeOptions {
  /** Keep streaming live events; a stream without follow finishes after its replay/preamble. */
  follow: boolean;
  /** Replay kept events with a greater seq first. */
  sinceSeq?: bigint;
  /** Which events this stream wants (loss notices always pass); undefined: all of them. */
  match?: (e: EventKey) => boolean;
  /** The same as data (used when `match` is not given); what the server passes. */
  filter?: EventFilter;
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

/**
 * Drain batch bounds: small while idle (the addon allocates a buffer per call), larger under load,
 * never more than one stream's queue holds, so that a stream keeping up never loses events to the
 * batching itself. A full batch is followed by the next one after the event loop has turned (I/O,
 * 'drain' callbacks), not at once.
 */
const MIN_BATCH = 64;
const MAX_BATCH = 8192;

/** The last `capacity` events, addressed by seq, kept as the runs (drained batches) they came in. */
export class History {
  /** Runs that still hold a kept event, oldest first from `head`. */
  private runs: (Run | undefined)[] = [];
  private head = 0;
  private readonly cap: bigint;
  /** Seq of the newest event ever pushed (0 = none). */
  last = 0n;

  constructor(readonly capacity: number) {
    this.cap = BigInt(capacity);
  }

  /** Seq of the oldest event kept (last + 1 when nothing is kept). */
  get first(): bigint {
    const f = this.last - this.cap + 1n;
    return f > 1n ? f : 1n;
  }

  get size(): number {
    return Number(this.last - this.first + 1n);
  }

  /** The run numbered from last + 1. */
  push(r: Run): void {
    this.last = r.firstSeq + BigInt(r.count) - 1n;
    if (this.capacity === 0) return;
    this.runs.push(r);
    const first = this.first;
    for (let o = this.runs[this.head]; o !== undefined && o.firstSeq + BigInt(o.count) <= first; o = this.runs[this.head]) this.runs[this.head++] = undefined;
    if (this.head >= 64 && this.head * 2 >= this.runs.length) {
      this.runs = this.runs.slice(this.head);
      this.head = 0;
    }
  }

  /** Event seq as a span of one, if still kept. */
  get(seq: bigint): Span | undefined {
    if (this.capacity === 0 || seq < this.first || seq > this.last) return undefined;
    // The last run starting at or before seq.
    let lo = this.head;
    let hi = this.runs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.runs[mid]!.firstSeq <= seq) lo = mid;
      else hi = mid - 1;
    }
    const run = this.runs[lo]!;
    const i = Number(seq - run.firstSeq);
    return { run, from: i, to: i + 1 };
  }
}

/** A handle on one stream: close() when the call ends (cancelled, error, close). Idempotent. */
export interface Subscription {
  readonly id: bigint;
  close(): void;
}

/** What ConnService and the metrics use: the hub in-process, or its thread (event-thread.ts). */
export interface ConnEventHub {
  /** Seq of the last event numbered, as far as this thread knows (never less than any seq sent). */
  readonly lastSeq: bigint;
  subscribe(sink: EventSink, opts: SubscribeOptions): Subscription;
  /** The stages' state as last known (for metrics: cheap, possibly a few ms old). */
  status(): HubStatus;
  /** The stages' state now (GetEventStatus). */
  currentStatus(): Promise<HubStatus>;
  close(): void;
}

export class EventHub implements ConnEventHub {
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
    const sub = new Subscriber(this.nextId++, this, sink, opts.match === undefined ? { ...opts, match: eventMatcher(opts.filter) } : opts);
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

  countSubscriberLoss(n: number): void {
    this.subscriberLost += BigInt(n);
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

  currentStatus(): Promise<HubStatus> {
    return Promise.resolve(this.status());
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
      // Numbered as a whole: one object for the batch, whatever its size.
      const firstSeq = this.history.last + 1n;
      const { buf, starts, ends } = events.encode(firstSeq);
      const run: Run = { firstSeq, count: n, buf, starts, ends, batch: events };
      this.history.push(run);
      for (const s of this.subscribers.values()) if (s.follow) s.offer(run);
    }
    // Adapt the batch: grow while batches come back full, shrink when mostly empty.
    const full = n === max;
    if (full) this.batch = Math.min(max * 4, this.maxBatch);
    else if (n < max / 4) this.batch = Math.max(Math.floor(max / 2), this.minBatch);
    return full;
  }
}
