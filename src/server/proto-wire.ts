/**
 * The protobuf wire format, for the one thing the control plane frames by hand: a batch of conn
 * events whose elements the addon encoded (native/dp_event_wire.c). Everything else is encoded by
 * ts-proto from proto/.
 */

/** Wire types: varint and length-delimited, the two this code writes. */
export const WIRE_VARINT = 0;
export const WIRE_LEN = 2;

/** A field's tag: (field number << 3) | wire type. */
export const tag = (field: number, wireType: typeof WIRE_VARINT | typeof WIRE_LEN): number => (field << 3) | wireType;

/** WatchConnEventBatchesResponse.messages: field 1, length-delimited (0x0a). */
export const BATCH_ELEMENT_TAG = tag(1, WIRE_LEN);

/** Bytes of the varint of a number below 2^53. */
export function varintLength(n: number): number {
  let len = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

/** Writes the varint of a number below 2^32 at buf[pos]; returns the position after it. */
export function putVarint32(buf: Buffer, pos: number, n: number): number {
  while (n >= 128) {
    buf[pos++] = (n & 127) | 128;
    n >>>= 7;
  }
  buf[pos++] = n;
  return pos;
}
