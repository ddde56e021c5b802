/**
 * Conns and WatchConnEvents messages in proto form. Stream messages are encoded here once, to the
 * bytes grpc-js sends: an event is encoded when it is numbered and the same bytes go to every
 * stream and into the history (see event-hub.ts and the pass-through serializer in
 * conn-service.ts).
 */
import type { ConnSide as DpConnSide, ConnView } from '../dataplane';
import { LostEventsSource, WatchConnEventsResponse, type Conn, type ConnSide } from '../gen/retrace/v1/conn';
import type { Duration } from '../gen/google/protobuf/duration';
import { connStateToProto, protocolToProto } from './enums';

export { LostEventsSource };

const NS_PER_MS = 1_000_000n;
const NS_PER_S = 1_000_000_000n;

/** Nanoseconds since the epoch as a Date (millisecond precision: ts-proto's useDate). */
export function nsToDate(ns: bigint): Date {
  return new Date(Number(ns / NS_PER_MS));
}

export function nsToDuration(ns: bigint): Duration {
  const d = ns < 0n ? 0n : ns;
  return { seconds: d / NS_PER_S, nanos: Number(d % NS_PER_S) };
}

function side(s: DpConnSide): ConnSide {
  return { port: s.port ?? '', peerMac: s.peerMac ?? '', packets: s.packets, bytes: s.bytes };
}

export function toConn(c: ConnView): Conn {
  return {
    protocol: protocolToProto(c.protocol),
    state: connStateToProto(c.state),
    local: c.local,
    client: c.client,
    clientPort: c.clientPort,
    vip: c.vip,
    vipPort: c.vipPort,
    localAddress: c.localAddress,
    localPort: c.localPort,
    real: c.real,
    realPort: c.realPort,
    clientSide: side(c.client_side),
    serverSide: side(c.server_side),
    worker: c.worker,
    createdAt: nsToDate(c.createdNs),
    lastPacketAt: nsToDate(c.lastNs),
  };
}

function encode(m: WatchConnEventsResponse): Buffer {
  const u = WatchConnEventsResponse.encode(m).finish();
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** A loss notice; first/last 0 when the lost events never had a seq. */
export function encodeLost(source: LostEventsSource, count: bigint, firstSeq = 0n, lastSeq = 0n): Buffer {
  return encode({ seq: 0n, time: new Date(), lost: { source, count, firstSeq, lastSeq } });
}

/** One conn of an initial_state snapshot. */
export function encodeSnapshot(c: ConnView): Buffer {
  return encode({ seq: 0n, time: nsToDate(c.timeNs), snapshot: toConn(c) });
}

export function encodeSnapshotEnd(conns: bigint, lastSeq: bigint): Buffer {
  return encode({ seq: 0n, time: new Date(), snapshotEnd: { conns, lastSeq } });
}
