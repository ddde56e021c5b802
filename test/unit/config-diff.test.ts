/** ConfigService's pure parts: document validation, the diff plan, folding and drain weights. No dataplane. */
import { ClientAddressMode, Real, VirtualService } from '../../src/gen/retrace/v1/balancer';
import type { Config } from '../../src/gen/retrace/v1/config';
import { Protocol, Scheduler } from '../../src/gen/retrace/v1/types';
import { diffSize, foldChanges, planConfig, realsDiff, summarizeDiff, type Step } from '../../src/server/config/plan';
import { restoreWeights, toConfigMessage, type ConfigState, type DesiredConfig } from '../../src/server/config/state';
import { HealthCheck, HealthCheckKind } from '../../src/gen/retrace/v1/health_check';
import { validateConfig } from '../../src/server/config/validate';
import { StatusError, ValidationError } from '../../src/server/errors';
import { tableLimits } from '../../src/dataplane';

const PORTS = ['uplink-a', 'uplink-b'];

const real = (address: string, port: number, weight: number): Real => ({ ...Real.create(), address, port, weight });

/** A valid document with one of everything. */
function doc(): Config {
  return {
    addresses: [{ address: '198.18.0.1', prefixLength: 24, port: 'uplink-a' }],
    routes: [{ prefix: '0.0.0.0', prefixLength: 0, port: 'uplink-a', gateway: '198.18.0.254', connected: false }],
    neighbors: [{ address: '198.18.0.254', mac: '02:00:00:00:00:FE', port: 'uplink-a', static: false, ageSeconds: 0 }],
    localAddresses: [{ address: '10.1.0.1', port: 'uplink-b', portsInUse: 0n, portsTotal: 0n }],
    virtualServices: [
      VirtualService.create({
        protocol: Protocol.PROTOCOL_TCP,
        vip: '198.18.0.10',
        port: 80,
        scheduler: Scheduler.SCHEDULER_WRR,
        seed: 0,
        reals: [real('10.1.0.12', 8080, 1), real('10.1.0.11', 8080, 2)],
      }),
      VirtualService.create({
        protocol: Protocol.PROTOCOL_UDP,
        vip: '198.18.0.10',
        port: 53,
        scheduler: Scheduler.SCHEDULER_MAGLEV,
        seed: 7,
        reals: [real('10.1.0.11', 53, 1)],
      }),
    ],
    symmetric: undefined,
    timeouts: undefined,
  };
}

/** The "field: reason" message validateConfig throws, or '' if it returns. */
function problem(cfg: Config | undefined): string {
  try {
    validateConfig(cfg, PORTS);
    return '';
  } catch (e) {
    if (!(e instanceof ValidationError) && !(e instanceof StatusError)) throw e;
    return e.message;
  }
}

const EMPTY: ConfigState = {
  addresses: [],
  routes: [],
  neighbors: [],
  localAddresses: [],
  services: [],
  symmetric: { tcp: true, udp: true, icmp: true },
  timeouts: { tcpSyn: 30, tcpEstablished: 900, tcpFin: 60, tcpClose: 10, udp: 300, icmp: 60 },
};

/** The state an applied document leaves (what readState would then read back). */
function stateOf(d: DesiredConfig, base: ConfigState = EMPTY): ConfigState {
  return {
    ...d,
    symmetric: d.symmetric ?? base.symmetric,
    timeouts: { ...base.timeouts, ...d.timeouts },
  };
}

const ops = (steps: Step[]) => steps.map((s) => s.op);

describe('validateConfig', () => {
  it('returns the desired state in dataplane terms', () => {
    const d = validateConfig(doc(), PORTS);
    expect(d.addresses).toEqual([{ address: '198.18.0.1', prefixLength: 24, port: 'uplink-a' }]);
    expect(d.routes).toEqual([{ prefix: '0.0.0.0', prefixLength: 0, port: 'uplink-a', gateway: '198.18.0.254' }]);
    expect(d.neighbors).toEqual([{ address: '198.18.0.254', mac: '02:00:00:00:00:fe', port: 'uplink-a' }]);
    expect(d.services[0]).toEqual({
      protocol: 'tcp',
      vip: '198.18.0.10',
      port: 80,
      scheduler: 'wrr',
      seed: 0,
      limits: { maxConns: 0, allow: [], deny: [], connRate: 0, connBurst: 0 },
      synProxy: { mode: 'off', threshold: 0 },
      clientAddress: 'none',
      reals: [
        { address: '10.1.0.12', port: 8080, weight: 1 },
        { address: '10.1.0.11', port: 8080, weight: 2 },
      ],
    });
    expect(d.symmetric).toBeUndefined();
    expect(d.timeouts).toBeUndefined();
  });

  it('accepts an empty document (delete everything)', () => {
    expect(problem({ addresses: [], routes: [], neighbors: [], localAddresses: [], virtualServices: [], symmetric: undefined, timeouts: undefined })).toBe('');
  });

  it('requires the config', () => {
    expect(problem(undefined)).toBe('config: required');
  });

  const bad: [string, (c: Config) => void, string | RegExp][] = [
    [
      'a real weight out of range',
      (c) => (c.virtualServices[1].reals[0].weight = 70000),
      'config.virtual_services[1].reals[0].weight: must be 0..65535, got 70000',
    ],
    [
      'a real port on an ICMP service',
      (c) => (c.virtualServices[1].protocol = Protocol.PROTOCOL_ICMP),
      /^config\.virtual_services\[1\]\.port: must be 0 for ICMP/,
    ],
    ['a duplicate real', (c) => c.virtualServices[0].reals.push(real('10.1.0.11', 8080, 5)), /^config\.virtual_services\[0\]\.reals\[2\]: repeats/],
    ['a missing scheduler', (c) => (c.virtualServices[0].scheduler = Scheduler.SCHEDULER_UNSPECIFIED), /^config\.virtual_services\[0\]\.scheduler: required/],
    ['a bad vip', (c) => (c.virtualServices[0].vip = '198.18.0'), /^config\.virtual_services\[0\]\.vip: /],
    [
      'a duplicate service',
      (c) => c.virtualServices.push({ ...c.virtualServices[0] }),
      /^config\.virtual_services\[2\]\.vip: repeats config\.virtual_services\[0\]\.vip/,
    ],
    ['a prefix length of 0 on an address', (c) => (c.addresses[0].prefixLength = 0), 'config.addresses[0].prefix_length: must be 1..32, got 0'],
    ['an unknown port name', (c) => (c.addresses[0].port = 'eth0'), 'config.addresses[0].port: no port named "eth0" (ports: uplink-a, uplink-b)'],
    [
      'a duplicate address',
      (c) => c.addresses.push({ ...c.addresses[0], prefixLength: 16 }),
      /^config\.addresses\[1\]\.address: repeats config\.addresses\[0\]\.address/,
    ],
    ['host bits in a route prefix', (c) => (c.routes[0].prefix = '10.0.0.1'), /^config\.routes\[0\]\.prefix: .*host bits/],
    ['a connected route', (c) => (c.routes[0].connected = true), /^config\.routes\[0\]\.connected: must be false/],
    ['gateway 0.0.0.0', (c) => (c.routes[0].gateway = '0.0.0.0'), /^config\.routes\[0\]\.gateway: /],
    ['a multicast neighbour MAC', (c) => (c.neighbors[0].mac = '01:00:5e:00:00:01'), /^config\.neighbors\[0\]\.mac: .*unicast/],
    ['a local address on no port', (c) => (c.localAddresses[0].port = ''), 'config.local_addresses[0].port: required'],
    [
      'a local address that is also a port address',
      (c) => (c.localAddresses[0].address = '198.18.0.1'),
      /^config\.local_addresses\[0\]\.address: "198\.18\.0\.1" is also config\.addresses\[0\]\.address/,
    ],
    [
      'a vip that is also a local address',
      (c) => (c.virtualServices[0].vip = '10.1.0.1'),
      /^config\.virtual_services\[0\]\.vip: "10\.1\.0\.1" is also config\.local_addresses\[0\]\.address/,
    ],
    ['a timeout of 0', (c) => (c.timeouts = { udp: 0 }), 'config.timeouts.udp: must be 1..604800, got 0'],
    // Issue 18: the rules every unary call is checked against hold for a document too.
    [
      'a static neighbor for a port address',
      (c) => (c.neighbors[0].address = '198.18.0.1'),
      /^config\.neighbors\[0\]\.address: "198\.18\.0\.1" is also config\.addresses\[0\]\.address: no static neighbor/,
    ],
    [
      'a static neighbor for a vip',
      (c) => (c.neighbors[0].address = '198.18.0.10'),
      /^config\.neighbors\[0\]\.address: "198\.18\.0\.10" is also config\.virtual_services\[0\]\.vip/,
    ],
    [
      'a broadcast vip',
      (c) => (c.virtualServices[0].vip = '255.255.255.255'),
      'config.virtual_services[0].vip: "255.255.255.255" is the broadcast address, not a unicast address',
    ],
    [
      'a multicast port address',
      (c) => (c.addresses[0].address = '224.0.0.1'),
      'config.addresses[0].address: "224.0.0.1" is a multicast address, not a unicast address',
    ],
    [
      "a port address that is its subnet's broadcast",
      (c) => (c.addresses[0].address = '198.18.0.255'),
      'config.addresses[0].address: "198.18.0.255" is the broadcast address of its subnet /24',
    ],
    [
      'a loopback local address',
      (c) => (c.localAddresses[0].address = '127.0.0.2'),
      'config.local_addresses[0].address: "127.0.0.2" is a loopback address, not a unicast address',
    ],
    [
      'a real in 0.0.0.0/8',
      (c) => (c.virtualServices[0].reals[0].address = '0.1.2.3'),
      /^config\.virtual_services\[0\]\.reals\[0\]\.address: "0\.1\.2\.3" is in 0\.0\.0\.0\/8/,
    ],
    ['a reserved gateway', (c) => (c.routes[0].gateway = '240.0.0.1'), /^config\.routes\[0\]\.gateway: "240\.0\.0\.1" is in the reserved 240\.0\.0\.0\/4/],
    [
      'a long bad value, cut in the message',
      (c) => (c.addresses[0].address = 'x'.repeat(100000)),
      `config.addresses[0].address: "${'x'.repeat(64)}..." (100000 characters) is not a dotted-quad IPv4 address`,
    ],
    [
      'a long unknown port name, cut',
      (c) => (c.addresses[0].port = 'p'.repeat(5000)),
      `config.addresses[0].port: no port named "${'p'.repeat(64)}..." (5000 characters) (ports: uplink-a, uplink-b)`,
    ],
  ];

  it.each(bad)('rejects %s naming its path', (_name, mutate, message) => {
    const c = doc();
    mutate(c);
    if (typeof message === 'string') expect(problem(c)).toBe(message);
    else expect(problem(c)).toMatch(message);
  });

  it('lets services share a vip', () => {
    expect(problem(doc())).toBe('');
  });

  // Issue 18 item 6: every fixed table size is checked before anything changes, from the sizes the
  // native layer reports, and the first entry beyond one is named (RESOURCE_EXHAUSTED).
  const L = tableLimits();
  const many = (n: number, f: (i: number) => string) => Array.from({ length: n }, (_, i) => f(i));
  const ip = (base: number, i: number) => `${base}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  it.each<[string, (c: Config) => void, string]>([
    [
      `${L.lips + 1} local addresses`,
      (c) => (c.localAddresses = many(L.lips + 1, (i) => ip(10, 4096 + i)).map((address) => ({ address, port: 'uplink-b', portsInUse: 0n, portsTotal: 0n }))),
      `config.local_addresses[${L.lips}].address: the ${L.lips + 1}th of the local addresses (LIPs); the table holds ${L.lips}`,
    ],
    [
      `${L.services + 1} virtual services`,
      (c) =>
        (c.virtualServices = many(L.services + 1, (i) => `${i}`).map((_, i) =>
          VirtualService.create({ protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.10', port: i + 1, scheduler: Scheduler.SCHEDULER_RR }),
        )),
      `config.virtual_services[${L.services}].vip: the ${L.services + 1}th of the virtual services; the table holds ${L.services}`,
    ],
    [
      `${L.localAddresses + 1} local addresses of all roles`,
      (c) =>
        (c.virtualServices = many(L.localAddresses, (i) => ip(20, i)).map((vip) =>
          VirtualService.create({ protocol: Protocol.PROTOCOL_TCP, vip, port: 80, scheduler: Scheduler.SCHEDULER_RR }),
        )),
      // The port address and the LIP come first: vip number 1023 is the 1025th address.
      `config.virtual_services[${L.localAddresses - 2}].vip: the ${L.localAddresses + 1}th of the local addresses of all roles (port addresses, local addresses, distinct vips); the table holds ${L.localAddresses}`,
    ],
    [
      `${L.nextHops + 1} next hops`,
      (c) =>
        (c.routes = many(L.nextHops + 1, (i) => ip(30, i)).map((gateway, i) => ({
          prefix: `10.${100 + (i >> 8)}.${i & 255}.0`,
          prefixLength: 24,
          port: 'uplink-a',
          gateway,
          connected: false,
        }))),
      // The address's connected route uses one next hop too.
      `config.routes[${L.nextHops}].prefix: the ${L.nextHops + 1}th of the next hops (distinct port and gateway pairs of the routes); the table holds ${L.nextHops}`,
    ],
    [
      `${L.routes + 1} route prefixes`,
      (c) =>
        (c.routes = many(L.routes, (i) => `${i}`).map((_, i) => ({
          prefix: `10.${i >> 8}.${i & 255}.0`,
          prefixLength: 24,
          port: 'uplink-a',
          gateway: '198.18.0.254',
          connected: false,
        }))),
      `config.addresses[0].prefix_length: the ${L.routes + 1}th of the route prefixes (static routes and the connected routes of the addresses); the table holds ${L.routes}`,
    ],
    [
      `prefixes longer than /24 in ${L.routeTbl8Groups + 1} /24s`,
      (c) =>
        (c.routes = many(L.routeTbl8Groups + 1, (i) => `${i}`).map((_, i) => ({
          prefix: `10.${i >> 8}.${i & 255}.128`,
          prefixLength: 25,
          port: 'uplink-a',
          gateway: '198.18.0.254',
          connected: false,
        }))),
      `config.routes[${L.routeTbl8Groups}].prefix: the ${L.routeTbl8Groups + 1}th of the /24 blocks holding a prefix longer than /24; the table holds ${L.routeTbl8Groups}`,
    ],
  ])('refuses %s before changing anything, naming the first one too many', (_what, mutate, message) => {
    const c = doc();
    mutate(c);
    expect(problem(c)).toBe(message);
  });

  it('takes a document at every table size exactly', () => {
    const c = doc();
    c.localAddresses = many(L.lips, (i) => ip(10, 4096 + i)).map((address) => ({ address, port: 'uplink-b', portsInUse: 0n, portsTotal: 0n }));
    c.virtualServices = many(L.services, (i) => `${i}`).map((_, i) =>
      VirtualService.create({ protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.10', port: i + 1, scheduler: Scheduler.SCHEDULER_RR }),
    );
    expect(problem(c)).toBe('');
  });

  it('answers RESOURCE_EXHAUSTED for a table size, INVALID_ARGUMENT for a conflict', () => {
    const c = doc();
    c.localAddresses = many(L.lips + 1, (i) => ip(10, 4096 + i)).map((address) => ({ address, port: 'uplink-b', portsInUse: 0n, portsTotal: 0n }));
    expect(() => validateConfig(c, PORTS)).toThrow(StatusError);
    const d = doc();
    d.neighbors[0].address = '198.18.0.1';
    expect(() => validateConfig(d, PORTS)).toThrow(ValidationError);
  });

  it('rejects more than 1024 reals on one service', () => {
    const c = doc();
    c.virtualServices[0].reals = Array.from({ length: 1025 }, (_, i) => real(`10.2.${i >> 8}.${i & 255}`, 80, 1));
    expect(problem(c)).toBe('config.virtual_services[0].reals: at most 1024 reals, got 1025');
  });
});

describe('validateConfig: service limits', () => {
  it('names the bad limit field by its document path', () => {
    const c = doc();
    c.virtualServices[0].allow = ['10.0.0.0/8', '10.1.2.0/16'];
    expect(problem(c)).toBe('config.virtual_services[0].allow[1]: "10.1.2.0" has host bits set beyond /16');
    c.virtualServices[0].allow = [];
    c.virtualServices[1].deny = ['10.0.0.0/33'];
    expect(problem(c)).toBe('config.virtual_services[1].deny[0]: "10.0.0.0/33": prefix length 33 is more than 32');
  });

  it('refuses max_conns beyond the conn table, when its size is known', () => {
    const c = doc();
    c.virtualServices[0].maxConns = 5000;
    expect(() => validateConfig(c, PORTS, undefined, 4096)).toThrow(
      'config.virtual_services[0].max_conns: 5000 is more than the conn table holds (4096); 0 = no limit',
    );
    expect(validateConfig(c, PORTS, undefined, 5000).services[0].limits).toEqual({ maxConns: 5000, allow: [], deny: [], connRate: 0, connBurst: 0 });
  });
});

const hc = (over: Partial<HealthCheck> = {}): HealthCheck => ({
  ...HealthCheck.create(),
  kind: HealthCheckKind.HEALTH_CHECK_KIND_HTTP,
  intervalMs: 1000,
  timeoutMs: 500,
  rise: 2,
  fall: 3,
  httpPath: '/healthz',
  ...over,
});

describe('validateConfig: health checks', () => {
  const withCheck = (i: number, h: HealthCheck) => {
    const c = doc();
    c.virtualServices[i].healthCheck = h;
    return c;
  };

  it('accepts a valid check of every kind and returns it in dataplane terms', () => {
    expect(validateConfig(withCheck(0, hc()), PORTS).services[0].healthCheck).toEqual({
      kind: 'http',
      intervalMs: 1000,
      timeoutMs: 500,
      rise: 2,
      fall: 3,
      port: 0,
      httpPath: '/healthz',
      httpStatus: 0,
      grpcService: '',
      udpPayload: new Uint8Array(),
      udpExpect: new Uint8Array(),
      closeConns: false,
    });
    const kinds = [
      hc({ kind: HealthCheckKind.HEALTH_CHECK_KIND_TCP, httpPath: '' }),
      hc({ kind: HealthCheckKind.HEALTH_CHECK_KIND_GRPC, httpPath: '', grpcService: 'backend' }),
      hc({ kind: HealthCheckKind.HEALTH_CHECK_KIND_ICMP, httpPath: '', closeConns: true }),
    ];
    for (const k of kinds) expect(problem(withCheck(0, k))).toBe('');
    expect(
      problem(withCheck(1, hc({ kind: HealthCheckKind.HEALTH_CHECK_KIND_UDP, httpPath: '', udpPayload: Buffer.from('q'), udpExpect: Buffer.from('a') }))),
    ).toBe('');
  });

  it('names the bad field: interval 0, a path without /, an unknown kind, timeout over interval, ...', () => {
    const at = 'config.virtual_services[0].health_check';
    expect(problem(withCheck(0, hc({ intervalMs: 0 })))).toBe(`${at}.interval_ms: required: 100..3600000`);
    expect(problem(withCheck(0, hc({ httpPath: 'healthz' })))).toBe(`${at}.http_path: "healthz" does not start with "/"`);
    expect(problem(withCheck(0, hc({ kind: 9 as HealthCheckKind })))).toBe(`${at}.kind: unknown kind 9`);
    expect(problem(withCheck(0, hc({ kind: HealthCheckKind.HEALTH_CHECK_KIND_UNSPECIFIED }))).startsWith(`${at}.kind: required`)).toBe(true);
    expect(problem(withCheck(0, hc({ timeoutMs: 1001 })))).toBe(
      `${at}.timeout_ms: 1001 is more than interval_ms (1000): a probe must end before the next starts`,
    );
    expect(problem(withCheck(0, hc({ timeoutMs: 0 })))).toBe(`${at}.timeout_ms: required: 1..interval_ms (1000)`);
    expect(problem(withCheck(0, hc({ rise: 0 }))).startsWith(`${at}.rise: `)).toBe(true);
    expect(problem(withCheck(0, hc({ fall: 101 }))).startsWith(`${at}.fall: `)).toBe(true);
    expect(problem(withCheck(0, hc({ httpPath: '' })))).toBe(`${at}.http_path: required for HTTP checks, e.g. "/healthz"`);
    expect(problem(withCheck(0, hc({ httpStatus: 700 }))).startsWith(`${at}.http_status: `)).toBe(true);
    expect(problem(withCheck(0, hc({ kind: HealthCheckKind.HEALTH_CHECK_KIND_TCP })))).toBe(`${at}.http_path: only for HTTP checks (this one is TCP)`);
    expect(problem(withCheck(0, hc({ kind: HealthCheckKind.HEALTH_CHECK_KIND_ICMP, httpPath: '', port: 80 })))).toBe(`${at}.port: must be 0 for ICMP checks`);
  });

  it('plans an update when the check is added, changed or removed, and nothing when it is the same', () => {
    const d = validateConfig(withCheck(0, hc()), PORTS);
    const plain = validateConfig(doc(), PORTS);
    const add = planConfig(stateOf(plain), d);
    expect(add).toEqual([expect.objectContaining({ op: 'updateService', healthCheck: d.services[0].healthCheck })]);
    expect(planConfig(stateOf(d), validateConfig(withCheck(0, hc()), PORTS))).toEqual([]);
    expect(planConfig(stateOf(d), validateConfig(withCheck(0, hc({ fall: 4 })), PORTS))).toEqual([
      expect.objectContaining({ op: 'updateService', healthCheck: expect.objectContaining({ fall: 4 }) }),
    ]);
    expect(planConfig(stateOf(d), plain)).toEqual([expect.objectContaining({ op: 'updateService', healthCheck: null })]);
    // A new service gets its check with the service itself.
    expect(planConfig(EMPTY, d).find((st) => st.op === 'addService')).toMatchObject({ service: { healthCheck: d.services[0].healthCheck } });
  });

  it('GetConfig shows the check in the shape ApplyConfig takes (a round trip plans nothing)', () => {
    const d = validateConfig(withCheck(1, hc({ kind: HealthCheckKind.HEALTH_CHECK_KIND_UDP, httpPath: '', udpPayload: Buffer.from([0, 1]) })), PORTS);
    const msg = toConfigMessage(stateOf(d));
    expect(msg.virtualServices[1].healthCheck).toMatchObject({ kind: HealthCheckKind.HEALTH_CHECK_KIND_UDP, udpPayload: Buffer.from([0, 1]) });
    expect(msg.virtualServices[0].healthCheck).toBeUndefined();
    expect(planConfig(stateOf(d), validateConfig(msg, PORTS))).toEqual([]);
  });
});

describe('planConfig', () => {
  const desired = () => validateConfig(doc(), PORTS);

  it('creates everything from empty, dependencies first', () => {
    const steps = planConfig(EMPTY, desired());
    expect(ops(steps)).toEqual(['addRoute', 'addAddress', 'addNeighbor', 'addLocalAddress', 'addService', 'setReals', 'addService', 'setReals']);
    const diff = foldChanges(steps.flatMap((s) => s.changes));
    expect(diff.virtualServices).toEqual({
      created: ['tcp/198.18.0.10:80', 'udp/198.18.0.10:53'],
      updated: [],
      deleted: [],
      createdCount: 2,
      updatedCount: 0,
      deletedCount: 0,
    });
    expect(diff.reals!.created).toEqual(['tcp/198.18.0.10:80 10.1.0.11:8080', 'tcp/198.18.0.10:80 10.1.0.12:8080', 'udp/198.18.0.10:53 10.1.0.11:53']);
  });

  it('plans nothing when the state already matches (idempotent)', () => {
    const d = desired();
    expect(planConfig(stateOf(d), d)).toEqual([]);
  });

  it('ignores the order of reals', () => {
    const d = desired();
    const state = stateOf(d);
    state.services[0].reals = [...state.services[0].reals].reverse();
    expect(planConfig(state, d)).toEqual([]);
  });

  it('sets the reals of only the service whose reals changed', () => {
    const d = desired();
    const state = stateOf(desired());
    d.services[0].reals[0].weight = 5;
    const steps = planConfig(state, d);
    expect(steps).toEqual([
      {
        op: 'setReals',
        key: { protocol: 'tcp', vip: '198.18.0.10', port: 80 },
        reals: d.services[0].reals,
        changes: [['reals', 'updated', 'tcp/198.18.0.10:80 10.1.0.12:8080']],
      },
    ]);
  });

  it('updates the scheduler without touching the reals', () => {
    const d = desired();
    const state = stateOf(desired());
    d.services[1].seed = 8;
    expect(ops(planConfig(state, d))).toEqual(['updateService']);
  });

  it('updates a service whose limits changed, with the whole new limits, and nothing when they match', () => {
    const d = desired();
    const state = stateOf(desired());
    d.services[0].limits = { maxConns: 10, allow: [], deny: ['10.9.0.0/16'], connRate: 0, connBurst: 0 };
    const steps = planConfig(state, d);
    expect(steps).toEqual([
      {
        op: 'updateService',
        key: { protocol: 'tcp', vip: '198.18.0.10', port: 80 },
        scheduler: 'wrr',
        seed: 0,
        limits: { maxConns: 10, allow: [], deny: ['10.9.0.0/16'], connRate: 0, connBurst: 0 },
        healthCheck: null,
        clientAddress: 'none',
        synProxy: { mode: 'off', threshold: 0 },
        changes: [['virtualServices', 'updated', 'tcp/198.18.0.10:80']],
      },
    ]);
    expect(planConfig(stateOf(d), d)).toEqual([]);
    // A state without limits read as undefined equals a document with none.
    const bare = stateOf(desired());
    bare.services[0].limits = undefined;
    expect(planConfig(bare, desired())).toEqual([]);
  });

  it('updates a service whose SYN proxy changed, and nothing when it matches (unset = off)', () => {
    const d = desired();
    const state = stateOf(desired());
    d.services[0].synProxy = { mode: 'auto', threshold: 2000 };
    expect(planConfig(state, d)).toEqual([
      {
        op: 'updateService',
        key: { protocol: 'tcp', vip: '198.18.0.10', port: 80 },
        scheduler: 'wrr',
        seed: 0,
        limits: { maxConns: 0, allow: [], deny: [], connRate: 0, connBurst: 0 },
        healthCheck: null,
        clientAddress: 'none',
        synProxy: { mode: 'auto', threshold: 2000 },
        changes: [['virtualServices', 'updated', 'tcp/198.18.0.10:80']],
      },
    ]);
    expect(planConfig(stateOf(d), d)).toEqual([]);
    const bare = stateOf(desired());
    bare.services[0].synProxy = undefined;
    expect(planConfig(bare, desired())).toEqual([]);
  });

  it('updates a service whose client-address mode changed, and nothing when it matches (unset = none)', () => {
    const d = desired();
    const state = stateOf(desired());
    d.services[0].clientAddress = 'proxy_v2';
    const steps = planConfig(state, d);
    expect(steps.map((s) => (s.op === 'updateService' ? [s.op, s.clientAddress, s.changes] : [s.op]))).toEqual([
      ['updateService', 'proxy_v2', [['virtualServices', 'updated', 'tcp/198.18.0.10:80']]],
    ]);
    expect(planConfig(stateOf(d), d)).toEqual([]);
    const bare = stateOf(desired());
    bare.services[0].clientAddress = undefined;
    expect(planConfig(bare, desired())).toEqual([]);
  });

  it('reads client_address from a document and refuses a mode the protocol cannot carry, naming the field', () => {
    const c = doc();
    c.virtualServices[0].clientAddress = ClientAddressMode.CLIENT_ADDRESS_MODE_TOA;
    expect(validateConfig(c, PORTS).services[0].clientAddress).toBe('toa');
    c.virtualServices[1].clientAddress = ClientAddressMode.CLIENT_ADDRESS_MODE_TOA;
    expect(problem(c)).toBe('config.virtual_services[1].client_address: TOA is for TCP services only (UDP services take PROXY protocol v2)');
  });

  it('deletes what is gone before creating what is new, so an address can change role', () => {
    const d = desired();
    const state = stateOf(desired());
    // The port address becomes a local address.
    d.addresses = [];
    d.localAddresses.push({ address: '198.18.0.1', port: 'uplink-a' });
    d.services.pop();
    const steps = planConfig(state, d);
    expect(ops(steps)).toEqual(['deleteService', 'deleteAddress', 'addLocalAddress']);
    const diff = foldChanges(steps.flatMap((s) => s.changes));
    expect(diff.virtualServices!.deleted).toEqual(['udp/198.18.0.10:53']);
    expect(diff.reals!.deleted).toEqual(['udp/198.18.0.10:53 10.1.0.11:53']);
    expect(diff.addresses!.deleted).toEqual(['198.18.0.1']);
    expect(diff.localAddresses!.created).toEqual(['198.18.0.1']);
  });

  it('re-creates a changed address and route, reported as updated', () => {
    const d = desired();
    const state = stateOf(desired());
    d.addresses[0].prefixLength = 16;
    d.routes[0].gateway = '198.18.0.253';
    const steps = planConfig(state, d);
    expect(ops(steps)).toEqual(['deleteRoute', 'deleteAddress', 'addRoute', 'addAddress']);
    const diff = foldChanges(steps.flatMap((s) => s.changes));
    expect(diff.addresses).toEqual({ created: [], updated: ['198.18.0.1'], deleted: [], createdCount: 0, updatedCount: 1, deletedCount: 0 });
    expect(diff.routes).toEqual({ created: [], updated: ['0.0.0.0/0'], deleted: [], createdCount: 0, updatedCount: 1, deletedCount: 0 });
  });

  it('replaces a changed neighbour in place', () => {
    const d = desired();
    const state = stateOf(desired());
    d.neighbors[0].mac = '02:00:00:00:00:fd';
    expect(planConfig(state, d).map((s) => [s.op, s.changes])).toEqual([['addNeighbor', [['neighbors', 'updated', '198.18.0.254']]]]);
  });

  it('switches only the protocols whose symmetric mode differs, and leaves it alone when unset', () => {
    const d = desired();
    const state = stateOf(desired());
    expect(planConfig(state, d)).toEqual([]);
    d.symmetric = { tcp: true, udp: false, icmp: true };
    expect(planConfig(state, d).map((s) => s.op === 'setSymmetric' && [s.protocol, s.enabled])).toEqual([['udp', false]]);
  });

  it('sets only the timeouts that differ', () => {
    const d = desired();
    d.timeouts = { udp: 300, tcpSyn: 20 };
    const steps = planConfig(stateOf(desired()), d);
    expect(steps).toEqual([{ op: 'setTimeouts', timeouts: { tcpSyn: 20 }, changes: [['timeouts', 'updated', 'tcp_syn']] }]);
  });
});

describe('foldChanges and summaries', () => {
  it('keeps a deletion whose re-creation never happened', () => {
    const d = foldChanges([['addresses', 'deleted', '10.0.0.1']]);
    expect(d.addresses).toEqual({ created: [], updated: [], deleted: ['10.0.0.1'], createdCount: 0, updatedCount: 0, deletedCount: 1 });
    expect(diffSize(d)).toBe(1);
  });

  it('summarises per kind, or says nothing', () => {
    expect(summarizeDiff(foldChanges([]))).toBe('nothing');
    expect(
      summarizeDiff(
        foldChanges([
          ['reals', 'created', 'a'],
          ['reals', 'deleted', 'b'],
          ['localAddresses', 'created', 'c'],
        ]),
      ),
    ).toBe('local_addresses: 1 created; reals: 1 created, 1 deleted');
  });
});

describe('realsDiff', () => {
  it('lists created, updated and deleted reals in canonical order', () => {
    const cur = [
      { address: '10.0.0.2', port: 80, weight: 1 },
      { address: '10.0.0.10', port: 80, weight: 1 },
    ];
    const want = [
      { address: '10.0.0.10', port: 80, weight: 3 },
      { address: '10.0.0.9', port: 80, weight: 1 },
    ];
    expect(realsDiff('s', cur, want)).toEqual([
      ['reals', 'created', 's 10.0.0.9:80'],
      ['reals', 'updated', 's 10.0.0.10:80'],
      ['reals', 'deleted', 's 10.0.0.2:80'],
    ]);
  });
});

describe('restoreWeights', () => {
  const live = [
    { address: '10.0.0.1', port: 80, weight: 0 },
    { address: '10.0.0.2', port: 80, weight: 0 },
    { address: '10.0.0.3', port: 80, weight: 4 },
  ];

  it('gives drained reals their remembered weight and keeps weights set since', () => {
    const mem = new Map([
      ['10.0.0.1:80', 2],
      ['10.0.0.3:80', 1],
    ]);
    expect(restoreWeights(live, mem).map((r) => r.weight)).toEqual([2, 0, 4]);
  });

  it('changes nothing without a memory', () => {
    expect(restoreWeights(live, undefined)).toEqual(live);
  });
});
