/**
 * Numbered events as the hub keeps them, and WatchConnEventBatchesResponse encoding.
 *
 * A drained batch is numbered as a whole (a Run): the hub, the history and the streams' queues
 * hold Spans of runs, never one object per event, so that a burst of hundreds of thousands of
 * events a second makes a few objects per batch rather than per event (the garbage was a fifth of
 * the hub thread). A batch message is built from spans' already encoded bytes, copying runs of
 * adjacent events at once; one span is a view, not a copy.
 */
import type { DrainedEvents, EventKey } from './event-hub';
import { BATCH_ELEMENT_TAG, putVarint32, varintLength } from './proto-wire';

/**
 * A drained batch, numbered firstSeq .. firstSeq + count - 1: event i is buf[starts[i]..ends[i]),
 * as a batch element buf[elementStart(i)..ends[i]) (DrainedEvents.encode lays them out so).
 */
export interface Run {
  firstSeq: bigint;
  count: number;
  buf: Buffer;
  starts: Uint32Array;
  ends: Uint32Array;
  batch: DrainedEvents;
  /** The filter fields of event i, once a stream with a filter has asked. */
  keys?: (EventKey | undefined)[];
}

/** Events [from, to) of a run. A queue may advance `from` of its own spans as it writes them. */
export interface Span {
  run: Run;
  from: number;
  to: number;
}

/** A message to write: bytes of its own (a notice, a snapshot message), or events of a run. */
export type Message = Buffer | Span;

export const elementStart = (r: Run, i: number): number => (i === 0 ? 0 : r.ends[i - 1]);

export const seqOf = (r: Run, i: number): bigint => r.firstSeq + BigInt(i);

/** The filter fields of event i of a run. */
export function keyOf(r: Run, i: number): EventKey {
  r.keys ??= new Array<EventKey | undefined>(r.count);
  return (r.keys[i] ??= r.batch.key(i));
}

/** One message's bytes: a Buffer, or the one event of a span. */
export const messageBytes = (m: Message): Buffer => (Buffer.isBuffer(m) ? m : m.run.buf.subarray(m.run.starts[m.from], m.run.ends[m.from]));

/** Bytes of messages as elements of WatchConnEventBatchesResponse.messages. */
export function elementLength(m: Message): number {
  return Buffer.isBuffer(m) ? 1 + varintLength(m.length) + m.length : m.run.ends[m.to - 1] - elementStart(m.run, m.from);
}

/**
 * WatchConnEventBatchesResponse from messages: each is field 1 (BATCH_ELEMENT_TAG), its length, its
 * bytes. Events already carry their tag and length (DrainedEvents.encode), so a span is copied at
 * once, and a batch that is one span is a view. `bytes` is the sum of elementLength().
 */
export function encodeBatch(messages: readonly Message[], bytes: number): Buffer {
  if (messages.length === 1 && !Buffer.isBuffer(messages[0])) {
    const s = messages[0];
    return s.run.buf.subarray(elementStart(s.run, s.from), s.run.ends[s.to - 1]);
  }
  const out = Buffer.allocUnsafe(bytes);
  let o = 0;
  for (const m of messages) {
    if (Buffer.isBuffer(m)) {
      out[o++] = BATCH_ELEMENT_TAG;
      o = putVarint32(out, o, m.length);
      o += m.copy(out, o);
    } else {
      o += m.run.buf.copy(out, o, elementStart(m.run, m.from), m.run.ends[m.to - 1]);
    }
  }
  return out;
}
