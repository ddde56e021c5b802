/**
 * # Scale-out lab: two appliances behind an ECMP router
 *
 * Two `retrace serve` processes (node1, node2; each its own EAL file prefix) share one VIP. A
 * router namespace `edge` reaches the VIP over a multipath route hashed on L4
 * (`net.ipv4.fib_multipath_hash_policy=1`), the way a ToR reaches BGP-announced VIPs. Both nodes
 * reach one shared server bridge. Both are configured by one client over gRPC (ApplyConfig).
 *
 * ```
 *                                         up1 198.18.11.2 ── veth ── [node1 uplink 198.18.11.1/24]   rt<tag>1u
 *  client  198.18.1.2/24 ── lan │ edge │                              [node1 servers 198.18.30.1/24]  rt<tag>1s ─┐
 *          +.11 .. .14/32   198.18.1.1  up2 198.18.12.2 ── veth ── [node2 uplink 198.18.12.1/24]   rt<tag>2u   │
 *                                                                    [node2 servers 198.18.30.2/24]  rt<tag>2s ─┤
 *   198.19.0.1/32 nexthop via 198.18.11.1 dev up1                                                               │
 *                 nexthop via 198.18.12.1 dev up2     (table main)    rs1 198.18.30.11 ─┐                       │
 *   tables 101 / 102: the VIP via node1 / node2 only                  rs2 198.18.30.12 ─┼─ sw: br0 (n1 n2 rs*) ─┘
 *   `ip rule from <client addr> lookup 10x` pins one address          rs3 198.18.30.13 ─┘
 *
 *  LIPs: node1 198.18.30.101, .102; node2 198.18.30.201, .202 (on-link for the reals: no routes)
 *  VIP 198.19.0.1: TCP+UDP 8080 (echo) and 8081 (identity), Maglev, one seed, rs1..rs3 on both nodes
 * ```
 *
 * - Namespaces `rt-<tag>-<role>` (roles: client, edge, sw, rs1..rs3), random 6-hex-digit tag; root
 *   ends `rt<tag>1u`, `rt<tag>1s`, `rt<tag>2u`, `rt<tag>2s`, each a `net_af_packet` port of one
 *   node. Same conventions as topology.ts: no IPv6, rp_filter 0, no redirects, TX checksum offload
 *   off on namespace veth ends, root ends without addresses, ARP or forwarding.
 * - The client namespace has several source addresses (ECMP.clients) so the kernel's L4 hash and
 *   the Maglev hash both see varied tuples; the lab's client.js binds them with --local-address.
 * - Steering: setVipNexthops() rewrites the multipath route in `edge`'s main table (what a BGP
 *   speaker does on announce/withdraw); pin() adds an `ip rule` that sends one client address's
 *   VIP traffic through one node's table (101, 102) whatever the main table says — a flow moved
 *   by a re-hash, or kept on a node after its withdrawal.
 * - routeGet() asks the edge kernel which nexthop a given 5-tuple would take (`ip route get ...
 *   iif lan ipproto P sport S dport D`), i.e. the ECMP hash decision for that flow. Under policy 1
 *   that is where UDP goes, but not TCP from the client namespace: see setMultipathHash().
 * - EcmpScaleOut adds the two appliances (ApplianceProcess), configures them, reads their counters,
 *   and plays a BGP sidecar (withdrawOnDrain): poll a node's readiness and, once it reports
 *   NOT_SERVING, remove its nexthop from the edge route.
 * - destroy() kills every process the lab started (by PID), deletes the root links and namespaces.
 *   Idempotent, never throws, also runs from a process 'exit' hook.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import YAML from 'yaml';
import { Real, VirtualService } from '../gen/retrace/v1/balancer';
import type { Config } from '../gen/retrace/v1/config';
import type { Conn } from '../gen/retrace/v1/conn';
import type { DropCounters, GetCountersResponse, PathCounters } from '../gen/retrace/v1/path';
import { Protocol, Scheduler } from '../gen/retrace/v1/types';
import { ApplianceProcess } from './appliance';
import type { HeldConnEvent } from './held-conn';
import type { EchoServerEvent, TcpEchoReport, UdpEchoReport, WhoReport } from './results';
import { killSync, run, runAsync, sleepSync, type RunOptions } from './sh';
import { LAB, REAL_SERVERS, type RealServer } from './topology';

// ---------------------------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------------------------

export const ECMP_ROLES = ['client', 'edge', 'sw', 'rs1', 'rs2', 'rs3'] as const;
export type EcmpRole = (typeof ECMP_ROLES)[number];
export const ECMP_NODES = ['node1', 'node2'] as const;
export type EcmpNode = (typeof ECMP_NODES)[number];
/** Each node's two ports, in DPDK port-id order. */
export const NODE_PORTS = ['uplink', 'servers'] as const;
export type NodePort = (typeof NODE_PORTS)[number];

interface NodePlan {
  /** The node's uplink port address (the edge's nexthop) and the edge's address on that link. */
  uplink: { addr: string; net: string; edge: string; edgeDev: string };
  /** The node's server-side port address. */
  servers: { addr: string };
  lips: readonly string[];
  /** edge's routing table that sends the VIP through this node only. */
  table: number;
}

export const ECMP = {
  prefixLen: 24,
  /** The client's main address (on eth0, /24) and its extra source addresses (/32). */
  client: '198.18.1.2',
  clients: ['198.18.1.2', '198.18.1.11', '198.18.1.12', '198.18.1.13', '198.18.1.14'],
  clientNet: '198.18.1.0/24',
  edgeLan: '198.18.1.1',
  nodes: {
    node1: {
      uplink: { addr: '198.18.11.1', net: '198.18.11.0/24', edge: '198.18.11.2', edgeDev: 'up1' },
      servers: { addr: '198.18.30.1' },
      lips: ['198.18.30.101', '198.18.30.102'],
      table: 101,
    },
    node2: {
      uplink: { addr: '198.18.12.1', net: '198.18.12.0/24', edge: '198.18.12.2', edgeDev: 'up2' },
      servers: { addr: '198.18.30.2' },
      lips: ['198.18.30.201', '198.18.30.202'],
      table: 102,
    },
  } as Record<EcmpNode, NodePlan>,
  rs: LAB.rs,
  serversNet: LAB.serversNet,
  vip: '198.19.0.1',
  echoPort: LAB.echoPort,
  whoPort: LAB.whoPort,
  /** One Maglev seed for every service on both nodes. */
  seed: 0x5ca1e0,
} as const;

const DEVICES: Record<EcmpRole, readonly string[]> = {
  client: ['eth0'],
  edge: ['lan', 'up1', 'up2'],
  sw: ['br0', 'n1', 'n2', 'rs1', 'rs2', 'rs3'],
  rs1: ['eth0'],
  rs2: ['eth0'],
  rs3: ['eth0'],
};

const DEFAULT_SCRIPTS_DIR = path.resolve(__dirname, '..', '..', 'dist', 'lab');
/** `ip rule` priorities for pins: one per client address. */
const PIN_PRIORITY_BASE = 1000;

export interface EcmpLabOptions {
  tag?: string;
  scriptsDir?: string;
  node?: string;
  log?: (line: string) => void;
  cleanupOnExit?: boolean;
}

export interface EcmpClientOptions {
  /** Source address (one of ECMP.clients); default: the route's choice (ECMP.client). */
  from?: string;
  timeoutMs?: number;
  concurrency?: number;
}

interface Child {
  label: string;
  child: ChildProcess;
}

// ---------------------------------------------------------------------------------------------
// EcmpLab: namespaces, links, routes, echo servers, clients
// ---------------------------------------------------------------------------------------------

export class EcmpLab {
  readonly tag: string;
  readonly dir: string;
  private readonly scriptsDir: string;
  private readonly node: string;
  private readonly log: (line: string) => void;
  private readonly namespaces: string[] = [];
  private readonly rootLinks: string[] = [];
  private readonly children: Child[] = [];
  private readonly echoEvents = new Map<RealServer, EchoServerEvent[]>();
  private destroyed = false;
  private readonly exitHook = (): void => this.destroy();

  private constructor(opts: EcmpLabOptions) {
    if (opts.tag !== undefined && !/^[0-9a-f]{6}$/.test(opts.tag)) throw new Error(`lab tag must be 6 lower-case hex digits, got "${opts.tag}"`);
    this.tag = opts.tag ?? crypto.randomBytes(3).toString('hex');
    this.scriptsDir = opts.scriptsDir ?? DEFAULT_SCRIPTS_DIR;
    this.node = opts.node ?? process.execPath;
    this.log = opts.log ?? (() => undefined);
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `retrace-ecmp-${this.tag}-`));
    if (opts.cleanupOnExit ?? true) process.on('exit', this.exitHook);
  }

  /** Builds namespaces, links, addresses, routes. Tears down what it made and rethrows on failure. */
  static create(opts: EcmpLabOptions = {}): EcmpLab {
    const lab = new EcmpLab(opts);
    try {
      lab.build();
      return lab;
    } catch (e) {
      lab.destroy();
      throw e;
    }
  }

  // --- names ------------------------------------------------------------------------------------

  ns(role: EcmpRole): string {
    return `rt-${this.tag}-${role}`;
  }

  get allNamespaces(): string[] {
    return ECMP_ROLES.map((r) => this.ns(r));
  }

  /** Root-namespace end of a node's port: `rt<tag>1u`, `rt<tag>1s`, `rt<tag>2u`, `rt<tag>2s`. */
  rootDev(node: EcmpNode, port: NodePort): string {
    return `rt${this.tag}${node === 'node1' ? '1' : '2'}${port === 'uplink' ? 'u' : 's'}`;
  }

  get allRootLinks(): string[] {
    return ECMP_NODES.flatMap((n) => NODE_PORTS.map((p) => this.rootDev(n, p)));
  }

  // --- commands ---------------------------------------------------------------------------------

  exec(role: EcmpRole, cmd: string, args: readonly string[] = [], opts: RunOptions = {}): string {
    return run('ip', ['netns', 'exec', this.ns(role), cmd, ...args], opts);
  }

  ip(role: EcmpRole, args: readonly string[], opts: RunOptions = {}): string {
    return run('ip', ['-n', this.ns(role), ...args], opts);
  }

  private sh(cmd: string, args: readonly string[]): string {
    this.log(`${cmd} ${args.join(' ')}`);
    return run(cmd, args);
  }

  private ipn(role: EcmpRole, ...args: string[]): void {
    this.sh('ip', ['-n', this.ns(role), ...args]);
  }

  // --- build ------------------------------------------------------------------------------------

  private build(): void {
    const existing = run('ip', ['netns', 'list'], { allowFail: true });
    if (existing.includes(`rt-${this.tag}-`)) throw new Error(`namespaces with tag ${this.tag} already exist`);
    for (const role of ECMP_ROLES) {
      const ns = this.ns(role);
      this.sh('ip', ['netns', 'add', ns]);
      this.namespaces.push(ns);
      const sysctls = [
        'net.ipv6.conf.all.disable_ipv6=1',
        'net.ipv6.conf.default.disable_ipv6=1',
        'net.ipv4.conf.all.rp_filter=0',
        'net.ipv4.conf.default.rp_filter=0',
        `net.ipv4.ip_forward=${role === 'edge' ? 1 : 0}`,
        'net.ipv4.conf.all.send_redirects=0',
        'net.ipv4.conf.default.send_redirects=0',
      ];
      // L4 hash: (saddr, daddr, proto, sport, dport) picks the nexthop, per flow.
      if (role === 'edge') sysctls.push('net.ipv4.fib_multipath_hash_policy=1');
      this.sh('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', ...sysctls]);
      this.ipn(role, 'link', 'set', 'dev', 'lo', 'up');
    }

    // Links.
    this.ipn('client', 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'lan', 'netns', this.ns('edge'));
    for (const node of ECMP_NODES) {
      this.vethRoot(this.rootDev(node, 'uplink'), 'edge', ECMP.nodes[node].uplink.edgeDev);
      this.vethRoot(this.rootDev(node, 'servers'), 'sw', node === 'node1' ? 'n1' : 'n2');
    }
    this.ipn('sw', 'link', 'add', 'name', 'br0', 'type', 'bridge', 'stp_state', '0', 'mcast_snooping', '0');
    for (const rs of REAL_SERVERS) {
      this.ipn(rs, 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', rs, 'netns', this.ns('sw'));
      this.ipn('sw', 'link', 'set', 'dev', rs, 'master', 'br0');
    }
    this.ipn('sw', 'link', 'set', 'dev', 'n1', 'master', 'br0');
    this.ipn('sw', 'link', 'set', 'dev', 'n2', 'master', 'br0');

    // Root ends belong to the appliances.
    const rootSysctls = this.allRootLinks.flatMap((d) => [`net.ipv6.conf.${d}.disable_ipv6=1`, `net.ipv4.conf.${d}.forwarding=0`]);
    this.sh('sysctl', ['-q', '-w', ...rootSysctls]);
    for (const d of this.allRootLinks) this.sh('ip', ['link', 'set', 'dev', d, 'arp', 'off', 'up']);

    this.sh('ip', ['netns', 'exec', this.ns('edge'), 'sysctl', '-q', '-w', ...DEVICES.edge.map((d) => `net.ipv4.conf.${d}.rp_filter=0`)]);
    for (const role of ECMP_ROLES) {
      for (const dev of DEVICES[role]) if (dev !== 'br0') this.sh('ip', ['netns', 'exec', this.ns(role), 'ethtool', '-K', dev, 'tx', 'off']);
    }

    // Addresses.
    this.ipn('client', 'addr', 'add', `${ECMP.client}/${ECMP.prefixLen}`, 'dev', 'eth0');
    for (const a of ECMP.clients) if (a !== ECMP.client) this.ipn('client', 'addr', 'add', `${a}/32`, 'dev', 'eth0');
    this.ipn('edge', 'addr', 'add', `${ECMP.edgeLan}/${ECMP.prefixLen}`, 'dev', 'lan');
    for (const node of ECMP_NODES) {
      const u = ECMP.nodes[node].uplink;
      this.ipn('edge', 'addr', 'add', `${u.edge}/${ECMP.prefixLen}`, 'dev', u.edgeDev);
    }
    for (const rs of REAL_SERVERS) this.ipn(rs, 'addr', 'add', `${ECMP.rs[rs]}/${ECMP.prefixLen}`, 'dev', 'eth0');
    for (const role of ECMP_ROLES) for (const dev of DEVICES[role]) this.ipn(role, 'link', 'set', 'dev', dev, 'up');

    // Routes. The reals reach every LIP on-link (198.18.30.0/24): they need none.
    this.ipn('client', 'route', 'add', 'default', 'via', ECMP.edgeLan);
    for (const node of ECMP_NODES) {
      const p = ECMP.nodes[node];
      this.ipn('edge', 'route', 'add', `${ECMP.vip}/32`, 'via', p.uplink.addr, 'dev', p.uplink.edgeDev, 'table', String(p.table));
    }
    this.setVipNexthops(ECMP_NODES);
    this.waitLinksUp(5000);
  }

  private vethRoot(root: string, role: EcmpRole, dev: string): void {
    this.sh('ip', ['link', 'add', 'name', root, 'type', 'veth', 'peer', 'name', dev, 'netns', this.ns(role)]);
    this.rootLinks.push(root);
  }

  private waitLinksUp(timeoutMs: number): void {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const notUp: string[] = [];
      for (const role of ECMP_ROLES) {
        const links = JSON.parse(run('ip', ['-n', this.ns(role), '-j', 'link', 'show'])) as { ifname: string; operstate: string }[];
        for (const l of links) if (l.ifname !== 'lo' && l.operstate !== 'UP') notUp.push(`${role}/${l.ifname} ${l.operstate}`);
      }
      for (const d of this.allRootLinks) {
        const st = (JSON.parse(run('ip', ['-j', 'link', 'show', 'dev', d])) as { operstate: string }[])[0].operstate;
        if (st !== 'UP') notUp.push(`root/${d} ${st}`);
      }
      if (notUp.length === 0) return;
      if (Date.now() > deadline) throw new Error(`ecmp lab ${this.tag}: links not up after ${timeoutMs} ms: ${notUp.join(', ')}`);
      sleepSync(25);
    }
  }

  // --- steering ---------------------------------------------------------------------------------

  /**
   * The VIP route in edge's main table: a multipath route over the given nodes (the ECMP group),
   * a plain route for one node. What a BGP speaker would install from the nodes' announcements.
   */
  setVipNexthops(nodes: readonly EcmpNode[]): void {
    if (nodes.length === 0) throw new Error('at least one node must carry the VIP');
    const args = ['route', 'replace', `${ECMP.vip}/32`];
    if (nodes.length === 1) {
      const u = ECMP.nodes[nodes[0]].uplink;
      args.push('via', u.addr, 'dev', u.edgeDev);
    } else {
      for (const n of nodes) args.push('nexthop', 'via', ECMP.nodes[n].uplink.addr, 'dev', ECMP.nodes[n].uplink.edgeDev);
    }
    this.ipn('edge', ...args);
  }

  /**
   * edge's multipath hash: 1 = L4 (the default), or 3 = custom with fields 0x0037 (source and
   * destination address, protocol, source and destination port).
   *
   * They differ for flows whose packets arrive with an L4 skb hash already set: with policy 1 the
   * kernel uses that hash instead of dissecting the packet (fib_multipath_hash: "short-circuit if
   * we already have L4 hash present"), and a veth crossing into another namespace keeps it
   * (skb_scrub_packet does not clear skb->hash). TCP sockets stamp every packet with their random
   * sk_txhash, so a TCP flow from the client namespace is placed by a per-socket random number,
   * not by its 5-tuple, and is re-placed whenever the socket re-rolls it (net.core.txrehash: SYN
   * and RTO retransmissions). Unconnected UDP carries no such hash and is placed by the 5-tuple.
   * Policy 3 always dissects the fields: the placement of a real router hashing the 5-tuple.
   */
  setMultipathHash(policy: 1 | 3): void {
    const args = [`net.ipv4.fib_multipath_hash_policy=${policy}`];
    if (policy === 3) args.push('net.ipv4.fib_multipath_hash_fields=0x0037');
    this.exec('edge', 'sysctl', ['-q', '-w', ...args]);
  }

  /** The nodes the main-table VIP route currently points at. */
  vipNexthops(): EcmpNode[] {
    const routes = JSON.parse(this.ip('edge', ['-j', 'route', 'show', `${ECMP.vip}/32`])) as {
      gateway?: string;
      nexthops?: { gateway: string }[];
    }[];
    const gws = routes.flatMap((r) => (r.nexthops ? r.nexthops.map((n) => n.gateway) : r.gateway ? [r.gateway] : []));
    return gws.map((g) => nodeByUplinkAddr(g));
  }

  /**
   * Sends one client address's traffic (to the VIP) through one node regardless of the main
   * table, with `ip rule from <addr>/32 lookup <node's table>`; null removes the pin.
   */
  pin(clientAddr: string, node: EcmpNode | null): void {
    const i = ECMP.clients.indexOf(clientAddr as (typeof ECMP.clients)[number]);
    if (i < 0) throw new Error(`${clientAddr} is not a client address of the lab`);
    const prio = String(PIN_PRIORITY_BASE + i);
    this.ip('edge', ['rule', 'del', 'priority', prio], { allowFail: true });
    if (node !== null) this.ipn('edge', 'rule', 'add', 'from', `${clientAddr}/32`, 'lookup', String(ECMP.nodes[node].table), 'priority', prio);
  }

  /** Removes every pin. */
  unpinAll(): void {
    for (const a of ECMP.clients) this.pin(a, null);
  }

  /**
   * Which node the edge kernel forwards this flow to: `ip route get <vip> from <src> iif lan
   * ipproto <p> sport <s> dport <d>` (pins and the multipath hash included).
   */
  routeGet(from: string, proto: 'tcp' | 'udp', sport: number, dport: number): EcmpNode {
    const out = this.ip('edge', ['-j', 'route', 'get', ECMP.vip, 'from', from, 'iif', 'lan', 'ipproto', proto, 'sport', String(sport), 'dport', String(dport)]);
    const r = (JSON.parse(out) as { gateway?: string }[])[0];
    if (!r?.gateway) throw new Error(`ip route get gave no gateway: ${out}`);
    return nodeByUplinkAddr(r.gateway);
  }

  // --- servers ----------------------------------------------------------------------------------

  private script(name: 'echo-server' | 'client' | 'held-conn'): string {
    const file = path.join(this.scriptsDir, `${name}.js`);
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: build the TypeScript first (tsc -p tsconfig.json)`);
    return file;
  }

  /** The lab's echo servers (dist/lab/echo-server.js) on rs1..rs3, as LabTopology runs them. */
  async startEchoServers(timeoutMs = 15000): Promise<void> {
    const file = this.script('echo-server');
    await Promise.all(
      REAL_SERVERS.map((rs) => {
        const events: EchoServerEvent[] = [];
        this.echoEvents.set(rs, events);
        const child = spawn(
          'ip',
          [
            'netns', 'exec', this.ns(rs), this.node, file,
            '--name', rs, '--host', '0.0.0.0',
            '--tcp', String(ECMP.echoPort), '--udp', String(ECMP.echoPort), '--who', String(ECMP.whoPort),
            '--log-peers', '--exit-on-stdin-eof',
          ],
          { stdio: ['pipe', 'pipe', 'pipe'] },
        );
        this.children.push({ label: `echo-server ${rs}`, child });
        return waitReady(child, `echo-server in ${this.ns(rs)}`, events, timeoutMs);
      }),
    );
  }

  echoLog(rs: RealServer): Extract<EchoServerEvent, { event: 'conn' }>[] {
    return (this.echoEvents.get(rs) ?? []).filter((e): e is Extract<EchoServerEvent, { event: 'conn' }> => e.event === 'conn');
  }

  clearEchoLogs(): void {
    for (const events of this.echoEvents.values()) events.length = 0;
  }

  // --- clients ----------------------------------------------------------------------------------

  private async client<T>(args: string[], timeoutMs: number): Promise<T> {
    const res = await runAsync('ip', ['netns', 'exec', this.ns('client'), this.node, this.script('client'), ...args], { timeoutMs });
    const line = res.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
    if (!line) throw new Error(`client ${args[0]} printed no result (exit ${res.signal ?? res.code}): ${res.stderr.trim()}`);
    const out = JSON.parse(line) as T & { error?: string };
    if (out.error) throw new Error(`client ${args.join(' ')}: ${out.error}`);
    return out;
  }

  private common(args: string[], o: EcmpClientOptions): void {
    if (o.from !== undefined) args.push('--local-address', o.from);
    if (o.concurrency !== undefined) args.push('--concurrency', String(o.concurrency));
    if (o.timeoutMs !== undefined) args.push('--timeout-ms', String(o.timeoutMs));
  }

  /** Identity queries to the VIP (client.js who): which real answered each. */
  who(o: EcmpClientOptions & { proto?: 'tcp' | 'udp'; count?: number; localPortBase?: number } = {}): Promise<WhoReport> {
    const count = o.count ?? 1;
    const args = ['who', '--proto', o.proto ?? 'tcp', '--host', ECMP.vip, '--port', String(ECMP.whoPort), '--count', String(count)];
    if (o.localPortBase !== undefined) args.push('--local-port-base', String(o.localPortBase));
    this.common(args, o);
    return this.client(args, budget(count, o.concurrency ?? 1, o.timeoutMs ?? 2000));
  }

  /** TCP echo conns to the VIP (client.js tcp). */
  tcpEcho(o: EcmpClientOptions & { conns?: number; bytes?: number } = {}): Promise<TcpEchoReport> {
    const conns = o.conns ?? 1;
    const args = ['tcp', '--host', ECMP.vip, '--port', String(ECMP.echoPort), '--conns', String(conns), '--bytes', String(o.bytes ?? 1024)];
    this.common(args, o);
    return this.client(args, budget(conns, o.concurrency ?? 32, o.timeoutMs ?? 5000));
  }

  /** UDP echo datagrams to the VIP (client.js udp). */
  udpEcho(o: EcmpClientOptions & { count?: number; bytes?: number } = {}): Promise<UdpEchoReport> {
    const count = o.count ?? 1;
    const args = ['udp', '--host', ECMP.vip, '--port', String(ECMP.echoPort), '--count', String(count), '--bytes', String(o.bytes ?? 64)];
    this.common(args, o);
    return this.client(args, budget(count, o.concurrency ?? 32, o.timeoutMs ?? 2000));
  }

  /**
   * One TCP conn to the VIP's echo port held open (dist/lab/held-conn.js), driven step by step.
   * Resolves once connected.
   */
  async holdConn(o: { from?: string; localPort?: number; port?: number; timeoutMs?: number } = {}): Promise<HeldConn> {
    const args = ['netns', 'exec', this.ns('client'), this.node, this.script('held-conn'), '--host', ECMP.vip, '--port', String(o.port ?? ECMP.echoPort)];
    if (o.from !== undefined) args.push('--local-address', o.from);
    if (o.localPort !== undefined) args.push('--local-port', String(o.localPort));
    const child = spawn('ip', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.children.push({ label: 'held-conn', child });
    const conn = new HeldConn(child);
    const ev = await conn.next(o.timeoutMs ?? 10000);
    if (ev.event !== 'connected') {
      conn.kill();
      throw new Error(`held conn did not connect: ${JSON.stringify(ev)}`);
    }
    conn.localAddress = ev.localAddress;
    conn.localPort = ev.localPort;
    return conn;
  }

  // --- the appliances' configuration -------------------------------------------------------------

  /** A node's YAML: its two af_packet ports plus `extra` (e.g. timeouts). */
  applianceYaml(node: EcmpNode, extra = ''): string {
    const ports = NODE_PORTS.map((name, i) => ({ name, device: `net_af_packet${i},iface=${this.rootDev(node, name)}` }));
    return ['eal:\n  memory_mb: 256', 'dataplane:\n  mbufs: 8191\n  max_conns: 16384', YAML.stringify({ ports }), extra].join('\n');
  }

  // --- teardown ---------------------------------------------------------------------------------

  destroy(): void {
    this.destroyed = true;
    process.removeListener('exit', this.exitHook);
    for (const { child } of this.children.splice(0)) {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) killSync(child.pid, 2000);
    }
    for (const l of this.rootLinks.splice(0)) run('ip', ['link', 'del', 'dev', l], { allowFail: true });
    for (const ns of this.namespaces.splice(0)) run('ip', ['netns', 'del', ns], { allowFail: true });
    try {
      fs.rmSync(this.dir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }
}

// ---------------------------------------------------------------------------------------------
// HeldConn
// ---------------------------------------------------------------------------------------------

/** A held-open TCP conn in the client namespace (see held-conn.ts for the protocol). */
export class HeldConn {
  localAddress = '';
  localPort = 0;
  private readonly queue: HeldConnEvent[] = [];
  private waiter: ((ev: HeldConnEvent) => void) | undefined;
  private stderr = '';
  private exited = false;

  constructor(private readonly child: ChildProcess) {
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    child.stdin!.on('error', () => undefined);
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      let ev: HeldConnEvent;
      try {
        ev = JSON.parse(line) as HeldConnEvent;
      } catch {
        return;
      }
      this.push(ev);
    });
    child.once('exit', (code, sig) => {
      this.exited = true;
      this.push({ event: 'error', reason: `held-conn exited (${sig ?? code}) ${this.stderr.trim()}` });
    });
  }

  private push(ev: HeldConnEvent): void {
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      w(ev);
    } else this.queue.push(ev);
  }

  /** The next event; rejects after timeoutMs (a liveness bound, not a measurement). */
  next(timeoutMs: number): Promise<HeldConnEvent> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`held conn: no event within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (ev) => {
        clearTimeout(timer);
        resolve(ev);
      };
    });
  }

  /** Events already received and not yet consumed (without waiting). */
  pending(): HeldConnEvent[] {
    return [...this.queue];
  }

  /** Sends `bytes` random bytes; the echo shows up as an 'echoed' event (see next()). */
  send(bytes = 64): void {
    this.child.stdin!.write(`echo ${bytes}\n`);
  }

  /** Sends and waits for the outcome. */
  async echo(bytes = 64, timeoutMs = 10000): Promise<HeldConnEvent> {
    this.send(bytes);
    return this.next(timeoutMs);
  }

  /** Closes the conn (FIN) and waits for 'closed'. */
  async close(timeoutMs = 10000): Promise<HeldConnEvent> {
    this.child.stdin!.write('close\n');
    for (;;) {
      const ev = await this.next(timeoutMs);
      if (ev.event === 'closed' || (ev.event === 'error' && this.exited)) return ev;
    }
  }

  kill(): void {
    if (this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null) killSync(this.child.pid, 1000);
  }
}

// ---------------------------------------------------------------------------------------------
// EcmpScaleOut: the lab plus two appliances configured over gRPC
// ---------------------------------------------------------------------------------------------

export interface ScaleOutOptions {
  log?: (line: string) => void;
  /** Extra YAML for both nodes (e.g. log level). */
  extraYaml?: string;
  /** Conn timeouts applied with the configuration (seconds). */
  timeouts?: { tcpClose?: number; tcpFin?: number; udp?: number };
}

const PROTOS = { tcp: Protocol.PROTOCOL_TCP, udp: Protocol.PROTOCOL_UDP } as const;

export class EcmpScaleOut {
  readonly nodes: Record<EcmpNode, ApplianceProcess> = { node1: new ApplianceProcess(), node2: new ApplianceProcess() };

  private constructor(readonly lab: EcmpLab) {}

  /** Builds the lab, starts echo servers and both appliances, configures both over gRPC. */
  static async start(opts: ScaleOutOptions = {}): Promise<EcmpScaleOut> {
    const log = opts.log ?? (() => undefined);
    const lab = EcmpLab.create({ log: () => undefined });
    const so = new EcmpScaleOut(lab);
    try {
      log(`ecmp lab ${lab.tag}: namespaces up`);
      await lab.startEchoServers();
      for (const n of ECMP_NODES) so.nodes[n].start(lab.applianceYaml(n, opts.extraYaml));
      await Promise.all(ECMP_NODES.map((n) => so.nodes[n].waitServing()));
      await so.configure(opts.timeouts);
      log('node1, node2 serving and configured');
      return so;
    } catch (e) {
      await so.destroy();
      throw e;
    }
  }

  /**
   * A node's whole configuration, as one orchestrator would write it: its own addresses, default
   * route and LIPs; the VIP's services identical on both nodes (same scheduler, seed and reals;
   * node2 lists the reals in reverse order, which must not matter: reals are kept in canonical
   * order).
   */
  static nodeConfig(node: EcmpNode, timeouts: ScaleOutOptions['timeouts'] = {}): Config {
    const p = ECMP.nodes[node];
    const rs = node === 'node1' ? [...REAL_SERVERS] : [...REAL_SERVERS].reverse();
    const svc = (proto: 'tcp' | 'udp', port: number): VirtualService =>
      VirtualService.create({
        protocol: PROTOS[proto],
        vip: ECMP.vip,
        port,
        scheduler: Scheduler.SCHEDULER_MAGLEV,
        seed: ECMP.seed,
        reals: rs.map((r) => Real.create({ address: ECMP.rs[r], port, weight: 1 })),
      });
    return {
      addresses: [
        { address: p.uplink.addr, prefixLength: ECMP.prefixLen, port: 'uplink' },
        { address: p.servers.addr, prefixLength: ECMP.prefixLen, port: 'servers' },
      ],
      routes: [{ prefix: '0.0.0.0', prefixLength: 0, port: 'uplink', gateway: p.uplink.edge, connected: false }],
      neighbors: [],
      localAddresses: p.lips.map((address) => ({ address, port: 'servers', portsInUse: 0n, portsTotal: 0n })),
      virtualServices: [svc('tcp', ECMP.echoPort), svc('tcp', ECMP.whoPort), svc('udp', ECMP.echoPort), svc('udp', ECMP.whoPort)],
      symmetric: { tcp: true, udp: true, icmp: true },
      timeouts: { ...timeouts },
    };
  }

  /** Applies each node's configuration (one client, two appliances). */
  async configure(timeouts: ScaleOutOptions['timeouts'] = {}): Promise<void> {
    for (const n of ECMP_NODES) await this.nodes[n].api.config.applyConfig({ config: EcmpScaleOut.nodeConfig(n, timeouts), dryRun: false });
  }

  counters(node: EcmpNode): Promise<GetCountersResponse> {
    return this.nodes[node].api.path.getCounters({});
  }

  /** conns_total of the VIP's service (proto, port) on a node. */
  async connsTotal(node: EcmpNode, proto: 'tcp' | 'udp', port: number): Promise<bigint> {
    const res = await this.nodes[node].api.balancer.listVirtualServices({});
    const s = res.virtualServices.find((v) => v.protocol === PROTOS[proto] && v.vip === ECMP.vip && v.port === port);
    if (!s) throw new Error(`${node}: no ${proto} service ${ECMP.vip}:${port}`);
    return s.connsTotal;
  }

  /** Every conn of a node (all pages), optionally for some client addresses only. */
  async conns(node: EcmpNode, clients: string[] = []): Promise<Conn[]> {
    const out: Conn[] = [];
    let pageToken = '';
    do {
      const res = await this.nodes[node].api.conns.listConns({
        filter: { protocols: [], clients, vips: [], reals: [], states: [] },
        pageSize: 10000,
        pageToken,
      });
      out.push(...res.conns);
      pageToken = res.nextPageToken;
    } while (pageToken !== '');
    return out;
  }

  /**
   * The BGP sidecar's job for one node: poll its readiness (grpc.health.v1) and, when it turns
   * NOT_SERVING (Drain) — or the appliance stops answering three polls in a row — withdraw it: the
   * edge's VIP route keeps only the other nodes. `withdrawn` resolves with the route left.
   */
  withdrawOnDrain(node: EcmpNode, intervalMs = 100): { withdrawn: Promise<EcmpNode[]>; stop: () => void } {
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    const withdrawn = new Promise<EcmpNode[]>((resolve, reject) => {
      let failures = 0;
      const poll = async (): Promise<void> => {
        if (stopped) return;
        let status: string;
        try {
          status = await this.nodes[node].healthCheck();
          failures = 0;
        } catch {
          status = ++failures >= 3 ? 'UNREACHABLE' : 'UNKNOWN';
        }
        if (stopped) return;
        if (status === 'NOT_SERVING' || status === 'UNREACHABLE') {
          try {
            const left = this.lab.vipNexthops().filter((n) => n !== node);
            this.lab.setVipNexthops(left);
            resolve(this.lab.vipNexthops());
          } catch (e) {
            reject(e as Error);
          }
          return;
        }
        timer = setTimeout(() => void poll(), intervalMs);
      };
      void poll();
    });
    return {
      withdrawn,
      stop: () => {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }

  /** Stops both appliances and tears the lab down. Never throws. */
  async destroy(): Promise<void> {
    for (const n of ECMP_NODES) {
      const app = this.nodes[n];
      try {
        if (app.running) await app.stop();
      } catch {
        /* fall through to kill */
      }
      await app.kill();
    }
    this.lab.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Counter helpers
// ---------------------------------------------------------------------------------------------

const ZERO_PATH: PathCounters = { rx: 0n, txSymmetric: 0n, txRouted: 0n, routeDivergence: 0n, asymmetric: 0n, pathChanges: 0n };

/** Path counters of one protocol on one port of a node (zeros if absent). */
export function nodePath(c: GetCountersResponse, proto: 'tcp' | 'udp' | 'icmp', port: NodePort): PathCounters {
  return c[proto]?.ports.find((p) => p.port === port)?.counters ?? ZERO_PATH;
}

/** Drop counters of one port of a node. */
export function nodeDrops(c: GetCountersResponse, port: NodePort): DropCounters {
  const d = c.drops.find((p) => p.port === port)?.counters;
  if (!d) throw new Error(`no drop counters for port ${port}`);
  return d;
}

function nodeByUplinkAddr(addr: string): EcmpNode {
  const n = ECMP_NODES.find((x) => ECMP.nodes[x].uplink.addr === addr);
  if (!n) throw new Error(`${addr} is no node's uplink address`);
  return n;
}

function budget(items: number, concurrency: number, perItemMs: number): number {
  return Math.ceil(Math.max(items, 1) / Math.max(concurrency, 1)) * perItemMs + 15000;
}

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
    child.stdin?.on('error', () => undefined);
  });
}
