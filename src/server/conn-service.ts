/**
 * retrace.v1.ConnService: ListConns and DeleteConns over the dataplane's per-worker tables,
 * WatchConnEvents and GetEventStatus over the EventHub.
 */
import type { ServerWritableStream } from '@grpc/grpc-js';
import { DataplaneError, type ConnView, type Dataplane } from '../dataplane';
import {
  ConnServiceService,
  type ConnServiceServer,
  type GetEventStatusResponse,
  type WatchConnEventBatchesRequest,
  type WatchConnEventsRequest,
} from '../gen/retrace/v1/conn';
import type { Logger } from '../log';
import { encodeSnapshot, encodeSnapshotEnd, nsToDuration, toConn } from './conn-messages';
import { OutOfRangeError, ValidationError, toStatus } from './errors';
import type { ConnEventHub, HubStatus } from './event-hub';
import { unary } from './unary';
import * as v from './validate';

/**
 * ConnServiceService with a pass-through serializer for WatchConnEvents: the hub hands grpc-js
 * messages it already encoded (each event once, for every stream and the history).
 */
export const ConnServiceDefinition = {
  ...ConnServiceService,
  watchConnEvents: { ...ConnServiceService.watchConnEvents, responseSerialize: (b: Buffer): Buffer => b },
  watchConnEventBatches: { ...ConnServiceService.watchConnEventBatches, responseSerialize: (b: Buffer): Buffer => b },
} as const;

type ConnServiceImpl = Omit<ConnServiceServer, 'watchConnEvents' | 'watchConnEventBatches'> & {
  watchConnEvents: (call: ServerWritableStream<WatchConnEventsRequest, Buffer>) => void;
  watchConnEventBatches: (call: ServerWritableStream<WatchConnEventBatchesRequest, Buffer>) => void;
};

/** Conns read per dump call when a filter may skip many (the worker walks 4096 entries per poll round). */
const FILTERED_CHUNK = 4096;
/** Conns examined per ListConns call at most: a sparse filter returns a short page instead of stalling. */
const SCAN_BUDGET = 262144;
/** Conns per dump call for an initial_state snapshot. */
const SNAPSHOT_CHUNK = 1024;

/**
 * One page of ListConns: walks worker tables from `start`, keeps matching conns, stops at
 * pageSize conns, at the end of the last table, or after SCAN_BUDGET conns examined.
 */
export async function listConnsPage(
  dp: Pick<Dataplane, 'workers' | 'dumpConns'>,
  query: v.ConnQuery,
  pageSize: number,
  start: v.PagePosition,
): Promise<{ conns: ConnView[]; next: v.PagePosition | undefined }> {
  const workers = dp.workers;
  if (start.worker >= workers) throw new ValidationError('page_token', `names worker ${start.worker}, but there are ${workers}`);
  const filtered = !v.isEmptyQuery(query);
  const out: ConnView[] = [];
  let { worker, cursor } = start;
  let scanned = 0;
  while (worker < workers && out.length < pageSize && scanned < SCAN_BUDGET) {
    const need = pageSize - out.length;
    let page = await dp.dumpConns(worker, cursor, filtered ? Math.max(need, FILTERED_CHUNK) : need);
    let matches = filtered ? page.conns.filter((c) => v.matchConn(query, c)) : page.conns;
    if (matches.length > need) {
      // The page must end right after the need-th match, where a cursor exists: walk that far again.
      page = await dp.dumpConns(worker, cursor, page.conns.indexOf(matches[need - 1]) + 1);
      matches = page.conns.filter((c) => v.matchConn(query, c)).slice(0, need);
    }
    scanned += page.conns.length;
    out.push(...matches);
    if (page.done) {
      worker++;
      cursor = 0;
    } else {
      cursor = page.cursor;
    }
  }
  return { conns: out, next: worker < workers ? { worker, cursor } : undefined };
}

/** initial_state: every matching conn, table by table, page by page, then snapshot_end. */
async function* snapshot(dp: Dataplane, query: v.ConnQuery, lastSeq: bigint): AsyncGenerator<Buffer[]> {
  let sent = 0n;
  for (let w = 0; w < dp.workers; w++) {
    let cursor = 0;
    for (;;) {
      const page = await dp.dumpConns(w, cursor, SNAPSHOT_CHUNK);
      const msgs = page.conns.filter((c) => v.matchConn(query, c)).map(encodeSnapshot);
      sent += BigInt(msgs.length);
      if (msgs.length > 0) yield msgs;
      if (page.done) break;
      cursor = page.cursor;
    }
  }
  yield [encodeSnapshotEnd(sent, lastSeq)];
}

export function toEventStatus(s: HubStatus, workers: number, ringCapacity: number, now = Date.now()): GetEventStatusResponse {
  const up = s.producingSince === undefined ? 0n : BigInt(Math.max(0, now - s.producingSince.getTime())) * 1_000_000n;
  return {
    producing: s.producing,
    uptime: nsToDuration(up),
    seen: s.seen,
    dataplane: { workers, ringCapacity, lost: s.dataplaneLost },
    history: s.history,
    subscribers: { bufferCapacity: s.subscriberBuffer, lost: s.subscriberLost, streams: s.subscribers },
  };
}

export function connService(dp: Dataplane, hub: ConnEventHub, log: Logger): ConnServiceImpl {
  return {
    listConns: unary(log, 'ListConns', async (req) => {
      const q = v.listConns(req);
      const page = await listConnsPage(dp, q.query, q.pageSize, q.start);
      return { conns: page.conns.map(toConn), nextPageToken: page.next === undefined ? '' : v.encodePageToken(page.next, q.query) };
    }),

    getConn: unary(log, 'GetConn', async (req) => {
      const key = v.getConn(req);
      const c = await dp.getConn(key);
      if (c === undefined) {
        const vipPart = key.protocol === 'icmp' ? key.vip : `${key.vip}:${key.vipPort}`;
        const id = key.protocol === 'icmp' ? ` echo id ${key.clientPort}` : `:${key.clientPort}`;
        throw new DataplaneError('ENOENT', `no ${key.protocol} conn ${key.client}${id} -> ${vipPart}`);
      }
      return { conn: toConn(c) };
    }),

    deleteConns: unary(log, 'DeleteConns', async (req) => ({ deleted: await dp.deleteConns(v.deleteConns(req)) })),

    watchConnEvents: (call) => watch(dp, hub, log, 'WatchConnEvents', call, () => v.watchConnEvents(call.request)),

    watchConnEventBatches: (call) => watch(dp, hub, log, 'WatchConnEventBatches', call, () => v.watchConnEventBatches(call.request)),

    getEventStatus: unary(log, 'GetEventStatus', async () =>
      toEventStatus(await hub.currentStatus(), dp.config.dataplane.workers, dp.config.dataplane.event_ring),
    ),
  };
}

/**
 * A WatchConnEvents or WatchConnEventBatches call on the hub; `spec` validates the request (its
 * INVALID_ARGUMENT ends the call before anything is written).
 */
function watch(dp: Dataplane, hub: ConnEventHub, log: Logger, method: string, call: ServerWritableStream<unknown, Buffer>, spec: () => v.WatchSpec): void {
  let closeSub: (() => void) | undefined;
  let ended = false;
  // Ends the call once: OK, or the mapped status (never UNKNOWN, never a raw throw).
  const end = (err?: unknown): void => {
    if (ended) return;
    ended = true;
    closeSub?.();
    if (err === undefined) call.end();
    else call.emit('error', toStatus(err, log, method));
  };
  const gone = (): void => {
    ended = true;
    closeSub?.();
  };
  call.on('cancelled', gone);
  call.on('close', gone);
  call.on('error', gone);
  try {
    const w = spec();
    if (w.sinceSeq !== undefined && w.sinceSeq > hub.lastSeq) {
      throw new OutOfRangeError('since_seq', `${w.sinceSeq} is beyond the last event (${hub.lastSeq}); the appliance may have restarted`);
    }
    const sub = hub.subscribe(call, {
      follow: w.follow,
      sinceSeq: w.sinceSeq,
      // Data, not a predicate: the hub runs in its own thread (eventMatcher builds the predicate).
      filter: { types: w.types, query: w.query },
      preamble: w.initialState ? (lastSeq) => snapshot(dp, w.query, lastSeq) : undefined,
      maxBatch: w.maxBatch,
      peer: call.getPeer(),
      onDone: end,
    });
    if (ended) sub.close();
    else closeSub = () => sub.close();
  } catch (err) {
    end(err);
  }
}
