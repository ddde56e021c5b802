/**
 * Kernel interfaces in the namespace lab: every appliance port gets one (ports[].kernel), each in a
 * namespace of its own (rt-<tag>-k<ua|ub|sv>). From uplink-a's, the host pings router-a and talks
 * TCP to it from the port address; the interface carries the port's MAC, MTU and addresses (also
 * addresses added later); the counters move; and FNAT's source-in, source-out replies are the
 * same as without kernel interfaces.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { LabScenario, pathDelta } from '../../src/lab/scenario';
import { LAB, labVip, REAL_SERVERS, type CapturedPacket, type RootPort } from '../../src/lab/topology';
import { killSync, run } from '../../src/lab/sh';
import { PathCounters } from '../../src/gen/retrace/v1/path';

const ECHO = LAB.echoPort;
const TCP_PORT = 8099;

describe('kernel interfaces (lab: one per port, each in its own namespace)', () => {
  let sc: LabScenario;
  const portMac: Partial<Record<RootPort, string>> = {};

  beforeAll(async () => {
    sc = await LabScenario.start({ kernel: true });
    for (const p of (await sc.app.api.ports.listPorts({})).ports) portMac[p.name as RootPort] = p.mac.toLowerCase();
  }, 120000);

  afterAll(async () => {
    await sc?.destroy();
  }, 60000);

  const stats = async (port: RootPort) => (await sc.app.api.ports.getPort({ name: port })).port!.stats!;

  it("shows each port's kernel interface in the API, with the port's MAC, MTU and address in its namespace", async () => {
    const { ports } = await sc.app.api.ports.listPorts({});
    for (const port of ['uplink-a', 'uplink-b', 'servers'] as const) {
      const p = ports.find((x) => x.name === port)!;
      expect(p.kernel).toEqual({ name: sc.kernelIfName(port), netns: sc.kernelNamespace(port), queue: 1024, rate: 10000, burst: 1000 });
      const link = JSON.parse(run('ip', ['-n', sc.kernelNamespace(port), '-j', 'addr', 'show', 'dev', sc.kernelIfName(port)]))[0];
      expect({
        mac: link.address,
        mtu: link.mtu,
        up: link.flags.includes('UP'),
        addrs: link.addr_info.map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`),
      }).toEqual({
        mac: portMac[port],
        mtu: 1500,
        up: true,
        addrs: [`${LAB.ports[port].addr}/24`],
      });
    }
    // Not in the root namespace: the lab's routes stay out of the host's table.
    expect(run('ip', ['-br', 'link', 'show', 'dev', sc.kernelIfName('uplink-a')], { allowFail: true })).toBe('');
  });

  it('follows address changes: an address added to the port appears on its interface, and goes when deleted', async () => {
    const ns = sc.kernelNamespace('uplink-a');
    const dev = sc.kernelIfName('uplink-a');
    const addrs = () => run('ip', ['-n', ns, '-br', '-4', 'addr', 'show', 'dev', dev]);
    await sc.app.api.network.createAddress({ address: { address: '198.18.11.1', prefixLength: 24, port: 'uplink-a' } });
    expect(addrs()).toContain('198.18.11.1/24');
    await sc.app.api.network.deleteAddress({ address: '198.18.11.1' });
    expect(addrs()).not.toContain('198.18.11.1');
    expect(addrs()).toContain(`${LAB.ports['uplink-a'].addr}/24`);
  });

  it('pings router-a from the port address, in the interface namespace; counted to and from the kernel', async () => {
    const before = await stats('uplink-a');
    const r = await sc.execKernel('uplink-a', 'ping', ['-c', '3', '-i', '0.2', '-W', '2', LAB.routerAUplink]);
    expect({ code: r.code, out: r.stdout }).toEqual({ code: 0, out: expect.stringContaining('3 received') });
    const after = await stats('uplink-a');
    // Down: ARP request + 3 echo requests at least; up: the ARP reply + 3 echo replies at least.
    expect(after.fromKernel - before.fromKernel).toBeGreaterThanOrEqual(4n);
    expect(after.toKernel - before.toKernel).toBeGreaterThanOrEqual(4n);
    expect(after.kernelDropped - before.kernelDropped).toBe(0n);
    // The neighbour the kernel learned is router-a's uplink, through the port.
    const neigh = run('ip', ['-n', sc.kernelNamespace('uplink-a'), 'neigh', 'show', LAB.routerAUplink]);
    expect(neigh).toContain(sc.lab.mac('router-a', 'uplink'));
  });

  it('talks TCP from the port address to a server on router-a, which sees the port address as the peer', async () => {
    let server: ChildProcess | undefined;
    try {
      // A one-line TCP server on router-a that tells each client its address.
      server = spawn('ip', [
        'netns',
        'exec',
        sc.lab.ns('router-a'),
        process.execPath,
        '-e',
        `require('net').createServer((s) => s.end('peer ' + s.remoteAddress + '\\n')).listen(${TCP_PORT}, '${LAB.routerAUplink}', () => console.log('ready'))`,
      ]);
      await new Promise<void>((resolve, reject) => {
        server!.stdout!.once('data', () => resolve());
        server!.once('exit', (code) => reject(new Error(`server exited ${code}`)));
      });
      const client = `const s = require('net').connect(${TCP_PORT}, '${LAB.routerAUplink}'); let d = ''; s.on('data', (b) => (d += b)); s.on('end', () => { console.log(d.trim()); process.exit(0); });
        s.on('error', (e) => { console.error(e.message); process.exit(1); }); setTimeout(() => process.exit(2), 8000);`;
      const r = await sc.execKernel('uplink-a', process.execPath, ['-e', client]);
      expect({ code: r.code, out: r.stdout.trim(), err: r.stderr }).toEqual({ code: 0, out: `peer ${LAB.ports['uplink-a'].addr}`, err: '' });
    } finally {
      if (server?.pid !== undefined) killSync(server.pid, 2000);
    }
  });

  it('keeps source-in, source-out: TCP replies to client-b leave by uplink B to router-b, never router-a', async () => {
    const vip = labVip(40);
    await sc.addService(
      'tcp',
      vip,
      ECHO,
      'rr',
      REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: ECHO })),
    );
    const filter = `ip and tcp and src host ${vip}`;
    const capA = await sc.lab.startCapture('router-a', 'uplink', filter);
    const capB = await sc.lab.startCapture('router-b', 'uplink', filter);
    const before = await sc.counters();
    let seenA: CapturedPacket[];
    let seenB: CapturedPacket[];
    try {
      const r = await sc.lab.tcpEcho('client-b', vip, ECHO, { conns: 10, bytes: 2048, concurrency: 5 });
      expect(r.failures).toEqual([]);
      expect(r.ok).toBe(10);
    } finally {
      seenA = await capA.stop({ settleMs: 300 });
      seenB = await capB.stop({ settleMs: 300 });
    }
    const after = await sc.counters();
    expect(seenA.map((p) => p.summary)).toEqual([]);
    expect(seenB.length).toBeGreaterThanOrEqual(10);
    const routerBMac = sc.lab.mac('router-b', 'uplink');
    for (const p of seenB) {
      expect({ src: p.src, dst: p.dst, srcMac: p.srcMac, dstMac: p.dstMac, l4Ok: p.l4ChecksumOk }).toEqual({
        src: vip,
        dst: LAB.clientB,
        srcMac: portMac['uplink-b'],
        dstMac: routerBMac,
        l4Ok: true,
      });
    }
    const onB = pathDelta(LabScenario.portCounters(after, 'tcp', 'uplink-b'), LabScenario.portCounters(before, 'tcp', 'uplink-b'));
    const onA = pathDelta(LabScenario.portCounters(after, 'tcp', 'uplink-a'), LabScenario.portCounters(before, 'tcp', 'uplink-a'));
    expect(onB.txSymmetric).toBeGreaterThanOrEqual(BigInt(seenB.length));
    expect(onB.routeDivergence).toBe(onB.txSymmetric);
    expect(onA).toEqual(PathCounters.create());
  }, 120000);
});
