/**
 * FNAT with two workers in the namespace lab: every appliance port has two queue pairs
 * (net_af_packet qpairs=2, the kernel's PACKET_FANOUT spreading flows over them), so a client's
 * packets reach either worker, and a real's reply to LIP:port often reaches the worker that does
 * not own that port and is handed over to the one that does (port % workers). The owner finds the
 * conn in its LIP's port array (native/dp_conn.c); the other worker must not read that slot. On two
 * CPUs the workers share CPU 1: this checks correctness, not speed.
 */
import { LabScenario, type RealSpec } from '../../src/lab/scenario';
import { LAB, labVip, REAL_SERVERS, type EchoServerEvent } from '../../src/lab/topology';

type ConnEvent = Extract<EchoServerEvent, { event: 'conn' }>;

const ECHO = LAB.echoPort;
const reals: RealSpec[] = REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: ECHO, weight: 1 }));

describe('FNAT with two workers: conns on both workers, replies reach their LIP port owner', () => {
  let sc: LabScenario;

  /** The LIP source ports the reals saw for `proto`, each with the worker owning it (port % 2). */
  const lipPorts = (proto: 'tcp' | 'udp'): number[] =>
    REAL_SERVERS.flatMap((rs) =>
      sc.lab
        .echoLog(rs)
        .filter((e): e is ConnEvent => e.event === 'conn' && e.proto === proto && e.service === 'echo')
        .map((c) => {
          expect(LAB.lips).toContain(c.peer);
          return c.peerPort;
        }),
    );

  beforeAll(async () => {
    sc = await LabScenario.start({ dataplane: { workers: 2 }, ports: { afPacketArgs: 'qpairs=2' } });
    const ports = await sc.app.api.ports.listPorts({});
    for (const p of ports.ports) expect([p.name, p.rxQueues]).toEqual([p.name, 2]);
  }, 120000);

  afterAll(async () => {
    await sc?.destroy();
  }, 60000);

  it('echoes 60 TCP conns byte-exact, with LIP ports of both workers', async () => {
    const vip = labVip(10);
    await sc.addService('tcp', vip, ECHO, 'rr', reals);
    const r = await sc.lab.tcpEcho('client-b', vip, ECHO, { conns: 60, bytes: 8192, concurrency: 16, timeoutMs: 15000 });
    expect(r.failures).toEqual([]);
    expect(r.ok).toBe(60);
    for (const item of r.results) expect(item.echoed).toBe(8192);
    const owners = new Set(lipPorts('tcp').map((p) => p % 2));
    expect([...owners].sort()).toEqual([0, 1]);
  }, 60000);

  it('echoes 60 UDP datagrams, each reply from the VIP, with LIP ports of both workers', async () => {
    const vip = labVip(20);
    await sc.addService('udp', vip, ECHO, 'rr', reals);
    const r = await sc.lab.udpEcho('client-b', vip, ECHO, { count: 60, bytes: 1000, concurrency: 10 });
    expect(r.failures).toEqual([]);
    expect(r.ok).toBe(60);
    for (const item of r.results) expect(item.from).toBe(`${vip}:${ECHO}`);
    const owners = new Set(lipPorts('udp').map((p) => p % 2));
    expect([...owners].sort()).toEqual([0, 1]);
  }, 60000);
});
