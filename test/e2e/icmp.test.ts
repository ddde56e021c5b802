/**
 * ICMP, source-in source-out, end to end: the namespace lab (src/lab/topology.ts) with a real
 * `retrace serve`, kernel `ping`, kernel TCP/UDP sockets and tcpdump captures. No mocks.
 *
 * The appliance's default route points at router-a (uplink-a). client-b sits behind router-b
 * (uplink-b), so every reply to client-b that is *routed* leaves by uplink-a (a triangle that still
 * arrives, via the inter-router link); every reply sent *symmetrically* leaves by uplink-b.
 * Captures on the routers' `uplink` devices show which one a packet used.
 *
 * Loss is judged from captures on the clients' eth0 (every echo request a client sent has its
 * reply there), not from ping's own count alone: ping stops waiting about two round trips after its
 * last request, so on a loaded machine a late reply would count as lost. Pings that must all be
 * answered run with a deadline (`-w`), so ping itself waits for them.
 *
 * One lab + appliance for the file. Its `servers` port is configured with MTU 1200 (the other
 * ports 1500) for the path-MTU cases; everything else here sends small packets toward the servers.
 * The rate-limit case runs a second, short-lived lab + appliance with a low `dataplane.icmp_rate`.
 *
 * VIPs: .10 TCP service only (so ICMP to it is answered locally), .11 ICMP service (rr over
 * rs1..rs3), .12 UDP service on a port nothing listens on, .13 TCP service for path MTU, .14 UDP
 * echo service.
 *
 * One file (over 500 lines): one namespace lab and one appliance for every ICMP case; splitting
 * would build the lab (namespaces, routers, captures) once per file.
 */
import fs from 'node:fs';
import type { DropCounters, GetCountersResponse } from '../../src/gen/retrace/v1/path';
import { LabScenario, pathDelta, type RealSpec } from '../../src/lab/scenario';
import { LAB, labVip, parsePcap, REAL_SERVERS, type Capture, type CapturedPacket, type PingResult, type Role } from '../../src/lab';

const VIP_LOCAL = labVip(10);
const VIP_ICMP = labVip(11);
const VIP_UDP = labVip(12);
const VIP_MTU = labVip(13);
const VIP_UDP_ECHO = labVip(14);
const CLOSED_PORT = 9999;
const SERVERS_MTU = 1200;

const LIP_SET = new Set<string>(LAB.lips);
const RS_ADDRS: string[] = REAL_SERVERS.map((rs) => LAB.rs[rs]);

const ECHO_REPLY = 0;
const DEST_UNREACH = 3;
const ECHO_REQUEST = 8;
const TIME_EXCEEDED = 11;

/** Seconds ping may wait for all its replies (`-w`); only reached if something is really lost. */
const DEADLINE = 20;

/** The local-echo targets seen from client-b: a VIP without ICMP service, a LIP, two port addresses. */
const LOCAL_TARGETS = [VIP_LOCAL, LAB.lips[0], LAB.ports['uplink-b'].addr, LAB.ports.servers.addr];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function drops(c: GetCountersResponse, port: string): DropCounters {
  const d = c.drops.find((x) => x.port === port)?.counters;
  if (!d) throw new Error(`no drop counters for port ${port}`);
  return d;
}

const isIcmp =
  (type: number) =>
  (p: CapturedPacket): boolean =>
    p.proto === 'icmp' && p.icmp?.type === type;
const echoReplies = (pkts: CapturedPacket[]): CapturedPacket[] => pkts.filter(isIcmp(ECHO_REPLY));
const echoRequests = (pkts: CapturedPacket[]): CapturedPacket[] => pkts.filter(isIcmp(ECHO_REQUEST));
const between =
  (src: string, dst: string) =>
  (p: CapturedPacket): boolean =>
    p.src === src && p.dst === dst;
const echoKey = (p: CapturedPacket): string => `id ${p.icmp!.id} seq ${p.icmp!.seq}`;

/** Echo requests `client` sent to `target` that have no reply in the same capture. */
function unanswered(pkts: CapturedPacket[], client: string, target: string): string[] {
  const got = new Set(echoReplies(pkts).filter(between(target, client)).map(echoKey));
  return echoRequests(pkts)
    .filter(between(client, target))
    .map(echoKey)
    .filter((k) => !got.has(k));
}

/** A one-line rendering of packets for failure messages. */
const show = (pkts: CapturedPacket[]): string[] => pkts.map((p) => p.summary || `${p.src} > ${p.dst} ${p.proto} ${JSON.stringify(p.icmp ?? {})}`);

/** Polls `probe` until it returns true or the time is up; returns the last verdict. */
async function until(probe: () => Promise<boolean> | boolean, timeoutMs = 5000, stepMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
}

// --- raw frames for the malformed-ICMP case -------------------------------------------------------

function checksum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length % 2) s += b[b.length - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

const ipBytes = (a: string): Buffer => Buffer.from(a.split('.').map(Number));
const macBytes = (m: string): Buffer => Buffer.from(m.split(':').map((x) => parseInt(x, 16)));

/** An IPv4 header (20 bytes, correct checksum, TTL 64) followed by `payload`. */
function ipv4(src: string, dst: string, proto: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payload.length, 2);
  h.writeUInt16BE(0x4242, 4);
  h[8] = 64;
  h[9] = proto;
  ipBytes(src).copy(h, 12);
  ipBytes(dst).copy(h, 16);
  h.writeUInt16BE(checksum(h), 10);
  return Buffer.concat([h, payload]);
}

/** An ICMP message: type, code, the 4-byte "rest of header", data; checksum correct unless told. */
function icmp(type: number, code: number, rest: Buffer, data: Buffer, opts: { badChecksum?: boolean } = {}): Buffer {
  const m = Buffer.concat([Buffer.from([type, code, 0, 0]), rest, data]);
  let ck = checksum(m);
  if (opts.badChecksum) ck ^= 0x5a5a;
  m.writeUInt16BE(ck, 2);
  return m;
}

function ether(dst: string, src: string, ip: Buffer): Buffer {
  return Buffer.concat([macBytes(dst), macBytes(src), Buffer.from([0x08, 0x00]), ip]);
}

// --- observing a lab --------------------------------------------------------------------------------

interface Observed<T> {
  res: T;
  /** router-a's uplink (toward the appliance's uplink-a). */
  a: CapturedPacket[];
  /** router-b's uplink (toward the appliance's uplink-b). */
  b: CapturedPacket[];
  /** client-a's eth0. */
  ca: CapturedPacket[];
  /** client-b's eth0. */
  cb: CapturedPacket[];
  /** The `extra` captures, by "role/dev". */
  more: Record<string, CapturedPacket[]>;
}

/**
 * Runs `fn` with ICMP captures on both routers' uplinks, both clients' eth0 and `extra` devices
 * ([role, dev, filter = 'icmp']).
 * Afterwards waits (up to `settleMs`) until each client has seen an answer — echo reply or ICMP
 * error — for each echo request it sent, so a late reply is still in the captures.
 */
async function observe<T>(sc: LabScenario, fn: () => Promise<T>, extra: [Role | 'root', string, string?][] = [], settleMs = 3000): Promise<Observed<T>> {
  const spec: [string, Role | 'root', string, string][] = [
    ['a', 'router-a', 'uplink', 'icmp'],
    ['b', 'router-b', 'uplink', 'icmp'],
    ['ca', 'client-a', 'eth0', 'icmp'],
    ['cb', 'client-b', 'eth0', 'icmp'],
    ...extra.map(([r, d, f]): [string, Role | 'root', string, string] => [`${r}/${d}`, r, d, f ?? 'icmp']),
  ];
  const caps: [string, Capture][] = [];
  try {
    for (const [k, role, dev, filter] of spec) caps.push([k, await sc.lab.startCapture(role, dev, filter)]);
    const res = await fn();
    const clients = caps.filter(([k]) => k === 'ca' || k === 'cb').map(([, c]) => c);
    await until(
      () =>
        clients.every((c) => {
          let pkts: CapturedPacket[];
          try {
            pkts = parsePcap(fs.readFileSync(c.file)) as CapturedPacket[];
          } catch {
            return false;
          }
          const answers = pkts.filter((p) => p.icmp?.type === ECHO_REPLY || p.icmp?.type === DEST_UNREACH || p.icmp?.type === TIME_EXCEEDED);
          return answers.length >= echoRequests(pkts).length;
        }),
      settleMs,
    );
    const out: Record<string, CapturedPacket[]> = {};
    for (const [k, c] of caps) out[k] = await c.stop();
    const { a, b, ca, cb, ...more } = out;
    return { res, a, b, ca, cb, more };
  } finally {
    await Promise.all(caps.map(([, c]) => c.stop()));
  }
}

async function applianceMacs(sc: LabScenario): Promise<Record<string, string>> {
  const { ports } = await sc.app.api.ports.listPorts({});
  return Object.fromEntries(ports.map((p) => [p.name, p.mac]));
}

/** Everything the captures saw of `target`, and the drop counters that moved: for loss messages. */
async function lossReport(
  sc: LabScenario,
  target: string,
  r: PingResult,
  caps: Record<string, CapturedPacket[]>,
  before: GetCountersResponse,
): Promise<string> {
  const now = await sc.counters();
  const lines = [r.output.trim()];
  for (const [where, pkts] of Object.entries(caps)) lines.push(`-- ${where}`, ...show(pkts.filter((p) => p.src === target || p.dst === target)));
  for (const d of now.drops) {
    const was = before.drops.find((x) => x.port === d.port)!.counters as unknown as Record<string, bigint>;
    const moved = Object.entries(d.counters as unknown as Record<string, bigint>).filter(([k, v]) => v !== was[k]);
    if (moved.length) lines.push(`-- drops ${d.port}: ${moved.map(([k, v]) => `${k} +${v - was[k]}`).join(', ')}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------

describe('ICMP through retrace (source-in, source-out)', () => {
  let sc: LabScenario;
  const reals = (port: number): RealSpec[] => RS_ADDRS.map((address) => ({ address, port }));
  const routerMac = (r: 'router-a' | 'router-b'): string => sc.lab.mac(r, 'uplink');

  beforeAll(async () => {
    sc = await LabScenario.start({ ports: { port: { servers: { mtu: SERVERS_MTU } } } });
    // The lab's routers send only VIPs to the appliance; the servers net (LIPs, the servers port
    // address) becomes reachable from client-b once router-b sends it to uplink-b as well.
    sc.lab.replaceRoute('router-b', LAB.serversNet, LAB.ports['uplink-b'].addr);
    await sc.addService('tcp', VIP_LOCAL, LAB.echoPort, 'rr', reals(LAB.echoPort));
    await sc.addService('icmp', VIP_ICMP, 0, 'rr', reals(0));
    await sc.addService('udp', VIP_UDP, CLOSED_PORT, 'rr', reals(CLOSED_PORT));
    await sc.addService('tcp', VIP_MTU, LAB.echoPort, 'rr', reals(LAB.echoPort));
    await sc.addService('udp', VIP_UDP_ECHO, LAB.echoPort, 'rr', reals(LAB.echoPort));
  }, 120000);

  afterAll(async () => {
    await sc?.destroy();
  }, 60000);

  /**
   * Pings every local target from client-b (5 each, one after the other). Per target: what ping
   * got, the requests client-b sent, and the ones left unanswered (with a report if any).
   */
  async function pingLocalTargets() {
    const before = await sc.counters();
    // For loss reports only. A capture on a root end shows what reached the appliance; what it
    // sends there does not show (af_packet's transmit skips the taps).
    const probes: [Role | 'root', string][] = [
      ['router-a', 'inter'],
      ['root', 'uplink-a'],
      ['root', 'uplink-b'],
    ];
    const obs = await observe(
      sc,
      async () => {
        const out: PingResult[] = [];
        for (const addr of LOCAL_TARGETS) out.push(await sc.lab.ping('client-b', addr, { count: 5, deadline: DEADLINE }));
        return out;
      },
      probes,
    );
    const per = [];
    for (const [i, addr] of LOCAL_TARGETS.entries()) {
      const r = obs.res[i];
      const lost = unanswered(obs.cb, LAB.clientB, addr);
      const requests = echoRequests(obs.cb).filter(between(LAB.clientB, addr)).length;
      const caps = { 'client-b/eth0': obs.cb, 'router-a/uplink': obs.a, 'router-b/uplink': obs.b, ...obs.more };
      // With a deadline ping may send (and get answers to) more than 5 if replies come late.
      const report = lost.length || r.received < 5 ? await lossReport(sc, addr, r, caps, before) : undefined;
      per.push({ addr, gotAll: r.received >= 5, requests, lost, report });
    }
    return { per, a: obs.a, b: obs.b };
  }

  describe('echo to our own addresses from behind the non-default uplink', () => {
    it('answers every ping from client-b out of uplink-b, none by the default route, counting route_divergence', async () => {
      const macs = await applianceMacs(sc);
      const before = await sc.counters();
      const { per, a, b } = await pingLocalTargets();
      const after = await sc.counters();

      for (const t of per) expect(t).toEqual({ addr: t.addr, gotAll: true, requests: t.requests, lost: [], report: undefined });
      // Nothing came back through router-a.
      expect(show(echoReplies(a))).toEqual([]);
      // Through router-b: a reply per request, from the appliance's uplink-b MAC to router-b's.
      for (const t of per) {
        const mine = echoReplies(b).filter(between(t.addr, LAB.clientB));
        expect({ addr: t.addr, replies: mine.length }).toEqual({ addr: t.addr, replies: t.requests });
        for (const p of mine) {
          expect([p.srcMac, p.dstMac]).toEqual([macs['uplink-b'], routerMac('router-b')]);
          expect([p.ipChecksumOk, p.l4ChecksumOk]).toEqual([true, true]);
        }
      }

      const db = pathDelta(LabScenario.portCounters(after, 'icmp', 'uplink-b'), LabScenario.portCounters(before, 'icmp', 'uplink-b'));
      const da = pathDelta(LabScenario.portCounters(after, 'icmp', 'uplink-a'), LabScenario.portCounters(before, 'icmp', 'uplink-a'));
      expect(db.rx).toBeGreaterThanOrEqual(20n);
      expect(db.txSymmetric).toBeGreaterThanOrEqual(20n);
      // The default route would have sent every one of those replies to router-a.
      expect(db.routeDivergence).toBe(db.txSymmetric);
      expect(db.txRouted).toBe(0n);
      expect(da.txSymmetric + da.txRouted).toBe(0n);
    });
  });

  describe('echo to our own addresses with the ICMP symmetric switch off', () => {
    it('routes the replies by the default route (router-a), still reaching client-b, counted asymmetric', async () => {
      const macs = await applianceMacs(sc);
      await sc.setSymmetric('icmp', false);
      try {
        const before = await sc.counters();
        const { per, a, b } = await pingLocalTargets();
        const after = await sc.counters();

        // The triangle still delivers (router-a hands the replies to router-b over the inter link).
        for (const t of per) expect(t).toEqual({ addr: t.addr, gotAll: true, requests: t.requests, lost: [], report: undefined });
        for (const t of per) {
          const mine = echoReplies(a).filter(between(t.addr, LAB.clientB));
          expect({ addr: t.addr, replies: mine.length }).toEqual({ addr: t.addr, replies: t.requests });
          for (const p of mine) expect([p.srcMac, p.dstMac]).toEqual([macs['uplink-a'], routerMac('router-a')]);
        }
        expect(show(echoReplies(b))).toEqual([]);
        // The requests still came in by router-b.
        const requests = per.reduce((n, t) => n + t.requests, 0);
        expect(echoRequests(b).filter((p) => p.src === LAB.clientB)).toHaveLength(requests);

        const da = pathDelta(LabScenario.portCounters(after, 'icmp', 'uplink-a'), LabScenario.portCounters(before, 'icmp', 'uplink-a'));
        const db = pathDelta(LabScenario.portCounters(after, 'icmp', 'uplink-b'), LabScenario.portCounters(before, 'icmp', 'uplink-b'));
        expect(da.txRouted).toBeGreaterThanOrEqual(BigInt(requests));
        // Every one of them is a triangle (request in on uplink-b, reply out of uplink-a), the
        // first one included, which waited in the hold queue for router-a's MAC.
        expect({ asymmetric: da.asymmetric, txRouted: da.txRouted }).toEqual({ asymmetric: da.txRouted, txRouted: da.txRouted });
        expect(db.txSymmetric + db.txRouted).toBe(0n);
      } finally {
        await sc.setSymmetric('icmp', true);
      }
    });

    it('goes back to uplink-b once the switch is on again', async () => {
      expect((await sc.app.api.path.getSymmetricMode({})).mode?.icmp).toBe(true);
      const { res, a, b, cb } = await observe(sc, () => sc.lab.ping('client-b', VIP_LOCAL, { count: 3, deadline: DEADLINE }));
      expect(res.received).toBeGreaterThanOrEqual(3);
      expect(unanswered(cb, LAB.clientB, VIP_LOCAL)).toEqual([]);
      expect(show(echoReplies(a))).toEqual([]);
      expect(echoReplies(b).filter(between(VIP_LOCAL, LAB.clientB))).toHaveLength(echoRequests(cb).length);
    });
  });

  describe('echo to a VIP with an ICMP service (FNAT)', () => {
    it('load-balances 20 concurrent pings from both clients over rs1..rs3 from a LIP, each reply leaving by its client uplink', async () => {
      const macs = await applianceMacs(sc);
      const before = await sc.counters();
      const {
        res: pings,
        a,
        b,
        ca,
        cb,
        more,
      } = await observe(
        sc,
        () =>
          Promise.all(
            Array.from({ length: 20 }, async (_, i) => {
              const role: Role = i % 2 === 0 ? 'client-a' : 'client-b';
              return { role, r: await sc.lab.ping(role, VIP_ICMP, { count: 3, deadline: DEADLINE }) };
            }),
          ),
        [['sw', 'uplink']],
      );
      const after = await sc.counters();
      const sw = more['sw/uplink'];

      // Every ping process got all its replies; nothing a client sent went unanswered.
      expect(pings.filter((p) => p.r.received < 3).map((p) => `${p.role}: ${p.r.output}`)).toEqual([]);
      expect(unanswered(ca, LAB.clientA, VIP_ICMP)).toEqual([]);
      expect(unanswered(cb, LAB.clientB, VIP_ICMP)).toEqual([]);
      const reqA = echoRequests(ca).filter(between(LAB.clientA, VIP_ICMP));
      const reqB = echoRequests(cb).filter(between(LAB.clientB, VIP_ICMP));
      const ids = (pkts: CapturedPacket[]): number[] => [...new Set(pkts.map((p) => p.icmp!.id!))].sort((x, y) => x - y);
      // Ten ping processes per client, each with its own echo id.
      expect(ids(reqA)).toHaveLength(10);
      expect(ids(reqB)).toHaveLength(10);

      // Server side: from a LIP to a real, one real per conn, every request answered by its real.
      const toReals = echoRequests(sw);
      expect(toReals).toHaveLength(reqA.length + reqB.length);
      const connReal = new Map<string, string>();
      for (const p of toReals) {
        expect(LIP_SET.has(p.src!) && RS_ADDRS.includes(p.dst!)).toBe(true);
        expect([p.srcMac, p.l4ChecksumOk]).toEqual([macs.servers, true]);
        const conn = `${p.src} id ${p.icmp!.id}`;
        expect(`${conn} -> ${p.dst}`).toBe(`${conn} -> ${connReal.get(conn) ?? p.dst}`);
        connReal.set(conn, p.dst!);
      }
      expect(connReal.size).toBe(20);
      for (const p of toReals) {
        const reply = echoReplies(sw).find((q) => q.src === p.dst && q.dst === p.src && echoKey(q) === echoKey(p));
        expect(reply ? 'answered' : `unanswered: ${p.summary}`).toBe('answered');
      }
      // rr over three reals: each takes about a third of the 20 conns.
      const perReal = RS_ADDRS.map((rs) => [...connReal.values()].filter((d) => d === rs).length);
      for (const n of perReal) expect(n).toBeGreaterThanOrEqual(5);

      // Client side: requests came in on each client's own uplink, replies left by the same one,
      // carrying the client's own echo id again.
      const repA = echoReplies(a).filter((p) => p.src === VIP_ICMP);
      const repB = echoReplies(b).filter((p) => p.src === VIP_ICMP);
      expect(show(repA.filter((p) => p.dst !== LAB.clientA))).toEqual([]);
      expect(show(repB.filter((p) => p.dst !== LAB.clientB))).toEqual([]);
      expect(repA).toHaveLength(reqA.length);
      expect(repB).toHaveLength(reqB.length);
      for (const p of repA) expect([p.srcMac, p.dstMac, p.l4ChecksumOk]).toEqual([macs['uplink-a'], routerMac('router-a'), true]);
      for (const p of repB) expect([p.srcMac, p.dstMac, p.l4ChecksumOk]).toEqual([macs['uplink-b'], routerMac('router-b'), true]);
      expect(ids(repA)).toEqual(ids(reqA));
      expect(ids(repB)).toEqual(ids(reqB));

      const dA = pathDelta(LabScenario.portCounters(after, 'icmp', 'uplink-a'), LabScenario.portCounters(before, 'icmp', 'uplink-a'));
      const dB = pathDelta(LabScenario.portCounters(after, 'icmp', 'uplink-b'), LabScenario.portCounters(before, 'icmp', 'uplink-b'));
      expect(dA.txSymmetric).toBeGreaterThanOrEqual(BigInt(reqA.length));
      expect(dB.txSymmetric).toBeGreaterThanOrEqual(BigInt(reqB.length));
      // client-a's replies follow the default route anyway; client-b's would not have.
      expect(dB.routeDivergence).toBeGreaterThanOrEqual(BigInt(reqB.length));
    });
  });

  describe('ICMP errors from a real server', () => {
    it("brings a real's port-unreachable to client-b, translated, through client-b's own uplink", async () => {
      const macs = await applianceMacs(sc);
      const before = await sc.counters();
      const { res, a, b } = await observe(sc, () => sc.lab.udpEcho('client-b', VIP_UDP, CLOSED_PORT, { count: 3, connected: true, timeoutMs: 5000 }));
      const after = await sc.counters();

      expect(res.results.map((r) => r.reason)).toEqual(['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED']);
      expect(show(a.filter(isIcmp(DEST_UNREACH)))).toEqual([]);
      const unreach = b.filter(isIcmp(DEST_UNREACH));
      expect(unreach).toHaveLength(3);
      for (const p of unreach) {
        expect([p.src, p.dst, p.icmp!.code]).toEqual([VIP_UDP, LAB.clientB, 3]);
        expect([p.srcMac, p.dstMac]).toEqual([macs['uplink-b'], routerMac('router-b')]);
        expect([p.ipChecksumOk, p.l4ChecksumOk]).toEqual([true, true]);
        // The quote is client-b's datagram as client-b sent it: client → VIP, client's port → VIP port.
        expect(p.icmp!.quoted).toMatchObject({ src: LAB.clientB, dst: VIP_UDP, proto: 'udp', dport: CLOSED_PORT });
      }
      expect(unreach.map((p) => p.icmp!.quoted!.sport).sort()).toEqual(res.results.map((r) => r.localPort).sort());

      const db = pathDelta(LabScenario.portCounters(after, 'icmp', 'uplink-b'), LabScenario.portCounters(before, 'icmp', 'uplink-b'));
      const ds = pathDelta(LabScenario.portCounters(after, 'icmp', 'servers'), LabScenario.portCounters(before, 'icmp', 'servers'));
      expect(ds.rx).toBeGreaterThanOrEqual(3n);
      expect(db.txSymmetric).toBeGreaterThanOrEqual(3n);
      expect(db.routeDivergence).toBeGreaterThanOrEqual(3n);
    });

    it("brings client-b's port-unreachable to the real, translated: from a LIP, quoting the real's datagram to that LIP", async () => {
      const macs = await applianceMacs(sc);
      const before = await sc.counters();
      // bash sends one datagram and closes the socket at once: the echo comes back to a closed
      // port, and client-b's kernel answers the VIP with a port-unreachable.
      const txS0 = LabScenario.portCounters(before, 'icmp', 'servers').txSymmetric;
      const { b, more } = await observe(sc, async () => {
        sc.lab.exec('client-b', 'bash', ['-c', `echo hello > /dev/udp/${VIP_UDP_ECHO}/${LAB.echoPort}`]);
        // Until the appliance has passed the error on to the real.
        await until(async () => LabScenario.portCounters(await sc.counters(), 'icmp', 'servers').txSymmetric > txS0, 10000);
      }, [['sw', 'uplink', 'udp or icmp']]);
      const after = await sc.counters();
      const sw = more['sw/uplink'];

      // client-b → VIP: the error as client-b's kernel sent it.
      const fromClient = b.filter((p) => isIcmp(DEST_UNREACH)(p) && p.src === LAB.clientB);
      expect(fromClient).toHaveLength(1);
      expect(fromClient[0].icmp).toMatchObject({ code: 3, quoted: { src: VIP_UDP_ECHO, dst: LAB.clientB, proto: 'udp', sport: LAB.echoPort } });
      // On the server side: the datagram went LIP:lport → real:8080 and came back; the error
      // follows, LIP → real, quoting real:8080 → LIP:lport.
      const toReal = sw.find((p) => p.proto === 'udp' && LIP_SET.has(p.src!) && RS_ADDRS.includes(p.dst!));
      expect(toReal).toBeDefined();
      const errs = sw.filter(isIcmp(DEST_UNREACH));
      expect(show(errs)).toHaveLength(1);
      const e = errs[0];
      expect([e.src, e.dst, e.icmp!.code]).toEqual([toReal!.src, toReal!.dst, 3]);
      expect(e.icmp!.quoted).toEqual({ src: toReal!.dst, dst: toReal!.src, proto: 'udp', sport: LAB.echoPort, dport: toReal!.sport });
      const rs = REAL_SERVERS.find((r) => LAB.rs[r] === toReal!.dst)!;
      expect([e.srcMac, e.dstMac]).toEqual([macs.servers, sc.lab.mac(rs, 'eth0')]);
      expect([e.ipChecksumOk, e.l4ChecksumOk]).toEqual([true, true]);

      const ds = pathDelta(LabScenario.portCounters(after, 'icmp', 'servers'), LabScenario.portCounters(before, 'icmp', 'servers'));
      expect(ds.txSymmetric).toBeGreaterThanOrEqual(1n);
    });
  });

  describe('path MTU (servers port MTU 1200, clients 1500)', () => {
    it('sends fragmentation-needed back to client-b out of uplink-b, so a 20 kB TCP echo completes', async () => {
      const macs = await applianceMacs(sc);
      const before = await sc.counters();
      const { res, a, b } = await observe(sc, () => sc.lab.tcpEcho('client-b', VIP_MTU, LAB.echoPort, { conns: 2, bytes: 20_000, timeoutMs: 20000 }));
      const after = await sc.counters();

      expect(res.failures).toEqual([]);
      for (const r of res.results) expect(r).toMatchObject({ ok: true, echoed: 20_000, closed: true });

      expect(show(a.filter(isIcmp(DEST_UNREACH)))).toEqual([]);
      const fragNeeded = b.filter((p) => p.icmp?.type === DEST_UNREACH && p.icmp.code === 4);
      expect(fragNeeded.length).toBeGreaterThan(0);
      const localPorts = res.results.map((r) => r.localPort);
      for (const p of fragNeeded) {
        expect([p.src, p.dst, p.icmp!.mtu]).toEqual([VIP_MTU, LAB.clientB, SERVERS_MTU]);
        expect([p.srcMac, p.dstMac]).toEqual([macs['uplink-b'], routerMac('router-b')]);
        expect([p.ipChecksumOk, p.l4ChecksumOk]).toEqual([true, true]);
        // The quote is the client's segment as the client sent it.
        expect(p.icmp!.quoted).toMatchObject({ src: LAB.clientB, dst: VIP_MTU, proto: 'tcp', dport: LAB.echoPort });
        expect(localPorts).toContain(p.icmp!.quoted!.sport);
      }

      const mtuDrops = drops(after, 'servers').mtuExceeded - drops(before, 'servers').mtuExceeded;
      expect(mtuDrops).toBeGreaterThanOrEqual(BigInt(fragNeeded.length));
      const db = pathDelta(LabScenario.portCounters(after, 'icmp', 'uplink-b'), LabScenario.portCounters(before, 'icmp', 'uplink-b'));
      expect(db.txSymmetric).toBeGreaterThanOrEqual(BigInt(fragNeeded.length));
    });

    it('tells a DF ping too big for the servers side (ICMP service) the MTU, quoting its echo id', async () => {
      // client-b has not learnt a path MTU for this VIP yet, so its kernel sends the 1328-byte packet.
      const { res, a, b, cb } = await observe(sc, () => sc.lab.ping('client-b', VIP_ICMP, { count: 1, size: 1300, dontFragment: true, timeout: 5 }));
      expect(res.received).toBe(0);
      expect(res.errors.join('\n')).toMatch(new RegExp(`From ${VIP_ICMP.replace(/\./g, '\\.')} .*Frag needed.*mtu = ${SERVERS_MTU}`));
      const req = echoRequests(cb).filter(between(LAB.clientB, VIP_ICMP));
      const fn = b.filter((p) => p.icmp?.type === DEST_UNREACH && p.icmp.code === 4);
      expect(req).toHaveLength(1);
      expect(fn).toHaveLength(1);
      expect(fn[0]).toMatchObject({ src: VIP_ICMP, dst: LAB.clientB, l4ChecksumOk: true });
      expect(fn[0].icmp).toMatchObject({ mtu: SERVERS_MTU, quoted: { src: LAB.clientB, dst: VIP_ICMP, proto: 'icmp', icmpId: req[0].icmp!.id } });
      expect(show(a.filter(isIcmp(DEST_UNREACH)))).toEqual([]);
    });
  });

  describe('time exceeded, generated by the appliance', () => {
    it('answers a request to the ICMP service arriving with TTL 1 from the VIP, out of the ingress port (uplink-b)', async () => {
      const macs = await applianceMacs(sc);
      const before = await sc.counters();
      // TTL 2 from client-b: router-b forwards it with TTL 1, which the appliance may not forward.
      const { res, a, b, cb } = await observe(sc, () => sc.lab.ping('client-b', VIP_ICMP, { count: 2, ttl: 2, timeout: 5 }));
      const after = await sc.counters();

      expect(res.received).toBe(0);
      expect(res.errors).toHaveLength(2);
      for (const e of res.errors) expect(e).toMatch(new RegExp(`^From ${VIP_ICMP.replace(/\./g, '\\.')} .*Time to live exceeded`));
      const exceeded = b.filter(isIcmp(TIME_EXCEEDED));
      expect(exceeded).toHaveLength(2);
      const reqIds = echoRequests(cb)
        .filter(between(LAB.clientB, VIP_ICMP))
        .map((p) => p.icmp!.id);
      for (const p of exceeded) {
        expect([p.src, p.dst, p.icmp!.code]).toEqual([VIP_ICMP, LAB.clientB, 0]);
        expect([p.srcMac, p.dstMac]).toEqual([macs['uplink-b'], routerMac('router-b')]);
        expect(p.l4ChecksumOk).toBe(true);
        expect(p.icmp!.quoted).toMatchObject({ src: LAB.clientB, dst: VIP_ICMP, proto: 'icmp' });
        expect(reqIds).toContain(p.icmp!.quoted!.icmpId);
      }
      expect(show(a.filter(isIcmp(TIME_EXCEEDED)))).toEqual([]);
      expect(drops(after, 'uplink-b').ipTtlExceeded - drops(before, 'uplink-b').ipTtlExceeded).toBe(2n);
      const db = pathDelta(LabScenario.portCounters(after, 'icmp', 'uplink-b'), LabScenario.portCounters(before, 'icmp', 'uplink-b'));
      expect(db.txSymmetric).toBeGreaterThanOrEqual(2n);
      expect(db.routeDivergence).toBeGreaterThanOrEqual(2n);
    });
  });

  describe("a client's uplink changing mid-flow", () => {
    it('moves the replies of running pings (local echo and FNAT) to the new uplink, counting path_changes', async () => {
      const macs = await applianceMacs(sc);
      const before = await sc.counters();
      let obs: Observed<PingResult[]>;
      try {
        obs = await observe(sc, async () => {
          const running = Promise.all([
            sc.lab.ping('client-b', VIP_ICMP, { count: 30, interval: 0.1, deadline: 2 * DEADLINE }),
            sc.lab.ping('client-b', VIP_LOCAL, { count: 30, interval: 0.1, deadline: 2 * DEADLINE }),
          ]);
          // Switch once both pings have had several requests through router-b.
          const rxB0 = LabScenario.portCounters(before, 'icmp', 'uplink-b').rx;
          await until(async () => LabScenario.portCounters(await sc.counters(), 'icmp', 'uplink-b').rx - rxB0 >= 16n, 10000, 50);
          sc.lab.routeClientBVia('router-a');
          return running;
        });
      } finally {
        sc.lab.routeClientBVia('router-b');
      }
      const after = await sc.counters();
      const { res: pings, a, b, cb } = obs;

      for (const r of pings) expect(r.received).toBeGreaterThanOrEqual(30);
      for (const vip of [VIP_ICMP, VIP_LOCAL]) {
        // At most a couple of replies lost in the switch.
        expect(unanswered(cb, LAB.clientB, vip).length).toBeLessThanOrEqual(2);
        const viaB = echoReplies(b).filter(between(vip, LAB.clientB));
        const viaA = echoReplies(a).filter(between(vip, LAB.clientB));
        // Before the change: by uplink-b; after it: by uplink-a toward router-a's MAC; every reply
        // client-b got took one of the two.
        expect({ vip, beforeSwitch: viaB.length > 0, afterSwitch: viaA.length > 0 }).toEqual({ vip, beforeSwitch: true, afterSwitch: true });
        expect(viaB.length + viaA.length).toBe(echoReplies(cb).filter(between(vip, LAB.clientB)).length);
        for (const p of viaA) expect([p.srcMac, p.dstMac]).toEqual([macs['uplink-a'], routerMac('router-a')]);
        // Once moved, nothing more by router-b.
        expect(Math.max(...viaB.map((p) => p.time))).toBeLessThanOrEqual(Math.min(...viaA.map((p) => p.time)));
      }
      // client-b's requests after the switch came in through router-a (on uplink-a).
      expect(echoRequests(a).filter((p) => p.src === LAB.clientB).length).toBeGreaterThan(0);

      const da = pathDelta(LabScenario.portCounters(after, 'icmp', 'uplink-a'), LabScenario.portCounters(before, 'icmp', 'uplink-a'));
      // A refresh per conn (the FNAT conn and the local one), counted on the port they moved to.
      expect(da.pathChanges).toBeGreaterThanOrEqual(2n);
      expect(da.txSymmetric).toBeGreaterThan(0n);
    });

    it('returns to uplink-b after the route is restored', async () => {
      const { res, a, b, cb } = await observe(sc, () => sc.lab.ping('client-b', VIP_ICMP, { count: 3, deadline: DEADLINE }));
      expect(res.received).toBeGreaterThanOrEqual(3);
      expect(unanswered(cb, LAB.clientB, VIP_ICMP)).toEqual([]);
      expect(echoReplies(b).filter(between(VIP_ICMP, LAB.clientB))).toHaveLength(echoRequests(cb).length);
      expect(show(echoReplies(a))).toEqual([]);
    });
  });

  describe('malformed ICMP', () => {
    it('drops each kind under its own reason, exactly as many as injected, and keeps serving', async () => {
      const macs = await applianceMacs(sc);
      const frame = (ip: Buffer): Buffer => ether(macs['uplink-b'], routerMac('router-b'), ip);
      const me = LAB.clientB;
      const port = LAB.ports['uplink-b'].addr;
      const idSeq = (id: number, seq: number): Buffer => Buffer.from([id >> 8, id & 0xff, seq >> 8, seq & 0xff]);
      // A UDP datagram as the appliance might have sent it to client-b, of a conn nobody has.
      const quotedUdp = ipv4(VIP_UDP, me, 17, Buffer.from([0x23, 0x45, 0xd4, 0x31, 0x00, 0x10, 0x00, 0x00]));

      const kinds: { reason: keyof DropCounters; n: number; build: (i: number) => Buffer }[] = [
        // 4 bytes of ICMP: shorter than its 8-byte header.
        { reason: 'icmpTruncated', n: 2, build: () => frame(ipv4(me, port, 1, Buffer.from([ECHO_REQUEST, 0, 0xf7, 0xff]))) },
        // An echo request whose checksum is off.
        {
          reason: 'icmpBadChecksum',
          n: 3,
          build: (i) => frame(ipv4(me, port, 1, icmp(ECHO_REQUEST, 0, idSeq(0x7001, i), Buffer.alloc(16, 0xab), { badChecksum: true }))),
        },
        // Port unreachable quoting 10 bytes: less than an IP header.
        { reason: 'icmpErrorTruncated', n: 4, build: () => frame(ipv4(me, port, 1, icmp(DEST_UNREACH, 3, Buffer.alloc(4), quotedUdp.subarray(0, 10)))) },
        // Port unreachable quoting a whole IP header + 8 bytes, of a conn that does not exist.
        { reason: 'icmpErrorNoConn', n: 5, build: () => frame(ipv4(me, port, 1, icmp(DEST_UNREACH, 3, Buffer.alloc(4), quotedUdp))) },
        // Timestamp request: a type we neither answer nor forward.
        { reason: 'icmpUnsupported', n: 6, build: (i) => frame(ipv4(me, port, 1, icmp(13, 0, idSeq(0x7002, i), Buffer.alloc(12)))) },
      ];

      // With a kernel interface on uplink-b (RETRACE_LAB_KERNEL=1), errors about no conn and
      // unsupported types addressed to the port address are the kernel's: they go up, not dropped.
      const upToKernel = sc.kernelPorts.includes('uplink-b');
      const goesUp = (r: keyof DropCounters) => upToKernel && (r === 'icmpErrorNoConn' || r === 'icmpUnsupported');
      const portStats = async () => (await sc.app.api.ports.getPort({ name: 'uplink-b' })).port!.stats!;
      const statsBefore = await portStats();
      const before = drops(await sc.counters(), 'uplink-b');
      sc.lab.injectFrames(
        'router-b',
        'uplink',
        kinds.flatMap((k) => Array.from({ length: k.n }, (_, i) => k.build(i))),
      );
      const delta = async (): Promise<Record<string, bigint>> => {
        const now = drops(await sc.counters(), 'uplink-b');
        return Object.fromEntries(kinds.map((k) => [k.reason, (now[k.reason] as bigint) - (before[k.reason] as bigint)]));
      };
      const want = Object.fromEntries(kinds.map((k) => [k.reason, goesUp(k.reason) ? 0n : BigInt(k.n)]));
      await until(async () => {
        const d = await delta();
        return kinds.every((k) => d[k.reason] >= want[k.reason]);
      }, 10000);
      await sleep(300); // and nothing more trickles in
      expect(await delta()).toEqual(want);
      if (upToKernel) {
        const sent = kinds.filter((k) => goesUp(k.reason)).reduce((n, k) => n + k.n, 0);
        expect((await portStats()).toKernel - statsBefore.toKernel).toBeGreaterThanOrEqual(BigInt(sent));
      }

      expect(sc.app.running).toBe(true);
      expect(await sc.app.healthCheck()).toBe('SERVING');
      expect((await sc.lab.ping('client-b', port, { count: 2, deadline: DEADLINE })).received).toBeGreaterThanOrEqual(2);
    });
  });
});

describe('ICMP rate limit (a second appliance with dataplane.icmp_rate 50, icmp_burst 10)', () => {
  let sc: LabScenario;

  beforeAll(async () => {
    sc = await LabScenario.start({ dataplane: { icmp_rate: 50, icmp_burst: 10 } });
  }, 120000);

  afterAll(async () => {
    await sc?.destroy();
  }, 60000);

  it('answers a ping flood only in part and counts icmp_rate_limited on the ingress port', async () => {
    const port = LAB.ports['uplink-b'].addr;
    const before = await sc.counters();
    const { res, cb } = await observe(sc, () => sc.lab.ping('client-b', port, { count: 300, interval: 0.002 }));
    const after = await sc.counters();
    const limited = drops(after, 'uplink-b').icmpRateLimited - drops(before, 'uplink-b').icmpRateLimited;
    const requests = echoRequests(cb).filter(between(LAB.clientB, port)).length;
    const replies = echoReplies(cb).filter(between(port, LAB.clientB)).length;

    expect(res.transmitted).toBe(300);
    expect(requests).toBe(300);
    expect(replies).toBeGreaterThan(0);
    expect(res.received).toBeGreaterThan(0);
    expect(limited).toBeGreaterThan(0n);
    // Every request was either answered or counted as rate-limited.
    expect(limited + BigInt(replies)).toBe(BigInt(requests));
    expect(await sc.app.healthCheck()).toBe('SERVING');
  });
});
