/**
 * Scale-out with ECMP from BGP (src/lab/scale-out.ts with `bgp: true`): edge's route to the VIP is
 * not written by the lab but learned by BIRD from both nodes (each: gobgpd in its uplink's kernel
 * interface namespace, directly connected eBGP, the BGP sidecar's announce.sh following the node's
 * health) and installed as one multipath route. Flows spread over both nodes by it; Drain on a
 * node withdraws its announcement and the route keeps only the other; Undrain brings it back.
 *
 * The steering cases of scale-out.test.ts (pins, moving established conns) keep a static route,
 * which they rewrite themselves; this file is the same lab with the route from BGP.
 */
import { ECMP, ECMP_NODES, type EcmpNode } from '../../src/lab/ecmp';
import { EcmpScaleOut } from '../../src/lab/scale-out';
import { debianTool, describeWith } from '../helpers/tools';

describeWith(debianTool('bird', 'bird2'), debianTool('gobgpd', 'gobgpd'))('scale-out: ECMP across two appliances from BGP', () => {
  let so: EcmpScaleOut;

  beforeAll(async () => {
    so = await EcmpScaleOut.start({ bgp: true, timeouts: { udp: 60 } });
  }, 180000);

  afterAll(async () => {
    await so?.destroy();
  }, 60000);

  const connsTotal = async (): Promise<Record<EcmpNode, bigint>> => ({
    node1: await so.connsTotal('node1', 'udp', ECMP.whoPort),
    node2: await so.connsTotal('node2', 'udp', ECMP.whoPort),
  });

  /** UDP identity queries from every client address, `count` source ports each; conns made per node. */
  async function spread(base: number, count = 12): Promise<Record<EcmpNode, bigint>> {
    const before = await connsTotal();
    for (const from of ECMP.clients) {
      const r = await so.lab.who({ proto: 'udp', from, count, localPortBase: base, concurrency: 4 });
      expect(r.failures).toEqual([]);
    }
    const after = await connsTotal();
    return { node1: after.node1 - before.node1, node2: after.node2 - before.node2 };
  }

  it("learns the VIP from both nodes over directly connected sessions: one multipath route in edge's table", async () => {
    for (const n of ECMP_NODES) {
      await so.bird!.waitEstablished(`retrace_${n}`);
      expect(await so.gobgp[n]!.neighborState()).toBe('established');
    }
    expect(so.bgpNexthops().sort()).toEqual(['node1', 'node2']);
    // The route the lab's kernel forwards by is BIRD's (no static route was written).
    expect(so.lab.vipNexthops().sort()).toEqual(['node1', 'node2']);
  }, 60000);

  it('spreads new flows over both nodes by that route', async () => {
    const made = await spread(23000);
    expect(made.node1 + made.node2).toBe(BigInt(12 * ECMP.clients.length));
    expect(made.node1).toBeGreaterThan(0n);
    expect(made.node2).toBeGreaterThan(0n);
  }, 60000);

  it("withdraws a drained node's route: new flows all go to the other node; Undrain restores the ECMP route", async () => {
    await so.nodes.node1.api.config.drain({});
    await so.waitBgpNexthops(['node2'], 20000);
    const made = await spread(24000);
    expect(made).toEqual({ node1: 0n, node2: BigInt(12 * ECMP.clients.length) });

    await so.nodes.node1.api.config.undrain({});
    await so.waitBgpNexthops(['node1', 'node2'], 20000);
    const again = await spread(25000);
    expect(again.node1).toBeGreaterThan(0n);
    expect(again.node2).toBeGreaterThan(0n);
  }, 90000);
});
