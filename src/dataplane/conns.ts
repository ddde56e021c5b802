/**
 * Conns and conn events as the control plane sees them: decoding the fixed-size records
 * (struct dp_conn_info, native/dp_events.h) the addon hands over in Buffers. Offsets come from the
 * addon itself (connInfoLayout), never from a copy of the C struct.
 */
import type { Protocol } from './index';

export type ConnEventType = 'created' | 'state_changed' | 'path_changed' | 'closed' | 'snapshot';
export type TcpState = 'none' | 'syn_sent' | 'syn_recv' | 'established' | 'fin_wait' | 'time_wait' | 'close';

const EVENT_TYPES: Record<number, ConnEventType> = { 1: 'created', 2: 'state_changed', 3: 'path_changed', 4: 'closed', 5: 'snapshot' };
const TCP_STATES: TcpState[] = ['none', 'syn_sent', 'syn_recv', 'established', 'fin_wait', 'time_wait', 'close'];
const PROTOS: Record<number, Protocol> = { 6: 'tcp', 17: 'udp', 1: 'icmp' };

export interface ConnSide {
  /** Port name the side's packets arrive on; undefined until that side has sent a packet. */
  port?: string;
  /** That side's next-hop MAC. */
  peerMac?: string;
  packets: bigint;
  bytes: bigint;
}

export interface ConnView {
  type: ConnEventType;
  protocol: Protocol;
  /** For TCP the tracked state; UDP/ICMP conns that saw traffic are "established". */
  state: TcpState;
  /** ICMP echo to one of our own addresses (no real server). */
  local: boolean;
  client: string;
  clientPort: number;
  vip: string;
  vipPort: number;
  localAddress: string;
  localPort: number;
  real: string;
  realPort: number;
  client_side: ConnSide;
  server_side: ConnSide;
  /** For path_changed: which side moved. */
  changedSide?: 'client' | 'server';
  worker: number;
  timeNs: bigint;
  createdNs: bigint;
  lastNs: bigint;
}

function ip(dv: DataView, off: number): string {
  // Stored in network byte order: bytes in memory are the dotted quad.
  return `${dv.getUint8(off)}.${dv.getUint8(off + 1)}.${dv.getUint8(off + 2)}.${dv.getUint8(off + 3)}`;
}

function mac(dv: DataView, off: number): string {
  const b: string[] = [];
  for (let i = 0; i < 6; i++)
    b.push(
      dv
        .getUint8(off + i)
        .toString(16)
        .padStart(2, '0'),
    );
  return b.join(':');
}

/** Record fields as the addon lays them out (connInfoLayout): byte offsets and the record size. */
export type ConnLayout = Record<string, number>;

/** The number codes of a record and their names (dp_event_type, dp_tcp_state, IPPROTO_*). */
export const RECORD_CODES = { eventTypes: EVENT_TYPES, tcpStates: TCP_STATES, protocols: PROTOS } as const;

/** DP_CONN_F_LOCAL: an ICMP echo to one of our own addresses. */
export const CONN_FLAG_LOCAL = 0x4;

/**
 * Fixed-size conn records (struct dp_conn_info) in one Buffer, as the addon hands them over: read
 * one as a ConnView, or hand the raw bytes to a reader that needs no objects (the event encoder).
 */
export class ConnRecords {
  readonly dv: DataView;

  constructor(
    readonly buffer: Buffer,
    readonly count: number,
    readonly layout: ConnLayout,
    readonly portNames: readonly string[],
  ) {
    this.dv = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }

  /** Byte offset of record i. */
  offset(i: number): number {
    return i * this.layout.size;
  }

  /** The name of port index pidx (0xff = the side has no record yet). */
  portName(pidx: number): string | undefined {
    return pidx === 0xff ? undefined : (this.portNames[pidx] ?? `#${pidx}`);
  }

  view(i: number): ConnView {
    const { dv, layout: L } = this;
    const b = this.offset(i);
    const side = (s: 0 | 1): ConnSide => {
      const pidx = dv.getUint8(b + L.side_pidx + s);
      return {
        port: this.portName(pidx),
        peerMac: pidx === 0xff ? undefined : mac(dv, b + L.peer_mac + 6 * s),
        packets: dv.getBigUint64(b + L.pkts + 8 * s, true),
        bytes: dv.getBigUint64(b + L.bytes + 8 * s, true),
      };
    };
    const type = EVENT_TYPES[dv.getUint8(b + L.type)] ?? 'snapshot';
    const proto = PROTOS[dv.getUint8(b + L.proto)] ?? 'tcp';
    const icmp = proto === 'icmp';
    const local = (dv.getUint8(b + L.flags) & CONN_FLAG_LOCAL) !== 0;
    return {
      type,
      protocol: proto,
      state: TCP_STATES[dv.getUint8(b + L.state)] ?? 'none',
      local,
      client: ip(dv, b + L.caddr),
      clientPort: dv.getUint16(b + L.cport, false),
      vip: ip(dv, b + L.vaddr),
      vipPort: icmp ? 0 : dv.getUint16(b + L.vport, false),
      localAddress: local ? '' : ip(dv, b + L.laddr),
      localPort: local ? 0 : dv.getUint16(b + L.lport, false),
      real: local ? '' : ip(dv, b + L.raddr),
      realPort: icmp ? 0 : dv.getUint16(b + L.rport, false),
      client_side: side(0),
      server_side: side(1),
      changedSide: type === 'path_changed' ? (dv.getUint8(b + L.changed_side) === 0 ? 'client' : 'server') : undefined,
      worker: dv.getUint8(b + L.worker),
      timeNs: dv.getBigUint64(b + L.time_ns, true),
      createdNs: dv.getBigUint64(b + L.created_ns, true),
      lastNs: dv.getBigUint64(b + L.last_ns, true),
    };
  }

  views(): ConnView[] {
    const out: ConnView[] = [];
    for (let i = 0; i < this.count; i++) out.push(this.view(i));
    return out;
  }
}

export function decodeConns(buf: Buffer, count: number, layout: ConnLayout, portNames: readonly string[]): ConnView[] {
  return new ConnRecords(buf, count, layout, portNames).views();
}
