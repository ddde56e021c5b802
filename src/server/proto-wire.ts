/**
 * The protobuf wire format, for the few messages the control plane encodes by hand because they
 * are sent at high rates (conn events, their batches): varints, tags and length-delimited fields.
 * Everything else is encoded by ts-proto from proto/.
 */

/** 2^32 (also 4294 * 10^6 + 967296: exact 64-bit ns to ms in doubles). */
export const TWO32 = 4294967296;

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

/** A growable buffer with the protobuf primitives; proto3 defaults (0) are left out as ts-proto does. */
export class ProtoWriter {
  buf: Buffer;
  pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** An unsigned varint of a number below 2^53. */
  varint(v: number): void {
    const b = this.buf;
    if (v < 0x80000000) {
      while (v >= 128) {
        b[this.pos++] = (v & 127) | 128;
        v >>>= 7;
      }
      b[this.pos++] = v;
      return;
    }
    while (v >= 128) {
      b[this.pos++] = (v % 128) | 128;
      v = Math.floor(v / 128);
    }
    b[this.pos++] = v;
  }

  /** An unsigned varint of the 64-bit value hi * 2^32 + lo. */
  varint64(hi: number, lo: number): void {
    if (hi < 0x200000) return this.varint(hi * TWO32 + lo); // below 2^53: exact as a double
    const b = this.buf;
    // Low 28 bits, then 28 more straddling the halves, then the rest of hi.
    for (let i = 0; i < 4; i++) {
      b[this.pos++] = (lo & 127) | 128;
      lo >>>= 7;
    }
    const mid = lo | ((hi & 0x7) << 4); // 4 bits of lo left, 3 bits of hi
    hi >>>= 3;
    b[this.pos++] = mid | 128;
    while (hi >= 128) {
      b[this.pos++] = (hi & 127) | 128;
      hi >>>= 7;
    }
    b[this.pos++] = hi;
  }

  /** A varint field, left out when 0 (proto3's default), as ts-proto does. */
  uint(tag: number, v: number): void {
    if (v === 0) return;
    this.buf[this.pos++] = tag;
    this.varint(v);
  }

  /** A uint64 field from a little-endian u64 at dv[off], left out when 0. */
  u64(tag: number, dv: DataView, off: number): void {
    const lo = dv.getUint32(off, true);
    const hi = dv.getUint32(off + 4, true);
    if (lo === 0 && hi === 0) return;
    this.buf[this.pos++] = tag;
    this.varint64(hi, lo);
  }

  /** Starts a length-delimited field: its tag and one byte for the length (fixed in end()). */
  begin(tag: number): number {
    this.varint(tag);
    return this.pos++;
  }

  /** Ends the field begun at `at`: the length is one byte when under 128, else the body moves. */
  end(at: number): void {
    const len = this.pos - at - 1;
    if (len < 128) {
      this.buf[at] = len;
      return;
    }
    const extra = len < 16384 ? 1 : 2; // bodies here are far below 2 MiB
    this.buf.copyWithin(at + 1 + extra, at + 1, this.pos);
    this.pos += extra;
    const save = this.pos;
    this.pos = at;
    this.varint(len);
    this.pos = save;
  }

  bytes(tag: number, src: Buffer): void {
    this.buf[this.pos++] = tag;
    this.varint(src.length);
    // Names are short: a loop beats Buffer.copy's per-call cost.
    for (let i = 0; i < src.length; i++) this.buf[this.pos++] = src[i];
  }
}
