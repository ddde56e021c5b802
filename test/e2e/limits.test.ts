/**
 * Admission limits per virtual service in the namespace lab (src/lab/topology.ts): real kernel TCP
 * clients in client-a and client-b against echo servers on rs1..rs3, the limits set over gRPC, the
 * refusals read back from GetVirtualService, the per-port drop counters and /metrics. No mocks.
 *
 * One lab and one appliance; each case has a VIP of its own, so their conns do not mix.
 */
import { LabScenario } from '../../src/lab/scenario';
import { LAB, labVip, REAL_SERVERS } from '../../src/lab/topology';
import type { TcpEchoReport } from '../../src/lab/results';
import { Protocol, Scheduler } from '../../src/gen/retrace/v1/types';
import type { VirtualService } from '../../src/gen/retrace/v1/balancer';
import type { DropCounters, GetCountersResponse } from '../../src/gen/retrace/v1/path';

const ECHO = LAB.echoPort;
const EXTRA_YAML = 'timeouts: {tcp_close: 2, tcp_fin: 2}\nmetrics:\n  listen: "127.0.0.1:0"';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end) return false;
    await sleep(100);
  }
}

describe('admission limits per virtual service (lab)', () => {
  let sc: LabScenario;
  let metricsUrl = '';

  const key = (vip: string) => ({ protocol: Protocol.PROTOCOL_TCP, vip, port: ECHO });
  const service = async (vip: string): Promise<VirtualService> => (await sc.app.api.balancer.getVirtualService({ key: key(vip) })).virtualService!;
  const drops = (c: GetCountersResponse, port: string): DropCounters => c.drops.find((d) => d.port === port)!.counters!;
  const metric = (text: string, name: string, vip: string): number => {
    const line = text.split('\n').find((l) => l.startsWith(`${name}{protocol="tcp",vip="${vip}",vport="${ECHO}"}`));
    if (line === undefined) throw new Error(`no ${name} for ${vip} in /metrics`);
    return Number(line.split(' ').pop());
  };

  beforeAll(async () => {
    sc = await LabScenario.start({ extraYaml: EXTRA_YAML });
    const listening = sc.app.output.split('\n').find((l) => l.includes('metrics listening'));
    metricsUrl = `http://${JSON.parse(listening!).listen as string}/metrics`;
  }, 120000);

  afterAll(async () => {
    await sc?.destroy();
  }, 60000);

  it('with max_conns N, N concurrent conns work and the N+1th is refused and counted', async () => {
    const vip = labVip(90);
    const N = 3;
    const reals = REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: ECHO, weight: 1 }));
    await sc.addService('tcp', vip, ECHO, 'rr', reals);
    await sc.app.api.balancer.updateVirtualService({
      key: key(vip),
      scheduler: Scheduler.SCHEDULER_RR,
      seed: 0,
      synProxy: undefined,
      limits: { maxConns: N, allow: [], deny: [], connRate: 0, connBurst: 0 },
      healthCheck: undefined,
      removeHealthCheck: false,
    });
    expect((await service(vip)).maxConns).toBe(N);
    const before = await sc.counters();

    // N conns held open (an echo every 300 ms for ~6 s), then one more while they live.
    const held = sc.lab.tcpEcho('client-a', vip, ECHO, { conns: N, concurrency: N, bytes: 64, rounds: 20, intervalMs: 300, timeoutMs: 30000 });
    let extra: TcpEchoReport;
    try {
      expect(await until(async () => (await service(vip)).activeConns === BigInt(N), 10000)).toBe(true);
      extra = await sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 1, bytes: 64, timeoutMs: 2500 });
    } finally {
      const h = await held;
      expect(h.failures).toEqual([]);
      expect(h.ok).toBe(N);
    }
    expect(extra.ok).toBe(0);
    expect(extra.failures).toHaveLength(1);

    const s = await service(vip);
    // The SYN and each of its retransmissions are refused: at least one.
    expect(s.refusedMaxConns).toBeGreaterThanOrEqual(1n);
    expect([s.refusedDenied, s.refusedNotAllowed]).toEqual([0n, 0n]);
    expect(s.connsTotal).toBe(BigInt(N));
    const after = await sc.counters();
    expect(drops(after, 'uplink-a').svcMaxConns - drops(before, 'uplink-a').svcMaxConns).toBe(s.refusedMaxConns);

    const text = await (await fetch(metricsUrl)).text();
    expect(metric(text, 'retrace_service_refused_max_conns_total', vip)).toBe(Number(s.refusedMaxConns));
    expect(metric(text, 'retrace_service_max_conns', vip)).toBe(N);

    // Once the held conns are gone, a new one is accepted again.
    expect(await until(async () => (await service(vip)).activeConns === 0n, 15000)).toBe(true);
    const again = await sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 1, bytes: 64, timeoutMs: 5000 });
    expect(again.failures).toEqual([]);
  }, 90000);

  it('a deny prefix covering client-b refuses client-b while client-a still connects', async () => {
    const vip = labVip(91);
    const reals = REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: ECHO, weight: 1 }));
    await sc.addService('tcp', vip, ECHO, 'rr', reals);
    // Deny wins over an allow list that covers both clients.
    await sc.app.api.balancer.updateVirtualService({
      key: key(vip),
      scheduler: Scheduler.SCHEDULER_RR,
      seed: 0,
      synProxy: undefined,
      limits: { maxConns: 0, allow: ['198.18.0.0/16'], deny: [`${LAB.clientB}/32`], connRate: 0, connBurst: 0 },
      healthCheck: undefined,
      removeHealthCheck: false,
    });
    const before = await sc.counters();

    const b = await sc.lab.tcpEcho('client-b', vip, ECHO, { conns: 2, concurrency: 2, bytes: 64, timeoutMs: 2500 });
    const a = await sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 4, concurrency: 4, bytes: 64, timeoutMs: 5000 });
    expect(b.ok).toBe(0);
    expect(a.failures).toEqual([]);
    expect(a.ok).toBe(4);

    const s = await service(vip);
    expect(s.deny).toEqual([`${LAB.clientB}/32`]);
    expect(s.refusedDenied).toBeGreaterThanOrEqual(2n);
    expect([s.refusedMaxConns, s.refusedNotAllowed]).toEqual([0n, 0n]);
    expect(s.connsTotal).toBe(4n);
    const after = await sc.counters();
    expect(drops(after, 'uplink-b').svcDenied - drops(before, 'uplink-b').svcDenied).toBe(s.refusedDenied);

    const text = await (await fetch(metricsUrl)).text();
    expect(metric(text, 'retrace_service_refused_denied_total', vip)).toBe(Number(s.refusedDenied));

    // An allow list without client-a's subnet refuses client-a as not_allowed.
    await sc.app.api.balancer.updateVirtualService({
      key: key(vip),
      scheduler: Scheduler.SCHEDULER_RR,
      seed: 0,
      synProxy: undefined,
      limits: { maxConns: 0, allow: [LAB.clientBNet], deny: [], connRate: 0, connBurst: 0 },
      healthCheck: undefined,
      removeHealthCheck: false,
    });
    const a2 = await sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 1, bytes: 64, timeoutMs: 2500 });
    const b2 = await sc.lab.tcpEcho('client-b', vip, ECHO, { conns: 1, bytes: 64, timeoutMs: 5000 });
    expect(a2.ok).toBe(0);
    expect(b2.failures).toEqual([]);
    expect((await service(vip)).refusedNotAllowed).toBeGreaterThanOrEqual(1n);
  }, 90000);

  it('conn_rate 1/s with a burst of 3: 3 of 6 simultaneous conns from one client pass, the rest are counted', async () => {
    const vip = labVip(92);
    const reals = REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: ECHO, weight: 1 }));
    await sc.addService('tcp', vip, ECHO, 'rr', reals);
    await sc.app.api.balancer.updateVirtualService({
      key: key(vip),
      scheduler: Scheduler.SCHEDULER_RR,
      seed: 0,
      synProxy: undefined,
      limits: { maxConns: 0, allow: [], deny: [], connRate: 1, connBurst: 3 },
      healthCheck: undefined,
      removeHealthCheck: false,
    });
    const before = await sc.counters();
    // Within 900 ms: before the kernel's first SYN retransmission (1 s) and before the bucket
    // earns its next token.
    const r = await sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 6, concurrency: 6, bytes: 64, timeoutMs: 900 });
    expect(r.ok).toBe(3);
    const s = await service(vip);
    expect(s.refusedRateLimited).toBe(3n);
    expect([s.connRate, s.connBurst]).toEqual([1, 3]);
    const after = await sc.counters();
    expect(drops(after, 'uplink-a').svcRateLimited - drops(before, 'uplink-a').svcRateLimited).toBe(3n);
    const text = await (await fetch(metricsUrl)).text();
    expect(metric(text, 'retrace_service_refused_rate_limited_total', vip)).toBe(3);

    // Another client has a bucket of its own.
    const b = await sc.lab.tcpEcho('client-b', vip, ECHO, { conns: 3, concurrency: 3, bytes: 64, timeoutMs: 900 });
    expect(b.failures).toEqual([]);
  }, 90000);
});
