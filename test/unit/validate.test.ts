/** The request validators alone: no dataplane, no server. */
import { ClientAddressMode, Real, UpdateVirtualServiceRequest, VirtualService } from '../../src/gen/retrace/v1/balancer';
import { Protocol, Scheduler, SynProxyMode } from '../../src/gen/retrace/v1/types';
import { ValidationError } from '../../src/server/errors';
import * as v from '../../src/server/validate';

/** The "field: reason" message a validator throws, or '' if it returns. */
function problem(fn: () => unknown): string {
  try {
    fn();
    return '';
  } catch (e) {
    if (!(e instanceof ValidationError)) throw e;
    return e.message;
  }
}

const tcpKey = { protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.10', port: 80 };
const real = (address: string, port: number, weight: number): Real => Real.create({ address, port, weight });

describe('ipv4', () => {
  it.each(['0.0.0.1', '10.0.0.1', '255.255.255.255', '198.18.0.1'])('accepts %s', (a) => {
    expect(v.ipv4(a, 'f')).toBe(a);
  });

  it.each(['', '10.0.0', '10.0.0.1.2', '256.0.0.1', '01.0.0.1', '10.0.0.1 ', 'a.b.c.d', '::1', '10.0.0.-1'])('rejects "%s"', (a) => {
    expect(problem(() => v.ipv4(a, 'address.address'))).toMatch(/^address\.address: /);
  });

  it('rejects 0.0.0.0 unless allowed', () => {
    expect(problem(() => v.ipv4('0.0.0.0', 'vip'))).toBe('vip: must not be 0.0.0.0');
    expect(v.ipv4('0.0.0.0', 'prefix', { allowZero: true })).toBe('0.0.0.0');
  });
});

describe('mac', () => {
  it('accepts any case and returns lower case', () => {
    expect(v.mac('02:AB:cd:00:00:01', 'm')).toBe('02:ab:cd:00:00:01');
  });

  it.each([
    ['', 'required'],
    ['2:0:0:0:0:1', 'not a MAC'],
    ['02-00-00-00-00-01', 'not a MAC'],
    ['02:00:00:00:00:01:02', 'not a MAC'],
    ['01:00:5e:00:00:01', 'unicast'],
    ['00:00:00:00:00:00', 'zero MAC'],
  ])('rejects "%s" (%s)', (m, why) => {
    expect(problem(() => v.mac(m, 'neighbor.mac'))).toMatch(new RegExp(`^neighbor\\.mac: .*${why}`));
  });
});

describe('createAddress', () => {
  it('returns the dataplane spec', () => {
    expect(v.createAddress({ address: { address: '10.0.0.1', prefixLength: 24, port: 'p0' } })).toEqual({ address: '10.0.0.1', prefixLength: 24, port: 'p0' });
  });

  it.each([
    [{}, 'address: required'],
    [{ address: { address: '', prefixLength: 24, port: 'p0' } }, 'address.address: required'],
    [{ address: { address: '10.0.0.1', prefixLength: 0, port: 'p0' } }, 'address.prefix_length: must be 1..32, got 0'],
    [{ address: { address: '10.0.0.1', prefixLength: 33, port: 'p0' } }, 'address.prefix_length: must be 1..32, got 33'],
    [{ address: { address: '10.0.0.1', prefixLength: 24, port: '' } }, 'address.port: required'],
  ])('rejects %j with "%s"', (req, msg) => {
    expect(problem(() => v.createAddress(req as never))).toBe(msg);
  });
});

describe('createRoute', () => {
  it('makes "" a connected route and keeps a gateway', () => {
    expect(v.createRoute({ route: { prefix: '10.1.0.0', prefixLength: 16, port: 'p0', gateway: '', connected: false } })).toEqual({
      prefix: '10.1.0.0',
      prefixLength: 16,
      port: 'p0',
      gateway: undefined,
    });
    expect(v.createRoute({ route: { prefix: '0.0.0.0', prefixLength: 0, port: 'p0', gateway: '10.0.0.254', connected: false } }).gateway).toBe('10.0.0.254');
  });

  it('rejects host bits beyond the prefix length, a bad length and gateway 0.0.0.0', () => {
    const r = { prefix: '10.1.2.0', prefixLength: 16, port: 'p0', gateway: '', connected: false };
    expect(problem(() => v.createRoute({ route: r }))).toBe('route.prefix: "10.1.2.0" has host bits set beyond /16');
    expect(problem(() => v.createRoute({ route: { ...r, prefixLength: 40 } }))).toBe('route.prefix_length: must be 0..32, got 40');
    expect(problem(() => v.createRoute({ route: { ...r, prefix: '10.1.0.0', gateway: '0.0.0.0' } }))).toMatch(/^route\.gateway: use ""/);
    expect(v.createRoute({ route: { ...r, prefix: '10.1.2.3', prefixLength: 32 } }).prefix).toBe('10.1.2.3');
  });
});

describe('createVirtualService', () => {
  const svc = VirtualService.create({ ...tcpKey, scheduler: Scheduler.SCHEDULER_WRR, seed: 7 });

  it('returns the dataplane spec', () => {
    expect(v.createVirtualService({ virtualService: svc })).toEqual({
      protocol: 'tcp',
      vip: '198.18.0.10',
      port: 80,
      scheduler: 'wrr',
      seed: 7,
      limits: { maxConns: 0, allow: [], deny: [], connRate: 0, connBurst: 0 },
      synProxy: { mode: 'off', threshold: 0 },
      clientAddress: 'none',
    });
  });

  it('takes a client-address mode the protocol can carry and names the field otherwise', () => {
    const M = ClientAddressMode;
    const mode = (protocol: Protocol, m: ClientAddressMode, port = 80) =>
      v.createVirtualService({ virtualService: { ...svc, protocol, port, clientAddress: m } }).clientAddress;
    expect(mode(Protocol.PROTOCOL_TCP, M.CLIENT_ADDRESS_MODE_PROXY_V2)).toBe('proxy_v2');
    expect(mode(Protocol.PROTOCOL_TCP, M.CLIENT_ADDRESS_MODE_PROXY_V1)).toBe('proxy_v1');
    expect(mode(Protocol.PROTOCOL_TCP, M.CLIENT_ADDRESS_MODE_TOA)).toBe('toa');
    expect(mode(Protocol.PROTOCOL_TCP, M.CLIENT_ADDRESS_MODE_NONE)).toBe('none');
    expect(mode(Protocol.PROTOCOL_UDP, M.CLIENT_ADDRESS_MODE_PROXY_V2)).toBe('proxy_v2');
    const bad = (protocol: Protocol, m: number, port = 80) => problem(() => mode(protocol, m, port));
    expect(bad(Protocol.PROTOCOL_UDP, M.CLIENT_ADDRESS_MODE_TOA)).toBe(
      'virtual_service.client_address: TOA is for TCP services only (UDP services take PROXY protocol v2)',
    );
    expect(bad(Protocol.PROTOCOL_UDP, M.CLIENT_ADDRESS_MODE_PROXY_V1)).toBe(
      'virtual_service.client_address: PROXY protocol v1 is for TCP services only (UDP services take PROXY protocol v2)',
    );
    expect(bad(Protocol.PROTOCOL_ICMP, M.CLIENT_ADDRESS_MODE_PROXY_V2, 0)).toBe(
      'virtual_service.client_address: PROXY protocol v2 is not for ICMP services (CLIENT_ADDRESS_MODE_NONE only)',
    );
    expect(bad(Protocol.PROTOCOL_TCP, 9)).toBe('virtual_service.client_address: unknown client-address mode 9');
  });

  it('returns the limits canonical: prefixes sorted by address then length, repeats dropped', () => {
    const l = v.createVirtualService({
      virtualService: { ...svc, maxConns: 100, allow: ['192.0.2.0/24', '10.0.0.0/8', '10.0.0.0/16', '10.0.0.0/8'], deny: ['0.0.0.0/0', '10.1.2.3/32'] },
    }).limits;
    expect(l).toEqual({ maxConns: 100, allow: ['10.0.0.0/8', '10.0.0.0/16', '192.0.2.0/24'], deny: ['0.0.0.0/0', '10.1.2.3/32'], connRate: 0, connBurst: 0 });
  });

  it('rejects a bad prefix, naming the list entry', () => {
    const bad = (allow: string[]) => problem(() => v.createVirtualService({ virtualService: { ...svc, allow } }));
    expect(bad(['10.0.0.0/8', '10.0.0.0'])).toBe('virtual_service.allow[1]: "10.0.0.0" is not a prefix "a.b.c.d/len"');
    expect(bad(['10.0.0.0/33'])).toBe('virtual_service.allow[0]: "10.0.0.0/33": prefix length 33 is more than 32');
    expect(bad(['10.0.0.1/24'])).toBe('virtual_service.allow[0]: "10.0.0.1" has host bits set beyond /24');
    expect(bad(['10.0.0/8'])).toBe('virtual_service.allow[0]: "10.0.0" is not a dotted-quad IPv4 address');
    expect(bad(['10.0.0.0/-1'])).toMatch(/^virtual_service\.allow\[0\]: .* is not a prefix/);
    expect(bad(Array.from({ length: 65 }, (_, i) => `10.0.${i}.0/24`))).toBe('virtual_service.allow: at most 64 prefixes, got 65');
    expect(problem(() => v.createVirtualService({ virtualService: { ...svc, deny: ['1.2.3.5/31'] } }))).toBe(
      'virtual_service.deny[0]: "1.2.3.5" has host bits set beyond /31',
    );
  });

  it('takes conn_rate with a conn_burst, and refuses either without the other', () => {
    const mk = (connRate: number, connBurst: number) => () => v.createVirtualService({ virtualService: { ...svc, connRate, connBurst } });
    expect(mk(50, 10)().limits).toMatchObject({ connRate: 50, connBurst: 10 });
    expect(problem(mk(50, 0))).toBe('virtual_service.conn_burst: must be 1..1000000 with a conn_rate');
    expect(problem(mk(0, 5))).toBe('virtual_service.conn_burst: must be 0 without a conn_rate');
    expect(problem(mk(1000001, 5))).toBe('virtual_service.conn_rate: must be 0..1000000, got 1000001');
    expect(problem(mk(5, 1000001))).toBe('virtual_service.conn_burst: must be 0..1000000, got 1000001');
  });

  it('rejects max_conns beyond the conn table', () => {
    expect(problem(() => v.createVirtualService({ virtualService: { ...svc, maxConns: 1001 } }, 1000))).toBe(
      'virtual_service.max_conns: 1001 is more than the conn table holds (1000); 0 = no limit',
    );
    expect(v.createVirtualService({ virtualService: { ...svc, maxConns: 1000 } }, 1000).limits!.maxConns).toBe(1000);
  });

  it('requires port 0 for ICMP and 1..65535 otherwise', () => {
    expect(v.createVirtualService({ virtualService: { ...svc, protocol: Protocol.PROTOCOL_ICMP, port: 0 } }).port).toBe(0);
    expect(problem(() => v.createVirtualService({ virtualService: { ...svc, protocol: Protocol.PROTOCOL_ICMP } }))).toBe(
      'virtual_service.port: must be 0 for ICMP, got 80',
    );
    expect(problem(() => v.createVirtualService({ virtualService: { ...svc, port: 0 } }))).toBe('virtual_service.port: must be 1..65535, got 0');
    expect(problem(() => v.createVirtualService({ virtualService: { ...svc, protocol: Protocol.PROTOCOL_UDP, port: 65536 } }))).toBe(
      'virtual_service.port: must be 1..65535, got 65536',
    );
  });

  it('rejects unspecified enums and reals (they belong to SetReals)', () => {
    expect(problem(() => v.createVirtualService({ virtualService: { ...svc, protocol: Protocol.PROTOCOL_UNSPECIFIED } }))).toMatch(
      /^virtual_service\.protocol: required/,
    );
    expect(problem(() => v.createVirtualService({ virtualService: { ...svc, scheduler: Scheduler.SCHEDULER_UNSPECIFIED } }))).toMatch(
      /^virtual_service\.scheduler: required/,
    );
    expect(problem(() => v.createVirtualService({ virtualService: { ...svc, reals: [real('10.0.0.2', 80, 1)] } }))).toMatch(
      /^virtual_service\.reals: must be empty/,
    );
  });
});

describe('updateVirtualService', () => {
  it('keeps the limits when none are given and replaces them whole when given', () => {
    const req = {
      key: tcpKey,
      scheduler: Scheduler.SCHEDULER_RR,
      seed: 0,
      limits: undefined,
      healthCheck: undefined,
      removeHealthCheck: false,
      synProxy: undefined,
    };
    expect(v.updateVirtualService(req).limits).toBeUndefined();
    expect(v.updateVirtualService({ ...req, limits: { maxConns: 0, allow: [], deny: [], connRate: 0, connBurst: 0 } }).limits).toEqual({
      maxConns: 0,
      allow: [],
      deny: [],
      connRate: 0,
      connBurst: 0,
    });
    expect(problem(() => v.updateVirtualService({ ...req, limits: { maxConns: 9, allow: ['1.2.3.0/23'], deny: [], connRate: 0, connBurst: 0 } }))).toBe(
      'limits.allow[0]: "1.2.3.0" has host bits set beyond /23',
    );
    expect(problem(() => v.updateVirtualService({ ...req, limits: { maxConns: 9, allow: [], deny: [], connRate: 0, connBurst: 0 } }, 8))).toMatch(
      /^limits\.max_conns: 9 is more/,
    );
  });
});

describe('SYN proxy', () => {
  const svc = VirtualService.create({ ...tcpKey, scheduler: Scheduler.SCHEDULER_RR });
  const mk =
    (synProxy: SynProxyMode, synProxyThreshold: number, protocol = Protocol.PROTOCOL_TCP) =>
    () =>
      v.createVirtualService({ virtualService: { ...svc, protocol, port: protocol === Protocol.PROTOCOL_ICMP ? 0 : 80, synProxy, synProxyThreshold } });

  it('is off by default, on without a threshold, auto with one', () => {
    expect(v.createVirtualService({ virtualService: svc }).synProxy).toEqual({ mode: 'off', threshold: 0 });
    expect(mk(SynProxyMode.SYN_PROXY_MODE_ON, 0)().synProxy).toEqual({ mode: 'on', threshold: 0 });
    expect(mk(SynProxyMode.SYN_PROXY_MODE_AUTO, 5000)().synProxy).toEqual({ mode: 'auto', threshold: 5000 });
  });

  it('names the field: a threshold without auto, auto without one, not TCP, an unknown mode', () => {
    expect(problem(mk(SynProxyMode.SYN_PROXY_MODE_ON, 10))).toBe(
      'virtual_service.syn_proxy_threshold: must be 0 unless the mode is SYN_PROXY_MODE_AUTO, got 10',
    );
    expect(problem(mk(SynProxyMode.SYN_PROXY_MODE_AUTO, 0))).toBe('virtual_service.syn_proxy_threshold: must be 1..4294967295, got 0');
    expect(problem(mk(SynProxyMode.SYN_PROXY_MODE_ON, 0, Protocol.PROTOCOL_UDP))).toBe('virtual_service.syn_proxy: a SYN proxy needs a TCP service, not UDP');
    expect(problem(mk(SynProxyMode.SYN_PROXY_MODE_AUTO, 3, Protocol.PROTOCOL_ICMP))).toBe(
      'virtual_service.syn_proxy: a SYN proxy needs a TCP service, not ICMP',
    );
    expect(problem(mk(7 as SynProxyMode, 0))).toMatch(/^virtual_service\.syn_proxy: unknown mode 7/);
    expect(mk(SynProxyMode.SYN_PROXY_MODE_OFF, 0, Protocol.PROTOCOL_UDP)().synProxy).toEqual({ mode: 'off', threshold: 0 });
  });

  it('UpdateVirtualService keeps it when unset and checks it when set', () => {
    const req = { ...UpdateVirtualServiceRequest.create(), key: tcpKey, scheduler: Scheduler.SCHEDULER_RR, seed: 0, limits: undefined };
    expect(v.updateVirtualService(req).synProxy).toBeUndefined();
    expect(v.updateVirtualService({ ...req, synProxy: { mode: SynProxyMode.SYN_PROXY_MODE_AUTO, threshold: 7 } }).synProxy).toEqual({
      mode: 'auto',
      threshold: 7,
    });
    expect(problem(() => v.updateVirtualService({ ...req, synProxy: { mode: SynProxyMode.SYN_PROXY_MODE_AUTO, threshold: 0 } }))).toMatch(
      /^syn_proxy\.threshold: /,
    );
    expect(
      problem(() =>
        v.updateVirtualService({
          ...req,
          key: { ...tcpKey, protocol: Protocol.PROTOCOL_UDP },
          synProxy: { mode: SynProxyMode.SYN_PROXY_MODE_ON, threshold: 0 },
        }),
      ),
    ).toMatch(/^syn_proxy\.mode: a SYN proxy needs a TCP service/);
  });
});

describe('updateVirtualService: client_address', () => {
  it('keeps the mode when unset and checks it against the key protocol when set', () => {
    const req = { ...UpdateVirtualServiceRequest.create(), key: tcpKey, scheduler: Scheduler.SCHEDULER_RR, seed: 0, limits: undefined };
    expect(v.updateVirtualService(req).clientAddress).toBeUndefined();
    expect(v.updateVirtualService({ ...req, clientAddress: ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V1 }).clientAddress).toBe('proxy_v1');
    const udp = { ...req, key: { ...tcpKey, protocol: Protocol.PROTOCOL_UDP } };
    expect(problem(() => v.updateVirtualService({ ...udp, clientAddress: ClientAddressMode.CLIENT_ADDRESS_MODE_TOA }))).toBe(
      'client_address: TOA is for TCP services only (UDP services take PROXY protocol v2)',
    );
  });
});

describe('setReals', () => {
  it('accepts weight 0 and an empty set', () => {
    expect(v.setReals({ key: tcpKey, reals: [real('10.0.0.2', 8080, 0)] }).reals).toEqual([{ address: '10.0.0.2', port: 8080, weight: 0 }]);
    expect(v.setReals({ key: tcpKey, reals: [] }).reals).toEqual([]);
  });

  it('names the bad real by index', () => {
    const ok = real('10.0.0.2', 80, 1);
    expect(problem(() => v.setReals({ key: tcpKey, reals: [ok, ok, ok] }))).toBe('reals[1]: repeats reals[0] (10.0.0.2:80)');
    expect(problem(() => v.setReals({ key: tcpKey, reals: [ok, real('10.0.0.3', 80, 1), real('10.0.0.4', 80, 65536)] }))).toBe(
      'reals[2].weight: must be 0..65535, got 65536',
    );
    expect(problem(() => v.setReals({ key: tcpKey, reals: [real('10.0.0.300', 80, 1)] }))).toMatch(/^reals\[0\]\.address: /);
    expect(problem(() => v.setReals({ key: { ...tcpKey, protocol: Protocol.PROTOCOL_ICMP, port: 0 }, reals: [ok] }))).toBe(
      'reals[0].port: must be 0 for ICMP, got 80',
    );
  });

  it('requires the key', () => {
    expect(problem(() => v.setReals({ key: undefined, reals: [] }))).toBe('key: required');
    expect(problem(() => v.setReals({ key: { ...tcpKey, vip: '' }, reals: [] }))).toBe('key.vip: required');
  });
});

describe('setTimeouts', () => {
  it('keeps only the fields that are set', () => {
    expect(v.setTimeouts({ timeouts: { udp: 30, tcpSyn: 5 } })).toEqual({ udp: 30, tcpSyn: 5 });
    expect(v.setTimeouts({ timeouts: {} })).toEqual({});
  });

  it('rejects 0 and values beyond 7 days naming the field', () => {
    expect(problem(() => v.setTimeouts({ timeouts: { tcpEstablished: 0 } }))).toBe('timeouts.tcp_established: must be 1..604800, got 0');
    expect(problem(() => v.setTimeouts({ timeouts: { icmp: 604801 } }))).toBe('timeouts.icmp: must be 1..604800, got 604801');
    expect(problem(() => v.setTimeouts({ timeouts: undefined }))).toBe('timeouts: required');
  });
});

describe('setSymmetricMode', () => {
  it('maps the protocol and rejects UNSPECIFIED', () => {
    expect(v.setSymmetricMode({ protocol: Protocol.PROTOCOL_UDP, enabled: false })).toEqual({ protocol: 'udp', enabled: false });
    expect(problem(() => v.setSymmetricMode({ protocol: Protocol.PROTOCOL_UNSPECIFIED, enabled: true }))).toMatch(/^protocol: required/);
  });
});

describe('duration (issue 18: a Duration with nanos >= 1e9 was accepted)', () => {
  const field = (f: () => unknown) => {
    try {
      f();
      return 'ok';
    } catch (e) {
      if (!(e instanceof ValidationError)) throw e;
      return e.message;
    }
  };
  it.each<[bigint, number, string]>([
    [1n, 0, 'ok'],
    [0n, 999_999_999, 'ok'],
    [0n, 1_000_000_000, 'interval.nanos: must be 0..999999999, got 1000000000'],
    [0n, -1, 'interval.nanos: must be 0..999999999, got -1'],
    [-1n, 0, 'interval.seconds: must not be negative, got -1'],
  ])('seconds %s nanos %s: %s', (seconds, nanos, want) => {
    expect(field(() => v.watchCounters({ interval: { seconds, nanos }, count: 0 }))).toBe(want);
  });

  it('leaves an unset interval to the default', () => {
    expect(field(() => v.watchCounters({ interval: undefined, count: 0 }))).toBe('ok');
  });
});

describe('unicast (issue 18: 255.255.255.255 and 224.0.0.1 were accepted)', () => {
  it.each(['255.255.255.255', '224.0.0.1', '239.1.2.3', '240.0.0.1', '0.0.0.1', '127.0.0.1'])('refuses %s', (a) => {
    expect(() => v.unicast(a, 'f')).toThrow(/^f: ".*" is .*(not a unicast address)$/);
  });
  it.each(['1.0.0.0', '10.0.0.1', '223.255.255.254', '198.18.0.255'])('accepts %s', (a) => {
    expect(v.unicast(a, 'f')).toBe(a);
  });
  it('refuses a port address that is its subnet broadcast, not a /31 or /32', () => {
    expect(() => v.createAddress({ address: { address: '10.0.0.255', prefixLength: 24, port: 'p' } })).toThrow(
      'address.address: "10.0.0.255" is the broadcast address of its subnet /24',
    );
    expect(v.createAddress({ address: { address: '10.0.0.1', prefixLength: 31, port: 'p' } }).address).toBe('10.0.0.1');
    expect(v.createAddress({ address: { address: '10.0.0.255', prefixLength: 32, port: 'p' } }).address).toBe('10.0.0.255');
  });
});
