/**
 * The hub thread (event-thread.ts has the picture): the EventHub draining the dataplane's event
 * rings through the addon from here, its streams behind proxy sinks that pack each turn's
 * messages into one buffer for the control thread to write.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ConnRecords, DataplaneError } from '../dataplane';
import { loadNative } from '../dataplane/binding';
import type { Logger } from '../log';
import { dataplaneEventSource } from './event-encode';
import { EventHub, type EventSink, type SubscribeOptions, type Subscription } from './event-hub';
import { GATE_BUSY, GATE_CLOSED, IN_FLIGHT, unpack, type FromWorker, type ToWorker, type WireError, type WorkerInit } from './event-thread';

const init = workerData as WorkerInit;
const port = parentPort!;
const gate = new Int32Array(init.gate);
const post = (m: FromWorker, transfer?: ArrayBuffer[]): void => port.postMessage(m, transfer);

/**
 * Runs a native call unless the control thread has shut the gate (it is about to stop the
 * dataplane): busy is raised before closed is read, and the control thread raises closed before
 * it reads busy, so one of the two always sees the other.
 */
function gated<T>(f: () => T, closed: () => T): T {
  Atomics.store(gate, GATE_BUSY, 1);
  try {
    return Atomics.load(gate, GATE_CLOSED) === 1 ? closed() : f();
  } finally {
    Atomics.store(gate, GATE_BUSY, 0);
    Atomics.notify(gate, GATE_BUSY);
  }
}

const native = loadNative();
const layout = native.connInfoLayout();
const empty = new ConnRecords(Buffer.alloc(0), 0, layout, init.portNames);
let dropped = 0n;
const source = dataplaneEventSource({
  enableEvents: (on) =>
    gated(
      () => native.eventsEnable(on),
      () => undefined,
    ),
  drainEvents: (max) =>
    gated(
      () => {
        // As Dataplane.drainEvents: a dataplane that is no longer running ends the streams
        // (UNAVAILABLE) rather than leaving them open on rings nobody fills.
        const state = native.state();
        if (state !== 'running') throw new DataplaneError('EUNAVAILABLE', `dataplane is ${state}`);
        const r = native.eventsDrain(max);
        dropped = r.dropped;
        return { records: new ConnRecords(r.buffer, r.count, layout, init.portNames), dropped };
      },
      () => ({ records: empty, dropped }),
    ),
});

/** The hub's few log lines go to the control thread's logger. */
const logAt =
  (level: 'warn' | 'error') =>
  (o: { err?: unknown }, msg: string): void =>
    post({ t: 'log', level, msg, err: o.err instanceof Error ? o.err.message : String(o.err) });
const log = { warn: logAt('warn'), error: logAt('error') } as unknown as Logger;

const hub = new EventHub(source, {
  historyCapacity: init.historyCapacity,
  subscriberBuffer: init.subscriberBuffer,
  intervalMs: init.intervalMs,
  log,
});

/**
 * A stream as the hub sees it: write() collects into one message list per turn (posted once the
 * turn's synchronous work is done) and returns false, as a grpc-js stream would, while the control
 * thread reports the real stream blocked or IN_FLIGHT bytes are not yet written there.
 */
class ProxySink implements EventSink {
  private parts: Buffer[] = [];
  private bytes = 0;
  private inFlight = 0;
  private blocked = false;
  private scheduled = false;
  private onDrain: (() => void)[] = [];

  constructor(readonly key: number) {}

  write(chunk: Buffer): boolean {
    this.parts.push(chunk);
    this.bytes += chunk.length;
    this.inFlight += chunk.length;
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => this.flush());
    }
    return this.open();
  }

  once(_event: 'drain', listener: () => void): unknown {
    this.onDrain.push(listener);
    return this;
  }

  /** Posts what was written (the stream's messages, packed, the buffer transferred). */
  flush(): void {
    this.scheduled = false;
    if (this.parts.length === 0) return;
    const buf = new Uint8Array(this.bytes);
    const ends = new Uint32Array(this.parts.length);
    let at = 0;
    for (let i = 0; i < this.parts.length; i++) {
      buf.set(this.parts[i], at);
      at += this.parts[i].length;
      ends[i] = at;
    }
    this.parts = [];
    this.bytes = 0;
    post({ t: 'msgs', key: this.key, buf, ends, lastSeq: hub.lastSeq }, [buf.buffer, ends.buffer]);
  }

  ack(bytes: number, blocked: boolean): void {
    this.inFlight -= bytes;
    if (blocked) this.blocked = true;
    this.wake();
  }

  drained(): void {
    this.blocked = false;
    this.wake();
  }

  private open(): boolean {
    return !this.blocked && this.inFlight < IN_FLIGHT;
  }

  private wake(): void {
    if (!this.open() || this.onDrain.length === 0) return;
    const listeners = this.onDrain;
    this.onDrain = [];
    for (const l of listeners) l();
  }
}

interface Stream {
  sink: ProxySink;
  sub?: Subscription;
  /** A snapshot page the preamble waits for. */
  page?: { resolve: (page: Buffer[] | undefined) => void; reject: (err: unknown) => void };
}

const streams = new Map<number, Stream>();

/** Marks a failed snapshot: the control thread hands the original error to the stream. */
class PreambleFailed extends Error {}

function toWire(err: unknown): WireError | undefined {
  if (err === undefined) return undefined;
  if (err instanceof PreambleFailed) return { kind: 'preamble' };
  if (err instanceof DataplaneError) return { kind: 'dataplane', code: err.code, message: err.message };
  return { kind: 'other', message: err instanceof Error ? err.message : String(err) };
}

/** The snapshot, pulled from the control thread one page at a time. */
function pages(key: number, lastSeq: bigint): AsyncIterable<Buffer[]> {
  post({ t: 'preamble', key, lastSeq });
  return {
    [Symbol.asyncIterator]: () => ({
      next: () =>
        new Promise<IteratorResult<Buffer[]>>((resolve, reject) => {
          const s = streams.get(key);
          if (s === undefined) return resolve({ done: true, value: undefined });
          s.page = { resolve: (page) => resolve(page === undefined ? { done: true, value: undefined } : { done: false, value: page }), reject };
          post({ t: 'next', key });
        }),
    }),
  };
}

function subscribe(key: number, opts: ToWorker & { t: 'sub' }): void {
  const sink = new ProxySink(key);
  const s: Stream = { sink };
  streams.set(key, s);
  const o: SubscribeOptions = {
    follow: opts.opts.follow,
    sinceSeq: opts.opts.sinceSeq,
    filter: opts.opts.filter,
    maxBatch: opts.opts.maxBatch,
    peer: opts.opts.peer,
    preamble: opts.opts.preamble ? (lastSeq) => pages(key, lastSeq) : undefined,
    onDone: (err) => {
      // Its last messages first, then how it ended.
      sink.flush();
      streams.delete(key);
      s.page?.resolve(undefined);
      post({ t: 'done', key, error: toWire(err) });
    },
  };
  try {
    s.sub = hub.subscribe(sink, o);
  } catch (err) {
    streams.delete(key);
    post({ t: 'done', key, error: toWire(err) ?? { kind: 'other', message: 'subscribe failed' } });
  }
  postStatus();
}

/** The hub's status for the control thread's metrics, at most every STATUS_MS while it changes. */
const STATUS_MS = 50;
let statusTimer: NodeJS.Timeout | undefined;
let lastPosted = '';
function postStatus(req?: number): void {
  const status = hub.status();
  post({ t: 'status', req, status });
  lastPosted = `${status.seen}/${status.dataplaneLost}/${status.subscriberLost}/${status.subscribers.length}`;
}
function watchStatus(): void {
  statusTimer = setInterval(() => {
    const s = hub.status();
    const sig = `${s.seen}/${s.dataplaneLost}/${s.subscriberLost}/${s.subscribers.length}`;
    if (sig !== lastPosted) postStatus();
  }, STATUS_MS);
  statusTimer.unref();
}
watchStatus();

port.on('message', (m: ToWorker) => {
  switch (m.t) {
    case 'sub':
      return subscribe(m.key, m);
    case 'close': {
      const s = streams.get(m.key);
      streams.delete(m.key);
      s?.page?.resolve(undefined);
      s?.sub?.close();
      return postStatus();
    }
    case 'ack':
      return streams.get(m.key)?.sink.ack(m.bytes, m.blocked);
    case 'drain':
      return streams.get(m.key)?.sink.drained();
    case 'page': {
      const s = streams.get(m.key);
      const wait = s?.page;
      if (s === undefined || wait === undefined) return;
      s.page = undefined;
      if (m.failed === true) wait.reject(new PreambleFailed('snapshot failed'));
      else wait.resolve(m.page === undefined ? undefined : unpack(m.page.buf, m.page.ends));
      return;
    }
    case 'status':
      return postStatus(m.req);
  }
});
