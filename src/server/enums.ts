/**
 * The one mapping between the proto enums (retrace.v1.Protocol, retrace.v1.Scheduler,
 * retrace.v1.ConnState, retrace.v1.ConnEventType, retrace.v1.Side), the dataplane's names ('tcp',
 * 'rr', 'established', 'created', ...) and IANA protocol numbers. Request values go through the
 * *FromProto functions, which reject *_UNSPECIFIED and unknown numbers as INVALID_ARGUMENT.
 */
import type {
  ClientAddressMode as DpClientAddressMode,
  ConnEventType as DpEventType,
  Protocol as DpProtocol,
  Scheduler as DpScheduler,
  SynProxyMode as DpSynProxyMode,
  TcpState,
} from '../dataplane';
import { ClientAddressMode } from '../gen/retrace/v1/balancer';
import { IPPROTO } from '../dataplane/binding';
import { ConnEventType, ConnState, Side } from '../gen/retrace/v1/conn';
import { Protocol, Scheduler, SynProxyMode } from '../gen/retrace/v1/types';
import { ValidationError } from './errors';

const PROTOCOL_NAMES = new Map<Protocol, DpProtocol>([
  [Protocol.PROTOCOL_TCP, 'tcp'],
  [Protocol.PROTOCOL_UDP, 'udp'],
  [Protocol.PROTOCOL_ICMP, 'icmp'],
]);

const SCHEDULER_NAMES = new Map<Scheduler, DpScheduler>([
  [Scheduler.SCHEDULER_RR, 'rr'],
  [Scheduler.SCHEDULER_WRR, 'wrr'],
  [Scheduler.SCHEDULER_WLC, 'wlc'],
  [Scheduler.SCHEDULER_MAGLEV, 'maglev'],
]);

function invert<K, V>(m: Map<K, V>): Map<V, K> {
  return new Map([...m].map(([k, v]) => [v, k]));
}

const PROTOCOL_VALUES = invert(PROTOCOL_NAMES);
const SCHEDULER_VALUES = invert(SCHEDULER_NAMES);

/** A request's Protocol as the dataplane's name; `field` names it in the INVALID_ARGUMENT. */
export function protocolFromProto(p: Protocol, field: string): DpProtocol {
  const name = PROTOCOL_NAMES.get(p);
  if (name === undefined) {
    throw new ValidationError(field, p === Protocol.PROTOCOL_UNSPECIFIED ? 'required (PROTOCOL_TCP, PROTOCOL_UDP or PROTOCOL_ICMP)' : `unknown protocol ${p}`);
  }
  return name;
}

export function protocolToProto(p: DpProtocol): Protocol {
  const v = PROTOCOL_VALUES.get(p);
  if (v === undefined) throw new Error(`unknown dataplane protocol "${p}"`);
  return v;
}

/** IANA protocol number of a Protocol (TCP 6, UDP 17, ICMP 1); throws for UNSPECIFIED or unknown. */
export function ianaProtocolNumber(p: Protocol): number {
  return IPPROTO[protocolFromProto(p, 'protocol')];
}

/** A request's Scheduler as the dataplane's name; `field` names it in the INVALID_ARGUMENT. */
export function schedulerFromProto(s: Scheduler, field: string): DpScheduler {
  const name = SCHEDULER_NAMES.get(s);
  if (name === undefined) {
    throw new ValidationError(
      field,
      s === Scheduler.SCHEDULER_UNSPECIFIED ? 'required (SCHEDULER_RR, SCHEDULER_WRR, SCHEDULER_WLC or SCHEDULER_MAGLEV)' : `unknown scheduler ${s}`,
    );
  }
  return name;
}

export function schedulerToProto(s: DpScheduler): Scheduler {
  const v = SCHEDULER_VALUES.get(s);
  if (v === undefined) throw new Error(`unknown dataplane scheduler "${s}"`);
  return v;
}

// Off has two spellings (unset and OFF); outputs use unset, the proto3 default.
const SYN_PROXY_NAMES = new Map<SynProxyMode, DpSynProxyMode>([
  [SynProxyMode.SYN_PROXY_MODE_OFF, 'off'],
  [SynProxyMode.SYN_PROXY_MODE_UNSPECIFIED, 'off'],
  [SynProxyMode.SYN_PROXY_MODE_ON, 'on'],
  [SynProxyMode.SYN_PROXY_MODE_AUTO, 'auto'],
]);
const SYN_PROXY_VALUES = invert(SYN_PROXY_NAMES);

/** A request's SynProxyMode as the dataplane's name (unset = off); unknown numbers are INVALID_ARGUMENT. */
export function synProxyModeFromProto(m: SynProxyMode, field: string): DpSynProxyMode {
  const name = SYN_PROXY_NAMES.get(m);
  if (name === undefined) throw new ValidationError(field, `unknown mode ${m} (SYN_PROXY_MODE_OFF, SYN_PROXY_MODE_ON or SYN_PROXY_MODE_AUTO)`);
  return name;
}

export function synProxyModeToProto(m: DpSynProxyMode): SynProxyMode {
  const v = SYN_PROXY_VALUES.get(m);
  if (v === undefined) throw new Error(`unknown SYN proxy mode "${m}"`);
  return v;
}

// ---- client-address modes ----

const CLIENT_ADDRESS_NAMES = new Map<ClientAddressMode, DpClientAddressMode>([
  [ClientAddressMode.CLIENT_ADDRESS_MODE_UNSPECIFIED, 'none'],
  [ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2, 'proxy_v2'],
  [ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V1, 'proxy_v1'],
  [ClientAddressMode.CLIENT_ADDRESS_MODE_TOA, 'toa'],
]);
const CLIENT_ADDRESS_VALUES = invert(CLIENT_ADDRESS_NAMES);

/** A request's ClientAddressMode as the dataplane's name (unset and NONE are both none). */
export function clientAddressFromProto(m: ClientAddressMode, field: string): DpClientAddressMode {
  const name = m === ClientAddressMode.CLIENT_ADDRESS_MODE_NONE ? 'none' : CLIENT_ADDRESS_NAMES.get(m);
  if (name === undefined) throw new ValidationError(field, `unknown client-address mode ${m}`);
  return name;
}

/** Responses say UNSPECIFIED (0) for none: a service without a mode prints as it did before. */
export function clientAddressToProto(m: DpClientAddressMode | undefined): ClientAddressMode {
  return CLIENT_ADDRESS_VALUES.get(m ?? 'none') ?? ClientAddressMode.CLIENT_ADDRESS_MODE_NONE;
}

// ---- conns ----

/** Conn states; the dataplane's 'none' (before the first packet is handled) is never reported. */
const STATE_NAMES = new Map<ConnState, TcpState>([
  [ConnState.CONN_STATE_SYN_SENT, 'syn_sent'],
  [ConnState.CONN_STATE_SYN_RECV, 'syn_recv'],
  [ConnState.CONN_STATE_ESTABLISHED, 'established'],
  [ConnState.CONN_STATE_FIN_WAIT, 'fin_wait'],
  [ConnState.CONN_STATE_TIME_WAIT, 'time_wait'],
  [ConnState.CONN_STATE_CLOSE, 'close'],
]);

/** Event types; the dataplane's 'snapshot' is a listing, not an event (no proto value). */
const EVENT_TYPE_NAMES = new Map<ConnEventType, DpEventType>([
  [ConnEventType.CONN_EVENT_TYPE_CREATED, 'created'],
  [ConnEventType.CONN_EVENT_TYPE_STATE_CHANGED, 'state_changed'],
  [ConnEventType.CONN_EVENT_TYPE_PATH_CHANGED, 'path_changed'],
  [ConnEventType.CONN_EVENT_TYPE_CLOSED, 'closed'],
]);

const STATE_VALUES = invert(STATE_NAMES);
const EVENT_TYPE_VALUES = invert(EVENT_TYPE_NAMES);

/** A request's ConnState as the dataplane's name; `field` names it in the INVALID_ARGUMENT. */
export function connStateFromProto(s: ConnState, field: string): TcpState {
  const name = STATE_NAMES.get(s);
  if (name === undefined)
    throw new ValidationError(field, s === ConnState.CONN_STATE_UNSPECIFIED ? 'CONN_STATE_UNSPECIFIED is not a state' : `unknown conn state ${s}`);
  return name;
}

/** A dataplane state as ConnState ('none' → CONN_STATE_UNSPECIFIED). */
export function connStateToProto(s: TcpState): ConnState {
  return STATE_VALUES.get(s) ?? ConnState.CONN_STATE_UNSPECIFIED;
}

/** A request's ConnEventType as the dataplane's name; `field` names it in the INVALID_ARGUMENT. */
export function eventTypeFromProto(t: ConnEventType, field: string): DpEventType {
  const name = EVENT_TYPE_NAMES.get(t);
  if (name === undefined) {
    throw new ValidationError(
      field,
      t === ConnEventType.CONN_EVENT_TYPE_UNSPECIFIED ? 'CONN_EVENT_TYPE_UNSPECIFIED is not an event type' : `unknown event type ${t}`,
    );
  }
  return name;
}

/** A dataplane event type as ConnEventType ('snapshot' → CONN_EVENT_TYPE_UNSPECIFIED). */
export function eventTypeToProto(t: DpEventType): ConnEventType {
  return EVENT_TYPE_VALUES.get(t) ?? ConnEventType.CONN_EVENT_TYPE_UNSPECIFIED;
}

export function sideToProto(s: 'client' | 'server' | undefined): Side {
  if (s === 'client') return Side.SIDE_CLIENT;
  if (s === 'server') return Side.SIDE_SERVER;
  return Side.SIDE_UNSPECIFIED;
}
