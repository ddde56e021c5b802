/**
 * The hub in its worker_thread (event-thread.ts, event-worker.ts), through the hop between the
 * threads, with a dataplane that is not running (the worker loads the real addon; nothing is
 * drained): snapshot pages pulled across and written in order, backpressure across the hop, a
 * failing snapshot's own error reaching the stream, the status round trip, and close().
 * Live events across the hop are covered by test/e2e/conn-events.test.ts.
 *
 * The worker runs from dist/ (as the appliance does in the e2e tests): `npm run build:ts` first.
 */
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { DataplaneError } from '../../src/dataplane';
import { REPO_ROOT } from '../../src/lab/appliance';
import type { SubscribeOptions } from '../../src/server/event-hub';
import { EventHubThread, pack, unpack } from '../../src/server/event-thread';
import { WatchConnEventBatchesResponse, WatchConnEventsResponse } from '../../src/gen/retrace/v1/conn';

const SCRIPT = path.join(REPO_ROOT, 'dist', 'server', 'event-worker.js');

/** A stream that pushes back on every `every`-th write and drains a few ms later. */
class Sink extends EventEmitter {
  got: Buffer[] = [];
  writes = 0;
  constructor(private readonly every = 0) {
    super();
  }
  write(chunk: Buffer): boolean {
    this.got.push(Buffer.from(chunk));
    this.writes++;
    if (this.every > 0 && this.writes % this.every === 0) {
      setTimeout(() => this.emit('drain'), 2);
      return false;
    }
    return true;
  }
}

const stopped = { state: 'stopped' as const, enableEvents: (): void => undefined, config: { ports: [{ name: 'client' }, { name: 'servers' }] } };

let thread: EventHubThread;
beforeEach(() => {
  thread = new EventHubThread(stopped as never, { historyCapacity: 16, subscriberBuffer: 16, script: SCRIPT });
});
afterEach(() => thread.close());

function subscribe(sink: Sink, pages: (lastSeq: bigint) => AsyncIterable<Buffer[]>, o: Partial<SubscribeOptions> = {}): Promise<unknown> {
  return new Promise((resolve) => {
    thread.subscribe(sink, { follow: false, preamble: pages, onDone: resolve, ...o });
  });
}

const msg = (i: number): Buffer => Buffer.from(`message ${i}`);

describe('EventHubThread', () => {
  it('packs and unpacks messages, empty ones included', () => {
    const msgs = [msg(1), Buffer.alloc(0), msg(22)];
    const { buf, ends } = pack(msgs);
    expect(unpack(buf, ends)).toEqual(msgs);
    expect(unpack(pack([]).buf, pack([]).ends)).toEqual([]);
  });

  it('writes a snapshot pulled from this thread page by page, in order, then ends the stream', async () => {
    const sink = new Sink();
    const done = await subscribe(sink, async function* () {
      for (let p = 0; p < 5; p++) yield Array.from({ length: 100 }, (_, i) => msg(p * 100 + i));
    });
    expect(done).toBeUndefined();
    expect(sink.got.map(String)).toEqual(Array.from({ length: 500 }, (_, i) => `message ${i}`));
  });

  it('hands the snapshot its lastSeq and batches it when asked', async () => {
    const sink = new Sink();
    let seen: bigint | undefined;
    await subscribe(
      sink,
      (lastSeq) => {
        seen = lastSeq;
        return (async function* () {
          yield Array.from({ length: 10 }, (_, i) =>
            Buffer.from(WatchConnEventsResponse.encode(WatchConnEventsResponse.fromPartial({ seq: BigInt(i + 1) })).finish()),
          );
        })();
      },
      { maxBatch: 4 },
    );
    expect(seen).toBe(0n);
    const batches = sink.got.map((b) => WatchConnEventBatchesResponse.decode(b).messages.map((m) => Number(m.seq)));
    expect(batches).toEqual([
      [1, 2, 3, 4],
      [5, 6, 7, 8],
      [9, 10],
    ]);
  });

  it('loses nothing when the stream pushes back on every other write', async () => {
    const sink = new Sink(2);
    await subscribe(sink, async function* () {
      for (let p = 0; p < 20; p++) yield Array.from({ length: 50 }, (_, i) => msg(p * 50 + i));
    });
    expect(sink.got.map(String)).toEqual(Array.from({ length: 1000 }, (_, i) => `message ${i}`));
  });

  it("ends the stream with the snapshot's own error", async () => {
    const boom = new DataplaneError('ETIMEDOUT', 'worker did not answer the conn dump in time');
    const sink = new Sink();
    const done = await subscribe(sink, async function* () {
      yield [msg(1)];
      throw boom;
    });
    expect(done).toBe(boom);
    expect(sink.got.map(String)).toEqual(['message 1']);
  });

  it('refuses to follow a dataplane that is not running, before anything is written', () => {
    expect(() => thread.subscribe(new Sink(), { follow: true, onDone: () => undefined })).toThrow(new DataplaneError('EUNAVAILABLE', 'dataplane is stopped'));
  });

  it('reports open streams in the status, and ends them with UNAVAILABLE on close()', async () => {
    const sink = new Sink();
    const done = subscribe(sink, async function* () {
      yield [msg(1)];
      await new Promise(() => undefined); // a snapshot that never ends
    });
    let st = await thread.currentStatus();
    for (let i = 0; i < 100 && st.subscribers.length === 0; i++) st = await thread.currentStatus();
    expect(st.subscribers).toHaveLength(1);
    expect(st.producing).toBe(false);
    thread.close();
    const err = await done;
    expect(err).toBeInstanceOf(DataplaneError);
    expect(err).toMatchObject({ code: 'EUNAVAILABLE', message: 'the server is shutting down' });
    expect(() => thread.subscribe(new Sink(), { follow: false, onDone: () => undefined })).toThrow('the server is shutting down');
    expect((await thread.currentStatus()).subscribers).toEqual([]);
  });
});
