/**
 * The client's address at the reals (docs/design.md, "The client's address at the real") in the
 * namespace lab: real kernel TCP clients in client-a (behind uplink A) and client-b (behind
 * uplink B), real readers behind the server port:
 *   - HAProxy from its Debian package with `accept-proxy` on rs1..rs3, in front of the lab's echo
 *     server on the same host, logging the client address and port each PROXY header carried;
 *   - nginx (nginx-light) with `listen ... proxy_protocol`, answering curl with
 *     $proxy_protocol_addr:$proxy_protocol_port and logging it;
 *   - for TOA (Linux needs a kernel module to read it) the option's bytes in a capture on the
 *     server-side link, the reals being the plain echo servers;
 *   - a UDP real of our own (src/lab/proxy-udp.ts) that parses PROXY v2 and answers with the
 *     source it read.
 * 1 MB goes each way per conn and comes back byte-identical (the echo client compares every byte),
 * also with loss injected on the server-side links (tc netem, or iptables' statistic match on a
 * kernel without netem); in every mode the replies retrace
 * the request's path (captures on both routers' uplinks, path counters).
 */
import { LabScenario, pathDelta, type Proto, type RealSpec } from '../../src/lab/scenario';
import { HaproxyReal, NginxReal, UdpProxyReal, httpGet, udpAsk } from '../../src/lab/proxy-reals';
import { LAB, labVip, REAL_SERVERS, type CapturedPacket, type RootPort } from '../../src/lab/topology';
import type { TcpEchoReport } from '../../src/lab/results';
import { ClientAddressMode, UpdateVirtualServiceRequest, type VirtualService } from '../../src/gen/retrace/v1/balancer';
import type { GetCountersResponse, PathCounters } from '../../src/gen/retrace/v1/path';
import { Protocol, Scheduler, SynProxyMode } from '../../src/gen/retrace/v1/types';
import { debianTool, describeWith } from '../helpers/tools';

const HAPROXY = debianTool('haproxy', 'haproxy');
const NGINX = debianTool('nginx', 'nginx-light');
const CURL = debianTool('curl', 'curl');
const ECHO = LAB.echoPort;
const PP_PORT = 9000; // HAProxy with accept-proxy on every real
const UDP_PP_PORT = 9001; // the UDP PROXY v2 real
const NGINX_PORT = 9002; // nginx with listen ... proxy_protocol on every real
const MB = 1 << 20;
const SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const reals = (port: number): RealSpec[] => REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port, weight: 1 }));
const ipOf = (b: Buffer, o: number): string => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

/** "client:port" of every conn of a report (the kernel's choice of source port). */
const kernelClients = (client: string, r: TcpEchoReport): string[] => r.results.map((x) => `${client}:${x.localPort}`);

/** The source a PROXY header (v2 binary or v1 text) at the start of a payload names, or null. */
function headerSource(p: Buffer): string | null {
  if (p.length >= 28 && p.subarray(0, 12).equals(SIG)) return `${ipOf(p, 16)}:${p.readUInt16BE(24)}`;
  const m = /^PROXY TCP4 (\S+) (\S+) (\d+) (\d+)\r\n/.exec(p.toString('latin1'));
  return m === null ? null : `${m[1]}:${m[3]}`;
}

/** TCP/Retrans segments the kernel of a namespace has sent so far (/proc/net/snmp). */
function retransSegs(out: string): number {
  const tcp = out.split('\n').filter((l) => l.startsWith('Tcp:'));
  const names = tcp[0].split(/\s+/);
  return Number(tcp[1].split(/\s+/)[names.indexOf('RetransSegs')]);
}

describeWith(
  HAPROXY,
  NGINX,
  CURL,
)('the client address at the reals (lab: HAProxy accept-proxy, TOA capture, UDP PROXY v2)', () => {
  let sc: LabScenario;
  let haproxies: HaproxyReal[] = [];
  let udpReals: UdpProxyReal[] = [];
  let nginxes: NginxReal[] = [];
  const portMac: Partial<Record<RootPort, string>> = {};
  let metricsUrl = '';
  const metric = (text: string, name: string, proto: Proto, vip: string, vport: number): number => {
    const line = text.split('\n').find((l) => l.startsWith(`${name}{protocol="${proto}",vip="${vip}",vport="${vport}"}`));
    if (line === undefined) throw new Error(`no ${name} for ${proto}/${vip}:${vport} in /metrics`);
    return Number(line.split(' ').pop());
  };

  const lab = () => sc.lab;
  const delta = (after: GetCountersResponse, before: GetCountersResponse, proto: Proto, port: RootPort): PathCounters =>
    pathDelta(LabScenario.portCounters(after, proto, port), LabScenario.portCounters(before, proto, port));
  const key = (protocol: Protocol, vip: string, port: number) => ({ protocol, vip, port });
  const service = async (protocol: Protocol, vip: string, port: number): Promise<VirtualService> =>
    (await sc.app.api.balancer.getVirtualService({ key: key(protocol, vip, port) })).virtualService!;
  /** Where each HAProxy's log stands, and what they logged since such a mark. */
  const mark = (): number[] => haproxies.map((h) => h.clients().length);
  const loggedSince = (m: number[]): string[] => haproxies.flatMap((h, i) => h.clients().slice(m[i]));

  /** Whether this kernel has sch_netem (tried on rs1's loopback). */
  function hasNetem(): boolean {
    try {
      lab().exec('rs1', 'tc', ['qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'loss', '0%']);
      lab().exec('rs1', 'tc', ['qdisc', 'del', 'dev', 'lo', 'root']);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * A service in a client-address mode: created plain, the mode (and with `synProxy` a SYN proxy
   * that answers every SYN itself) set with UpdateVirtualService.
   */
  async function addService(proto: Proto, vip: string, port: number, rport: number, mode: ClientAddressMode, synProxy = false): Promise<void> {
    await sc.addService(proto, vip, port, 'rr', reals(rport));
    await sc.app.api.balancer.updateVirtualService({
      ...UpdateVirtualServiceRequest.create(),
      key: key(proto === 'tcp' ? Protocol.PROTOCOL_TCP : Protocol.PROTOCOL_UDP, vip, port),
      scheduler: Scheduler.SCHEDULER_RR,
      seed: 0,
      limits: undefined,
      healthCheck: undefined,
      removeHealthCheck: false,
      synProxy: synProxy ? { mode: SynProxyMode.SYN_PROXY_MODE_ON, threshold: 0 } : undefined,
      clientAddress: mode,
    });
  }

  /**
   * Runs `traffic` with captures on both routers' uplinks (what leaves the appliance toward the
   * clients) and on the server-side link, then checks the source-in, source-out rule as the
   * symmetric-path tests do: client-a's replies only on router-a's uplink, client-b's only on
   * router-b's, from the right port MAC to the right router MAC, checksums right; and on the
   * counters: client-b's replies sent symmetric out of uplink B against the default route (every
   * one a prevented triangle), nothing routed asymmetrically.
   */
  async function withPathChecks<T>(proto: 'tcp' | 'udp', vip: string, traffic: () => Promise<T>): Promise<{ result: T; toReals: CapturedPacket[] }> {
    const filter = `ip and ${proto} and src host ${vip}`;
    const capA = await lab().startCapture('router-a', 'uplink', filter);
    const capB = await lab().startCapture('router-b', 'uplink', filter);
    const capS = await lab().startCapture('sw', 'uplink', `ip and ${proto} and (src host ${LAB.lips[0]} or src host ${LAB.lips[1]})`, { snaplen: 200 });
    const before = await sc.counters();
    let result: T;
    let seenA: CapturedPacket[];
    let seenB: CapturedPacket[];
    let toReals: CapturedPacket[];
    try {
      result = await traffic();
    } finally {
      seenA = await capA.stop({ settleMs: 300 });
      seenB = await capB.stop({ settleMs: 300 });
      toReals = await capS.stop({ settleMs: 300 });
    }
    const after = await sc.counters();
    const routerA = lab().mac('router-a', 'uplink');
    const routerB = lab().mac('router-b', 'uplink');
    expect(seenA.length).toBeGreaterThan(0);
    expect(seenB.length).toBeGreaterThan(0);
    for (const p of seenA)
      expect({ dst: p.dst, srcMac: p.srcMac, dstMac: p.dstMac, l4Ok: p.l4ChecksumOk }).toEqual({
        dst: LAB.clientA,
        srcMac: portMac['uplink-a'],
        dstMac: routerA,
        l4Ok: true,
      });
    for (const p of seenB)
      expect({ dst: p.dst, srcMac: p.srcMac, dstMac: p.dstMac, l4Ok: p.l4ChecksumOk }).toEqual({
        dst: LAB.clientB,
        srcMac: portMac['uplink-b'],
        dstMac: routerB,
        l4Ok: true,
      });
    // Everything toward the reals leaves by the servers port with right checksums (shifted
    // segments, header segments, grown datagrams alike). Captured frames can be cut by the snap
    // length: only whole ones are judged (l4ChecksumOk undefined otherwise).
    const lips: string[] = [...LAB.lips];
    const toRealsOnly = toReals.filter((p) => lips.includes(p.src!));
    expect(toRealsOnly.length).toBeGreaterThan(0);
    for (const p of toRealsOnly) {
      expect(p.srcMac).toBe(portMac.servers);
      if (p.l4ChecksumOk !== undefined) expect([p.summary, p.l4ChecksumOk]).toEqual([p.summary, true]);
    }
    const onA = delta(after, before, proto, 'uplink-a');
    const onB = delta(after, before, proto, 'uplink-b');
    expect(onB.txSymmetric).toBeGreaterThanOrEqual(BigInt(seenB.length));
    expect(onB.routeDivergence).toBe(onB.txSymmetric);
    expect([onA.asymmetric, onB.asymmetric]).toEqual([0n, 0n]);
    expect(onA.txSymmetric).toBeGreaterThanOrEqual(BigInt(seenA.length));
    return { result: result!, toReals: toRealsOnly };
  }

  beforeAll(async () => {
    sc = await LabScenario.start({ extraYaml: 'timeouts: {tcp_close: 2, tcp_fin: 5}\nmetrics:\n  listen: "127.0.0.1:0"' });
    const listening = sc.app.output.split('\n').find((l) => l.includes('metrics listening'));
    metricsUrl = `http://${JSON.parse(listening!).listen as string}/metrics`;
    for (const p of (await sc.app.api.ports.listPorts({})).ports) portMac[p.name as RootPort] = p.mac.toLowerCase();
    haproxies = await Promise.all(REAL_SERVERS.map((rs) => HaproxyReal.start(sc.lab, rs, PP_PORT, ECHO)));
    udpReals = await Promise.all(REAL_SERVERS.map((rs) => UdpProxyReal.start(sc.lab, rs, UDP_PP_PORT)));
    nginxes = await Promise.all(REAL_SERVERS.map((rs) => NginxReal.start(sc.lab, rs, NGINX_PORT)));
  }, 120000);

  afterAll(async () => {
    await sc?.destroy();
  }, 60000);

  it.each([
    ['PROXY v2', ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2, 100, false],
    ['PROXY v1', ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V1, 101, false],
    // The cookie translates the server's numbering, the header the client's: both on one conn.
    ['PROXY v2 behind a SYN proxy', ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2, 107, true],
  ] as const)(
    '%s: HAProxy logs exactly each kernel client address and port; 1 MB each way identical; paths symmetric',
    async (_name, mode, n, synProxy) => {
      const vip = labVip(n);
      await addService('tcp', vip, PP_PORT, PP_PORT, mode, synProxy);
      expect((await service(Protocol.PROTOCOL_TCP, vip, PP_PORT)).clientAddress).toBe(mode);
      const seen = mark();

      const { result, toReals } = await withPathChecks('tcp', vip, async () => {
        const [a, b] = await Promise.all([
          lab().tcpEcho('client-a', vip, PP_PORT, { conns: 2, concurrency: 2, bytes: MB, timeoutMs: 60000 }),
          lab().tcpEcho('client-b', vip, PP_PORT, { conns: 2, concurrency: 2, bytes: MB, timeoutMs: 60000 }),
        ]);
        return { a, b };
      });
      expect([...result.a.failures, ...result.b.failures]).toEqual([]);
      expect(result.a.results.every((r) => r.echoed === MB) && result.b.results.every((r) => r.echoed === MB)).toBe(true);
      const expected = [...kernelClients(LAB.clientA, result.a), ...kernelClients(LAB.clientB, result.b)].sort();

      // HAProxy logs a conn when it ends.
      for (let i = 0; i < 50 && loggedSince(seen).length < expected.length; i++) await sleep(100);
      expect(loggedSince(seen).sort()).toEqual(expected);

      // On the wire toward the reals: each conn's first payload segment is the header, alone,
      // naming the same clients.
      const firsts = new Map<number, CapturedPacket>();
      for (const p of toReals) if ((p.payloadLength ?? 0) > 0 && !firsts.has(p.sport!)) firsts.set(p.sport!, p);
      const headers = [...firsts.values()];
      expect(headers.map((p) => headerSource(p.payloadHead!)).sort()).toEqual(expected);
      const hlen = headers.map((p) => p.payloadLength);
      if (mode === ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2) expect(new Set(hlen)).toEqual(new Set([28]));

      const s = await service(Protocol.PROTOCOL_TCP, vip, PP_PORT);
      expect(s.proxyHeaders).toBeGreaterThanOrEqual(BigInt(expected.length));
      expect(s.segmentsShifted).toBeGreaterThan(0n);
      // Behind the SYN proxy every conn was opened by a cookie (none without one).
      if (synProxy) expect(s.synCookiesValid).toBeGreaterThanOrEqual(BigInt(expected.length));
      else expect(s.synCookiesValid).toBe(0n);
    },
    180000,
  );

  it('PROXY v2 with 2% loss on the server-side links: retransmissions, and still identical and logged right', async () => {
    const vip = labVip(102);
    await addService('tcp', vip, PP_PORT, PP_PORT, ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2);
    const snmp = () =>
      REAL_SERVERS.reduce((n, rs) => n + retransSegs(lab().exec(rs, 'cat', ['/proc/net/snmp'])), 0) +
      retransSegs(lab().exec('client-a', 'cat', ['/proc/net/snmp'])) +
      retransSegs(lab().exec('client-b', 'cat', ['/proc/net/snmp']));
    const retransBefore = snmp();
    const seen = mark();
    // Both ways on every real's link: what arrives from the appliance and what leaves toward it.
    // tc netem where the kernel has it (sch_netem); else the same random loss with iptables'
    // statistic match on the real (this CI kernel is built without netem).
    const rules = [
      ['INPUT', '-i', 'eth0'],
      ['OUTPUT', '-o', 'eth0'],
    ];
    const netem = hasNetem();
    for (const rs of REAL_SERVERS) {
      if (netem) {
        lab().exec(rs, 'tc', ['qdisc', 'add', 'dev', 'eth0', 'root', 'netem', 'loss', '2%']);
        lab().exec('sw', 'tc', ['qdisc', 'add', 'dev', rs, 'root', 'netem', 'loss', '2%']);
      } else {
        for (const [chain, dir, dev] of rules)
          lab().exec(rs, 'iptables', ['-A', chain, dir, dev, '-p', 'tcp', '-m', 'statistic', '--mode', 'random', '--probability', '0.02', '-j', 'DROP']);
      }
    }
    let a: TcpEchoReport, b: TcpEchoReport;
    try {
      ({
        result: { a, b },
      } = await withPathChecks('tcp', vip, async () => {
        const [ra, rb] = await Promise.all([
          lab().tcpEcho('client-a', vip, PP_PORT, { conns: 2, concurrency: 2, bytes: MB, timeoutMs: 120000 }),
          lab().tcpEcho('client-b', vip, PP_PORT, { conns: 2, concurrency: 2, bytes: MB, timeoutMs: 120000 }),
        ]);
        return { a: ra, b: rb };
      }));
    } finally {
      for (const rs of REAL_SERVERS) {
        lab().exec(rs, 'tc', ['qdisc', 'del', 'dev', 'eth0', 'root'], { allowFail: true });
        lab().exec('sw', 'tc', ['qdisc', 'del', 'dev', rs, 'root'], { allowFail: true });
        lab().exec(rs, 'iptables', ['-F'], { allowFail: true });
      }
    }
    expect([...a.failures, ...b.failures]).toEqual([]);
    expect(snmp()).toBeGreaterThan(retransBefore);
    const expected = [...kernelClients(LAB.clientA, a), ...kernelClients(LAB.clientB, b)].sort();
    for (let i = 0; i < 50 && loggedSince(seen).length < expected.length; i++) await sleep(100);
    expect(loggedSince(seen).sort()).toEqual(expected);
  }, 300000);

  it('TOA: the ACK completing each handshake toward the real carries kind 254, length 8, client port and address', async () => {
    const vip = labVip(103);
    await addService('tcp', vip, ECHO, ECHO, ClientAddressMode.CLIENT_ADDRESS_MODE_TOA);
    const { result, toReals } = await withPathChecks('tcp', vip, async () => {
      const [a, b] = await Promise.all([
        lab().tcpEcho('client-a', vip, ECHO, { conns: 2, concurrency: 2, bytes: MB, timeoutMs: 60000 }),
        lab().tcpEcho('client-b', vip, ECHO, { conns: 2, concurrency: 2, bytes: MB, timeoutMs: 60000 }),
      ]);
      return { a, b };
    });
    expect([...result.a.failures, ...result.b.failures]).toEqual([]);
    const expected = [...kernelClients(LAB.clientA, result.a), ...kernelClients(LAB.clientB, result.b)].sort();

    // The handshake-completing ACK of each conn: the first segment after the SYN, flags ".", no payload.
    const acks = new Map<number, CapturedPacket>();
    for (const p of toReals) if (p.tcpFlags === '.' && p.payloadLength === 0 && !acks.has(p.sport!)) acks.set(p.sport!, p);
    expect(acks.size).toBe(expected.length);
    const toa = [...acks.values()].map((p) => {
      const o = p.tcpOptions!;
      // Walk the options (a timestamp may hold a byte 254): kind 254, length 8, port, IPv4
      // address, the bytes as they lie, not a decoder's opinion of them.
      let at = -1;
      for (let i = 0; i < o.length && o[i] !== 0; i += o[i] === 1 ? 1 : Math.max(o[i + 1], 2)) if (o[i] === 254) at = i;
      expect([at >= 0, o[at], o[at + 1], o.length % 4]).toEqual([true, 254, 8, 0]);
      return `${ipOf(o, at + 4)}:${o.readUInt16BE(at + 2)}`;
    });
    expect(toa.sort()).toEqual(expected);
    const s = await service(Protocol.PROTOCOL_TCP, vip, ECHO);
    expect(s.toaAdded).toBeGreaterThanOrEqual(BigInt(expected.length));
    expect(s.proxyHeaders).toBe(0n);
    const text = await (await fetch(metricsUrl)).text();
    expect(metric(text, 'retrace_service_toa_added_total', 'tcp', vip, ECHO)).toBe(Number(s.toaAdded));
    expect(metric(text, 'retrace_service_toa_no_room_total', 'tcp', vip, ECHO)).toBe(Number(s.toaNoRoom));
    expect(metric(text, 'retrace_service_client_address_mode', 'tcp', vip, ECHO)).toBe(3);
  }, 180000);

  it.each([
    ['PROXY v2', ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2, 105, 42000],
    ['PROXY v1', ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V1, 106, 42100],
  ] as const)(
    '%s to nginx (listen ... proxy_protocol): it answers and logs each client address and port',
    async (_name, mode, n, portBase) => {
      const vip = labVip(n);
      await addService('tcp', vip, NGINX_PORT, NGINX_PORT, mode);
      const m = nginxes.map((x) => x.clients().length);
      const { result } = await withPathChecks('tcp', vip, async () => {
        const a = await Promise.all([0, 1, 2].map((i) => httpGet(lab(), 'client-a', vip, NGINX_PORT, portBase + i)));
        const b = await Promise.all([0, 1, 2].map((i) => httpGet(lab(), 'client-b', vip, NGINX_PORT, portBase + 50 + i)));
        return { a, b };
      });
      const expected = [...[0, 1, 2].map((i) => `${LAB.clientA}:${portBase + i}`), ...[0, 1, 2].map((i) => `${LAB.clientB}:${portBase + 50 + i}`)];
      expect([...result.a, ...result.b]).toEqual(expected);
      for (let i = 0; i < 50 && nginxes.flatMap((x, j) => x.clients().slice(m[j])).length < expected.length; i++) await sleep(100);
      expect(nginxes.flatMap((x, j) => x.clients().slice(m[j])).sort()).toEqual([...expected].sort());
    },
    120000,
  );

  it('UDP PROXY v2: the real reads each client address and port from every datagram', async () => {
    const vip = labVip(104);
    await addService('udp', vip, UDP_PP_PORT, UDP_PP_PORT, ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2);
    const { result } = await withPathChecks('udp', vip, async () => {
      const [a, b] = await Promise.all([udpAsk(lab(), 'client-a', vip, UDP_PP_PORT, 41000, 3), udpAsk(lab(), 'client-b', vip, UDP_PP_PORT, 41001, 3)]);
      return { a, b };
    });
    expect(result.a).toEqual(Array(3).fill(`${LAB.clientA}:41000`));
    expect(result.b).toEqual(Array(3).fill(`${LAB.clientB}:41001`));
    expect(udpReals.flatMap((u) => u.answers()).sort()).toEqual([...Array(3).fill(`${LAB.clientA}:41000`), ...Array(3).fill(`${LAB.clientB}:41001`)].sort());
    expect((await service(Protocol.PROTOCOL_UDP, vip, UDP_PP_PORT)).proxyHeaders).toBe(6n);
    const text = await (await fetch(metricsUrl)).text();
    expect(metric(text, 'retrace_service_proxy_headers_total', 'udp', vip, UDP_PP_PORT)).toBe(6);
    expect(metric(text, 'retrace_service_client_address_mode', 'udp', vip, UDP_PP_PORT)).toBe(1);
  }, 120000);
});
