/**
 * Table pressure in the namespace lab (src/lab/topology.ts): a conn table of 1024 conns, a spoofed
 * SYN flood from router-a (an AF_PACKET sender, random 10.0.0.0/8 sources: src/lab/raw.ts
 * synFlood), and real kernel TCP conns through it. Conns established before the flood keep
 * echoing through it, new conns from client-b still open during it, and the eviction counters
 * (GetCounters conn_table, /metrics) count the embryonic conns the flood lost. Defaults of
 * dataplane.table_pressure (eviction on). Without eviction the table would stay full of SYN-state
 * conns for tcp_syn (30 s) and refuse client-b: test/native/pressure.test.ts has that control.
 */
import { LabScenario } from '../../src/lab/scenario';
import { LAB, labVip, REAL_SERVERS } from '../../src/lab/topology';
import { Protocol } from '../../src/gen/retrace/v1/types';

const ECHO = LAB.echoPort;
const MAX_CONNS = 1024;
const FLOOD_PPS = 10000;
const FLOOD_MS = 6000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('table pressure under a spoofed SYN flood (lab)', () => {
  let sc: LabScenario;
  let metricsUrl = '';

  beforeAll(async () => {
    sc = await LabScenario.start({ dataplane: { max_conns: MAX_CONNS }, extraYaml: 'metrics:\n  listen: "127.0.0.1:0"' });
    const listening = sc.app.output.split('\n').find((l) => l.includes('metrics listening'));
    metricsUrl = `http://${JSON.parse(listening!).listen as string}/metrics`;
  }, 120000);

  afterAll(async () => {
    await sc?.destroy();
  }, 60000);

  it('established conns keep working and new ones still open while the flood recycles its own conns', async () => {
    const vip = labVip(95);
    await sc.addService(
      'tcp',
      vip,
      ECHO,
      'rr',
      REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: ECHO })),
    );
    const key = { protocol: Protocol.PROTOCOL_TCP, vip, port: ECHO };
    const active = async () => (await sc.app.api.balancer.getVirtualService({ key })).virtualService!.activeConns;
    const ports = (await sc.app.api.ports.listPorts({})).ports;
    const uplinkA = ports.find((p) => p.name === 'uplink-a')!.mac;

    // Four conns established before the flood, echoing every 250 ms for ~12 s.
    const held = sc.lab.tcpEcho('client-a', vip, ECHO, { conns: 4, concurrency: 4, bytes: 64, rounds: 48, intervalMs: 250, timeoutMs: 60000 });
    const deadline = Date.now() + 10000;
    while ((await active()) < 4n && Date.now() < deadline) await sleep(100);
    expect(await active()).toBe(4n);
    const before = await sc.counters();

    const flood = sc.lab.synFlood('router-a', 'uplink', {
      dstMac: uplinkA,
      srcMac: sc.lab.mac('router-a', 'uplink'),
      vip,
      vport: ECHO,
      rate: FLOOD_PPS,
      durationMs: FLOOD_MS,
    });
    // Well into the flood: the table has been full for seconds.
    await sleep(2000);
    const during = await sc.counters();
    const fresh = await sc.lab.tcpEcho('client-b', vip, ECHO, { conns: 5, concurrency: 1, bytes: 64, timeoutMs: 5000 });
    const sent = await flood;
    const h = await held;
    const after = await sc.counters();

    expect(sent.sent).toBeGreaterThan((FLOOD_PPS * FLOOD_MS) / 1000 / 4);
    // The table was full of the flood's conns while client-b connected.
    expect(during.connCount).toBeGreaterThan(BigInt(Math.floor((MAX_CONNS * 9) / 10)));
    expect(h.failures).toEqual([]);
    expect(h.ok).toBe(4);
    expect(fresh.failures).toEqual([]);
    expect(fresh.ok).toBe(5);

    const evicted = after.connTable!.evictedEmbryonicTable - before.connTable!.evictedEmbryonicTable;
    console.log(
      `SYN flood: ${sent.sent} sent at ${Math.round(sent.pps)}/s; ${evicted} embryonic conns evicted; conns ${during.connCount} during, ${after.connCount} after`,
    );
    expect(evicted).toBeGreaterThan(1000n);
    expect(after.connCount).toBeLessThanOrEqual(BigInt(MAX_CONNS));
    // Every SYN that reached the worker got a conn: nothing refused for a full table.
    const full = (c: typeof after) => c.drops.reduce((n, d) => n + d.counters!.connTableFull, 0n);
    expect(full(after) - full(before)).toBe(0n);

    const text = await (await fetch(metricsUrl)).text();
    const line = text.split('\n').find((l) => l.startsWith('retrace_conns_evicted_embryonic_table_total '));
    expect(Number(line?.split(' ').pop())).toBeGreaterThanOrEqual(Number(after.connTable!.evictedEmbryonicTable));
  }, 120000);
});
