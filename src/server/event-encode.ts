/**
 * Conn events straight from the dataplane's raw records (struct dp_conn_info) to the protobuf bytes
 * of WatchConnEventsResponse, for the whole drained batch into one Buffer: no ConnView, Date or
 * bigint per event, and no JS at all per event. The conn-event stream is the one place where the
 * control plane handles hundreds of thousands of messages a second; the encoding is native
 * (native/dp_event_wire.c), one call per drained batch.
 *
 * The output is byte-identical to ts-proto's encoding of `records.view(i)`
 * (test/helpers/event-oracle.ts), which a unit test checks on random records and on edge values of
 * every field: same fields, same order (field number), same defaults omitted, same millisecond
 * Timestamps. The enum values the C encoder writes come from the mapping functions in enums.ts,
 * handed to it once as tables, so neither side restates them.
 */
import { CONN_FLAG_LOCAL, RECORD_CODES, type ConnRecords, type Dataplane } from '../dataplane';
import { loadNative, type NativeEventEncoder } from '../dataplane/binding';
import type { DrainedEvents, EventSource } from './event-hub';
import { connStateToProto, eventTypeToProto, protocolToProto, sideToProto } from './enums';

/**
 * Record code → proto enum value for all 256 codes, built once from the mappings in enums.ts.
 * Codes the record tables lack get what ConnRecords.view() gives them (conns.ts): `other`.
 */
function table<K extends string | number, V>(codes: Record<K, V> | readonly V[], map: (v: V) => number, other: V): number[] {
  const out: number[] = new Array<number>(256).fill(map(other));
  for (const [k, v] of Object.entries(codes) as [string, V][]) out[Number(k)] = map(v);
  return out;
}
const codeOf = (codes: Record<number, string>, name: string): number => Number(Object.entries(codes).find(([, v]) => v === name)?.[0]);

/** The native encoder for one port-name array (the dataplane's is fixed for its life). */
let encoderCache: { names: readonly string[]; encoder: NativeEventEncoder } | undefined;

function encoderFor(r: ConnRecords): NativeEventEncoder {
  if (encoderCache?.names !== r.portNames) {
    const encoder = loadNative().eventEncoder({
      eventType: table(RECORD_CODES.eventTypes, eventTypeToProto, 'snapshot'),
      state: table(RECORD_CODES.tcpStates, connStateToProto, 'none'),
      protocol: table(RECORD_CODES.protocols, protocolToProto, 'tcp'),
      sideClient: sideToProto('client'),
      sideServer: sideToProto('server'),
      codeClosed: codeOf(RECORD_CODES.eventTypes, 'closed'),
      codePath: codeOf(RECORD_CODES.eventTypes, 'path_changed'),
      codeIcmp: codeOf(RECORD_CODES.protocols, 'icmp'),
      flagLocal: CONN_FLAG_LOCAL,
      // Every port index a record can name (0xff = none), as ConnRecords.portName() names it.
      names: Array.from({ length: 255 }, (_, pidx) => r.portName(pidx) ?? ''),
    });
    encoderCache = { names: r.portNames, encoder };
  }
  return encoderCache.encoder;
}

/**
 * Encoded messages back to back, each behind the tag and length that make it one element of
 * WatchConnEventBatchesResponse.messages (field 1): message i is buf[starts[i] .. ends[i]), and
 * buf[ends[i - 1] (0 for i = 0) .. ends[i]) is the same message as a batch element. A run of
 * consecutive events is therefore already a batch, with no copying.
 */
export interface EncodedEvents {
  buf: Buffer;
  starts: Uint32Array;
  ends: Uint32Array;
}

/** Message i of an EncodedEvents as its own Buffer (a view). */
export function messageAt(e: EncodedEvents, i: number): Buffer {
  return e.buf.subarray(e.starts[i], e.ends[i]);
}

/**
 * Every record of `r` as a WatchConnEventsResponse carrying a ConnEvent, numbered firstSeq,
 * firstSeq + 1, …, back to back in one Buffer, each as a batch element.
 */
export function encodeEventRecords(r: ConnRecords, firstSeq: bigint): EncodedEvents {
  if (r.count === 0) return { buf: Buffer.alloc(0), starts: new Uint32Array(0), ends: new Uint32Array(0) };
  return loadNative().encodeEvents(encoderFor(r), r.buffer, r.count, firstSeq);
}

/** The dataplane as the EventHub's source: raw records, encoded here, decoded only for filters. */
export function dataplaneEventSource(dp: Pick<Dataplane, 'enableEvents' | 'drainEvents'>): EventSource {
  return {
    enableEvents: (on) => dp.enableEvents(on),
    drainEvents: (max) => {
      const { records, dropped } = dp.drainEvents(max);
      const events: DrainedEvents = {
        count: records.count,
        key: (i) => records.view(i),
        encode: (firstSeq) => encodeEventRecords(records, firstSeq),
      };
      return { events, dropped };
    },
  };
}
