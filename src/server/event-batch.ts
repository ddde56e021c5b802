/**
 * Numbered events as the hub keeps them, and WatchConnEventBatchesResponse encoding: a batch is
 * built from events' already encoded bytes, copying runs of adjacent events at once.
 */
import type { DrainedEvents, EventKey } from './event-hub';
import { BATCH_ELEMENT_TAG, putVarint32, varintLength } from './proto-wire';

/** A numbered event: its encoded message, and where to read the fields filters need. */
export interface Entry {
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

/** A message to write: bytes of its own, or an event's place in its batch's buffer. */
export type Message = Buffer | Entry;

export const messageBytes = (m: Message): Buffer => (Buffer.isBuffer(m) ? m : m.buf.subarray(m.start, m.end));

/** Bytes of a message as an element of WatchConnEventBatchesResponse.messages. */
export function elementLength(m: Message): number {
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
