/**
 * The SYN flood defence in the namespace lab (issue 17): spoofed SYNs from router-a at the highest
 * rate hping3 sends (`--flood --rand-source`), a real kernel TCP client behind router-b (uplink-b)
 * meanwhile, echo servers on rs1..rs3. With the SYN proxy on, the client gets every conn, the conn
 * table and the LIP ports do not move and the reals never see a SYN the proxy did not open a conn
 * for. With it off, the same flood fills the conn table and the client gets nothing: the control
 * that shows the test can fail.
 *
 * The conn table is small (dataplane.max_conns 1024, one worker) and tcp_syn is 30 s, so an
 * unprotected service stays full for the whole flood: the denial is deterministic, not a race.
 * Table-pressure eviction (docs/design.md, "Table pressure": the flood's embryonic conns recycled
 * for new ones) is the other defence; it is off here, so the control has no defence at all and
 * what the "on" test shows is the SYN proxy's alone.
 */
import { synFlood } from '../../src/lab/flood';
import { LabScenario } from '../../src/lab/scenario';
import { LAB, labVip, REAL_SERVERS } from '../../src/lab/topology';
import { Protocol, Scheduler, SynProxyMode } from '../../src/gen/retrace/v1/types';
import type { VirtualService } from '../../src/gen/retrace/v1/balancer';
import type { DropCounters, GetCountersResponse, PathCounters } from '../../src/gen/retrace/v1/path';
import { debianTool, describeWith } from '../helpers/tools';

const HPING3 = debianTool('hping3', 'hping3');
const ECHO = LAB.echoPort;
const MAX_CONNS = 1024;
const FLOOD_MS = 12000;
const ON_VIP = labVip(110);
const OFF_VIP = labVip(111);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describeWith(HPING3)('SYN flood defence: SYN cookies with a SYN proxy (lab)', () => {
  let sc: LabScenario;

  const key = (vip: string) => ({ protocol: Protocol.PROTOCOL_TCP, vip, port: ECHO });
  const service = async (vip: string): Promise<VirtualService> => (await sc.app.api.balancer.getVirtualService({ key: key(vip) })).virtualService!;
  const path = (c: GetCountersResponse, port: string): PathCounters => c.tcp!.ports.find((p) => p.port === port)!.counters!;
  const drops = (c: GetCountersResponse, port: string): DropCounters => c.drops.find((d) => d.port === port)!.counters!;
  const lipPorts = async (): Promise<bigint> => (await sc.app.api.balancer.listLocalAddresses({})).localAddresses.reduce((n, l) => n + l.portsInUse, 0n);

  /** Peaks of the conn table and of LIP ports in use while `during` runs, sampled every 200 ms. */
  async function peaks<T>(during: Promise<T>): Promise<{ result: T; conns: bigint; lipPorts: bigint }> {
    let done = false;
    let conns = 0n,
      ports = 0n;
    const sampler = (async () => {
      while (!done) {
        const c = (await sc.counters()).connCount;
        const p = await lipPorts();
        if (c > conns) conns = c;
        if (p > ports) ports = p;
        await sleep(200);
      }
    })();
    try {
      return { result: await during, conns, lipPorts: ports };
    } finally {
      done = true;
      await sampler;
    }
  }

  /** SYNs (without ACK) that reach the reals' segment while `during` runs. */
  async function synsAtReals<T>(during: () => Promise<T>): Promise<{ result: T; syns: number }> {
    const cap = await sc.lab.startCapture('sw', 'uplink', 'tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn', { snaplen: 96 });
    let result: T;
    try {
      result = await during();
    } finally {
      await sleep(300);
    }
    const pkts = await cap.stop();
    return { result, syns: pkts.length };
  }

  beforeAll(async () => {
    sc = await LabScenario.start({ dataplane: { max_conns: MAX_CONNS, table_pressure: { evict_embryonic: false } } });
    const reals = REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: ECHO, weight: 1 }));
    await sc.addService('tcp', ON_VIP, ECHO, 'rr', reals);
    await sc.addService('tcp', OFF_VIP, ECHO, 'rr', reals);
    await sc.app.api.balancer.updateVirtualService({
      key: key(ON_VIP),
      scheduler: Scheduler.SCHEDULER_RR,
      seed: 0,
      limits: undefined,
      healthCheck: undefined,
      removeHealthCheck: false,
      synProxy: { mode: SynProxyMode.SYN_PROXY_MODE_ON, threshold: 0 },
    });
  }, 120000);

  afterAll(async () => {
    await sc?.destroy();
  }, 60000);

  it("answers the SYN itself out of the ingress port toward the ingress MAC, not the default route's", async () => {
    expect((await service(ON_VIP)).synProxy).toBe(SynProxyMode.SYN_PROXY_MODE_ON);
    // The reals' receive buffers up to 64 MiB make Linux announce a window scale above 7 (11), the
    // one our SYN-ACK told the client: every window from the real is rewritten for the client.
    for (const rs of REAL_SERVERS) sc.lab.exec(rs, 'sysctl', ['-q', '-w', 'net.ipv4.tcp_rmem=4096 131072 67108864']);
    const filter = `tcp and src host ${ON_VIP} and dst host ${LAB.clientB}`;
    const viaB = await sc.lab.startCapture('router-b', 'uplink', filter);
    const viaA = await sc.lab.startCapture('router-a', 'uplink', filter);
    const realSide = await sc.lab.startCapture('sw', 'uplink', 'tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)');
    const before = await sc.counters();
    let echo;
    try {
      // A megabyte each way: windows (scale 7 announced, the real's own) and timestamps translated throughout.
      echo = await sc.lab.tcpEcho('client-b', ON_VIP, ECHO, { conns: 1, bytes: 1_000_000, timeoutMs: 20000 });
    } finally {
      await sleep(300);
    }
    const [b, a, r] = [await viaB.stop(), await viaA.stop(), await realSide.stop()];
    expect(echo.failures).toEqual([]);
    expect(echo.ok).toBe(1);

    const synAcks = b.filter((p) => p.tcpFlags === 'S.');
    expect(synAcks).toHaveLength(1);
    expect(synAcks[0]).toMatchObject({ srcMac: sc.lab.rootMac('uplink-b'), dstMac: sc.lab.mac('router-b', 'uplink'), sport: ECHO });
    expect(synAcks[0].summary).toMatch(/wscale 7/);
    expect(r).toHaveLength(1);
    expect(Number(/wscale (\d+)/.exec(r[0].summary)?.[1])).toBeGreaterThan(7);
    // The echo's data came back the same way, and nothing toward client-b took the default route.
    expect(b.filter((p) => (p.payloadLength ?? 0) > 0).length).toBeGreaterThan(0);
    expect(a).toEqual([]);

    const after = await sc.counters();
    expect(path(after, 'uplink-b').synCookiesSent - path(before, 'uplink-b').synCookiesSent).toBe(1n);
    expect(path(after, 'uplink-b').synCookiesValid - path(before, 'uplink-b').synCookiesValid).toBe(1n);
    expect(path(after, 'uplink-a').txRouted - path(before, 'uplink-a').txRouted).toBe(0n);
    const s = await service(ON_VIP);
    expect([s.synCookiesSent, s.synCookiesValid, s.synCookiesInvalid, s.connsTotal]).toEqual([1n, 1n, 0n, 1n]);
  }, 60000);

  it('on: during a spoofed flood a client gets 10/10 conns, the conn table and LIP ports stay flat, the reals see no spoofed SYN', async () => {
    const base = await service(ON_VIP);
    const before = await sc.counters();
    // The first case's conn may linger (TIME_WAIT): flat means no growth beyond the client's own.
    const [conns0, ports0] = [before.connCount, await lipPorts()];
    const { result, syns } = await synsAtReals(() =>
      peaks(
        (async () => {
          const flood = synFlood(sc.lab, 'router-a', ON_VIP, ECHO, FLOOD_MS);
          await sleep(1500); // the flood at full rate first
          const echo = await sc.lab.tcpEcho('client-b', ON_VIP, ECHO, { conns: 10, concurrency: 10, bytes: 2000, timeoutMs: 9000 });
          return { flood: await flood, echo };
        })(),
      ),
    );
    const { flood, echo } = result.result;
    const s = await service(ON_VIP);
    const after = await sc.counters();
    const sent = s.synCookiesSent - base.synCookiesSent;
    console.log(
      `SYN proxy on: hping3 sent ${flood.sent} spoofed SYNs in ${flood.durationMs} ms; cookies sent ${sent}; ` +
        `peak conns ${result.conns}, LIP ports ${result.lipPorts}; SYNs at the reals ${syns}; client ${echo.ok}/10`,
    );

    expect(echo.failures).toEqual([]);
    expect(echo.ok).toBe(10);
    // The flood reached the appliance and was answered: many cookies, one conn per client conn.
    expect(sent).toBeGreaterThan(10000n);
    expect(s.connsTotal - base.connsTotal).toBe(10n);
    expect(s.synCookiesValid - base.synCookiesValid).toBe(10n);
    expect(s.synCookiesInvalid - base.synCookiesInvalid).toBe(0n);
    // Flat: only the client's conns ever held a record or a LIP port.
    expect(result.conns - conns0).toBeLessThanOrEqual(10n);
    expect(result.lipPorts - ports0).toBeLessThanOrEqual(10n);
    // The reals saw exactly the SYNs of the client's conns.
    expect(syns).toBe(10);
    expect(drops(after, 'uplink-a').connTableFull - drops(before, 'uplink-a').connTableFull).toBe(0n);
    expect(drops(after, 'uplink-a').noLipPort - drops(before, 'uplink-a').noLipPort).toBe(0n);
  }, 90000);

  it('off (the control): the same flood fills the conn table, the reals get the spoofed SYNs, the client gets nothing', async () => {
    const before = await sc.counters();
    const { result, syns } = await synsAtReals(() =>
      peaks(
        (async () => {
          const flood = synFlood(sc.lab, 'router-a', OFF_VIP, ECHO, FLOOD_MS);
          await sleep(1500);
          const echo = await sc.lab.tcpEcho('client-b', OFF_VIP, ECHO, { conns: 10, concurrency: 10, bytes: 2000, timeoutMs: 9000 });
          return { flood: await flood, echo };
        })(),
      ),
    );
    const { flood, echo } = result.result;
    const after = await sc.counters();
    const full = drops(after, 'uplink-a').connTableFull - drops(before, 'uplink-a').connTableFull;
    console.log(
      `SYN proxy off: hping3 sent ${flood.sent} spoofed SYNs in ${flood.durationMs} ms; conn_table_full ${full}; ` +
        `peak conns ${result.conns}, LIP ports ${result.lipPorts}; SYNs at the reals ${syns}; client ${echo.ok}/10`,
    );
    expect(echo.ok).toBe(0);
    expect(result.conns).toBe(BigInt(MAX_CONNS));
    expect(full).toBeGreaterThan(0n);
    expect(syns).toBeGreaterThanOrEqual(MAX_CONNS - 10);
    expect((await service(OFF_VIP)).synCookiesSent).toBe(0n);
  }, 90000);
});
