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
 * - Namespaces are `rt-<tag>-<role>` with a random 6-hex-digit tag, so parallel runs never collide;
 *   root-side veth ends are `rt<tag>ua`, `rt<tag>ub`, `rt<tag>sv` (10 characters).
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
 * - Routers forward (ip_forward=1) with rp_filter=0 everywhere (all, default, each interface) and
 *   send no ICMP redirects. IPv6 is disabled in every namespace (no router solicitations or MLD
 *   in captures). TX checksum offload is off on every veth end inside a namespace: with it on,
 *   af_packet would see partial L4 checksums (docs/design.md, "The lab").
 * - The root-namespace ends carry no IPv4 address, have IPv6 disabled, forwarding=0 and ARP off,
 *   so the host kernel neither routes nor answers anything arriving there; the appliance owns them.
 * - startEchoServers() runs src/lab/echo-server.ts in rs1..rs3 (TCP+UDP echo on 8080, identity on
 *   8081); tcpEcho()/udpEcho()/who() run src/lab/client.ts in a namespace; ping() runs kernel ping;
 *   startCapture() runs tcpdump. Both scripts are run from dist/lab/ (build with tsc first).
 * - destroy() kills every process the lab started (by PID), deletes the root links and the
 *   namespaces. It is idempotent, never throws, and also runs from a process 'exit' hook.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import YAML from 'yaml';
import { Capture, type CaptureOptions } from './capture';
import type { EchoServerEvent, TcpEchoReport, UdpEchoReport, WhoReport } from './results';
import { CommandError, killSync, run, runAsync, sleepSync, type RunOptions } from './sh';

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

/** Where dist/lab lives, from either src/lab (ts-jest) or dist/lab (compiled). */
const DEFAULT_SCRIPTS_DIR = path.resolve(__dirname, '..', '..', 'dist', 'lab');

export interface LabOptions {
  /** 6 lower-case hex digits; random by default. */
  tag?: string;
  /** Directory holding the compiled echo-server.js and client.js (default <repo>/dist/lab). */
  scriptsDir?: string;
  /** Node binary for the scripts (default: this process's). */
  node?: string;
  /** Progress lines (each command run while building), e.g. console.error. */
  log?: (line: string) => void;
  /** Destroy the lab when this process exits (default true). */
  cleanupOnExit?: boolean;
}

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

interface LabChild {
  label: string;
  child: ChildProcess;
}

// ---------------------------------------------------------------------------------------------
// LabTopology
// ---------------------------------------------------------------------------------------------

export class LabTopology {
  readonly tag: string;
  /** Scratch directory for captures; removed by destroy(). */
  readonly dir: string;
  private readonly scriptsDir: string;
  private readonly node: string;
  private readonly log: (line: string) => void;
  private readonly namespaces: string[] = [];
  private readonly rootLinks: string[] = [];
  private readonly children: LabChild[] = [];
  private readonly captures = new Set<Capture>();
  private readonly echoEvents = new Map<RealServer, EchoServerEvent[]>();
  private captureSeq = 0;
  private destroyed = false;
  private readonly exitHook = (): void => this.destroy();

  private constructor(opts: LabOptions) {
    if (opts.tag !== undefined && !/^[0-9a-f]{6}$/.test(opts.tag)) throw new Error(`lab tag must be 6 lower-case hex digits, got "${opts.tag}"`);
    this.tag = opts.tag ?? crypto.randomBytes(3).toString('hex');
    this.scriptsDir = opts.scriptsDir ?? DEFAULT_SCRIPTS_DIR;
    this.node = opts.node ?? process.execPath;
    this.log = opts.log ?? (() => undefined);
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `retrace-lab-${this.tag}-`));
    if (opts.cleanupOnExit ?? true) process.on('exit', this.exitHook);
  }

  /**
   * Builds the whole topology (namespaces, links, addresses, routes, sysctls). On any failure it
   * tears down what it made and rethrows. Needs root, iproute2, ethtool; tcpdump for captures.
   */
  static create(opts: LabOptions = {}): LabTopology {
    const lab = new LabTopology(opts);
    try {
      lab.build();
      return lab;
    } catch (e) {
      lab.destroy();
      throw e;
    }
  }

  /**
   * Removes a lab by tag that no LabTopology object owns any more (its process was SIGKILLed, so
   * neither destroy() nor the exit hook ran): kills the processes still inside its namespaces,
   * deletes its root links and namespaces. Returns what it removed. Never throws.
   */
  static destroyByTag(tag: string): { namespaces: string[]; links: string[]; pids: number[] } {
    const removed = { namespaces: [] as string[], links: [] as string[], pids: [] as number[] };
    if (!/^[0-9a-f]{6}$/.test(tag)) return removed;
    const existing = run('ip', ['netns', 'list'], { allowFail: true })
      .split('\n')
      .map((l) => l.split(' ')[0])
      .filter((n) => n.startsWith(`rt-${tag}-`) && (ROLES as readonly string[]).includes(n.slice(`rt-${tag}-`.length)));
    for (const ns of existing) {
      for (const pid of run('ip', ['netns', 'pids', ns], { allowFail: true }).split('\n').filter(Boolean).map(Number)) {
        killSync(pid, 2000);
        removed.pids.push(pid);
      }
    }
    for (const suffix of Object.values(ROOT_SUFFIX)) {
      const dev = `rt${tag}${suffix}`;
      if (!linkExists(dev)) continue;
      run('ip', ['link', 'del', 'dev', dev], { allowFail: true });
      removed.links.push(dev);
    }
    for (const ns of existing) {
      run('ip', ['netns', 'del', ns], { allowFail: true });
      removed.namespaces.push(ns);
    }
    return removed;
  }

  // --- names ------------------------------------------------------------------------------------

  /** Namespace name of a role: `rt-<tag>-<role>`. */
  ns(role: Role): string {
    return `rt-${this.tag}-${role}`;
  }

  /** All namespace names of this lab. */
  get allNamespaces(): string[] {
    return ROLES.map((r) => this.ns(r));
  }

  /** Root-namespace interface of an appliance port: `rt<tag>ua`, `rt<tag>ub`, `rt<tag>sv`. */
  rootDev(port: RootPort): string {
    if (!ROOT_SUFFIX[port]) throw new Error(`unknown appliance port "${port}" (expected ${ROOT_PORTS.join(', ')})`);
    return `rt${this.tag}${ROOT_SUFFIX[port]}`;
  }

  /** MAC address of `dev` in a namespace. */
  mac(role: Role, dev: string): string {
    return linkInfo(this.ns(role), dev).address;
  }

  /** MAC of a root-namespace end: what the appliance's port uses unless its config sets a MAC. */
  rootMac(port: RootPort): string {
    return linkInfo(undefined, this.rootDev(port)).address;
  }

  /** The namespace-side neighbour of an appliance port: the device whose MAC the appliance talks to. */
  portPeer(port: RootPort): { role: Role; dev: string } {
    return port === 'servers' ? { role: 'sw', dev: 'uplink' } : { role: port === 'uplink-a' ? 'router-a' : 'router-b', dev: 'uplink' };
  }

  // --- commands ---------------------------------------------------------------------------------

  /** Runs `cmd args` inside a role's namespace and returns stdout; throws CommandError on failure. */
  exec(role: Role, cmd: string, args: readonly string[] = [], opts: RunOptions = {}): string {
    return run('ip', ['netns', 'exec', this.ns(role), cmd, ...args], opts);
  }

  /** Like exec() but asynchronous; resolves with exit code and output, never rejects on exit code. */
  execAsync(role: Role, cmd: string, args: readonly string[] = [], opts: { timeoutMs?: number } = {}) {
    return runAsync('ip', ['netns', 'exec', this.ns(role), cmd, ...args], opts);
  }

  /** `ip -n <ns> <args>` (faster than exec: no mount namespace). */
  ip(role: Role, args: readonly string[], opts: RunOptions = {}): string {
    return run('ip', ['-n', this.ns(role), ...args], opts);
  }

  // --- build ------------------------------------------------------------------------------------

  private sh(cmd: string, args: readonly string[]): string {
    this.log(`${cmd} ${args.join(' ')}`);
    return run(cmd, args);
  }

  private nsSh(role: Role, cmd: string, args: readonly string[]): string {
    return this.sh('ip', ['netns', 'exec', this.ns(role), cmd, ...args]);
  }

  private ipn(role: Role, ...args: string[]): void {
    this.sh('ip', ['-n', this.ns(role), ...args]);
  }

  /** A veth pair with both ends created directly in their namespaces. */
  private vethNs(a: Role, aDev: string, b: Role, bDev: string): void {
    this.ipn(a, 'link', 'add', 'name', aDev, 'type', 'veth', 'peer', 'name', bDev, 'netns', this.ns(b));
  }

  /** A veth pair from a root-namespace end (for the appliance) to `dev` in `role`. */
  private vethRoot(port: RootPort, role: Role, dev: string): void {
    const root = this.rootDev(port);
    this.sh('ip', ['link', 'add', 'name', root, 'type', 'veth', 'peer', 'name', dev, 'netns', this.ns(role)]);
    this.rootLinks.push(root);
  }

  private build(): void {
    const t0 = Date.now();
    // Namespaces, with their sysctls set before any interface exists so every new device inherits
    // the `default` values (no IPv6 link-local address ever appears).
    for (const role of ROLES) {
      const ns = this.ns(role);
      this.sh('ip', ['netns', 'add', ns]);
      this.namespaces.push(ns);
      const router = (ROUTERS as readonly string[]).includes(role);
      this.nsSh(role, 'sysctl', [
        '-q',
        '-w',
        'net.ipv6.conf.all.disable_ipv6=1',
        'net.ipv6.conf.default.disable_ipv6=1',
        'net.ipv4.conf.all.rp_filter=0',
        'net.ipv4.conf.default.rp_filter=0',
        `net.ipv4.ip_forward=${router ? 1 : 0}`,
        'net.ipv4.conf.all.send_redirects=0',
        'net.ipv4.conf.default.send_redirects=0',
      ]);
      this.ipn(role, 'link', 'set', 'dev', 'lo', 'up');
    }

    // Links.
    this.vethNs('client-a', 'eth0', 'router-a', 'lan');
    this.vethNs('client-b', 'eth0', 'router-b', 'lan');
    this.vethNs('router-a', 'inter', 'router-b', 'inter');
    this.vethRoot('uplink-a', 'router-a', 'uplink');
    this.vethRoot('uplink-b', 'router-b', 'uplink');
    this.vethRoot('servers', 'sw', 'uplink');
    this.ipn('sw', 'link', 'add', 'name', 'br0', 'type', 'bridge', 'stp_state', '0', 'mcast_snooping', '0');
    for (const rs of REAL_SERVERS) {
      this.vethNs(rs, 'eth0', 'sw', rs);
      this.ipn('sw', 'link', 'set', 'dev', rs, 'master', 'br0');
    }
    this.ipn('sw', 'link', 'set', 'dev', 'uplink', 'master', 'br0');

    // Root ends: the appliance's, not the host's.
    const rootSysctls: string[] = [];
    for (const port of ROOT_PORTS) {
      const dev = this.rootDev(port);
      rootSysctls.push(`net.ipv6.conf.${dev}.disable_ipv6=1`, `net.ipv4.conf.${dev}.forwarding=0`);
    }
    this.sh('sysctl', ['-q', '-w', ...rootSysctls]);
    for (const port of ROOT_PORTS) this.sh('ip', ['link', 'set', 'dev', this.rootDev(port), 'arp', 'off', 'up']);

    // rp_filter per interface on the routers (the effective value is max(all, dev)).
    for (const r of ROUTERS) {
      this.nsSh(r, 'sysctl', ['-q', '-w', ...DEVICES[r].map((d) => `net.ipv4.conf.${d}.rp_filter=0`)]);
    }

    // No TX checksum offload on any namespace veth end (the bridge is not a veth).
    for (const role of ROLES) {
      for (const dev of DEVICES[role]) if (dev !== 'br0') this.nsSh(role, 'ethtool', ['-K', dev, 'tx', 'off']);
    }

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
    for (const role of ROLES) for (const dev of DEVICES[role]) this.ipn(role, 'link', 'set', 'dev', dev, 'up');

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

  /**
   * Waits until every lab interface reports operstate UP. The kernel applies carrier changes
   * through linkwatch, which can lag `ip link set up` by several hundred ms (seen for veth pairs
   * whose two ends have the same ifindex in their namespaces); until then the device still has
   * the noop qdisc and drops what it is given, so a test's first packet would vanish.
   */
  private waitLinksUp(timeoutMs: number): void {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const notUp: string[] = [];
      for (const role of ROLES) {
        const links = JSON.parse(run('ip', ['-n', this.ns(role), '-j', 'link', 'show'])) as { ifname: string; operstate: string }[];
        for (const l of links) if (l.ifname !== 'lo' && l.operstate !== 'UP') notUp.push(`${role}/${l.ifname} ${l.operstate}`);
      }
      for (const port of ROOT_PORTS) {
        const st = linkInfo(undefined, this.rootDev(port)).operstate;
        if (st !== 'UP') notUp.push(`root/${this.rootDev(port)} ${st}`);
      }
      if (notUp.length === 0) return;
      if (Date.now() > deadline) throw new Error(`lab ${this.tag}: links not up after ${timeoutMs} ms: ${notUp.join(', ')}`);
      sleepSync(25);
    }
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

  private script(name: 'echo-server' | 'client'): string {
    const file = path.join(this.scriptsDir, `${name}.js`);
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: build the TypeScript first (tsc -p tsconfig.json)`);
    return file;
  }

  /**
   * Starts one echo server per real server (TCP+UDP echo on LAB.echoPort, identity on LAB.whoPort)
   * and resolves when all three listen. Safe to call once; destroy() stops them.
   */
  async startEchoServers(opts: { timeoutMs?: number } = {}): Promise<void> {
    const file = this.script('echo-server');
    await Promise.all(
      REAL_SERVERS.map((rs) => {
        const events: EchoServerEvent[] = [];
        this.echoEvents.set(rs, events);
        const child = spawn(
          'ip',
          [
            'netns', 'exec', this.ns(rs), this.node, file,
            '--name', rs,
            '--host', '0.0.0.0',
            '--tcp', String(LAB.echoPort),
            '--udp', String(LAB.echoPort),
            '--who', String(LAB.whoPort),
            '--log-peers',
            '--exit-on-stdin-eof',
          ],
          { stdio: ['pipe', 'pipe', 'pipe'] },
        );
        this.children.push({ label: `echo-server ${rs}`, child });
        return waitReady(child, `echo-server in ${this.ns(rs)}`, events, opts.timeoutMs ?? 15000);
      }),
    );
  }

  /** What an echo server has seen so far: one entry per TCP connection / UDP datagram (peer = source). */
  echoLog(rs: RealServer): EchoServerEvent[] {
    return (this.echoEvents.get(rs) ?? []).filter((e) => e.event === 'conn');
  }

  /** Forgets the echo servers' logs (e.g. between test cases). */
  clearEchoLogs(): void {
    for (const events of this.echoEvents.values()) events.length = 0;
  }

  // --- clients ----------------------------------------------------------------------------------

  private async client<T>(role: Role, args: string[], timeoutMs: number): Promise<T> {
    const res = await runAsync('ip', ['netns', 'exec', this.ns(role), this.node, this.script('client'), ...args], { timeoutMs });
    const line = res.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
    if (!line) throw new Error(`client ${args[0]} in ${this.ns(role)} printed no result (exit ${res.signal ?? res.code}): ${res.stderr.trim()}`);
    const out = JSON.parse(line) as T & { error?: string };
    if (out.error) throw new Error(`client ${args.join(' ')} in ${this.ns(role)}: ${out.error}`);
    return out;
  }

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

  /**
   * Sends raw Ethernet frames out of `dev` in a namespace through an AF_PACKET socket (python3),
   * past the kernel's IP stack: for frames no socket API would build (malformed ICMP, forged
   * errors). Each frame goes out as given, in order; throws if python3 fails.
   */
  injectFrames(role: Role, dev: string, frames: readonly Buffer[]): void {
    const script = [
      'import socket, sys',
      's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
      's.bind((sys.argv[1], 0))',
      'for h in sys.argv[2:]:',
      '    s.send(bytes.fromhex(h))',
    ].join('\n');
    this.exec(role, 'python3', ['-c', script, dev, ...frames.map((f) => f.toString('hex'))]);
  }

  /**
   * Like injectFrames() for thousands of frames (no argv limit): writes them to a file in the lab's
   * scratch directory and sends them in order from one AF_PACKET socket, pausing `pauseMs` after
   * every `burst` frames so the receiver's ring (net_af_packet: 512 frames by default) and the
   * veth backlog are not overrun. A frame the kernel refuses (e.g. longer than the device MTU) is
   * counted by errno name, not fatal. Resolves with what was sent.
   */
  async injectFrameBatch(
    role: Role,
    dev: string,
    frames: readonly Buffer[],
    opts: { burst?: number; pauseMs?: number } = {},
  ): Promise<{ sent: number; refused: Record<string, number> }> {
    const file = path.join(this.dir, `frames-${String(++this.captureSeq).padStart(3, '0')}-${role}-${dev}.bin`);
    const parts: Buffer[] = [];
    for (const f of frames) {
      if (f.length > 0xffff) throw new RangeError(`frame of ${f.length} bytes cannot be injected`);
      const len = Buffer.alloc(2);
      len.writeUInt16BE(f.length);
      parts.push(len, f);
    }
    fs.writeFileSync(file, Buffer.concat(parts));
    const script = [
      'import errno, json, socket, struct, sys, time',
      'dev, file, burst, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) / 1000.0',
      's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
      's.bind((dev, 0))',
      'data = open(file, "rb").read()',
      'off, n, sent, refused = 0, 0, 0, {}',
      'while off + 2 <= len(data):',
      '    (l,) = struct.unpack_from("!H", data, off)',
      '    frame = data[off + 2:off + 2 + l]',
      '    off += 2 + l',
      '    try:',
      '        s.send(frame)',
      '        sent += 1',
      '    except OSError as e:',
      '        k = errno.errorcode.get(e.errno, str(e.errno))',
      '        refused[k] = refused.get(k, 0) + 1',
      '    n += 1',
      '    if burst > 0 and n % burst == 0 and pause > 0:',
      '        time.sleep(pause)',
      'print(json.dumps({"sent": sent, "refused": refused}))',
    ].join('\n');
    const burst = opts.burst ?? 16;
    const pauseMs = opts.pauseMs ?? 2;
    const limit = 30000 + Math.ceil(frames.length / Math.max(burst, 1)) * (pauseMs + 5);
    try {
      const res = await this.execAsync(role, 'python3', ['-c', script, dev, file, String(burst), String(pauseMs)], { timeoutMs: limit });
      const line = res.stdout.trim().split('\n').pop() ?? '';
      if (res.code !== 0 || !line.startsWith('{')) {
        throw new Error(`injecting ${frames.length} frames from ${this.ns(role)}/${dev} failed (exit ${res.signal ?? res.code}): ${res.stderr.trim()}`);
      }
      return JSON.parse(line) as { sent: number; refused: Record<string, number> };
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  /**
   * Holds `flows` UDP flows open from a namespace for `durationMs`: one socket per flow (its own
   * source port), each sending a small datagram to host:port every `intervalMs` whether or not
   * replies come, so every flow that got a conn keeps it (unlike udpEcho, whose sockets stop at
   * their first unanswered datagram). Replies are read and counted per flow. Resolves at the end
   * with, per flow, the datagrams sent and the replies received.
   */
  async udpHold(
    role: Role,
    host: string,
    port: number,
    opts: { flows: number; intervalMs?: number; durationMs: number; bytes?: number },
  ): Promise<{ flows: number; sent: number[]; replies: number[] }> {
    const script = [
      'import json, selectors, socket, sys, time',
      'host, port, n, interval, duration, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) / 1000.0, float(sys.argv[5]) / 1000.0, int(sys.argv[6])',
      'sel = selectors.DefaultSelector()',
      'socks = []',
      'for i in range(n):',
      '    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      '    s.setblocking(False)',
      '    s.bind(("", 0))',
      '    sel.register(s, selectors.EVENT_READ, i)',
      '    socks.append(s)',
      'sent, replies = [0] * n, [0] * n',
      'payload = b"h" * size',
      'def drain(until):',
      '    while True:',
      '        left = until - time.monotonic()',
      '        if left <= 0:',
      '            return',
      '        for key, _ in sel.select(left):',
      '            while True:',
      '                try:',
      '                    key.fileobj.recv(65536)',
      '                except OSError:',
      '                    break',
      '                replies[key.data] += 1',
      '# Each round is spread over the interval in chunks of 32 flows: a steady rate, not a burst.',
      'chunks = [socks[i:i + 32] for i in range(0, n, 32)]',
      'start = time.monotonic()',
      'rnd = 0',
      'while rnd * interval < duration:',
      '    t0 = start + rnd * interval',
      '    for k, chunk in enumerate(chunks):',
      '        for j, s in enumerate(chunk):',
      '            idx = k * 32 + j',
      '            try:',
      '                s.sendto(payload, (host, port))',
      '                sent[idx] += 1',
      '            except OSError:',
      '                pass',
      '        drain(t0 + (k + 1) * interval / len(chunks))',
      '    rnd += 1',
      'drain(time.monotonic() + interval)',
      'print(json.dumps({"flows": n, "sent": sent, "replies": replies}))',
    ].join('\n');
    const intervalMs = opts.intervalMs ?? 500;
    const args = ['-c', script, host, String(port), String(opts.flows), String(intervalMs), String(opts.durationMs), String(opts.bytes ?? 32)];
    const res = await this.execAsync(role, 'python3', args, { timeoutMs: opts.durationMs + intervalMs + 30000 });
    const line = res.stdout.trim().split('\n').pop() ?? '';
    if (res.code !== 0 || !line.startsWith('{')) {
      throw new Error(`udpHold from ${this.ns(role)} failed (exit ${res.signal ?? res.code}): ${res.stderr.trim()}`);
    }
    return JSON.parse(line) as { flows: number; sent: number[]; replies: number[] };
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
    if (this.destroyed) killSync(cap.pid, 500);
    return cap;
  }

  // --- teardown ---------------------------------------------------------------------------------

  /**
   * Kills every process the lab started (SIGTERM by PID, SIGKILL after a grace period), deletes
   * the root links and the namespaces, removes the scratch directory. Idempotent; never throws.
   */
  destroy(): void {
    this.destroyed = true;
    process.removeListener('exit', this.exitHook);
    for (const c of this.captures) {
      if (c.running) killSync(c.pid, 2000);
    }
    for (const { child } of this.children.splice(0)) {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) killSync(child.pid, 2000);
    }
    // Deleting a root end deletes its peer; namespaces go after (their other veths go with them).
    for (const l of this.rootLinks.splice(0)) run('ip', ['link', 'del', 'dev', l], { allowFail: true });
    for (const ns of this.namespaces.splice(0)) run('ip', ['netns', 'del', ns], { allowFail: true });
    try {
      fs.rmSync(this.dir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function linkExists(dev: string): boolean {
  return run('ip', ['-br', 'link', 'show', 'dev', dev], { allowFail: true }) !== '';
}

function linkInfo(ns: string | undefined, dev: string): { address: string; mtu: number; operstate: string } {
  const out = run('ip', [...(ns ? ['-n', ns] : []), '-j', 'link', 'show', 'dev', dev]);
  return (JSON.parse(out) as { address: string; mtu: number; operstate: string }[])[0];
}

function pushOpt(args: string[], flag: string, v: number | undefined): void {
  if (v !== undefined) args.push(flag, String(v));
}

/** An overall time limit for a client run: waves of `concurrency` items, each up to `perItemMs`. */
function budget(items: number, concurrency: number, perItemMs: number): number {
  return Math.ceil(Math.max(items, 1) / Math.max(concurrency, 1)) * perItemMs + 15000;
}

/** Resolves when the child prints {"event":"ready"}; collects later JSON lines into `events`. */
function waitReady(child: ChildProcess, label: string, events: EchoServerEvent[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    let ready = false;
    const timer = setTimeout(() => {
      if (!ready) reject(new Error(`${label} not ready after ${timeoutMs} ms: ${stderr.trim()}`));
    }, timeoutMs);
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      let ev: EchoServerEvent;
      try {
        ev = JSON.parse(line) as EchoServerEvent;
      } catch {
        return;
      }
      events.push(ev);
      if (ev.event === 'ready' && !ready) {
        ready = true;
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      if (!ready) reject(new Error(`${label} exited (${sig ?? code}) before ready: ${stderr.trim()}`));
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      if (!ready) reject(new Error(`${label} could not start: ${e.message}`));
    });
    // A write error on stdin (server already gone) must not become an uncaught exception.
    child.stdin?.on('error', () => undefined);
  });
}

export function parsePing(output: string, exitCode: number | null): PingResult {
  const m = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(output);
  const rtts = [...output.matchAll(/time=([\d.]+) ms/g)].map((x) => Number(x[1]));
  const errors = output.split('\n').filter((l) => /^From /.test(l.trim())).map((l) => l.trim());
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
