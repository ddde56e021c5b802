/**
 * The reference encoding of a conn event: ts-proto's encoder over the ConnView, as the server
 * encoded events before src/server/event-encode.ts. The unit tests hold the fast encoder to it,
 * byte for byte.
 */
import type { ConnView } from '../../src/dataplane';
import { WatchConnEventsResponse } from '../../src/gen/retrace/v1/conn';
import { nsToDate, nsToDuration, toConn } from '../../src/server/conn-messages';
import { eventTypeToProto, sideToProto } from '../../src/server/enums';

/** A numbered conn event, encoded by ts-proto. */
export function encodeEvent(seq: bigint, c: ConnView): Buffer {
  const u = WatchConnEventsResponse.encode({
    seq,
    time: nsToDate(c.timeNs),
    event: {
      type: eventTypeToProto(c.type),
      conn: toConn(c),
      changedSide: sideToProto(c.changedSide),
      duration: c.type === 'closed' ? nsToDuration(c.timeNs - c.createdNs) : undefined,
    },
  }).finish();
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}
