import { PROTOCOLS, SCHEDULERS } from '../../src/dataplane';
import { Protocol, Scheduler } from '../../src/gen/retrace/v1/types';
import { ianaProtocolNumber, protocolFromProto, protocolToProto, schedulerFromProto, schedulerToProto } from '../../src/server/enums';
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
