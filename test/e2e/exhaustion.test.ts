/**
 * Resource exhaustion in the namespace lab (src/lab/topology.ts), with a real `retrace serve`:
 *
 * - the conn table: one worker with `dataplane.max_conns: 1024` (the schema's minimum) and more
 *   concurrent UDP flows than fit. New conns beyond the table are dropped and counted as
 *   `conn_table_full`; conns made before keep working; once the flows expire (`timeouts.udp: 3`),
 *   new conns work again.
 * - the LIP source ports: with no local address at all every new FNAT conn is dropped as
 *   `no_lip_port` (a single LIP's pool is 64512 ports per protocol and worker, too big to drain
 *   here); adding a LIP back restores service. DeleteLocalAddress on a LIP that conns still use is
 *   FAILED_PRECONDITION and changes nothing.
 * - a control-plane table: the 65th local address is RESOURCE_EXHAUSTED (DP_MAX_LIPS is 64) and
 *   ListLocalAddresses is the same before and after the failing call.
 *
 * One lab and one appliance for the file; the blocks run in order and each starts from an empty
 * conn table. Assertions are on counts and counters, never on timing.
 */
import * as grpc from '@grpc/grpc-js';
import type { DropCounters, GetCountersResponse } from '../../src/gen/retrace/v1/path';
import type { LocalAddress } from '../../src/gen/retrace/v1/balancer';
import { ConnEventType, ConnServiceClient, WatchConnEventsRequest, type WatchConnEventsResponse } from '../../src/gen/retrace/v1/conn';
import { LabScenario, type RealSpec } from '../../src/lab/scenario';
import { Protocol } from '../../src/gen/retrace/v1/types';
import { LAB, labVip, REAL_SERVERS, type RootPort, type TcpEchoReport, type UdpEchoReport } from '../../src/lab/topology';

const MAX_CONNS = 1024;
const EXTRA_YAML = 'timeouts: {udp: 3, icmp: 3, tcp_syn: 5, tcp_fin: 3, tcp_close: 2}';
const ECHO = LAB.echoPort;
const VIP = labVip(70);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const reals = (port: number): RealSpec[] => REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port }));

type DropName = keyof DropCounters;

function drops(c: GetCountersResponse, port: RootPort): DropCounters {
  const d = c.drops.find((x) => x.port === port)?.counters;
  if (!d) throw new Error(`no drop counters for port ${port}`);
  return d;
}

/** Drop counters that moved between two snapshots, summed over every port: { reason: delta }. */
function movedDrops(after: GetCountersResponse, before: GetCountersResponse): Partial<Record<DropName, bigint>> {
  const out: Partial<Record<DropName, bigint>> = {};
  for (const d of after.drops) {
    const was = before.drops.find((x) => x.port === d.port)!.counters!;
    for (const k of Object.keys(d.counters!) as DropName[]) {
      const v = d.counters![k] - was[k];
      if (v !== 0n) out[k] = (out[k] ?? 0n) + v;
    }
  }
  return out;
}

/** Polls `probe` until it returns true or the time is up; returns the last verdict. */
async function until(probe: () => Promise<boolean> | boolean, timeoutMs = 10000, stepMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
}

/** A grpc error's code and details, or 'OK' when the call succeeded. */
async function outcome(p: Promise<unknown>): Promise<{ code: grpc.status; details: string } | 'OK'> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    const err = e as grpc.ServiceError;
    return { code: err.code, details: err.details };
  }
}

const show = (x: unknown): string => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? Number(v) : v));

const lipView = (l: LocalAddress[]): { address: string; port: string; portsTotal: bigint }[] =>
  l.map((x) => ({ address: x.address, port: x.port, portsTotal: x.portsTotal }));

describe('resource exhaustion (max_conns 1024, one worker)', () => {
  let sc: LabScenario;

  const counters = (): Promise<GetCountersResponse> => sc.counters();
  const connCount = async (): Promise<bigint> => (await counters()).connCount;
  const listLips = async (): Promise<LocalAddress[]> => (await sc.app.api.balancer.listLocalAddresses({})).localAddresses;

  /** Conns ever created by the TCP and UDP services (conns_total). */
  const connsCreated = async (): Promise<{ tcp: bigint; udp: bigint }> => {
    const total = async (protocol: Protocol): Promise<bigint> =>
      (await sc.app.api.balancer.getVirtualService({ key: { protocol, vip: VIP, port: ECHO } })).virtualService!.connsTotal;
    return { tcp: await total(Protocol.PROTOCOL_TCP), udp: await total(Protocol.PROTOCOL_UDP) };
  };

  /** Waits until the conn tables are empty (conns expire by the short timeouts above). */
  async function waitNoConns(timeoutMs = 30000): Promise<void> {
    let last = -1n;
    const ok = await until(async () => (last = await connCount()) === 0n, timeoutMs, 250);
    if (!ok) throw new Error(`conn tables still hold ${last} conns after ${timeoutMs} ms`);
  }

  beforeAll(async () => {
    sc = await LabScenario.start({ extraYaml: EXTRA_YAML, dataplane: { max_conns: MAX_CONNS, workers: 1 } });
    await sc.addService('tcp', VIP, ECHO, 'rr', reals(ECHO));
    await sc.addService('udp', VIP, ECHO, 'rr', reals(ECHO));
    await sc.addService('icmp', VIP, 0, 'rr', reals(0));
    // Warm up: every real server's and router's MAC learned, so later bursts never wait for ARP.
    const t = await sc.lab.tcpEcho('client-b', VIP, ECHO, { conns: 6, concurrency: 6 });
    expect(t.failures).toEqual([]);
    const u = await sc.lab.udpEcho('client-a', VIP, ECHO, { count: 6, concurrency: 6 });
    expect(u.failures).toEqual([]);
    await waitNoConns();
  }, 180000);

  afterAll(async () => {
    await sc?.destroy();
  }, 60000);

  // -------------------------------------------------------------------------------------------
  describe('conn table full', () => {
    it('drops new conns beyond the table as conn_table_full, keeps existing ones working, and recovers after they expire', async () => {
      const before = await counters();
      expect(before.connCount).toBe(0n);
      const createdBefore = await connsCreated();

      // Conns that exist before the table fills and outlive the fill: 10 TCP conns echoing every
      // 500 ms for ~40 s.
      const HELD = 10;
      const HELD_ROUNDS = 80;
      const held = sc.lab.tcpEcho('client-a', VIP, ECHO, {
        conns: HELD,
        concurrency: HELD,
        bytes: 256,
        rounds: HELD_ROUNDS,
        intervalMs: 500,
        timeoutMs: 120000,
      });
      expect(await until(async () => (await connCount()) >= BigInt(HELD), 20000)).toBe(true);

      // More concurrent UDP flows than the table holds, each sending a datagram every 500 ms (well
      // inside the 3 s UDP timeout) for 12 s whether answered or not: the flows that got a conn
      // keep it, so the table stays full; the others are refused at every datagram.
      // Conns removed while the fill runs (idle expiry when the host stalls a sender for the whole
      // UDP timeout): counted exactly from the conn event stream, which reports losses itself.
      const evClient = new ConnServiceClient(sc.app.address, grpc.credentials.createInsecure());
      let closedDuringFill = 0;
      let eventsLost = false;
      const evStream = evClient.watchConnEvents(
        WatchConnEventsRequest.fromPartial({ follow: true, filter: { vips: [VIP] }, types: [ConnEventType.CONN_EVENT_TYPE_CLOSED] }),
      );
      evStream.on('data', (m: WatchConnEventsResponse) => {
        if (m.event) closedDuringFill++;
        if (m.lost) eventsLost = true;
      });
      evStream.on('error', () => undefined);
      // The stream counts from when the server holds it (and the workers produce events).
      expect(await until(async () => (await sc.app.api.conns.getEventStatus({})).producing, 10000)).toBe(true);

      const FLOWS = 1100;
      const fill = sc.lab.udpHold('client-b', VIP, ECHO, { flows: FLOWS, intervalMs: 500, durationMs: 12000 });
      let peak = 0n;
      let fillDone = false;
      const sampler = (async () => {
        while (!fillDone) {
          const n = await connCount().catch(() => 0n);
          if (n > peak) peak = n;
          await sleep(200);
        }
      })();
      let fillRes: Awaited<typeof fill>;
      let heldRes: Awaited<typeof held>;
      let midBefore: GetCountersResponse;
      let midAfter: GetCountersResponse;
      let tcpProbe: TcpEchoReport;
      let udpProbe: UdpEchoReport;
      try {
        // The table is full once conn_table_full moves.
        let last: GetCountersResponse = before;
        const full = await until(async () => drops((last = await counters()), 'uplink-b').connTableFull > drops(before, 'uplink-b').connTableFull, 30000);
        if (!full) throw new Error(`the table never filled: ${last.connCount} conns, drops moved ${show(movedDrops(last, before))}`);

        // While full: new TCP conns and new UDP flows from the other client get nowhere.
        midBefore = await counters();
        tcpProbe = await sc.lab.tcpEcho('client-a', VIP, ECHO, { conns: 2, concurrency: 2, timeoutMs: 2500 });
        udpProbe = await sc.lab.udpEcho('client-a', VIP, ECHO, { count: 4, concurrency: 4, timeoutMs: 1000 });
        midAfter = await counters();
      } finally {
        fillRes = await fill;
        evStream.cancel();
        evClient.close();
        heldRes = await held.catch((e: Error) => ({ failures: [e.message] }) as unknown as TcpEchoReport);
        fillDone = true;
        await sampler;
      }
      const after = await counters();
      const created = await connsCreated();
      const answered = fillRes.replies.filter((r) => r > 0).length;
      const refused = FLOWS - answered;
      const refusedDatagrams = fillRes.sent.filter((_, i) => fillRes.replies[i] === 0).reduce((x, y) => x + y, 0);
      const fullB = drops(after, 'uplink-b').connTableFull - drops(before, 'uplink-b').connTableFull;
      const udpRxB = LabScenario.portCounters(after, 'udp', 'uplink-b').rx - LabScenario.portCounters(before, 'udp', 'uplink-b').rx;
      const udpFwd = (c: GetCountersResponse): bigint => {
        const p = LabScenario.portCounters(c, 'udp', 'servers');
        return p.txSymmetric + p.txRouted;
      };
      const forwarded = udpFwd(after) - udpFwd(before);
      // Conns of the fill can still expire mid-run if the host stalls the sender or the worker for
      // the whole UDP timeout (3 s); whoever sends next takes the freed slot, and the flow that
      // lost its conn may be refused afterwards although it was answered before. `churn` counts
      // conns removed while the fill ran (closed events), plus conns created beyond the fill's
      // own and the held ones: without churn, the table's content was fixed from the moment it
      // filled and the refusals are exact.
      const udpCreated = Number(created.udp - createdBefore.udp);
      const tcpCreated = Number(created.tcp - createdBefore.tcp);
      const churn = eventsLost ? Infinity : closedDuringFill + Math.max(0, udpCreated - answered + (tcpCreated - HELD));
      console.log(
        `conn table full: ${show({ answered, refused, refusedDatagrams, connTableFullUplinkB: fullB, udpRxUplinkB: udpRxB, forwarded, peak, udpCreated, tcpCreated, closedDuringFill, eventsLost, churn, moved: movedDrops(after, before) })}`,
      );

      // The conns made before the table filled kept working throughout.
      expect(heldRes.failures).toEqual([]);
      for (const r of heldRes.results) expect(r).toMatchObject({ ok: true, rounds: HELD_ROUNDS });
      // The table filled, and never held more than max_conns.
      expect(peak).toBeLessThanOrEqual(BigInt(MAX_CONNS));
      expect(peak).toBeGreaterThanOrEqual(BigInt(Math.floor(MAX_CONNS * 0.9)));
      expect(answered + HELD).toBeGreaterThanOrEqual(Math.floor(MAX_CONNS * 0.9));
      // Every UDP datagram that reached the dataplane on uplink-b was either forwarded to a real
      // or counted as conn_table_full (a datagram lost in the kernel before the dataplane is in
      // neither count), and every flow that never got an answer was refused at least once.
      expect(udpRxB).toBe(forwarded + fullB);
      expect(refused).toBeGreaterThan(0);
      expect(fullB).toBeGreaterThanOrEqual(BigInt(refused));
      // conn_table_full is the only drop reason that moved, and never on the servers side.
      expect(Object.keys(movedDrops(after, before))).toEqual(['connTableFull']);
      expect(drops(after, 'servers').connTableFull).toBe(drops(before, 'servers').connTableFull);
      expect(churn).toBeGreaterThanOrEqual(0);
      if (churn === 0) {
        // No more flows got a conn than the table had room for; the probes made while it was
        // full all failed, each refused datagram/SYN counted; only refused flows were refused.
        // Every slot is usable: the fill got exactly the slots the held conns left.
        expect(udpCreated).toBe(MAX_CONNS - HELD);
        expect(answered).toBeLessThanOrEqual(udpCreated);
        expect(refused).toBeGreaterThanOrEqual(FLOWS - (MAX_CONNS - HELD));
        expect(tcpProbe.ok).toBe(0);
        expect(udpProbe.ok).toBe(0);
        expect(drops(midAfter, 'uplink-a').connTableFull - drops(midBefore, 'uplink-a').connTableFull).toBeGreaterThanOrEqual(4n + 2n);
        expect(fullB).toBeLessThanOrEqual(BigInt(refusedDatagrams));
      } else {
        // Each probe that failed was refused at least once; no more conns than slots freed.
        expect(drops(midAfter, 'uplink-a').connTableFull - drops(midBefore, 'uplink-a').connTableFull).toBeGreaterThanOrEqual(
          BigInt(udpProbe.failed + tcpProbe.failed),
        );
        expect(answered).toBeLessThanOrEqual(MAX_CONNS - HELD + churn);
      }

      // Recovery: the flows expire (UDP 3 s, TCP close 2 s) and new conns work again.
      await waitNoConns();
      const recBefore = await counters();
      const udp = await sc.lab.udpEcho('client-b', VIP, ECHO, { count: 200, concurrency: 50 });
      expect(udp.failures).toEqual([]);
      const tcp = await sc.lab.tcpEcho('client-a', VIP, ECHO, { conns: 20, concurrency: 10 });
      expect(tcp.failures).toEqual([]);
      const ping = await sc.lab.ping('client-b', VIP, { count: 3, deadline: 20 });
      expect(ping.received).toBeGreaterThanOrEqual(3);
      expect(movedDrops(await counters(), recBefore)).toEqual({});
    }, 240000);
  });

  // -------------------------------------------------------------------------------------------
  describe('LIP source ports', () => {
    const [LIP1, LIP2] = LAB.lips;

    beforeAll(async () => {
      await waitNoConns();
    }, 60000);

    it('refuses DeleteLocalAddress with FAILED_PRECONDITION while conns use the LIP, and changes nothing', async () => {
      const listBefore = await listLips();
      expect(lipView(listBefore).map((l) => l.address)).toEqual([LIP1, LIP2]);
      const held = sc.lab.tcpEcho('client-b', VIP, ECHO, { conns: 1, bytes: 128, rounds: 16, intervalMs: 500, timeoutMs: 60000 });
      let inUse: LocalAddress | undefined;
      expect(await until(async () => (inUse = (await listLips()).find((l) => l.portsInUse > 0n)) !== undefined, 20000)).toBe(true);

      const res = await outcome(sc.app.api.balancer.deleteLocalAddress({ address: inUse!.address }));
      expect(res).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, details: expect.stringContaining('conns still use this local address') });

      const listAfter = await listLips();
      expect(lipView(listAfter)).toEqual(lipView(listBefore));
      expect(listAfter.find((l) => l.address === inUse!.address)!.portsInUse).toBeGreaterThan(0n);

      // The conn on it carries on to its last round.
      const r = await held;
      expect(r.failures).toEqual([]);
      expect(r.results[0]).toMatchObject({ ok: true, rounds: 16 });
    }, 120000);

    it('drops every new FNAT conn as no_lip_port while no LIP exists, and serves again once one is added back', async () => {
      await waitNoConns();
      for (const l of await listLips()) expect(`${l.address} ${l.portsInUse}`).toBe(`${l.address} 0`);
      await sc.app.api.balancer.deleteLocalAddress({ address: LIP1 });
      await sc.app.api.balancer.deleteLocalAddress({ address: LIP2 });
      expect(await listLips()).toEqual([]);

      try {
        const before = await counters();
        const noLip = async (port: RootPort, min: bigint): Promise<bigint> => {
          let d = 0n;
          await until(async () => (d = drops(await counters(), port).noLipPort - drops(before, port).noLipPort) >= min, 5000);
          return d;
        };

        // UDP: one datagram per flow, each refused.
        const udp = await sc.lab.udpEcho('client-b', VIP, ECHO, { count: 5, concurrency: 5, timeoutMs: 1000 });
        expect(udp.ok).toBe(0);
        expect(await noLip('uplink-b', 5n)).toBe(5n);
        // ICMP echo through the ICMP service needs a LIP echo id: refused as well.
        const ping = await sc.lab.ping('client-a', VIP, { count: 3, interval: 0.3, timeout: 1 });
        expect(ping.received).toBe(0);
        expect(await noLip('uplink-a', BigInt(ping.transmitted))).toBe(BigInt(ping.transmitted));
        // TCP: every SYN (the kernel retransmits) refused.
        const tcp = await sc.lab.tcpEcho('client-b', VIP, ECHO, { conns: 1, timeoutMs: 2500 });
        expect(tcp.ok).toBe(0);
        expect(await noLip('uplink-b', 6n)).toBeGreaterThanOrEqual(6n);

        const after = await counters();
        expect(after.connCount).toBe(0n);
        const moved = movedDrops(after, before);
        expect(Object.keys(moved)).toEqual(['noLipPort']);
      } finally {
        await sc.app.api.balancer.createLocalAddress({ localAddress: { address: LIP1, port: 'servers', portsInUse: 0n, portsTotal: 0n } });
      }

      // One LIP back: everything works again, and every server-side conn uses it.
      const before = await counters();
      const udp = await sc.lab.udpEcho('client-b', VIP, ECHO, { count: 10, concurrency: 5 });
      expect(udp.failures).toEqual([]);
      const tcp = await sc.lab.tcpEcho('client-b', VIP, ECHO, { conns: 5, concurrency: 5 });
      expect(tcp.failures).toEqual([]);
      const ping = await sc.lab.ping('client-a', VIP, { count: 3, deadline: 20 });
      expect(ping.received).toBeGreaterThanOrEqual(3);
      expect(movedDrops(await counters(), before)).toEqual({});
      const fnat = (await sc.app.api.conns.listConns({ filter: undefined, pageSize: 0, pageToken: '' })).conns.filter((c) => !c.local);
      expect(fnat.length).toBeGreaterThan(0);
      expect(new Set(fnat.map((c) => c.localAddress))).toEqual(new Set([LIP1]));

      await sc.app.api.balancer.createLocalAddress({ localAddress: { address: LIP2, port: 'servers', portsInUse: 0n, portsTotal: 0n } });
      expect((await listLips()).map((l) => l.address)).toEqual([LIP1, LIP2]);
    }, 120000);
  });

  // -------------------------------------------------------------------------------------------
  describe('control-plane tables', () => {
    it('answers RESOURCE_EXHAUSTED for the 65th local address and leaves the table as it was', async () => {
      // Conns of the blocks before still expire; their ports would move portsInUse under the comparisons.
      await waitNoConns();
      const initial = await listLips();
      expect(initial).toHaveLength(2);
      // 198.18.30.102 .. : on the servers net, clear of the port address, the LIPs and the reals.
      const extra = Array.from({ length: 64 - initial.length }, (_, i) => `198.18.30.${102 + i}`);
      try {
        for (const address of extra) {
          await sc.app.api.balancer.createLocalAddress({ localAddress: { address, port: 'servers', portsInUse: 0n, portsTotal: 0n } });
        }
        const full = await listLips();
        expect(full).toHaveLength(64);

        const one = `198.18.30.${102 + extra.length}`;
        const res = await outcome(sc.app.api.balancer.createLocalAddress({ localAddress: { address: one, port: 'servers', portsInUse: 0n, portsTotal: 0n } }));
        expect(res).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/^local_address.address: .*the table holds 64/) });

        // Unchanged: the same 64 entries, and the refused address is no local address of any kind.
        expect(lipView(await listLips())).toEqual(lipView(full));
        expect(await outcome(sc.app.api.balancer.deleteLocalAddress({ address: one }))).toMatchObject({ code: grpc.status.NOT_FOUND });
        // Still serving with 64 LIPs.
        const t = await sc.lab.tcpEcho('client-b', VIP, ECHO, { conns: 5, concurrency: 5 });
        expect(t.failures).toEqual([]);
      } finally {
        await waitNoConns();
        for (const address of extra) await sc.app.api.balancer.deleteLocalAddress({ address }).catch(() => undefined);
      }
      expect(lipView(await listLips())).toEqual(lipView(initial));
    }, 180000);
  });
});
