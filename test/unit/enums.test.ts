import { PROTOCOLS, SCHEDULERS } from '../../src/dataplane';
import { Protocol, Scheduler } from '../../src/gen/retrace/v1/types';
import { ConnEventType, ConnState, Side } from '../../src/gen/retrace/v1/conn';
import {
  connStateFromProto,
  connStateToProto,
  eventTypeFromProto,
  eventTypeToProto,
  ianaProtocolNumber,
  protocolFromProto,
  protocolToProto,
  schedulerFromProto,
  schedulerToProto,
  sideToProto,
} from '../../src/server/enums';
import { ValidationError } from '../../src/server/errors';

describe('Protocol mapping', () => {
  it.each([
    [Protocol.PROTOCOL_TCP, 'tcp', 6],
    [Protocol.PROTOCOL_UDP, 'udp', 17],
    [Protocol.PROTOCOL_ICMP, 'icmp', 1],
  ] as const)('maps %s to "%s" and IANA number %d, both ways', (proto, name, iana) => {
    expect(protocolFromProto(proto, 'protocol')).toBe(name);
    expect(protocolToProto(name)).toBe(proto);
    expect(ianaProtocolNumber(proto)).toBe(iana);
  });

  it('covers every dataplane protocol', () => {
    for (const p of PROTOCOLS) expect(protocolFromProto(protocolToProto(p), 'protocol')).toBe(p);
  });

  it('rejects PROTOCOL_UNSPECIFIED naming the field', () => {
    expect(() => protocolFromProto(Protocol.PROTOCOL_UNSPECIFIED, 'key.protocol')).toThrow(ValidationError);
    expect(() => protocolFromProto(Protocol.PROTOCOL_UNSPECIFIED, 'key.protocol')).toThrow(/^key\.protocol: required/);
    expect(() => ianaProtocolNumber(Protocol.PROTOCOL_UNSPECIFIED)).toThrow(ValidationError);
  });

  it('rejects numbers that are not enum values (a newer client) and UNRECOGNIZED', () => {
    expect(() => protocolFromProto(7 as Protocol, 'protocol')).toThrow(/^protocol: unknown protocol 7/);
    expect(() => protocolFromProto(Protocol.UNRECOGNIZED, 'protocol')).toThrow(ValidationError);
  });
});

describe('Scheduler mapping', () => {
  it.each([
    [Scheduler.SCHEDULER_RR, 'rr'],
    [Scheduler.SCHEDULER_WRR, 'wrr'],
    [Scheduler.SCHEDULER_WLC, 'wlc'],
    [Scheduler.SCHEDULER_MAGLEV, 'maglev'],
  ] as const)('maps %s to "%s" both ways', (proto, name) => {
    expect(schedulerFromProto(proto, 'scheduler')).toBe(name);
    expect(schedulerToProto(name)).toBe(proto);
  });

  it('covers every dataplane scheduler', () => {
    for (const s of SCHEDULERS) expect(schedulerFromProto(schedulerToProto(s), 'scheduler')).toBe(s);
  });

  it('rejects SCHEDULER_UNSPECIFIED and unknown numbers naming the field', () => {
    expect(() => schedulerFromProto(Scheduler.SCHEDULER_UNSPECIFIED, 'virtual_service.scheduler')).toThrow(/^virtual_service\.scheduler: required/);
    expect(() => schedulerFromProto(9 as Scheduler, 'scheduler')).toThrow(/^scheduler: unknown scheduler 9/);
  });
});

describe('Conn state, event type and side mapping', () => {
  it.each([
    [ConnState.CONN_STATE_SYN_SENT, 'syn_sent'],
    [ConnState.CONN_STATE_SYN_RECV, 'syn_recv'],
    [ConnState.CONN_STATE_ESTABLISHED, 'established'],
    [ConnState.CONN_STATE_FIN_WAIT, 'fin_wait'],
    [ConnState.CONN_STATE_TIME_WAIT, 'time_wait'],
    [ConnState.CONN_STATE_CLOSE, 'close'],
  ] as const)('maps %s to "%s" both ways', (proto, name) => {
    expect(connStateFromProto(proto, 'states[0]')).toBe(name);
    expect(connStateToProto(name)).toBe(proto);
  });

  it.each([
    [ConnEventType.CONN_EVENT_TYPE_CREATED, 'created'],
    [ConnEventType.CONN_EVENT_TYPE_STATE_CHANGED, 'state_changed'],
    [ConnEventType.CONN_EVENT_TYPE_PATH_CHANGED, 'path_changed'],
    [ConnEventType.CONN_EVENT_TYPE_CLOSED, 'closed'],
  ] as const)('maps %s to "%s" both ways', (proto, name) => {
    expect(eventTypeFromProto(proto, 'types[0]')).toBe(name);
    expect(eventTypeToProto(name)).toBe(proto);
  });

  it('reports what has no proto value as *_UNSPECIFIED and rejects it in requests', () => {
    expect(connStateToProto('none')).toBe(ConnState.CONN_STATE_UNSPECIFIED);
    expect(eventTypeToProto('snapshot')).toBe(ConnEventType.CONN_EVENT_TYPE_UNSPECIFIED);
    expect(() => connStateFromProto(ConnState.CONN_STATE_UNSPECIFIED, 'filter.states[2]')).toThrow(/^filter\.states\[2\]: /);
    expect(() => eventTypeFromProto(9 as ConnEventType, 'types[0]')).toThrow(/^types\[0\]: unknown event type 9/);
  });

  it('maps sides', () => {
    expect([sideToProto('client'), sideToProto('server'), sideToProto(undefined)]).toEqual([Side.SIDE_CLIENT, Side.SIDE_SERVER, Side.SIDE_UNSPECIFIED]);
  });
});
