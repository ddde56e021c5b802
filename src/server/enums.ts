/**
 * The one mapping between the proto enums (retrace.v1.Protocol, retrace.v1.Scheduler), the
 * dataplane's names ('tcp', 'rr', ...) and IANA protocol numbers. Request values go through the
 * *FromProto functions, which reject *_UNSPECIFIED and unknown numbers as INVALID_ARGUMENT.
 */
import type { Protocol as DpProtocol, Scheduler as DpScheduler } from '../dataplane';
import { IPPROTO } from '../dataplane/binding';
import { Protocol, Scheduler } from '../gen/retrace/v1/types';
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
