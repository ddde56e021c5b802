/**
 * BGP over an uplink, in the namespace lab: uplink-a has a kernel interface in a namespace of its
 * own; GoBGP (gobgpd) runs there and peers over the port with BIRD in router-a (directly
 * connected eBGP, AS 64512 to AS 64500); the BGP sidecar's announce.sh puts the VIP in GoBGP's RIB
 * while the appliance is SERVING. router-a's static VIP route is removed first, so client-a
 * reaches the VIP only by the route BIRD learned. Drain withdraws it, Undrain brings it back.
 */
import { Announcer, BirdRouter, GobgpSpeaker } from '../../src/lab/bgp';
import { CLI_PATH } from '../../src/lab/appliance';
import { runAsync } from '../../src/lab/sh';
import { LabScenario } from '../../src/lab/scenario';
import { LAB, labVip, REAL_SERVERS } from '../../src/lab/topology';
import { debianTool, describeWith } from '../helpers/tools';

const VIP = labVip(50);
const ROUTER_AS = 64500;
const APPLIANCE_AS = 64512;
const PORT_A = LAB.ports['uplink-a'].addr;

/** `retrace health` against the appliance, as the announcer runs it: exit code and output. */
async function cliHealth(server: string): Promise<[number | null, string]> {
  const r = await runAsync(process.execPath, [CLI_PATH, 'health', '--server', server]);
  return [r.code, r.stdout.trim()];
}

describeWith(debianTool('bird', 'bird2'), debianTool('gobgpd', 'gobgpd'))(
  'BGP over uplink-a (GoBGP in the kernel interface namespace, BIRD on router-a)',
  () => {
    let sc: LabScenario;
    let bird: BirdRouter | undefined;
    let gobgp: GobgpSpeaker | undefined;
    let announcer: Announcer | undefined;

    beforeAll(async () => {
      sc = await LabScenario.start({ kernel: ['uplink-a'] });
      await sc.addService(
        'tcp',
        VIP,
        LAB.echoPort,
        'rr',
        REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: LAB.echoPort })),
      );
      // From here on router-a knows the VIPs only from BGP.
      sc.lab.ip('router-a', ['route', 'del', LAB.vipNet]);
      bird = await BirdRouter.start({
        netns: sc.lab.ns('router-a'),
        dir: sc.lab.dir,
        routerId: LAB.routerAUplink,
        as: ROUTER_AS,
        peers: [{ name: 'retrace_a', address: PORT_A, as: APPLIANCE_AS }],
      });
      gobgp = await GobgpSpeaker.start({
        netns: sc.kernelNamespace('uplink-a'),
        dir: sc.lab.dir,
        routerId: PORT_A,
        as: APPLIANCE_AS,
        neighbor: { address: LAB.routerAUplink, as: ROUTER_AS },
        vipNet: LAB.vipNet,
      });
      announcer = new Announcer({ dir: sc.lab.dir, server: sc.app.address, gobgpTarget: gobgp.target, vips: [VIP] });
    }, 120000);

    afterAll(async () => {
      announcer?.stop();
      gobgp?.stop();
      bird?.stop();
      await sc?.destroy();
    }, 60000);

    it('establishes the session over uplink-a: BIRD and GoBGP both say Established, through the kernel interface', async () => {
      const before = (await sc.app.api.ports.getPort({ name: 'uplink-a' })).port!.stats!;
      await bird!.waitEstablished('retrace_a');
      expect(await gobgp!.neighborState()).toBe('established');
      // Keepalives every 3 s both ways; the session itself went through the port's kernel interface.
      await new Promise((r) => setTimeout(r, 3500));
      const after = (await sc.app.api.ports.getPort({ name: 'uplink-a' })).port!.stats!;
      expect(after.toKernel - before.toKernel).toBeGreaterThan(0n);
      expect(after.fromKernel - before.fromKernel).toBeGreaterThan(0n);
    }, 60000);

    it("puts the VIP /32 into router-a's kernel table from BGP, via the port address, and client-a reaches the VIP by it", async () => {
      await bird!.waitKernelNexthops(`${VIP}/32`, [PORT_A]);
      expect(await gobgp!.ribPrefixes()).toEqual([`${VIP}/32`]);
      const r = await sc.lab.tcpEcho('client-a', VIP, LAB.echoPort, { conns: 5, bytes: 1024, concurrency: 5 });
      expect(r.failures).toEqual([]);
      expect(r.ok).toBe(5);
    }, 60000);

    it('withdraws the route on Drain and announces it again on Undrain', async () => {
      expect(await cliHealth(sc.app.address)).toEqual([0, 'SERVING']);
      await sc.app.api.config.drain({});
      expect(await cliHealth(sc.app.address)).toEqual([4, 'NOT_SERVING']);
      await bird!.waitKernelNexthops(`${VIP}/32`, [], 20000);
      expect(await gobgp!.ribPrefixes()).toEqual([]);
      // The session stays up: only the route went.
      expect(await bird!.bgpState('retrace_a')).toBe('Established');

      await sc.app.api.config.undrain({});
      await bird!.waitKernelNexthops(`${VIP}/32`, [PORT_A], 20000);
    }, 60000);

    it('withdraws the route when the announcer stops (SIGTERM), as at pod deletion', async () => {
      announcer!.stop();
      await bird!.waitKernelNexthops(`${VIP}/32`, [], 20000);
      expect(announcer!.log).toContain('withdrawing');
    }, 60000);
  },
);
