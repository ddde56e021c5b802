/**
 * Kernel interfaces sharing one namespace, as in a host's root namespace: uplink-a's and uplink-b's
 * interfaces both live in `rt-<tag>-khost`, whose default route goes via router-a (uplink-a). A TCP
 * server there on uplink-b's address answers client-b, whose packets arrive through uplink-b. The
 * kernel routes the replies to client-b by its default route, through uplink-a's interface; the
 * dataplane sends them out of uplink-b, the port the conn came in on, toward router-b.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { LabScenario } from '../../src/lab/scenario';
import { LAB, type CapturedPacket } from '../../src/lab/topology';
import { killSync, run } from '../../src/lab/sh';

const TCP_PORT = 8098;

describe('kernel interfaces in one namespace: replies leave by the port their request came in on', () => {
  let sc: LabScenario;
  let server: ChildProcess | undefined;

  beforeAll(async () => {
    sc = await LabScenario.start({ kernel: ['uplink-a', 'uplink-b'], kernelShared: true });
    const ns = sc.kernelNamespace('uplink-a');
    expect(sc.kernelNamespace('uplink-b')).toBe(ns);
    run('ip', ['-n', ns, 'route', 'add', 'default', 'via', LAB.routerAUplink]);
    server = spawn('ip', [
      'netns',
      'exec',
      ns,
      process.execPath,
      '-e',
      `require('net').createServer((s) => { s.end('peer ' + s.remoteAddress + '\\n'); }).listen(${TCP_PORT}, '${LAB.ports['uplink-b'].addr}', () => console.log('ready'))`,
    ]);
    await new Promise<void>((resolve, reject) => {
      server!.stdout!.once('data', () => resolve());
      server!.once('exit', (code) => reject(new Error(`server exited ${code}`)));
    });
  }, 120000);

  afterAll(async () => {
    if (server?.pid !== undefined) killSync(server.pid, 2000);
    await sc?.destroy();
  }, 60000);

  it("the kernel routes client-b's replies via router-a, yet they leave by uplink-b to router-b", async () => {
    const ns = sc.kernelNamespace('uplink-a');
    // The kernel's own choice for client-b: uplink-a's interface (the default route).
    expect(run('ip', ['-n', ns, 'route', 'get', LAB.clientB])).toContain(`dev ${sc.kernelIfName('uplink-a')}`);

    const portB = (await sc.app.api.ports.getPort({ name: 'uplink-b' })).port!;
    const filter = `tcp and src host ${LAB.ports['uplink-b'].addr}`;
    const capA = await sc.lab.startCapture('router-a', 'uplink', filter);
    const capB = await sc.lab.startCapture('router-b', 'uplink', filter);
    let seenA: CapturedPacket[];
    let seenB: CapturedPacket[];
    try {
      const client = `const s = require('net').connect(${TCP_PORT}, '${LAB.ports['uplink-b'].addr}'); let d = ''; s.on('data', (b) => (d += b));
        s.on('end', () => { console.log(d.trim()); process.exit(0); }); s.on('error', (e) => { console.error(e.message); process.exit(1); });
        setTimeout(() => process.exit(2), 8000);`;
      const r = await sc.lab.execAsync('client-b', process.execPath, ['-e', client], { timeoutMs: 15000 });
      expect({ code: r.code, out: r.stdout.trim() }).toEqual({ code: 0, out: `peer ${LAB.clientB}` });
    } finally {
      seenA = await capA.stop({ settleMs: 300 });
      seenB = await capB.stop({ settleMs: 300 });
    }
    expect(seenA.map((p) => p.summary)).toEqual([]);
    expect(seenB.length).toBeGreaterThanOrEqual(3); // SYN-ACK, data, FIN at least
    const routerBMac = sc.lab.mac('router-b', 'uplink');
    for (const p of seenB) expect([p.dst, p.srcMac, p.dstMac]).toEqual([LAB.clientB, portB.mac.toLowerCase(), routerBMac]);
  }, 60000);
});
