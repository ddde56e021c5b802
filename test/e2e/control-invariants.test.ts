/**
 * Issue 18 against a real `retrace serve` child with a state file (two net_ring ports):
 *   - every reproduction of the correctness items, each a regression test;
 *   - a property test: seeded random sequences of unary calls, each followed by GetConfig ->
 *     ApplyConfig(dry_run) answering OK with an empty diff (the state a unary call accepts is one
 *     ApplyConfig accepts) and, on a refused call, GetConfig unchanged; every RESTART_EVERY steps
 *     a SIGTERM and a start from the state file that must succeed with the same GetConfig.
 *
 * One file (over 500 lines): one appliance and its state file serve every item of issue 18 and
 * the property test; splitting would start it once per file.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import YAML from 'yaml';
import { ClientAddressMode, Real, VirtualService } from '../../src/gen/retrace/v1/balancer';
import { Config, ConfigDiff } from '../../src/gen/retrace/v1/config';
import { PathServiceClient } from '../../src/gen/retrace/v1/path';
import { Protocol, Scheduler, SynProxyMode } from '../../src/gen/retrace/v1/types';
import { ApplianceProcess } from '../../src/lab/appliance';
import { APPLIED_METADATA_KEY } from '../../src/api/metadata';
import { runCli } from '../helpers/cli';
import { prng } from '../helpers/prng';
import { fails } from '../helpers/wait';

const PORTS = `
ports:
  - {name: p0, device: net_ring0, mac: "02:00:00:00:00:01"}
  - {name: p1, device: net_ring1, mac: "02:00:00:00:00:02"}
`;

/** GetConfig in a form comparable with toEqual (bigints as strings). */
const comparable = (c: unknown) => JSON.parse(JSON.stringify(c, (_k, v) => (typeof v === 'bigint' ? String(v) : v)));

/** Every created/updated/deleted key of a diff, flattened ([] = no change). */
function changes(d: ConfigDiff | undefined): string[] {
  const out: string[] = [];
  for (const [kind, c] of Object.entries(d ?? {})) {
    if (typeof c !== 'object' || c === null) continue;
    for (const what of ['created', 'updated', 'deleted'] as const) for (const k of (c as Record<string, string[]>)[what]) out.push(`${kind} ${what} ${k}`);
  }
  return out;
}

const empty = (): Config => ({ addresses: [], routes: [], neighbors: [], localAddresses: [], virtualServices: [], symmetric: undefined, timeouts: undefined });

describe('issue 18 on a real appliance with a state file', () => {
  const dir = fs.mkdtempSync('/tmp/retrace-inv-');
  const stateFile = path.join(dir, 'state.json');
  const yaml = `eal: {memory_mb: 192}\ndataplane: {mbufs: 2047, max_conns: 4096}\nstate: {file: ${stateFile}}\n${PORTS}`;
  const all: ApplianceProcess[] = [];
  let app: ApplianceProcess;

  const start = async () => {
    app = new ApplianceProcess();
    all.push(app);
    app.start(yaml);
    await app.waitServing().catch((e) => {
      // A drained appliance stays NOT_SERVING; it answers, which is what the tests need.
      if (!/NOT_SERVING/.test(String(e))) throw e;
    });
  };
  const getConfig = async () => comparable(await app.api.config.getConfig({}));
  /** SIGTERM, start again from the state file, and the same GetConfig. */
  const restart = async () => {
    const before = await getConfig();
    await new Promise((r) => setTimeout(r, 50)); // the save runs on the next turn of the loop
    const st = await app.stop();
    expect(st.code).toBe(0);
    await start();
    expect(await getConfig()).toEqual(before);
  };
  /** The invariant: what GetConfig returns is a document ApplyConfig takes as it is. */
  const noOpDryRun = async () => {
    const cfg = (await app.api.config.getConfig({})).config;
    const res = await app.api.config.applyConfig({ config: cfg, dryRun: true });
    return changes(res.diff);
  };

  beforeAll(() => start(), 60000);
  afterAll(async () => {
    for (const a of all) await a.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('item 1: a unary call never saves a state the restore refuses', () => {
    it('refuses CreateVirtualService on a port address or a local address, and restarts', async () => {
      await app.api.network.createAddress({ address: { address: '198.18.0.1', prefixLength: 24, port: 'p0' } });
      await app.api.balancer.createLocalAddress({ localAddress: { address: '10.1.0.1', port: 'p1', portsInUse: 0n, portsTotal: 0n } });
      const before = await getConfig();
      await fails(
        app.api.balancer.createVirtualService({
          virtualService: VirtualService.create({ protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.1', port: 443, scheduler: Scheduler.SCHEDULER_RR }),
        }),
        grpc.status.ALREADY_EXISTS,
        'virtual_service.vip: "198.18.0.1" is also the port address 198.18.0.1/24 on p0',
      );
      await fails(
        app.api.balancer.createVirtualService({
          virtualService: VirtualService.create({ protocol: Protocol.PROTOCOL_UDP, vip: '10.1.0.1', port: 53, scheduler: Scheduler.SCHEDULER_RR }),
        }),
        grpc.status.ALREADY_EXISTS,
        'virtual_service.vip: "10.1.0.1" is also the local address 10.1.0.1',
      );
      expect(await getConfig()).toEqual(before);
      expect(await noOpDryRun()).toEqual([]);
      await restart();
    }, 60000);
  });

  describe('item 6: ApplyConfig validates the whole document first', () => {
    it("applies a static route on an address's own connected prefix whatever exists already", async () => {
      // The address exists (item 1's test); the route is new. It failed midway with ALREADY_EXISTS.
      const cfg = (await app.api.config.getConfig({})).config!;
      cfg.routes.push({ prefix: '198.18.0.0', prefixLength: 24, port: 'p1', gateway: '', connected: false });
      const res = await app.api.config.applyConfig({ config: cfg, dryRun: false });
      expect(changes(res.diff)).toEqual(['routes created 198.18.0.0/24']);
      const routes = (await app.api.network.listRoutes({})).routes.filter((r) => r.prefix === '198.18.0.0');
      expect(routes).toEqual([expect.objectContaining({ port: 'p1', connected: false })]);
      expect(await noOpDryRun()).toEqual([]);
      await restart();
    }, 60000);

    it('refuses 65 local addresses with RESOURCE_EXHAUSTED before creating any', async () => {
      const before = await getConfig();
      const cfg = (await app.api.config.getConfig({})).config!;
      cfg.localAddresses = Array.from({ length: 65 }, (_, i) => ({ address: `10.2.0.${i + 1}`, port: 'p1', portsInUse: 0n, portsTotal: 0n }));
      cfg.virtualServices = [VirtualService.create({ protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.10', port: 80, scheduler: Scheduler.SCHEDULER_RR })];
      await fails(
        app.api.config.applyConfig({ config: cfg, dryRun: false }),
        grpc.status.RESOURCE_EXHAUSTED,
        'config.local_addresses[64].address: the 65th of the local addresses (LIPs); the table holds 64',
      );
      expect(await getConfig()).toEqual(before);
    });

    it('refuses a static neighbour for a vip of the same document, changing nothing', async () => {
      const before = await getConfig();
      const cfg = (await app.api.config.getConfig({})).config!;
      cfg.virtualServices = [VirtualService.create({ protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.10', port: 80, scheduler: Scheduler.SCHEDULER_RR })];
      cfg.neighbors = [{ address: '198.18.0.10', mac: '02:00:00:00:00:09', port: 'p0', static: false, ageSeconds: 0 }];
      await fails(
        app.api.config.applyConfig({ config: cfg, dryRun: false }),
        grpc.status.INVALID_ARGUMENT,
        /^config\.neighbors\[0\]\.address: "198\.18\.0\.10" is also config\.virtual_services\[0\]\.vip/,
      );
      expect(await getConfig()).toEqual(before);
    });
  });

  describe('item 4: statuses every client can read', () => {
    it('prints RESOURCE_EXHAUSTED for `retrace apply -f` with 5000 services, quickly, applying nothing', async () => {
      const before = await getConfig();
      const cfg = Config.toJSON((await app.api.config.getConfig({})).config!) as Record<string, unknown>;
      cfg.virtualServices = Array.from({ length: 5000 }, (_, i) => ({
        protocol: 'tcp',
        vip: '198.18.0.10',
        port: i + 1,
        scheduler: 'rr',
        reals: [{ address: '10.1.0.11', port: 8080, weight: 1 }],
      }));
      const file = path.join(dir, 'big.yaml');
      fs.writeFileSync(file, YAML.stringify(cfg));
      const r = await runCli(['apply', '-f', file, '--server', app.address]);
      expect([r.code, r.stderr]).toEqual([
        1,
        'retrace: RESOURCE_EXHAUSTED: config.virtual_services[4096].vip: the 4097th of the virtual services; the table holds 4096\n',
      ]);
      expect(await getConfig()).toEqual(before);
    }, 60000);

    it('answers a call with a 100 kB value with a short INVALID_ARGUMENT a grpc-js client reads', async () => {
      const big = '1'.repeat(100000);
      await fails(
        app.api.network.createAddress({ address: { address: big, prefixLength: 24, port: 'p0' } }, 5000),
        grpc.status.INVALID_ARGUMENT,
        `address.address: "${'1'.repeat(64)}..." (100000 characters) is not a dotted-quad IPv4 address`,
      );
      await fails(
        app.api.network.createAddress({ address: { address: '10.3.0.1', prefixLength: 24, port: 'q'.repeat(100000) } }, 5000),
        grpc.status.NOT_FOUND,
        `no port named "${'q'.repeat(64)}..." (100000 characters)`,
      );
    });
  });

  describe('item 8: smaller defects', () => {
    it('answers malformed request bytes with INVALID_ARGUMENT naming the message, not INTERNAL', async () => {
      const Raw = grpc.makeGenericClientConstructor(
        {
          createAddress: {
            path: '/retrace.v1.NetworkService/CreateAddress',
            requestStream: false,
            responseStream: false,
            requestSerialize: (b: Buffer) => b,
            requestDeserialize: (b: Buffer) => b,
            responseSerialize: (b: Buffer) => b,
            responseDeserialize: (b: Buffer) => b,
          },
          check: {
            path: '/grpc.health.v1.Health/Check',
            requestStream: false,
            responseStream: false,
            requestSerialize: (b: Buffer) => b,
            requestDeserialize: (b: Buffer) => b,
            responseSerialize: (b: Buffer) => b,
            responseDeserialize: (b: Buffer) => b,
          },
          watchConnEvents: {
            path: '/retrace.v1.ConnService/WatchConnEvents',
            requestStream: false,
            responseStream: true,
            requestSerialize: (b: Buffer) => b,
            requestDeserialize: (b: Buffer) => b,
            responseSerialize: (b: Buffer) => b,
            responseDeserialize: (b: Buffer) => b,
          },
        },
        'Raw',
      );
      const raw = new Raw(app.address, grpc.credentials.createInsecure());
      try {
        // Field 1, length-delimited, claiming 100 bytes of which 2 follow.
        const err = await new Promise<grpc.ServiceError>((resolve) =>
          raw.createAddress(Buffer.from([0x0a, 0x64, 0x01, 0x02]), (e: grpc.ServiceError) => resolve(e)),
        );
        expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
        expect(err.details).toMatch(/^request: not a valid retrace\.v1\.CreateAddressRequest message/);
        // Health too.
        const herr = await new Promise<grpc.ServiceError>((resolve) => raw.check(Buffer.from([0x0f]), (e: grpc.ServiceError) => resolve(e)));
        expect([herr.code, herr.details]).toEqual([
          grpc.status.INVALID_ARGUMENT,
          expect.stringMatching(/^request: not a valid request of \/grpc\.health\.v1\.Health\/Check/),
        ]);
        // A server stream ends with the same status before its handler runs. Wire type 7 is no type.
        const stream = raw.watchConnEvents(Buffer.from([0x0f]));
        const serr = await new Promise<grpc.ServiceError>((resolve) => {
          stream.on('data', () => undefined);
          stream.on('error', resolve);
        });
        expect([serr.code, serr.details]).toEqual([
          grpc.status.INVALID_ARGUMENT,
          expect.stringMatching(/^request: not a valid retrace\.v1\.WatchConnEventsRequest message/),
        ]);
      } finally {
        raw.close();
      }
    });

    it('refuses a WatchCounters interval whose nanos is 1e9 or more, naming the field', async () => {
      const client = new PathServiceClient(app.address, grpc.credentials.createInsecure());
      try {
        for (const [nanos, seconds] of [
          [1_000_000_000, 0n],
          [-5, 1n],
        ] as const) {
          const stream = client.watchCounters({ interval: { seconds, nanos }, count: 1 });
          const err = await new Promise<grpc.ServiceError>((resolve) => {
            stream.on('data', () => undefined);
            stream.on('error', resolve);
          });
          expect([err.code, err.details]).toEqual([grpc.status.INVALID_ARGUMENT, `interval.nanos: must be 0..999999999, got ${nanos}`]);
        }
      } finally {
        client.close();
      }
    });

    it('answers more than 1024 reals with INVALID_ARGUMENT on reals', async () => {
      await app.api.balancer.createVirtualService({
        virtualService: VirtualService.create({ protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.20', port: 80, scheduler: Scheduler.SCHEDULER_RR }),
      });
      const reals = Array.from({ length: 1025 }, (_, i) => Real.create({ address: `10.4.${i >> 8}.${i & 255}`, port: 80, weight: 1 }));
      await fails(
        app.api.balancer.setReals({ key: { protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.20', port: 80 }, reals }),
        grpc.status.INVALID_ARGUMENT,
        'reals: at most 1024 reals, got 1025',
      );
      await app.api.balancer.deleteVirtualService({ key: { protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.20', port: 80 } });
    });

    it.each([
      [
        'the broadcast address as a port address',
        () => app.api.network.createAddress({ address: { address: '255.255.255.255', prefixLength: 32, port: 'p0' } }),
        'address.address: "255.255.255.255" is the broadcast address',
      ],
      [
        'a multicast port address',
        () => app.api.network.createAddress({ address: { address: '224.0.0.1', prefixLength: 32, port: 'p0' } }),
        'address.address: "224.0.0.1" is a multicast address',
      ],
      [
        'a multicast vip',
        () =>
          app.api.balancer.createVirtualService({
            virtualService: VirtualService.create({ protocol: Protocol.PROTOCOL_TCP, vip: '224.0.0.1', port: 80, scheduler: Scheduler.SCHEDULER_RR }),
          }),
        'virtual_service.vip: "224.0.0.1" is a multicast address',
      ],
      [
        'a broadcast local address',
        () => app.api.balancer.createLocalAddress({ localAddress: { address: '255.255.255.255', port: 'p1', portsInUse: 0n, portsTotal: 0n } }),
        'local_address.address: "255.255.255.255" is the broadcast address',
      ],
    ])('refuses %s', async (_what, call, details) => {
      const before = await getConfig();
      await fails(call(), grpc.status.INVALID_ARGUMENT, details);
      expect(await getConfig()).toEqual(before);
    });

    it("refuses a static neighbour for the appliance's own address", async () => {
      await fails(
        app.api.network.createNeighbor({ neighbor: { address: '198.18.0.1', mac: '02:00:00:00:00:09', port: 'p0', static: false, ageSeconds: 0 } }),
        grpc.status.ALREADY_EXISTS,
        'neighbor.address: "198.18.0.1" is also the port address 198.18.0.1/24 on p0',
      );
    });

    it('exits 2 with the key path for a weight of 1.5 or -5 in `retrace apply`', async () => {
      for (const w of [1.5, -5]) {
        const file = path.join(dir, 'weight.yaml');
        fs.writeFileSync(
          file,
          YAML.stringify({
            virtualServices: [{ protocol: 'tcp', vip: '198.18.0.10', port: 80, scheduler: 'rr', reals: [{ address: '10.1.0.11', port: 80, weight: w }] }],
          }),
        );
        const r = await runCli(['apply', '-f', file, '--server', app.address]);
        expect([r.code, r.stderr]).toEqual([2, `retrace: ${file}: virtual_services[0].reals[0].weight: expected a whole number 0..4294967295, got ${w}\n`]);
      }
    });
  });

  describe('property: random unary calls keep a state that ApplyConfig and a restart accept', () => {
    const STEPS = 240;
    const RESTART_EVERY = 60;
    const rnd = prng(18);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
    // Small pools, so that calls collide: the same address in several roles, routes on the
    // addresses' subnets, neighbours on the appliance's own addresses, tables filled.
    const ADDRS = ['10.0.0.1', '10.0.0.2', '10.0.1.1', '198.18.0.1', '198.18.0.2', '198.18.0.10', '10.1.0.1', '10.1.0.2', '10.1.0.3'];
    const PLENS = [24, 30, 32];
    const PREFIXES: [string, number][] = [
      ['0.0.0.0', 0],
      ['10.0.0.0', 24],
      ['10.0.1.0', 24],
      ['198.18.0.0', 24],
      ['172.16.0.0', 12],
      ['10.0.0.0', 30],
      ['198.18.0.10', 32],
    ];
    const GATEWAYS = ['', '10.0.0.254', '198.18.0.254', '10.0.0.1'];
    const MACS = ['02:00:00:00:00:0a', '02:00:00:00:00:0b'];
    const PORT_NAMES = ['p0', 'p1'];
    const PROTOS = [Protocol.PROTOCOL_TCP, Protocol.PROTOCOL_UDP, Protocol.PROTOCOL_ICMP];
    const SCHEDS = [Scheduler.SCHEDULER_RR, Scheduler.SCHEDULER_WRR, Scheduler.SCHEDULER_WLC, Scheduler.SCHEDULER_MAGLEV];
    const key = () => {
      const protocol = pick(PROTOS);
      return { protocol, vip: pick(ADDRS), port: protocol === Protocol.PROTOCOL_ICMP ? 0 : pick([80, 443]) };
    };
    const reals = (protocol: Protocol) =>
      Array.from({ length: Math.floor(rnd() * 4) }, (_, i) =>
        Real.create({ address: `10.5.0.${i + 1}`, port: protocol === Protocol.PROTOCOL_ICMP ? 0 : 8080, weight: Math.floor(rnd() * 3) }),
      );

    // Service limits, in no particular order and with repeats: GetConfig answers them canonical,
    // and the round trip must still be a no-op.
    const LIMIT_PREFIXES = ['10.0.0.0/16', '10.0.0.0/8', '198.18.0.0/24', '198.18.0.2/32', '0.0.0.0/0', '10.0.0.0/8'];
    const limits = () => ({
      maxConns: pick([0, 0, 1, 100]),
      allow: LIMIT_PREFIXES.filter(() => rnd() < 0.3),
      deny: LIMIT_PREFIXES.filter(() => rnd() < 0.2).reverse(),
      ...(rnd() < 0.3 ? { connRate: pick([1, 50]), connBurst: pick([1, 10]) } : { connRate: 0, connBurst: 0 }),
    });

    // A SYN proxy on a UDP or ICMP service is refused (INVALID_ARGUMENT): the draw includes that too.
    const synProxy = () =>
      pick([
        { mode: SynProxyMode.SYN_PROXY_MODE_OFF, threshold: 0 },
        { mode: SynProxyMode.SYN_PROXY_MODE_ON, threshold: 0 },
        { mode: SynProxyMode.SYN_PROXY_MODE_AUTO, threshold: pick([1, 5000]) },
      ]);
    // Client-address modes, those a protocol cannot carry included (refused, nothing changes).
    const MODES = [
      ClientAddressMode.CLIENT_ADDRESS_MODE_UNSPECIFIED,
      ClientAddressMode.CLIENT_ADDRESS_MODE_NONE,
      ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2,
      ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V1,
      ClientAddressMode.CLIENT_ADDRESS_MODE_TOA,
    ];

    /** One random call: its name and the promise of its answer. */
    const OPS: [string, () => Promise<unknown>][] = [
      ['CreateAddress', () => app.api.network.createAddress({ address: { address: pick(ADDRS), prefixLength: pick(PLENS), port: pick(PORT_NAMES) } })],
      ['DeleteAddress', () => app.api.network.deleteAddress({ address: pick(ADDRS) })],
      [
        'CreateRoute',
        () => {
          const [prefix, prefixLength] = pick(PREFIXES);
          return app.api.network.createRoute({ route: { prefix, prefixLength, port: pick(PORT_NAMES), gateway: pick(GATEWAYS), connected: false } });
        },
      ],
      [
        'DeleteRoute',
        () => {
          const [prefix, prefixLength] = pick(PREFIXES);
          return app.api.network.deleteRoute({ prefix, prefixLength });
        },
      ],
      [
        'CreateNeighbor',
        () => app.api.network.createNeighbor({ neighbor: { address: pick(ADDRS), mac: pick(MACS), port: pick(PORT_NAMES), static: false, ageSeconds: 0 } }),
      ],
      ['DeleteNeighbor', () => app.api.network.deleteNeighbor({ address: pick(ADDRS) })],
      [
        'CreateLocalAddress',
        () => app.api.balancer.createLocalAddress({ localAddress: { address: pick(ADDRS), port: pick(PORT_NAMES), portsInUse: 0n, portsTotal: 0n } }),
      ],
      ['DeleteLocalAddress', () => app.api.balancer.deleteLocalAddress({ address: pick(ADDRS) })],
      [
        'CreateVirtualService',
        () =>
          app.api.balancer.createVirtualService({
            virtualService: VirtualService.create({
              ...key(),
              scheduler: pick(SCHEDS),
              seed: Math.floor(rnd() * 3),
              ...limits(),
              clientAddress: pick(MODES),
              ...(rnd() < 0.5 ? {} : (({ mode, threshold }) => ({ synProxy: mode, synProxyThreshold: threshold }))(synProxy())),
            }),
          }),
      ],
      ['DeleteVirtualService', () => app.api.balancer.deleteVirtualService({ key: key() })],
      [
        'UpdateVirtualService',
        () =>
          app.api.balancer.updateVirtualService({
            key: key(),
            scheduler: pick(SCHEDS),
            seed: Math.floor(rnd() * 3),
            limits: rnd() < 0.5 ? undefined : limits(),
            healthCheck: undefined,
            removeHealthCheck: false,
            clientAddress: rnd() < 0.5 ? undefined : pick(MODES),
            synProxy: rnd() < 0.5 ? undefined : synProxy(),
          }),
      ],
      [
        'SetReals',
        () => {
          const k = key();
          return app.api.balancer.setReals({ key: k, reals: reals(k.protocol) });
        },
      ],
      ['SetTimeouts', () => app.api.balancer.setTimeouts({ timeouts: { udp: 1 + Math.floor(rnd() * 600) } })],
      ['SetSymmetricMode', () => app.api.path.setSymmetricMode({ protocol: pick(PROTOS), enabled: rnd() < 0.5 })],
      ['Drain', () => app.api.config.drain({})],
      ['Undrain', () => app.api.config.undrain({})],
    ];

    it(`holds over ${STEPS} calls with a restart every ${RESTART_EVERY}`, async () => {
      await app.api.config.applyConfig({ config: empty(), dryRun: false });
      const outcome = new Map<string, { ok: number; refused: Map<string, number> }>();
      for (let step = 1; step <= STEPS; step++) {
        const [name, call] = pick(OPS);
        const before = await getConfig();
        const o = outcome.get(name) ?? { ok: 0, refused: new Map() };
        outcome.set(name, o);
        try {
          await call();
          o.ok++;
        } catch (e) {
          const code = grpc.status[(e as grpc.ServiceError).code];
          // INTERNAL is a bug; UNKNOWN an unmapped throw.
          expect([step, name, code]).not.toEqual([step, name, expect.stringMatching(/^(INTERNAL|UNKNOWN|DEADLINE_EXCEEDED)$/)]);
          o.refused.set(code, (o.refused.get(code) ?? 0) + 1);
          // A refused call changes nothing.
          expect([step, name, await getConfig()]).toEqual([step, name, before]);
        }
        expect([step, name, await noOpDryRun()]).toEqual([step, name, []]);
        if (step % RESTART_EVERY === 0) await restart();
      }
      const summary = Object.fromEntries([...outcome].map(([n, o]) => [n, { ok: o.ok, refused: Object.fromEntries(o.refused) }]));
      // The run exercises both sides of the rules (a seed that did not would prove little).
      const refusedAlreadyExists = [...outcome.values()].reduce((n, o) => n + (o.refused.get('ALREADY_EXISTS') ?? 0), 0);
      const accepted = [...outcome.values()].reduce((n, o) => n + o.ok, 0);
      expect({ refusedAlreadyExists: refusedAlreadyExists > 10, accepted: accepted > STEPS / 3, summary }).toMatchObject({
        refusedAlreadyExists: true,
        accepted: true,
      });
    }, 150000);
  });
});

describe('issue 18 item 4: a failure midway keeps its status small', () => {
  // 96 MB of EAL memory runs out after a few dozen local addresses (each holds port pools of
  // 1.5 MB): a real failure midway, after thousands of routes were created.
  const app = new ApplianceProcess();
  beforeAll(async () => {
    app.start(`eal: {memory_mb: 96}\ndataplane: {mbufs: 1023, max_conns: 1024}\n${PORTS}`);
    await app.waitServing();
  }, 60000);
  afterAll(() => app.kill());

  const doc = (): Config => ({
    ...empty(),
    addresses: [{ address: '10.0.0.1', prefixLength: 24, port: 'p0' }],
    routes: Array.from({ length: 4000 }, (_, i) => ({
      prefix: `10.${100 + (i >> 8)}.${i & 255}.0`,
      prefixLength: 24,
      port: 'p0',
      gateway: '10.0.0.254',
      connected: false,
    })),
    localAddresses: Array.from({ length: 64 }, (_, i) => ({ address: `10.1.0.${i + 1}`, port: 'p1', portsInUse: 0n, portsTotal: 0n })),
  });

  it('answers RESOURCE_EXHAUSTED with counts and the first keys of what was applied', async () => {
    let err: grpc.ServiceError | undefined;
    await app.api.config.applyConfig({ config: doc(), dryRun: false }, 20000).catch((e: grpc.ServiceError) => (err = e));
    expect(err?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(err!.details).toMatch(
      /^creating local address 10\.1\.0\.\d+: .*out of memory.* \(applied before the failure: addresses: 1 created; routes: 4000 created; local_addresses: \d+ created\)$/,
    );
    const trailer = err!.metadata.get(APPLIED_METADATA_KEY)[0] as Buffer;
    expect(trailer.length).toBeLessThan(2048);
    const applied = ConfigDiff.decode(trailer);
    expect(applied.truncated).toBe(true);
    expect(applied.routes!.createdCount).toBe(4000);
    expect(applied.addresses!.created).toEqual(['10.0.0.1']);
    expect(applied.routes!.created.slice(0, 2)).toEqual(['10.100.0.0/24', '10.100.1.0/24']);
  }, 60000);

  it('prints it through `retrace apply` with what was left out', async () => {
    const file = path.join(app.dir, 'big.yaml');
    const d = doc();
    d.routes.pop(); // a change, so the routes are made again after the base document
    await app.api.config.applyConfig({ config: empty(), dryRun: false }, 20000);
    fs.writeFileSync(file, YAML.stringify(Config.toJSON(d)));
    const r = await runCli(['apply', '-f', file, '--server', app.address]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^retrace: RESOURCE_EXHAUSTED: creating local address 10\.1\.0\.\d+: .*out of memory.*\napplied before the failure:\naddresses:\n {2}\+ 10\.0\.0\.1\nroutes:\n {2}\+ 10\.100\.0\.0\/24\n/,
    );
    expect(r.stderr).toMatch(/\n {2}\+ \.\.\. 39\d\d more created \(not listed\)\n/);
  }, 60000);
});

describe('issue 18 item 5: state.file that cannot be saved stops start-up', () => {
  const dir = fs.mkdtempSync('/tmp/retrace-inv5-');
  const apps: ApplianceProcess[] = [];
  afterAll(async () => {
    for (const a of apps) await a.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const startWith = async (file: string) => {
    const a = new ApplianceProcess();
    apps.push(a);
    a.start(`eal: {memory_mb: 128}\ndataplane: {mbufs: 1023, max_conns: 1024}\nstate: {file: ${file}}\n${PORTS}`);
    return { code: await a.exitCode(), output: a.output };
  };

  it('exits 2 naming state.file when its directory does not exist', async () => {
    const r = await startWith(path.join(dir, 'missing', 'state.json'));
    expect(r.code).toBe(2);
    expect(r.output).toContain(`retrace: config: state.file: directory ${path.join(dir, 'missing')} does not exist`);
  }, 30000);

  it('exits 2 with a clear message when state.file is a directory', async () => {
    const r = await startWith(dir);
    expect(r.code).toBe(2);
    expect(r.output).toContain(`retrace: config: state.file: ${dir} is a directory; give the path of a file in it`);
  }, 30000);

  it('says what to do about a corrupt state file', async () => {
    const file = path.join(dir, 'state.json');
    fs.writeFileSync(file, '{"version": 1, "config": {');
    const r = await startWith(file);
    expect(r.code).toBe(2);
    expect(r.output).toContain(`retrace: state: ${file}: not valid JSON (`);
    expect(r.output).toContain(`fix the file, or move it aside (mv ${file} ${file}.bad) to start with an empty configuration`);
  }, 30000);
});
