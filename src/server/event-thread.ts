/**
 * The EventHub in a worker_thread of its own, behind the hub's interface (ConnEventHub), so that
 * ConnService does not know where it runs.
 *
 * Why: under a burst of new conns the hub drains, numbers, keeps and queues hundreds of thousands
 * of events a second. On the control thread that work, and the garbage it makes, sat in front of
 * every unary call and health probe (docs/bench.md, case 6). In the worker (event-worker.ts) the
 * drain is native and encodes in C (event-encode.ts), the hub and its per-stream queues, loss
 * accounting, history and batching run unchanged, and the control thread only writes the finished
 * messages to the grpc-js streams, which have to live on the thread that owns the server.
 *
 *   control thread (this file)                    hub thread (event-worker.ts)
 *   subscribe ──── sub {key, options} ──────────▶ EventHub.subscribe(proxy sink)
 *   stream.write ◀─ msgs {key, bytes, ends} ───── proxy sink: one packed message per stream per turn
 *                 ─ ack {key, bytes, blocked} ──▶ in-flight bytes down; blocked: wait for drain
 *   'drain'      ── drain {key} ───────────────▶ the sink emits 'drain', the stream writes again
 *   snapshot     ◀─ preamble / next {key} ─────── pulls one page of the initial_state snapshot
 *                 ─ page {key, page | end} ────▶
 *   onDone       ◀─ done {key, error?} ────────── after the stream's last messages
 *
 * No silent loss across the hop: the proxy sink reports backpressure to the hub exactly like a
 * grpc-js stream does (write() false, then 'drain'), once the stream pushed back or once
 * IN_FLIGHT bytes are posted but not yet written here, so the hub's bounded queue and its exact
 * LostEvents accounting stay where they were; the messages between the threads are bounded by
 * that window and nothing else is buffered.
 *
 * Shutdown: close() is synchronous, like the hub's: it shuts the native drain (a gate in shared
 * memory the worker checks around every native call, so the dataplane can be stopped right after
 * without a drain running on its rings), turns production off, ends every stream with UNAVAILABLE
 * here, and lets the worker go.
 */
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { DataplaneError, type Dataplane } from '../dataplane';
import type { Logger } from '../log';
import type { ConnEventHub, EventSink, HubStatus, SubscribeOptions, Subscription } from './event-hub';

/** Posted-but-unwritten bytes per stream after which the hub sees backpressure. */
export const IN_FLIGHT = 1 << 20;

/** Gate words in the shared Int32Array: closed (set by this thread), busy (the worker is in native code). */
export const GATE_CLOSED = 0;
export const GATE_BUSY = 1;

export interface WorkerInit {
  historyCapacity: number;
  subscriberBuffer: number;
  intervalMs?: number;
  portNames: string[];
  gate: SharedArrayBuffer;
}

/** A subscription's options as they cross to the worker. */
export type WireOptions = Pick<SubscribeOptions, 'follow' | 'sinceSeq' | 'filter' | 'maxBatch' | 'peer'> & { preamble: boolean };

/** How an error ending a stream crosses back. */
export type WireError = { kind: 'preamble' } | { kind: 'dataplane'; code: string; message: string } | { kind: 'other'; message: string };

export type ToWorker =
  | { t: 'sub'; key: number; opts: WireOptions }
  | { t: 'close'; key: number }
  | { t: 'ack'; key: number; bytes: number; blocked: boolean }
  | { t: 'drain'; key: number }
  | { t: 'page'; key: number; page?: { buf: Uint8Array; ends: Uint32Array }; failed?: boolean }
  | { t: 'status'; req: number };

export type FromWorker =
  | { t: 'msgs'; key: number; buf: Uint8Array; ends: Uint32Array; lastSeq: bigint }
  | { t: 'done'; key: number; error?: WireError }
  | { t: 'preamble'; key: number; lastSeq: bigint }
  | { t: 'next'; key: number }
  | { t: 'status'; req?: number; status: HubStatus }
  | { t: 'log'; level: 'warn' | 'error'; msg: string; err: string };

interface Stream {
  sink: EventSink;
  opts: SubscribeOptions;
  /** A 'drain' listener is registered. */
  drainWait: boolean;
  pages?: AsyncIterator<Buffer[]>;
  /** The error the snapshot failed with, handed to onDone as is. */
  preambleError?: unknown;
}

export interface ThreadOptions {
  historyCapacity: number;
  subscriberBuffer: number;
  intervalMs?: number;
  log?: Logger;
  /** The worker's script (default: event-worker.js next to this file). */
  script?: string;
}

const fromWire = (e: WireError | undefined, s: Stream): unknown => {
  if (e === undefined) return undefined;
  if (e.kind === 'preamble') return s.preambleError;
  if (e.kind === 'dataplane') return new DataplaneError(e.code, e.message);
  return new Error(e.message);
};

/** Messages into one buffer and their end offsets (one copy, one transfer, no pooled slabs). */
export function pack(msgs: readonly Buffer[]): { buf: Uint8Array; ends: Uint32Array } {
  let n = 0;
  for (const m of msgs) n += m.length;
  const buf = new Uint8Array(n);
  const ends = new Uint32Array(msgs.length);
  let at = 0;
  msgs.forEach((m, i) => {
    buf.set(m, at);
    at += m.length;
    ends[i] = at;
  });
  return { buf, ends };
}

/** Messages back out of pack(), as views. */
export function unpack(buf: Uint8Array, ends: Uint32Array): Buffer[] {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: Buffer[] = [];
  let at = 0;
  for (const end of ends) {
    out.push(b.subarray(at, end));
    at = end;
  }
  return out;
}

export class EventHubThread implements ConnEventHub {
  /** Started by the first subscribe (see start()). */
  private worker: Worker | undefined;
  private readonly gate: Int32Array;
  private readonly init: WorkerInit;
  private readonly streams = new Map<number, Stream>();
  private nextKey = 1;
  private nextReq = 1;
  private readonly pending = new Map<number, (s: HubStatus) => void>();
  private last: HubStatus;
  private seq = 0n;
  private closed = false;
  /** Why the hub thread is gone (it is a bug), if it is. */
  private failed: unknown;

  constructor(
    private readonly dp: Pick<Dataplane, 'state' | 'enableEvents' | 'config'>,
    private readonly opts: ThreadOptions,
  ) {
    const gate = new SharedArrayBuffer(8);
    this.gate = new Int32Array(gate);
    this.init = {
      historyCapacity: opts.historyCapacity,
      subscriberBuffer: opts.subscriberBuffer,
      intervalMs: opts.intervalMs,
      portNames: dp.config.ports.map((p) => p.name),
      gate,
    };
    this.last = {
      producing: false,
      seen: 0n,
      dataplaneLost: 0n,
      history: { capacity: opts.historyCapacity, size: 0, firstSeq: 0n, lastSeq: 0n },
      subscriberBuffer: opts.subscriberBuffer,
      subscriberLost: 0n,
      subscribers: [],
    };
  }

  /**
   * The hub thread, started with the first stream rather than with the server: a new thread gets
   * the CPU set of the thread that creates it, and only once the dataplane has started has EAL
   * confined the control thread to the main lcore's CPUs (eal.lcores), away from the workers'.
   */
  private start(): Worker {
    if (this.worker !== undefined) return this.worker;
    const w = new Worker(this.opts.script ?? path.join(__dirname, 'event-worker.js'), { workerData: this.init });
    // The hub thread must never keep the process alive by itself.
    w.unref();
    w.on('message', (m: FromWorker) => this.onMessage(m));
    w.on('error', (err) => this.fail(err));
    this.worker = w;
    return w;
  }

  get lastSeq(): bigint {
    return this.seq;
  }

  subscribe(sink: EventSink, opts: SubscribeOptions): Subscription {
    if (this.closed) throw new DataplaneError('EUNAVAILABLE', 'the server is shutting down');
    // What the hub's first enableEvents() would throw, thrown here before anything is written.
    if (opts.follow && this.dp.state !== 'running') throw new DataplaneError('EUNAVAILABLE', `dataplane is ${this.dp.state}`);
    if (this.failed !== undefined) throw new DataplaneError('EUNAVAILABLE', `conn events are unavailable: ${String(this.failed)}`);
    if (opts.match !== undefined) throw new TypeError('the hub thread takes a filter, not a predicate');
    const key = this.nextKey++;
    this.streams.set(key, { sink, opts, drainWait: false });
    const { follow, sinceSeq, filter, maxBatch, peer } = opts;
    this.post({ t: 'sub', key, opts: { follow, sinceSeq, filter, maxBatch, peer, preamble: opts.preamble !== undefined } });
    return {
      id: BigInt(key),
      close: () => {
        if (this.forget(key)) this.post({ t: 'close', key });
      },
    };
  }

  status(): HubStatus {
    return this.last;
  }

  currentStatus(): Promise<HubStatus> {
    if (this.closed || this.failed !== undefined || this.worker === undefined) return Promise.resolve(this.last);
    const req = this.nextReq++;
    return new Promise((resolve) => {
      this.pending.set(req, resolve);
      this.post({ t: 'status', req });
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Shut the native drain and wait out one in progress: the dataplane may stop right after.
    Atomics.store(this.gate, GATE_CLOSED, 1);
    while (Atomics.load(this.gate, GATE_BUSY) === 1) Atomics.wait(this.gate, GATE_BUSY, 1, 50);
    if (this.last.producing && this.dp.state === 'running') {
      try {
        this.dp.enableEvents(false);
      } catch (err) {
        this.opts.log?.warn({ err }, 'conn events: turning production off failed');
      }
    }
    this.last = { ...this.last, producing: false, producingSince: undefined, subscribers: [] };
    const err = new DataplaneError('EUNAVAILABLE', 'the server is shutting down');
    for (const [key, s] of [...this.streams]) {
      this.forget(key);
      s.opts.onDone(err);
    }
    for (const resolve of this.pending.values()) resolve(this.last);
    this.pending.clear();
    void this.worker?.terminate();
  }

  private post(m: ToWorker): void {
    if (!this.closed) this.start().postMessage(m);
  }

  private forget(key: number): boolean {
    const s = this.streams.get(key);
    if (s === undefined) return false;
    this.streams.delete(key);
    void s.pages?.return?.();
    return true;
  }

  private onMessage(m: FromWorker): void {
    if (this.closed) return;
    switch (m.t) {
      case 'msgs':
        return this.write(m.key, m.buf, m.ends, m.lastSeq);
      case 'done': {
        const s = this.streams.get(m.key);
        if (s === undefined) return;
        this.forget(m.key);
        s.opts.onDone(fromWire(m.error, s));
        return;
      }
      case 'preamble': {
        const s = this.streams.get(m.key);
        if (s?.opts.preamble !== undefined) s.pages = s.opts.preamble(m.lastSeq)[Symbol.asyncIterator]();
        return;
      }
      case 'next':
        return this.nextPage(m.key);
      case 'status': {
        this.last = m.status;
        if (m.status.seen > this.seq) this.seq = m.status.seen;
        if (m.req !== undefined) {
          this.pending.get(m.req)?.(m.status);
          this.pending.delete(m.req);
        }
        return;
      }
      case 'log':
        this.opts.log?.[m.level]({ err: m.err }, m.msg);
        return;
    }
  }

  /** One packed message list from the hub: every message to the stream, then how it went. */
  private write(key: number, buf: Uint8Array, ends: Uint32Array, lastSeq: bigint): void {
    // Before anything goes out: a client that saw seq N may ask since_seq N at once.
    if (lastSeq > this.seq) this.seq = lastSeq;
    const s = this.streams.get(key);
    if (s === undefined) return;
    const bytes = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    let ok = true;
    let at = 0;
    for (let i = 0; i < ends.length; i++) {
      ok = s.sink.write(bytes.subarray(at, ends[i]));
      at = ends[i];
    }
    this.post({ t: 'ack', key, bytes: buf.byteLength, blocked: !ok });
    if (!ok && !s.drainWait) {
      s.drainWait = true;
      s.sink.once('drain', () => {
        s.drainWait = false;
        if (this.streams.get(key) === s) this.post({ t: 'drain', key });
      });
    }
  }

  private nextPage(key: number): void {
    const s = this.streams.get(key);
    if (s?.pages === undefined) return;
    s.pages.next().then(
      (r) => {
        if (this.streams.get(key) !== s) return;
        if (r.done === true) this.post({ t: 'page', key });
        else this.post({ t: 'page', key, page: pack(r.value) });
      },
      (err: unknown) => {
        if (this.streams.get(key) !== s) return;
        s.preambleError = err;
        this.post({ t: 'page', key, failed: true });
      },
    );
  }

  /** The worker died: every stream ends with the error (it is a bug; the log says which). */
  private fail(err: unknown): void {
    if (this.closed || this.failed !== undefined) return;
    this.failed = err;
    this.opts.log?.error({ err }, 'conn events: the hub thread failed; ending every stream');
    for (const [key, s] of [...this.streams]) {
      this.forget(key);
      s.opts.onDone(err);
    }
    for (const resolve of this.pending.values()) resolve(this.last);
    this.pending.clear();
  }
}
