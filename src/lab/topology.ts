/**
 * # The retrace lab
 *
 * One network-namespace topology shared by the e2e tests and the README demo. The appliance is not
 * part of it: it runs separately and opens three DPDK `net_af_packet` ports on the root-namespace
 * veth ends (see applianceConfigYaml()).
 *
 * ```
 *                eth0         lan │ router-a │ uplink              root ns: rt<tag>ua
 *  client-a  198.18.1.2 ── 198.18.1.1       198.18.10.2 ── veth ── [port uplink-a  198.18.10.1/24]
 *                                 │  inter 198.18.40.1 │                          (default route)
 *                                            │ veth
 *                                 │  inter 198.18.40.2 │
 *  client-b  198.18.2.2 ── 198.18.2.1       198.18.20.2 ── veth ── [port uplink-b  198.18.20.1/24]
 *                eth0         lan │ router-b │ uplink              root ns: rt<tag>ub    retrace
 *
 *  rs1 198.18.30.11 ─ eth0 ┐
 *  rs2 198.18.30.12 ─ eth0 ┼─ sw: bridge br0 ─ uplink ── veth ──── [port servers  198.18.30.1/24]
 *  rs3 198.18.30.13 ─ eth0 ┘   (ports rs1 rs2 rs3 uplink)          root ns: rt<tag>sv
 *                                                                  LIPs 198.18.30.100, .101
 *  VIPs: 198.19.0.0/24
 * ```
 *
 * - Built on NetnsLab (netns.ts), which holds the namespace machinery and the conventions every
 *   lab keeps (sysctls, no TX checksum offload, root ends owned by the appliance, teardown).
 *   Root-side veth ends are `rt<tag>ua`, `rt<tag>ub`, `rt<tag>sv` (10 characters).
 * - Interfaces inside namespaces have fixed, readable names (table DEVICES): clients and real
 *   servers have `eth0`; routers `lan` (client side), `uplink` (appliance side) and `inter`
 *   (router-a ↔ router-b); the switch `sw` has bridge `br0` with ports `uplink`, `rs1`..`rs3`.
 *   Veth pairs are created directly in their namespaces, so the names never meet in the root one.
 * - Routes: router-a sends VIPs (198.19.0.0/24) to 198.18.10.1 (appliance port uplink-a) and
 *   198.18.2.0/24 to router-b over `inter`; router-b sends VIPs to 198.18.20.1 (uplink-b) and
 *   198.18.1.0/24 to router-a. So a reply the appliance sends to router-a for client-b (a triangle)
 *   still arrives — the counters and captures, not packet loss, show the asymmetry.
 *   routeClientBVia('router-a') moves client-b's VIP traffic onto the inter-router link (a path
 *   change as seen by the appliance). Clients' default route is their router; real servers' is
 *   198.18.30.1 (the appliance's servers port).
 * - Routers forward (ip_forward=1); no namespace sends ICMP redirects.
 * - startEchoServers() runs src/lab/echo-server.ts in rs1..rs3 (TCP+UDP echo on 8080, identity on
 *   8081); tcpEcho()/udpEcho()/who() run src/lab/client.ts in a namespace; ping() runs kernel ping;
 *   startCapture() runs tcpdump. Both scripts are run from dist/lab/ (build with tsc first).
 */
import path from 'node:path';
import YAML from 'yaml';
import { Capture, type CaptureOptions } from './capture';
import { budget, linkInfo, NetnsLab, type NetnsLabOptions } from './netns';
import { injectFrameBatch, injectFrames, synFlood, udpHold, type SynFloodOptions, type UdpHoldOptions } from './raw';
import type { TcpEchoReport, UdpEchoReport, WhoReport } from './results';
import { CommandError, killSync, run } from './sh';

export type { CapturedPacket, CapturedProto, QuotedPacket } from './pcap';
export { Capture } from './capture';
export type * from './results';

// ---------------------------------------------------------------------------------------------
// Fixed plan
// ---------------------------------------------------------------------------------------------

export const ROLES = ['client-a', 'client-b', 'router-a', 'router-b', 'sw', 'rs1', 'rs2', 'rs3'] as const;
/** A namespace of the lab. */
export type Role = (typeof ROLES)[number];
export const REAL_SERVERS = ['rs1', 'rs2', 'rs3'] as const;
export type RealServer = (typeof REAL_SERVERS)[number];
export const ROUTERS = ['router-a', 'router-b'] as const;
export type Router = (typeof ROUTERS)[number];

/** The appliance's ports, in DPDK port-id order. */
export const ROOT_PORTS = ['uplink-a', 'uplink-b', 'servers'] as const;
export type RootPort = (typeof ROOT_PORTS)[number];

/** Every address of the lab. Prefix length is 24 everywhere. */
export const LAB = {
  prefixLen: 24,
  clientA: '198.18.1.2',
  clientB: '198.18.2.2',
  clientANet: '198.18.1.0/24',
  clientBNet: '198.18.2.0/24',
  routerA: { lan: '198.18.1.1', uplink: '198.18.10.2', inter: '198.18.40.1' },
  routerB: { lan: '198.18.2.1', uplink: '198.18.20.2', inter: '198.18.40.2' },
  /** router-a's address on the uplink-a segment (the appliance's next hop toward client-a). */
  routerAUplink: '198.18.10.2',
  /** router-b's address on the uplink-b segment. */
  routerBUplink: '198.18.20.2',
  interNet: '198.18.40.0/24',
  /** The appliance's port addresses (for the appliance's own configuration; the lab never sets them). */
  ports: {
    'uplink-a': { addr: '198.18.10.1', prefixLen: 24, net: '198.18.10.0/24', peer: '198.18.10.2', peerRole: 'router-a' },
    'uplink-b': { addr: '198.18.20.1', prefixLen: 24, net: '198.18.20.0/24', peer: '198.18.20.2', peerRole: 'router-b' },
    servers: { addr: '198.18.30.1', prefixLen: 24, net: '198.18.30.0/24', peer: undefined, peerRole: 'sw' },
  },
  rs: { rs1: '198.18.30.11', rs2: '198.18.30.12', rs3: '198.18.30.13' },
  serversNet: '198.18.30.0/24',
  /** Local (source) addresses the appliance uses toward the real servers. */
  lips: ['198.18.30.100', '198.18.30.101'],
  /** VIPs live here; both routers send it to the appliance. */
  vipNet: '198.19.0.0/24',
  /** A first VIP for tests and the demo. */
  vip: '198.19.0.1',
  /** Echo servers: TCP and UDP echo. */
  echoPort: 8080,
  /** Echo servers: identity (answers the server's name). */
  whoPort: 8081,
} as const;

/** VIP number n (1..254) in LAB.vipNet. */
export function labVip(n: number): string {
  if (!Number.isInteger(n) || n < 1 || n > 254) throw new RangeError(`VIP index must be 1..254, got ${n}`);
  return `198.19.0.${n}`;
}

/** Interfaces inside each namespace (besides lo). */
export const DEVICES: Record<Role, readonly string[]> = {
  'client-a': ['eth0'],
  'client-b': ['eth0'],
  'router-a': ['lan', 'uplink', 'inter'],
  'router-b': ['lan', 'uplink', 'inter'],
  sw: ['br0', 'uplink', 'rs1', 'rs2', 'rs3'],
  rs1: ['eth0'],
  rs2: ['eth0'],
  rs3: ['eth0'],
};

const ROOT_SUFFIX: Record<RootPort, string> = { 'uplink-a': 'ua', 'uplink-b': 'ub', servers: 'sv' };

export type LabOptions = NetnsLabOptions;

export interface EchoTcpOptions {
  conns?: number;
  bytes?: number;
  concurrency?: number;
  /** Send/echo rounds per connection (default 1). */
  rounds?: number;
  /** Pause between rounds (ms). */
  intervalMs?: number;
  /** Per connection, whole lifetime (default 5000). */
  timeoutMs?: number;
}

export interface EchoUdpOptions {
  count?: number;
  bytes?: number;
  concurrency?: number;
  /** Datagrams per socket (default 1), each waiting for its reply. */
  rounds?: number;
  intervalMs?: number;
  /** Per datagram (default 2000). */
  timeoutMs?: number;
  /** connect() the sockets, so ICMP port-unreachable shows up as ECONNREFUSED. */
  connected?: boolean;
  /** Item i binds source port localPortBase+i (default: the kernel's choice). */
  localPortBase?: number;
}

export interface WhoOptions {
  proto?: 'tcp' | 'udp';
  count?: number;
  concurrency?: number;
  timeoutMs?: number;
  /** Item i binds source port localPortBase+i (a fixed client tuple); default: the kernel picks. */
  localPortBase?: number;
}

export interface PingOptions {
  count?: number;
  /** Seconds between echo requests (default 0.2). */
  interval?: number;
  /** Seconds to wait for each reply (default 1). */
  timeout?: number;
  /** ICMP payload bytes (default 56). */
  size?: number;
  /** Set DF and do not fragment locally (`-M do`). */
  dontFragment?: boolean;
  /** Echo identifier (`-e`, iputils ≥ 20210202); default: the kernel's choice. */
  id?: number;
  /** IP time to live of the requests (`-t`); default: the kernel's. */
  ttl?: number;
  /**
   * Seconds before ping gives up (`-w`). With it, ping waits for `count` replies however late they
   * come (it keeps probing meanwhile, so `transmitted` may exceed `count`); without it, ping stops
   * waiting about two round trips after its last request, which turns a stall into "loss".
   */
  deadline?: number;
}

export interface PingResult {
  transmitted: number;
  received: number;
  /** Round-trip times in ms of the replies, in order of arrival. */
  rtts: number[];
  /** Lines such as "From 198.18.10.1 icmp_seq=1 Frag needed and DF set (mtu = 1400)". */
  errors: string[];
  exitCode: number | null;
  output: string;
}

export interface ApplianceYamlOptions {
  /** Extra fields per port (mac, mtu, promiscuous, ...), merged into that port's entry. */
  port?: Partial<Record<RootPort, Record<string, unknown>>>;
  /** Extra fields for every port. */
  all?: Record<string, unknown>;
  /** Extra net_af_packet devargs appended to each device string, e.g. "qpairs=1,framecnt=512". */
  afPacketArgs?: string;
}

// ---------------------------------------------------------------------------------------------
// LabTopology
// ---------------------------------------------------------------------------------------------

export class LabTopology extends NetnsLab<Role> {
  private readonly captures = new Set<Capture>();
  private captureSeq = 0;

  private constructor(opts: LabOptions) {
    super(ROLES, opts, 'retrace-lab');
  }

  /**
   * Builds the whole topology (namespaces, links, addresses, routes, sysctls). On any failure it
   * tears down what it made and rethrows. Needs root, iproute2, ethtool; tcpdump for captures.
   */
  static create(opts: LabOptions = {}): LabTopology {
    return NetnsLab.built(new LabTopology(opts), (lab) => lab.build());
  }

  /**
   * Removes a lab by tag that no LabTopology object owns any more (its process was SIGKILLed, so
   * neither destroy() nor the exit hook ran). Returns what it removed. Never throws.
   */
  static destroyByTag(tag: string): { namespaces: string[]; links: string[]; pids: number[] } {
    return NetnsLab.destroyByTag(
      tag,
      ROLES,
      Object.values(ROOT_SUFFIX).map((s) => `rt${tag}${s}`),
    );
  }

  // --- names ------------------------------------------------------------------------------------

  /** Root-namespace interface of an appliance port: `rt<tag>ua`, `rt<tag>ub`, `rt<tag>sv`. */
  rootDev(port: RootPort): string {
    if (!ROOT_SUFFIX[port]) throw new Error(`unknown appliance port "${port}" (expected ${ROOT_PORTS.join(', ')})`);
    return this.rootName(ROOT_SUFFIX[port]);
  }

  /** MAC of a root-namespace end: what the appliance's port uses unless its config sets a MAC. */
  rootMac(port: RootPort): string {
    return linkInfo(undefined, this.rootDev(port)).address;
  }

  /** The namespace-side neighbour of an appliance port: the device whose MAC the appliance talks to. */
  portPeer(port: RootPort): { role: Role; dev: string } {
    return port === 'servers' ? { role: 'sw', dev: 'uplink' } : { role: port === 'uplink-a' ? 'router-a' : 'router-b', dev: 'uplink' };
  }

  // --- build ------------------------------------------------------------------------------------

  private build(): void {
    const t0 = Date.now();
    const router = (role: Role) => (ROUTERS as readonly string[]).includes(role);
    this.addNamespaces(router);

    // Links.
    this.vethNs('client-a', 'eth0', 'router-a', 'lan');
    this.vethNs('client-b', 'eth0', 'router-b', 'lan');
    this.vethNs('router-a', 'inter', 'router-b', 'inter');
    this.vethRoot(this.rootDev('uplink-a'), 'router-a', 'uplink');
    this.vethRoot(this.rootDev('uplink-b'), 'router-b', 'uplink');
    this.vethRoot(this.rootDev('servers'), 'sw', 'uplink');
    for (const rs of REAL_SERVERS) this.vethNs(rs, 'eth0', 'sw', rs);
    this.bridge('sw', [...REAL_SERVERS, 'uplink']);
    this.finishLinks(DEVICES, router);

    // Addresses, link up, routes.
    const addrs: [Role, string, string][] = [
      ['client-a', 'eth0', LAB.clientA],
      ['client-b', 'eth0', LAB.clientB],
      ['router-a', 'lan', LAB.routerA.lan],
      ['router-a', 'uplink', LAB.routerA.uplink],
      ['router-a', 'inter', LAB.routerA.inter],
      ['router-b', 'lan', LAB.routerB.lan],
      ['router-b', 'uplink', LAB.routerB.uplink],
      ['router-b', 'inter', LAB.routerB.inter],
      ['rs1', 'eth0', LAB.rs.rs1],
      ['rs2', 'eth0', LAB.rs.rs2],
      ['rs3', 'eth0', LAB.rs.rs3],
    ];
    for (const [role, dev, addr] of addrs) this.ipn(role, 'addr', 'add', `${addr}/${LAB.prefixLen}`, 'dev', dev);
    this.linksUp(DEVICES);

    this.ipn('client-a', 'route', 'add', 'default', 'via', LAB.routerA.lan);
    this.ipn('client-b', 'route', 'add', 'default', 'via', LAB.routerB.lan);
    this.ipn('router-a', 'route', 'add', LAB.vipNet, 'via', LAB.ports['uplink-a'].addr);
    this.ipn('router-a', 'route', 'add', LAB.clientBNet, 'via', LAB.routerB.inter);
    this.ipn('router-b', 'route', 'add', LAB.vipNet, 'via', LAB.ports['uplink-b'].addr);
    this.ipn('router-b', 'route', 'add', LAB.clientANet, 'via', LAB.routerA.inter);
    for (const rs of REAL_SERVERS) this.ipn(rs, 'route', 'add', 'default', 'via', LAB.ports.servers.addr);
    this.waitLinksUp(5000);
    this.log(`lab ${this.tag} built in ${Date.now() - t0} ms`);
  }

  // --- changes for path-change tests -----------------------------------------------------------

  /** `ip route replace <prefix> via <via>` in a namespace. */
  replaceRoute(role: Role, prefix: string, via: string): void {
    this.ip(role, ['route', 'replace', prefix, 'via', via]);
  }

  /**
   * Which router carries client-b's VIP traffic to the appliance: 'router-b' (the normal path, via
   * uplink-b 198.18.20.1) or 'router-a' (router-b hands it over the inter-router link to router-a,
   * which sends it into uplink-a: the appliance sees client-b's packets arrive on another port
   * from another MAC).
   */
  routeClientBVia(via: Router): void {
    this.replaceRoute('router-b', LAB.vipNet, via === 'router-a' ? LAB.routerA.inter : LAB.ports['uplink-b'].addr);
  }

  /** Sets the MTU of `dev` in a namespace, or of a root end when role is 'root' (dev: port or ifname). */
  setMtu(role: Role | 'root', dev: string, mtu: number): void {
    if (role === 'root') run('ip', ['link', 'set', 'dev', this.resolveRootDev(dev), 'mtu', String(mtu)]);
    else this.ip(role, ['link', 'set', 'dev', dev, 'mtu', String(mtu)]);
  }

  /** Sets a link up or down (in a namespace, or a root end when role is 'root'). */
  setLink(role: Role | 'root', dev: string, up: boolean): void {
    const state = up ? 'up' : 'down';
    if (role === 'root') run('ip', ['link', 'set', 'dev', this.resolveRootDev(dev), state]);
    else this.ip(role, ['link', 'set', 'dev', dev, state]);
  }

  /** Forgets a namespace's neighbour (ARP) entries, so the next packet triggers ARP again. */
  flushNeighbours(role: Role, dev?: string): void {
    this.ip(role, ['neigh', 'flush', ...(dev ? ['dev', dev] : ['all'])]);
  }

  private resolveRootDev(dev: string): string {
    return (ROOT_PORTS as readonly string[]).includes(dev) ? this.rootDev(dev as RootPort) : dev;
  }

  // --- the appliance's configuration -----------------------------------------------------------

  /**
   * The `ports:` section for the appliance's YAML config: uplink-a, uplink-b, servers (port ids 0,
   * 1, 2) on `net_af_packet<N>,iface=<root end>`. Options add per-port fields (mac, mtu, ...).
   */
  applianceConfigYaml(opts: ApplianceYamlOptions = {}): string {
    const ports = ROOT_PORTS.map((name, i) => ({
      name,
      device: `net_af_packet${i},iface=${this.rootDev(name)}${opts.afPacketArgs ? `,${opts.afPacketArgs}` : ''}`,
      ...(opts.all ?? {}),
      ...(opts.port?.[name] ?? {}),
    }));
    return YAML.stringify({ ports });
  }

  // --- servers ----------------------------------------------------------------------------------

  /**
   * Starts one echo server per real server (TCP+UDP echo on LAB.echoPort, identity on LAB.whoPort)
   * and resolves when all three listen. Safe to call once; destroy() stops them.
   */
  startEchoServers(opts: { timeoutMs?: number } = {}): Promise<void> {
    return this.runEchoServers(REAL_SERVERS, LAB.echoPort, LAB.whoPort, opts.timeoutMs ?? 15000);
  }

  // --- clients ----------------------------------------------------------------------------------

  /** N TCP connections from a namespace, each echoing B random bytes; every byte verified. */
  tcpEcho(role: Role, host: string, port: number, opts: EchoTcpOptions = {}): Promise<TcpEchoReport> {
    const conns = opts.conns ?? 1;
    const args = ['tcp', '--host', host, '--port', String(port), '--conns', String(conns), '--bytes', String(opts.bytes ?? 1024)];
    pushOpt(args, '--concurrency', opts.concurrency);
    pushOpt(args, '--rounds', opts.rounds);
    pushOpt(args, '--interval-ms', opts.intervalMs);
    pushOpt(args, '--timeout-ms', opts.timeoutMs);
    const per = (opts.timeoutMs ?? 5000) + (opts.rounds ?? 1) * (opts.intervalMs ?? 0);
    return this.client(role, args, budget(conns, opts.concurrency ?? 32, per));
  }

  /** N UDP sockets (distinct source ports) from a namespace, each expecting a byte-exact echo. */
  udpEcho(role: Role, host: string, port: number, opts: EchoUdpOptions = {}): Promise<UdpEchoReport> {
    const count = opts.count ?? 1;
    const args = ['udp', '--host', host, '--port', String(port), '--count', String(count), '--bytes', String(opts.bytes ?? 64)];
    pushOpt(args, '--concurrency', opts.concurrency);
    pushOpt(args, '--rounds', opts.rounds);
    pushOpt(args, '--interval-ms', opts.intervalMs);
    pushOpt(args, '--timeout-ms', opts.timeoutMs);
    if (opts.connected) args.push('--connected');
    pushOpt(args, '--local-port-base', opts.localPortBase);
    const per = ((opts.timeoutMs ?? 2000) + (opts.intervalMs ?? 0)) * (opts.rounds ?? 1);
    return this.client(role, args, budget(count, opts.concurrency ?? 32, per));
  }

  /** Asks an identity port N times (new connection / socket each time): which real server answered. */
  who(role: Role, host: string, port: number = LAB.whoPort, opts: WhoOptions = {}): Promise<WhoReport> {
    const count = opts.count ?? 1;
    const args = ['who', '--proto', opts.proto ?? 'tcp', '--host', host, '--port', String(port), '--count', String(count)];
    pushOpt(args, '--concurrency', opts.concurrency);
    pushOpt(args, '--timeout-ms', opts.timeoutMs);
    pushOpt(args, '--local-port-base', opts.localPortBase);
    return this.client(role, args, budget(count, opts.concurrency ?? 1, opts.timeoutMs ?? 2000));
  }

  /** Kernel ping from a namespace. Never rejects on loss; look at `received`. */
  async ping(role: Role, host: string, opts: PingOptions = {}): Promise<PingResult> {
    const count = opts.count ?? 1;
    const args = ['-n', '-c', String(count), '-i', String(opts.interval ?? 0.2), '-W', String(opts.timeout ?? 1)];
    if (opts.size !== undefined) args.push('-s', String(opts.size));
    if (opts.dontFragment) args.push('-M', 'do');
    if (opts.id !== undefined) args.push('-e', String(opts.id));
    if (opts.ttl !== undefined) args.push('-t', String(opts.ttl));
    if (opts.deadline !== undefined) args.push('-w', String(opts.deadline));
    args.push(host);
    const limit = (Math.max(count * ((opts.interval ?? 0.2) + (opts.timeout ?? 1)), opts.deadline ?? 0) + 10) * 1000;
    const res = await this.execAsync(role, 'ping', args, { timeoutMs: limit });
    return parsePing(res.stdout + res.stderr, res.code);
  }

  /** See raw.ts injectFrames(). */
  injectFrames(role: Role, dev: string, frames: readonly Buffer[]): void {
    injectFrames(this, role, dev, frames);
  }

  /** See raw.ts injectFrameBatch(). */
  injectFrameBatch(role: Role, dev: string, frames: readonly Buffer[], opts: { burst?: number; pauseMs?: number } = {}) {
    return injectFrameBatch(this, role, dev, frames, opts);
  }

  /** See raw.ts synFlood(). */
  synFlood(role: Role, dev: string, opts: SynFloodOptions) {
    return synFlood(this, role, dev, opts);
  }

  /** See raw.ts udpHold(). */
  udpHold(role: Role, host: string, port: number, opts: UdpHoldOptions) {
    return udpHold(this, role, host, port, opts);
  }

  // --- captures ---------------------------------------------------------------------------------

  /**
   * Starts tcpdump on `dev` in a namespace, or on a root end when role is 'root' (dev may then be
   * the port name, e.g. 'uplink-b'). Resolves once tcpdump is listening. destroy() stops leftovers.
   */
  async startCapture(role: Role | 'root', dev: string, filter = '', opts: CaptureOptions = {}): Promise<Capture> {
    const ifname = role === 'root' ? this.resolveRootDev(dev) : dev;
    const file = path.join(this.dir, `${String(++this.captureSeq).padStart(3, '0')}-${role}-${ifname}.pcap`);
    const cap = await Capture.start(role === 'root' ? undefined : this.ns(role), ifname, filter, file, opts);
    this.captures.add(cap);
    if (this.isDestroyed) killSync(cap.pid, 500);
    return cap;
  }

  // --- teardown ---------------------------------------------------------------------------------

  protected override stopExtras(): void {
    for (const c of this.captures) {
      if (c.running) killSync(c.pid, 2000);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function pushOpt(args: string[], flag: string, v: number | undefined): void {
  if (v !== undefined) args.push(flag, String(v));
}

export function parsePing(output: string, exitCode: number | null): PingResult {
  const m = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(output);
  const rtts = [...output.matchAll(/time=([\d.]+) ms/g)].map((x) => Number(x[1]));
  const errors = output
    .split('\n')
    .filter((l) => /^From /.test(l.trim()))
    .map((l) => l.trim());
  return {
    transmitted: m ? Number(m[1]) : 0,
    received: m ? Number(m[2]) : 0,
    rtts,
    errors,
    exitCode,
    output,
  };
}

export { CommandError };
