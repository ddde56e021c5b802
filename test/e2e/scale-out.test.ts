/**
 * Scale-out on one machine (src/lab/ecmp.ts): two `retrace serve` processes, node1 and node2,
 * behind a router namespace `edge` whose route to the VIP is a multipath (ECMP) route hashed on L4
 * (`fib_multipath_hash_policy=1`). Both nodes get the same VIP services (TCP and UDP, Maglev, one
 * seed, rs1..rs3) over gRPC from this one test process, each with its own addresses and LIPs.
 * Real kernel clients in the `client` namespace, with five source addresses; the lab's echo servers
 * on rs1..rs3. No mocks.
 *
 * Steering used by the cases: `setVipNexthops()` is the ECMP group in edge's main table (what BGP
 * would install); `pin(addr, node)` is an `ip rule` sending one client address through one node
 * whatever the main table says (a flow moved by a re-hash, or one that a router keeps sending to a
 * node). One lab for the file; cases work on counter deltas and their own client ports. The drain
 * block changes node1 for good and runs last.
 */
import { Protocol } from '../../src/gen/retrace/v1/types';
import { ConnState, type Conn } from '../../src/gen/retrace/v1/conn';
import type { GetCountersResponse } from '../../src/gen/retrace/v1/path';
import { ECMP, ECMP_NODES, type EcmpNode, type HeldConn } from '../../src/lab/ecmp';
import { EcmpScaleOut, nodeDrops, nodePath } from '../../src/lab/scale-out';
import { REAL_SERVERS, type RealServer } from '../../src/lab/topology';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const PROTO = { tcp: Protocol.PROTOCOL_TCP, udp: Protocol.PROTOCOL_UDP } as const;
type L4 = keyof typeof PROTO;

/** Polls `fn` until it returns true; a liveness bound, not a timing assertion. */
async function until(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 20000, stepMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what} after ${timeoutMs} ms`);
    await sleep(stepMs);
  }
}

describe('scale-out: two appliances behind an ECMP router', () => {
  let so: EcmpScaleOut;
  const lab = () => so.lab;

  const counters = async (): Promise<Record<EcmpNode, GetCountersResponse>> => ({ node1: await so.counters('node1'), node2: await so.counters('node2') });
  const uplinkRx = (c: GetCountersResponse, proto: L4): bigint => nodePath(c, proto, 'uplink').rx;
  const connsTotal = async (proto: L4, port: number): Promise<Record<EcmpNode, bigint>> => ({
    node1: await so.connsTotal('node1', proto, port),
    node2: await so.connsTotal('node2', proto, port),
  });
  /** Who a real server saw on the identity port since the last clearEchoLogs(): peer addresses. */
  const whoPeers = (proto: L4): Record<RealServer, string[]> => {
    const out = {} as Record<RealServer, string[]>;
    for (const rs of REAL_SERVERS)
      out[rs] = lab()
        .echoLog(rs)
        .filter((e) => e.proto === proto && e.service === 'who')
        .map((e) => e.peer);
    return out;
  };
  /** client port -> node holding a conn for (from, port), for the ports in [base, base+n). */
  async function placement(proto: L4, from: string, base: number, n: number): Promise<Record<number, EcmpNode[]>> {
    const out: Record<number, EcmpNode[]> = {};
    for (const node of ECMP_NODES) {
      for (const c of await so.conns(node, [from])) {
        if (c.protocol !== PROTO[proto] || c.vipPort !== ECMP.whoPort || c.clientPort < base || c.clientPort >= base + n) continue;
        (out[c.clientPort] ??= []).push(node);
      }
    }
    return out;
  }

  beforeAll(async () => {
    // tcp_close 60: finished TCP conns stay listable (ListConns) for the placement checks.
    so = await EcmpScaleOut.start({ timeouts: { tcpClose: 60, udp: 60 } });
  }, 180000);

  afterAll(async () => {
    await so?.destroy();
  }, 60000);

  it('builds two nodes configured over gRPC with the same services and their own addresses', async () => {
    expect(lab().vipNexthops()).toEqual(['node1', 'node2']);
    for (const node of ECMP_NODES) {
      const { config, drained } = await so.nodes[node].api.config.getConfig({});
      expect(drained).toBe(false);
      expect(config!.localAddresses.map((l) => l.address)).toEqual(ECMP.nodes[node].lips);
      // Reals come back in canonical order on both nodes, though node2 was given them reversed.
      expect(config!.virtualServices.map((v) => [v.protocol, v.port, v.seed, v.reals.map((r) => r.address)])).toEqual([
        [PROTO.tcp, ECMP.echoPort, ECMP.seed, [ECMP.rs.rs1, ECMP.rs.rs2, ECMP.rs.rs3]],
        [PROTO.tcp, ECMP.whoPort, ECMP.seed, [ECMP.rs.rs1, ECMP.rs.rs2, ECMP.rs.rs3]],
        [PROTO.udp, ECMP.echoPort, ECMP.seed, [ECMP.rs.rs1, ECMP.rs.rs2, ECMP.rs.rs3]],
        [PROTO.udp, ECMP.whoPort, ECMP.seed, [ECMP.rs.rs1, ECMP.rs.rs2, ECMP.rs.rs3]],
      ]);
    }
    // Each node runs its own EAL (file prefix retrace-<pid>): two processes.
    expect(so.nodes.node1.child!.pid).not.toBe(so.nodes.node2.child!.pid);
  }, 30000);

  // -------------------------------------------------------------------------------------------
  it.each(['tcp', 'udp'] as const)(
    '1 (%s): the same client tuple maps to the same real through node1 and through node2',
    async (proto) => {
      const COUNT = 24;
      const base = proto === 'tcp' ? 21000 : 22000;
      const mapping: Partial<Record<EcmpNode, Record<string, string>>> = {};
      try {
        for (const node of ECMP_NODES) {
          // Every client address through this node only.
          for (const a of ECMP.clients) lab().pin(a, node);
          const before = await connsTotal(proto, ECMP.whoPort);
          lab().clearEchoLogs();
          const m: Record<string, string> = {};
          for (const from of ECMP.clients) {
            const r = await lab().who({ proto, from, count: COUNT, localPortBase: base, concurrency: 4 });
            expect(r.failures).toEqual([]);
            for (const item of r.results) {
              expect(item.localPort).toBe(base + item.index);
              m[`${from}:${item.localPort}`] = item.name!;
            }
          }
          mapping[node] = m;
          const after = await connsTotal(proto, ECMP.whoPort);
          const other: EcmpNode = node === 'node1' ? 'node2' : 'node1';
          // The pins held: every conn was made by this node, none by the other.
          expect(after[node] - before[node]).toBe(BigInt(COUNT * ECMP.clients.length));
          expect(after[other] - before[other]).toBe(0n);
          // The reals saw one flow per request, each from one of this node's LIPs.
          await until('the echo servers to log every request', () => Object.values(whoPeers(proto)).flat().length >= COUNT * ECMP.clients.length, 5000);
          const peers = Object.values(whoPeers(proto)).flat();
          expect(peers).toHaveLength(COUNT * ECMP.clients.length);
          expect(peers.filter((p) => !ECMP.nodes[node].lips.includes(p))).toEqual([]);
        }
      } finally {
        lab().unpinAll();
      }
      expect(Object.keys(mapping.node1!)).toHaveLength(COUNT * ECMP.clients.length);
      expect(mapping.node2).toEqual(mapping.node1);
      expect(new Set(Object.values(mapping.node1!))).toEqual(new Set(REAL_SERVERS));
    },
    180000,
  );

  // -------------------------------------------------------------------------------------------
  it('2: with ECMP on, flows from many tuples spread over both nodes and every request succeeds', async () => {
    expect(lab().vipNexthops()).toEqual(['node1', 'node2']);
    const COUNT = 40;
    const base = 23000;
    const c0 = await counters();
    const t0 = await connsTotal('tcp', ECMP.whoPort);
    const u0 = await connsTotal('udp', ECMP.whoPort);
    const e0 = await connsTotal('tcp', ECMP.echoPort);
    for (const from of ECMP.clients) {
      const tcp = await lab().who({ proto: 'tcp', from, count: COUNT, localPortBase: base, concurrency: 8 });
      expect(tcp.failures).toEqual([]);
      const udp = await lab().who({ proto: 'udp', from, count: COUNT, localPortBase: base, concurrency: 8 });
      expect(udp.failures).toEqual([]);
      const echo = await lab().tcpEcho({ from, conns: 10, bytes: 4096, concurrency: 5 });
      expect(echo.failures).toEqual([]);
      expect(new Set([...tcp.names, ...udp.names])).toEqual(new Set(REAL_SERVERS));
    }
    const c1 = await counters();
    const t1 = await connsTotal('tcp', ECMP.whoPort);
    const u1 = await connsTotal('udp', ECMP.whoPort);
    const e1 = await connsTotal('tcp', ECMP.echoPort);
    const n = BigInt(COUNT * ECMP.clients.length);
    // Both nodes received TCP and UDP on their uplinks ...
    for (const node of ECMP_NODES) {
      expect(`${node} tcp rx ${uplinkRx(c1[node], 'tcp') > uplinkRx(c0[node], 'tcp')}`).toBe(`${node} tcp rx true`);
      expect(`${node} udp rx ${uplinkRx(c1[node], 'udp') > uplinkRx(c0[node], 'udp')}`).toBe(`${node} udp rx true`);
      expect(t1[node] - t0[node]).toBeGreaterThan(0n);
      expect(u1[node] - u0[node]).toBeGreaterThan(0n);
    }
    // ... and between them made exactly one conn per request.
    expect(t1.node1 - t0.node1 + (t1.node2 - t0.node2)).toBe(n);
    expect(u1.node1 - u0.node1 + (u1.node2 - u0.node2)).toBe(n);
    expect(e1.node1 - e0.node1 + (e1.node2 - e0.node2)).toBe(BigInt(10 * ECMP.clients.length));

    // Each UDP flow is on exactly the node the edge kernel's L4 hash picks for its 5-tuple, and
    // each TCP flow on exactly one node. (TCP flows are not compared with `ip route get`: with
    // policy 1 the kernel places them by the client socket's random txhash, see setMultipathHash.)
    for (const from of ECMP.clients) {
      const udp = await placement('udp', from, base, COUNT);
      const tcp = await placement('tcp', from, base, COUNT);
      for (let i = 0; i < COUNT; i++) {
        const port = base + i;
        expect(`udp ${from}:${port} on ${(udp[port] ?? []).join('+')}`).toBe(`udp ${from}:${port} on ${lab().routeGet(from, 'udp', port, ECMP.whoPort)}`);
        expect(`tcp ${from}:${port} on ${(tcp[port] ?? []).length} node(s)`).toBe(`tcp ${from}:${port} on 1 node(s)`);
      }
    }
  }, 300000);

  it('2b: with a 5-tuple hash (policy 3), every TCP flow lands on the node `ip route get` predicts', async () => {
    const COUNT = 24;
    const base = 24000;
    lab().setMultipathHash(3);
    try {
      for (const from of ECMP.clients) {
        const r = await lab().who({ proto: 'tcp', from, count: COUNT, localPortBase: base, concurrency: 4 });
        expect(r.failures).toEqual([]);
      }
      const seen = new Set<EcmpNode>();
      for (const from of ECMP.clients) {
        const tcp = await placement('tcp', from, base, COUNT);
        for (let i = 0; i < COUNT; i++) {
          const port = base + i;
          const want = lab().routeGet(from, 'tcp', port, ECMP.whoPort);
          seen.add(want);
          expect(`tcp ${from}:${port} on ${(tcp[port] ?? []).join('+')}`).toBe(`tcp ${from}:${port} on ${want}`);
        }
      }
      expect(seen).toEqual(new Set(ECMP_NODES));
    } finally {
      lab().setMultipathHash(1);
    }
  }, 180000);

  // -------------------------------------------------------------------------------------------
  describe('4: established conns when ECMP re-hashes a flow to the other node', () => {
    const from = ECMP.clients[4];
    let held: HeldConn | undefined;

    afterEach(() => {
      held?.kill();
      held = undefined;
      lab().pin(from, null);
    });

    it('TCP: the next segment at the other node finds no conn and is dropped (tcp_no_conn); back on node1 the conn carries on', async () => {
      // The conn state lives in node1 only: no node shares conns with another.
      lab().pin(from, 'node1');
      held = await lab().holdConn({ from });
      expect(await held.echo(256)).toEqual({ event: 'echoed', round: 1, bytes: 256 });
      const mine = (cs: Conn[]) => cs.filter((c) => c.protocol === PROTO.tcp && c.clientPort === held!.localPort);
      const on1 = mine(await so.conns('node1', [from]));
      expect(on1.map((c) => c.state)).toEqual([ConnState.CONN_STATE_ESTABLISHED]);
      expect(mine(await so.conns('node2', [from]))).toEqual([]);

      // The re-hash: the router now sends this flow to node2.
      const before = await so.counters('node2');
      lab().pin(from, 'node2');
      held.send(256);
      await until('node2 to drop the segment as tcp_no_conn', async () => {
        const now = nodeDrops(await so.counters('node2'), 'uplink').tcpNoConn;
        return now > nodeDrops(before, 'uplink').tcpNoConn;
      });
      // Dropped, not answered: no conn was made for it on node2, no echo reached the client.
      expect(mine(await so.conns('node2', [from]))).toEqual([]);
      expect(held.pending().filter((e) => e.event === 'echoed')).toEqual([]);
      expect(nodeDrops(await so.counters('node2'), 'uplink').noReal).toBe(nodeDrops(before, 'uplink').noReal);

      // The flow comes back to node1: the client's next retransmission finds its conn there.
      lab().pin(from, 'node1');
      expect(await held.next(60000)).toEqual({ event: 'echoed', round: 2, bytes: 256 });
      expect(await held.close()).toEqual({ event: 'closed', clean: true });
    }, 120000);

    it('UDP: the other node makes a new conn — same real (Maglev), but from its own LIP, so the real sees a new flow', async () => {
      const base = 25000;
      const COUNT = 6;
      const ask = async (node: EcmpNode) => {
        lab().pin(from, node);
        lab().clearEchoLogs();
        const r = await lab().who({ proto: 'udp', from, count: COUNT, localPortBase: base });
        expect(r.failures).toEqual([]);
        await until('the echo servers to log every request', () => Object.values(whoPeers('udp')).flat().length >= COUNT, 5000);
        const peers = Object.values(whoPeers('udp')).flat();
        expect(peers).toHaveLength(COUNT);
        for (const p of peers) expect(ECMP.nodes[node].lips).toContain(p);
        return r.names;
      };
      const via1 = await ask('node1');
      const via2 = await ask('node2');
      expect(via2).toEqual(via1);
      // Both nodes now hold a conn for each of these client tuples.
      const pl = await placement('udp', from, base, COUNT);
      for (let i = 0; i < COUNT; i++) expect(pl[base + i]?.sort()).toEqual(['node1', 'node2']);
    }, 60000);
  });

  // -------------------------------------------------------------------------------------------
  // Last: node1 stays drained and withdrawn.
  describe('3: draining node1', () => {
    const pinned = ECMP.clients[0];
    const others = ECMP.clients.slice(1);
    let held: HeldConn | undefined;
    let afterWithdraw: Record<EcmpNode, GetCountersResponse>;

    afterAll(() => {
      held?.kill();
      lab().pin(pinned, null);
    });

    it('Drain turns node1 NOT_SERVING; the sidecar withdraws node1 from the edge route', async () => {
      // A client whose router keeps sending its flow to node1 (pinned: the route for it still
      // points at node1 after the withdrawal), with a conn established before the drain.
      lab().pin(pinned, 'node1');
      held = await lab().holdConn({ from: pinned });
      expect(await held.echo(128)).toEqual({ event: 'echoed', round: 1, bytes: 128 });

      // The test plays the BGP sidecar: watch node1's readiness, withdraw on NOT_SERVING.
      expect(await so.nodes.node1.healthCheck()).toBe('SERVING');
      const sidecar = so.withdrawOnDrain('node1');
      try {
        expect(await so.nodes.node1.api.config.drain({})).toEqual({ realsDrained: 12, virtualServices: 4 });
        expect(await sidecar.withdrawn).toEqual(['node2']);
      } finally {
        sidecar.stop();
      }
      expect(lab().vipNexthops()).toEqual(['node2']);
      expect(await so.nodes.node1.healthCheck()).toBe('NOT_SERVING');
      expect(await so.nodes.node2.healthCheck()).toBe('SERVING');
      afterWithdraw = await counters();
    }, 60000);

    it('new conns from many tuples all succeed and all land on node2', async () => {
      expect(afterWithdraw).toBeDefined();
      const c0 = await counters();
      const w0 = await connsTotal('tcp', ECMP.whoPort);
      const u0 = await connsTotal('udp', ECMP.whoPort);
      let tcpN = 0;
      let udpN = 0;
      for (const from of others) {
        const tcp = await lab().who({ proto: 'tcp', from, count: 30, concurrency: 8 });
        expect(tcp.failures).toEqual([]);
        const udp = await lab().who({ proto: 'udp', from, count: 30, concurrency: 8 });
        expect(udp.failures).toEqual([]);
        const echo = await lab().tcpEcho({ from, conns: 10, bytes: 2048, concurrency: 5 });
        expect(echo.failures).toEqual([]);
        const uecho = await lab().udpEcho({ from, count: 10, concurrency: 5 });
        expect(uecho.failures).toEqual([]);
        tcpN += tcp.ok;
        udpN += udp.ok;
      }
      const c1 = await counters();
      const w1 = await connsTotal('tcp', ECMP.whoPort);
      const u1 = await connsTotal('udp', ECMP.whoPort);
      // node1 received nothing: no SYN, no datagram, nothing refused.
      expect(uplinkRx(c1.node1, 'tcp') - uplinkRx(c0.node1, 'tcp')).toBe(0n);
      expect(uplinkRx(c1.node1, 'udp') - uplinkRx(c0.node1, 'udp')).toBe(0n);
      expect(nodeDrops(c1.node1, 'uplink').noReal).toBe(nodeDrops(c0.node1, 'uplink').noReal);
      expect([w1.node1 - w0.node1, u1.node1 - u0.node1]).toEqual([0n, 0n]);
      // node2 made every one of them.
      expect([w1.node2 - w0.node2, u1.node2 - u0.node2]).toEqual([BigInt(tcpN), BigInt(udpN)]);
      expect(uplinkRx(c1.node2, 'tcp')).toBeGreaterThan(uplinkRx(c0.node2, 'tcp'));
    }, 300000);

    it('the drained node1 keeps the established conn working while the route for that client still points at it', async () => {
      expect(held).toBeDefined();
      const c0 = await counters();
      expect(await held!.echo(128, 30000)).toEqual({ event: 'echoed', round: 2, bytes: 128 });
      const c1 = await counters();
      expect(uplinkRx(c1.node1, 'tcp')).toBeGreaterThan(uplinkRx(c0.node1, 'tcp'));
      expect(nodeDrops(c1.node2, 'uplink').tcpNoConn).toBe(nodeDrops(c0.node2, 'uplink').tcpNoConn);
      const conn = (await so.conns('node1', [pinned])).filter((c) => c.protocol === PROTO.tcp && c.clientPort === held!.localPort);
      expect(conn.map((c) => c.state)).toEqual([ConnState.CONN_STATE_ESTABLISHED]);
      // Its real keeps weight 0 (drained) and still counts the conn as active.
      const svc = (await so.nodes.node1.api.balancer.listVirtualServices({})).virtualServices.find(
        (v) => v.protocol === PROTO.tcp && v.port === ECMP.echoPort,
      )!;
      const real = svc.reals.find((r) => r.address === conn[0].real)!;
      expect(real.weight).toBe(0);
      expect(real.activeConns).toBeGreaterThanOrEqual(1n);
      expect(await held!.close()).toEqual({ event: 'closed', clean: true });
    }, 60000);

    it('while a router still sends new conns to the drained node1, they are refused (no_real): why the route must be withdrawn', async () => {
      const before = await so.counters('node1');
      const r = await lab().who({ proto: 'tcp', from: pinned, count: 2, timeoutMs: 1500 });
      expect(r.ok).toBe(0);
      const after = await so.counters('node1');
      expect(nodeDrops(after, 'uplink').noReal - nodeDrops(before, 'uplink').noReal).toBeGreaterThanOrEqual(2n);
    }, 60000);
  });
});
