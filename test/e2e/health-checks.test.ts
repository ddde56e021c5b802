/**
 * Active health checks in the namespace lab, end to end: the appliance's servers port has a
 * kernel interface (its own namespace, carrying the port's address 198.18.30.1), so every probe
 * leaves from the port address through the dataplane port, as the reals' traffic does. The reals'
 * servers are real processes in rs1..rs3 (the lab's kernel-socket echo server, Python's
 * http.server, a grpc-js grpc.health.v1 server), killed and started again one at a time; traffic
 * comes from kernel TCP/UDP clients in client-a. State is read back over gRPC, /metrics and the
 * WatchHealthEvents stream. No mocks.
 *
 * Bounds: a real must be DOWN within fall x interval plus one probe timeout and a margin for a
 * shared 2-core machine, and UP again within rise x interval plus the same; these are the
 * feature's definition, not speed targets.
 */
import type { ClientReadableStream } from '@grpc/grpc-js';
import { HealthServers, type HealthServer } from '../../src/lab/health-servers';
import { runCli } from '../helpers/cli';
import { LabScenario } from '../../src/lab/scenario';
import { LAB, labVip, REAL_SERVERS, type RealServer } from '../../src/lab/topology';
import { Real, VirtualService } from '../../src/gen/retrace/v1/balancer';
import { HealthCheck, HealthCheckKind, HealthState, type HealthEvent, type WatchHealthEventsResponse } from '../../src/gen/retrace/v1/health_check';
import { Protocol, Scheduler } from '../../src/gen/retrace/v1/types';

const SLACK_MS = 3000;
const INTERVAL = 300;
const TIMEOUT = 250;
const RISE = 2;
const FALL = 3;
const ECHO = 9000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => Promise<boolean>, ms: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await cond()) return Date.now() - t0;
    if (Date.now() - t0 > ms) throw new Error(`condition not met within ${ms} ms`);
    await sleep(50);
  }
}

const check = (over: Partial<HealthCheck>): HealthCheck => ({
  ...HealthCheck.create(),
  intervalMs: INTERVAL,
  timeoutMs: TIMEOUT,
  rise: RISE,
  fall: FALL,
  ...over,
});

describe('active health checks through the kernel interface (lab)', () => {
  let sc: LabScenario;
  let servers: HealthServers;
  let metricsUrl = '';
  const echo = new Map<RealServer, HealthServer>();
  /** Every WatchHealthEvents message since the suite started. */
  const events: HealthEvent[] = [];
  let stream: ClientReadableStream<WatchHealthEventsResponse>;

  const PB = { tcp: Protocol.PROTOCOL_TCP, udp: Protocol.PROTOCOL_UDP, icmp: Protocol.PROTOCOL_ICMP } as const;
  type Proto = keyof typeof PB;

  async function addChecked(proto: Proto, vip: string, port: number, hc: HealthCheck, realPort = port, scheduler = Scheduler.SCHEDULER_RR): Promise<void> {
    const { balancer } = sc.app.api;
    await balancer.createVirtualService({
      virtualService: VirtualService.create({ protocol: PB[proto], vip, port, scheduler, healthCheck: hc }),
    });
    await balancer.setReals({
      key: { protocol: PB[proto], vip, port },
      reals: REAL_SERVERS.map((rs) => Real.create({ address: LAB.rs[rs], port: realPort, weight: 1 })),
    });
  }

  const service = async (proto: Proto, vip: string, port: number): Promise<VirtualService> =>
    (await sc.app.api.balancer.getVirtualService({ key: { protocol: PB[proto], vip, port } })).virtualService!;
  const realOf = (s: VirtualService, rs: RealServer): Real => s.reals.find((r) => r.address === LAB.rs[rs])!;
  const healthOf = async (proto: Proto, vip: string, port: number, rs: RealServer) => realOf(await service(proto, vip, port), rs).health;
  const allUp = async (proto: Proto, vip: string, port: number) =>
    (await service(proto, vip, port)).reals.every((r) => r.health === HealthState.HEALTH_STATE_UP);
  const downBound = FALL * INTERVAL + TIMEOUT + SLACK_MS;
  const upBound = RISE * INTERVAL + TIMEOUT + SLACK_MS;

  const eventFor = (vip: string, rs: RealServer, to: HealthState) => events.find((e) => e.vip === vip && e.real === LAB.rs[rs] && e.to === to);

  beforeAll(async () => {
    sc = await LabScenario.start({ kernel: ['servers'], extraYaml: 'metrics:\n  listen: "127.0.0.1:0"\ntimeouts: {tcp_close: 2, tcp_fin: 2}' });
    const listening = sc.app.output.split('\n').find((l) => l.includes('metrics listening'));
    metricsUrl = `http://${JSON.parse(listening!).listen as string}/metrics`;
    servers = new HealthServers(sc.lab);
    for (const rs of REAL_SERVERS) echo.set(rs, await servers.start(rs, 'echo', ECHO));
    stream = sc.app.api.raw.healthChecks.watchHealthEvents({ initialState: false });
    stream.on('data', (m: WatchHealthEventsResponse) => {
      if (m.event) events.push(m.event);
      if (m.lost) throw new Error(`health events lost: ${JSON.stringify(m.lost)}`);
    });
    stream.on('error', () => undefined); // cancelled in afterAll
  }, 180000);

  afterAll(async () => {
    stream?.cancel();
    servers?.stop();
    await sc?.destroy();
  }, 60000);

  it('TCP: a killed real gets no new conns within fall x interval while the others carry on; back within rise x interval', async () => {
    const vip = labVip(60);
    // The same check on a wrr and a maglev service: their tables are rebuilt without the DOWN real.
    const others = [
      [labVip(70), Scheduler.SCHEDULER_WRR],
      [labVip(71), Scheduler.SCHEDULER_MAGLEV],
    ] as const;
    await addChecked('tcp', vip, ECHO, check({ kind: HealthCheckKind.HEALTH_CHECK_KIND_TCP }));
    for (const [v, sched] of others) await addChecked('tcp', v, ECHO, check({ kind: HealthCheckKind.HEALTH_CHECK_KIND_TCP }), ECHO, sched);
    await until(
      async () => (await allUp('tcp', vip, ECHO)) && (await allUp('tcp', others[0][0], ECHO)) && (await allUp('tcp', others[1][0], ECHO)),
      (RISE + 1) * INTERVAL + SLACK_MS + 2000,
    );
    // The probes came from the port address, through the dataplane: the kernel interface's own namespace holds the prober.
    expect(sc.app.output).toContain(`"netns":"${sc.kernelNamespace('servers')}"`);

    // Six conns held open across the failure: round robin puts two on each real.
    const held = sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 6, concurrency: 6, bytes: 64, rounds: 24, intervalMs: 250, timeoutMs: 20000 });
    await until(async () => (await service('tcp', vip, ECHO)).activeConns === 6n, 10000);

    await echo.get('rs2')!.kill();
    const tDown = await until(async () => (await healthOf('tcp', vip, ECHO, 'rs2')) === HealthState.HEALTH_STATE_DOWN, downBound);
    expect(tDown).toBeLessThanOrEqual(downBound);
    const s = await service('tcp', vip, ECHO);
    const rs2 = realOf(s, 'rs2');
    expect(rs2.weight).toBe(1); // the operator's weight stays
    expect(rs2.inhibited).toBe(true);
    expect(rs2.healthLastError).toMatch(/ECONNREFUSED|timeout/);
    expect(rs2.healthChangedAt).toBeInstanceOf(Date);

    // New conns: all succeed, none on rs2.
    const before = await service('tcp', vip, ECHO);
    const fresh = await sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 12, concurrency: 4, bytes: 64, timeoutMs: 5000 });
    expect(fresh.failures).toEqual([]);
    expect(fresh.ok).toBe(12);
    const after = await service('tcp', vip, ECHO);
    const delta = (rs: RealServer) => realOf(after, rs).connsTotal - realOf(before, rs).connsTotal;
    expect([delta('rs1'), delta('rs2'), delta('rs3')]).toEqual([6n, 0n, 6n]);
    for (const [v] of others) {
      await until(async () => (await healthOf('tcp', v, ECHO, 'rs2')) === HealthState.HEALTH_STATE_DOWN, downBound);
      const r = await sc.lab.tcpEcho('client-a', v, ECHO, { conns: 12, concurrency: 4, bytes: 64, timeoutMs: 5000 });
      expect(r.ok).toBe(12);
      const sv = await service('tcp', v, ECHO);
      expect(realOf(sv, 'rs2').connsTotal).toBe(0n);
      expect(realOf(sv, 'rs1').connsTotal + realOf(sv, 'rs3').connsTotal).toBe(12n);
    }

    // The held conns on rs1 and rs3 went on to the end; the two on rs2 died with its server.
    const h = await held;
    expect(h.ok).toBe(4);
    expect(h.failures).toHaveLength(2);

    // `retrace services`: the operator's weight and the verdict side by side, with the last error.
    const cli = await runCli(['services', '--server', sc.app.address]);
    expect(cli.code).toBe(0);
    const line = cli.stdout.split('\n').find((l) => l.includes(`${LAB.rs.rs2}:${ECHO}`) && l.includes('down'));
    expect(line).toMatch(
      new RegExp(
        `->\\s+${LAB.rs.rs2.replace(/\./g, '\\.')}:${ECHO}\\s+1\\s+\\d+\\s+\\d+\\s+down\\s+\\d{4}-\\d\\d-\\d\\dT[\\d:]+Z\\s+(connect ECONNREFUSED|timeout)`,
      ),
    );

    // The metric and the event.
    const text = await (await fetch(metricsUrl)).text();
    const labels = `protocol="tcp",vip="${vip}",vport="${ECHO}",real="${LAB.rs.rs2}:${ECHO}"`;
    expect(text).toContain(`retrace_real_health{${labels},state="down"} 1`);
    expect(text).toContain(`retrace_real_health{${labels},state="up"} 0`);
    expect(text).toContain(`retrace_real_health_transitions_total{${labels}} 2`);
    await until(async () => eventFor(vip, 'rs2', HealthState.HEALTH_STATE_DOWN) !== undefined, 2000);
    const down = eventFor(vip, 'rs2', HealthState.HEALTH_STATE_DOWN)!;
    expect(down).toMatchObject({ from: HealthState.HEALTH_STATE_UP, protocol: Protocol.PROTOCOL_TCP, vipPort: ECHO, realPort: ECHO, connsClosed: 0n });
    expect(down.lastError).toBe(rs2.healthLastError);

    // Restarted: UP again within rise x interval, and it gets its share of new conns.
    await echo.get('rs2')!.start();
    const tUp = await until(async () => (await healthOf('tcp', vip, ECHO, 'rs2')) === HealthState.HEALTH_STATE_UP, upBound);
    expect(tUp).toBeLessThanOrEqual(upBound);
    expect(realOf(await service('tcp', vip, ECHO), 'rs2').inhibited).toBe(false);
    await until(
      async () => eventFor(vip, 'rs2', HealthState.HEALTH_STATE_UP) !== undefined && events.filter((e) => e.vip === vip && e.real === LAB.rs.rs2).length >= 3,
      2000,
    );
    const up = events.filter((e) => e.vip === vip && e.real === LAB.rs.rs2).pop()!;
    expect(up).toMatchObject({ from: HealthState.HEALTH_STATE_DOWN, to: HealthState.HEALTH_STATE_UP });
    expect(up.seq).toBeGreaterThan(down.seq);
    const b2 = await service('tcp', vip, ECHO);
    const again = await sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 6, concurrency: 3, bytes: 64, timeoutMs: 5000 });
    expect(again.ok).toBe(6);
    expect(realOf(await service('tcp', vip, ECHO), 'rs2').connsTotal - realOf(b2, 'rs2').connsTotal).toBe(2n);

    // Sequence numbers: gap-free from 1 across every service's transitions.
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => BigInt(i + 1)));
  }, 120000);

  it('Drain and Undrain leave the health verdict alone', async () => {
    const vip = labVip(61);
    await addChecked('tcp', vip, ECHO, check({ kind: HealthCheckKind.HEALTH_CHECK_KIND_TCP }));
    await until(() => allUp('tcp', vip, ECHO), (RISE + 1) * INTERVAL + SLACK_MS + 2000);
    await echo.get('rs3')!.kill();
    try {
      await until(async () => (await healthOf('tcp', vip, ECHO, 'rs3')) === HealthState.HEALTH_STATE_DOWN, downBound);
      await sc.app.api.config.drain({});
      let s = await service('tcp', vip, ECHO);
      expect(s.reals.map((r) => r.weight)).toEqual([0, 0, 0]);
      expect(realOf(s, 'rs3')).toMatchObject({ health: HealthState.HEALTH_STATE_DOWN, inhibited: true });
      await sc.app.api.config.undrain({});
      s = await service('tcp', vip, ECHO);
      expect(s.reals.map((r) => r.weight)).toEqual([1, 1, 1]);
      expect(realOf(s, 'rs3')).toMatchObject({ health: HealthState.HEALTH_STATE_DOWN, inhibited: true });
      const fresh = await sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 4, concurrency: 4, bytes: 64, timeoutMs: 5000 });
      expect(fresh.ok).toBe(4);
      expect(realOf(await service('tcp', vip, ECHO), 'rs3').connsTotal).toBe(0n);
    } finally {
      await echo.get('rs3')!.start();
    }
    await until(async () => (await healthOf('tcp', vip, ECHO, 'rs3')) === HealthState.HEALTH_STATE_UP, upBound);
  }, 90000);

  it('HTTP on another port with close_conns: the failed real loses its conns too', async () => {
    const vip = labVip(62);
    const HTTP = 9080;
    const http = new Map<RealServer, HealthServer>();
    for (const rs of REAL_SERVERS) http.set(rs, await servers.start(rs, 'http', HTTP));
    await addChecked('tcp', vip, ECHO, check({ kind: HealthCheckKind.HEALTH_CHECK_KIND_HTTP, port: HTTP, httpPath: '/', closeConns: true }));
    await until(() => allUp('tcp', vip, ECHO), (RISE + 1) * INTERVAL + SLACK_MS + 2000);

    const held = sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 3, concurrency: 3, bytes: 64, rounds: 16, intervalMs: 250, timeoutMs: 8000 });
    await until(async () => (await service('tcp', vip, ECHO)).activeConns === 3n, 10000);
    // The echo server on rs1 keeps running: only its health endpoint goes away.
    await http.get('rs1')!.kill();
    await until(async () => (await healthOf('tcp', vip, ECHO, 'rs1')) === HealthState.HEALTH_STATE_DOWN, downBound);
    await until(async () => eventFor(vip, 'rs1', HealthState.HEALTH_STATE_DOWN) !== undefined, 3000);
    expect(eventFor(vip, 'rs1', HealthState.HEALTH_STATE_DOWN)!.connsClosed).toBe(1n);
    expect(realOf(await service('tcp', vip, ECHO), 'rs1').activeConns).toBe(0n);
    // The conns on the other reals are still there.
    const left = await sc.app.api.conns.listConns({ filter: { protocols: [], clients: [], vips: [vip], reals: [], states: [] }, pageSize: 100, pageToken: '' });
    expect(left.conns.map((c) => c.real).sort()).toEqual([LAB.rs.rs2, LAB.rs.rs3]);
    const dropsBefore = (await sc.counters()).drops;
    const h = await held;
    if (h.ok !== 2)
      console.log(
        JSON.stringify({ results: h.results, dropsBefore, dropsAfter: (await sc.counters()).drops }, (_k, v) => (typeof v === 'bigint' ? String(v) : v)),
      );
    expect([h.ok, h.failures]).toEqual([2, [expect.anything()]]); // the conn on rs1 was removed by the appliance: its next segments go nowhere
    await http.get('rs1')!.start();
    await until(async () => (await healthOf('tcp', vip, ECHO, 'rs1')) === HealthState.HEALTH_STATE_UP, upBound);
  }, 90000);

  it('gRPC health: a killed grpc.health.v1 server takes its real down, a restarted one brings it back', async () => {
    const vip = labVip(63);
    const GRPC = 9050;
    const g = new Map<RealServer, HealthServer>();
    for (const rs of REAL_SERVERS) g.set(rs, await servers.start(rs, 'grpc', GRPC));
    await addChecked('tcp', vip, GRPC, check({ kind: HealthCheckKind.HEALTH_CHECK_KIND_GRPC }));
    await until(() => allUp('tcp', vip, GRPC), (RISE + 1) * INTERVAL + SLACK_MS + 2000);
    await g.get('rs2')!.kill();
    await until(async () => (await healthOf('tcp', vip, GRPC, 'rs2')) === HealthState.HEALTH_STATE_DOWN, downBound);
    expect(realOf(await service('tcp', vip, GRPC), 'rs2').healthLastError).toMatch(/ECONNREFUSED|timeout/);
    await g.get('rs2')!.start();
    await until(async () => (await healthOf('tcp', vip, GRPC, 'rs2')) === HealthState.HEALTH_STATE_UP, upBound);
  }, 90000);

  it('UDP with an expected reply, and UDP by ICMP port unreachable', async () => {
    const vipReply = labVip(64);
    const vipIcmp = labVip(65);
    await addChecked(
      'udp',
      vipReply,
      ECHO,
      check({ kind: HealthCheckKind.HEALTH_CHECK_KIND_UDP, udpPayload: Buffer.from('hc?'), udpExpect: Buffer.from('hc?') }),
    );
    await addChecked('udp', vipIcmp, ECHO, check({ kind: HealthCheckKind.HEALTH_CHECK_KIND_UDP, udpPayload: Buffer.from('hc?') }));
    await until(async () => (await allUp('udp', vipReply, ECHO)) && (await allUp('udp', vipIcmp, ECHO)), (RISE + 1) * INTERVAL + SLACK_MS + 2000);
    await echo.get('rs1')!.kill();
    try {
      await until(async () => (await healthOf('udp', vipReply, ECHO, 'rs1')) === HealthState.HEALTH_STATE_DOWN, downBound);
      await until(async () => (await healthOf('udp', vipIcmp, ECHO, 'rs1')) === HealthState.HEALTH_STATE_DOWN, downBound);
      expect(realOf(await service('udp', vipIcmp, ECHO), 'rs1').healthLastError).toBe('ICMP port unreachable');
      // New UDP flows avoid rs1 and all get their echo.
      const u = await sc.lab.udpEcho('client-a', vipReply, ECHO, { count: 6, bytes: 32, timeoutMs: 2000 });
      expect(u.ok).toBe(6);
      expect(realOf(await service('udp', vipReply, ECHO), 'rs1').connsTotal).toBe(0n);
    } finally {
      await echo.get('rs1')!.start();
    }
    await until(async () => (await healthOf('udp', vipReply, ECHO, 'rs1')) === HealthState.HEALTH_STATE_UP, upBound);
    await until(async () => (await healthOf('udp', vipIcmp, ECHO, 'rs1')) === HealthState.HEALTH_STATE_UP, upBound);
  }, 90000);

  it('ICMP echo: a real that stops answering pings goes down, and comes back', async () => {
    const vip = labVip(66);
    await addChecked('icmp', vip, 0, check({ kind: HealthCheckKind.HEALTH_CHECK_KIND_ICMP }));
    await until(() => allUp('icmp', vip, 0), (RISE + 1) * INTERVAL + SLACK_MS + 2000);
    sc.lab.exec('rs3', 'sysctl', ['-q', '-w', 'net.ipv4.icmp_echo_ignore_all=1']);
    try {
      await until(async () => (await healthOf('icmp', vip, 0, 'rs3')) === HealthState.HEALTH_STATE_DOWN, downBound);
      expect(realOf(await service('icmp', vip, 0), 'rs3').healthLastError).toMatch(/no echo reply|timeout/);
    } finally {
      sc.lab.exec('rs3', 'sysctl', ['-q', '-w', 'net.ipv4.icmp_echo_ignore_all=0']);
    }
    await until(async () => (await healthOf('icmp', vip, 0, 'rs3')) === HealthState.HEALTH_STATE_UP, upBound);
  }, 90000);

  it('removing the check lifts the inhibit at once, with the weight unchanged', async () => {
    const vip = labVip(67);
    await addChecked('tcp', vip, ECHO, check({ kind: HealthCheckKind.HEALTH_CHECK_KIND_TCP, port: 9999 }));
    // Nothing listens on 9999: every real goes down.
    await until(async () => (await service('tcp', vip, ECHO)).reals.every((r) => r.inhibited), downBound);
    const refused = await sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 1, bytes: 16, timeoutMs: 1500 });
    expect(refused.ok).toBe(0);
    await sc.app.api.balancer.updateVirtualService({
      key: { protocol: Protocol.PROTOCOL_TCP, vip, port: ECHO },
      scheduler: Scheduler.SCHEDULER_RR,
      seed: 0,
      limits: undefined,
      healthCheck: undefined,
      removeHealthCheck: true,
      synProxy: undefined,
    });
    const s = await service('tcp', vip, ECHO);
    expect(s.healthCheck).toBeUndefined();
    expect(s.reals.map((r) => [r.weight, r.inhibited, r.health])).toEqual(REAL_SERVERS.map(() => [1, false, HealthState.HEALTH_STATE_UNSPECIFIED]));
    const ok = await sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 3, concurrency: 3, bytes: 16, timeoutMs: 5000 });
    expect(ok.ok).toBe(3);
  }, 60000);
});
