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
 *   node. Built on NetnsLab (netns.ts) with the same conventions as topology.ts.
 * - The client namespace has several source addresses (ECMP.clients) so the kernel's L4 hash and
 *   the Maglev hash both see varied tuples; the lab's client.js binds them with --local-address.
 * - Steering: setVipNexthops() rewrites the multipath route in `edge`'s main table (what a BGP
 *   speaker does on announce/withdraw); pin() adds an `ip rule` that sends one client address's
 *   VIP traffic through one node's table (101, 102) whatever the main table says — a flow moved
 *   by a re-hash, or kept on a node after its withdrawal.
 * - routeGet() asks the edge kernel which nexthop a given 5-tuple would take (`ip route get ...
 *   iif lan ipproto P sport S dport D`), i.e. the ECMP hash decision for that flow. Under policy 1
 *   that is where UDP goes, but not TCP from the client namespace: see setMultipathHash().
 * - EcmpScaleOut (scale-out.ts) adds the two appliances (ApplianceProcess), configures them, reads their counters,
 *   and plays a BGP sidecar (withdrawOnDrain): poll a node's readiness and, once it reports
 *   NOT_SERVING, remove its nexthop from the edge route.
 */
import type { ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import type { HeldConnEvent } from './held-conn';
import { budget, NetnsLab, onJsonLines, type NetnsLabOptions } from './netns';
import type { TcpEchoReport, UdpEchoReport, WhoReport } from './results';
import { killSync } from './sh';
import { LAB, REAL_SERVERS } from './topology';

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

/** `ip rule` priorities for pins: one per client address. */
const PIN_PRIORITY_BASE = 1000;

export interface EcmpLabOptions extends NetnsLabOptions {
  /**
   * false: edge's main table gets no VIP route at build time; a BGP speaker on edge installs it
   * (EcmpScaleOut with `bgp`). The per-node tables 101/102 for pins are static either way.
   */
  staticVipRoute?: boolean;
}

export interface EcmpClientOptions {
  /** Source address (one of ECMP.clients); default: the route's choice (ECMP.client). */
  from?: string;
  timeoutMs?: number;
  concurrency?: number;
}

// ---------------------------------------------------------------------------------------------
// EcmpLab: namespaces, links, routes, echo servers, clients
// ---------------------------------------------------------------------------------------------

export class EcmpLab extends NetnsLab<EcmpRole> {
  private readonly staticVipRoute: boolean;

  private constructor(opts: EcmpLabOptions) {
    super(ECMP_ROLES, opts, 'retrace-ecmp');
    this.staticVipRoute = opts.staticVipRoute ?? true;
  }

  /** Builds namespaces, links, addresses, routes. Tears down what it made and rethrows on failure. */
  static create(opts: EcmpLabOptions = {}): EcmpLab {
    return NetnsLab.built(new EcmpLab(opts), (lab) => lab.build());
  }

  /** Root-namespace end of a node's port: `rt<tag>1u`, `rt<tag>1s`, `rt<tag>2u`, `rt<tag>2s`. */
  rootDev(node: EcmpNode, port: NodePort): string {
    return this.rootName(`${node === 'node1' ? '1' : '2'}${port === 'uplink' ? 'u' : 's'}`);
  }

  // --- build ------------------------------------------------------------------------------------

  private build(): void {
    const edge = (role: EcmpRole) => role === 'edge';
    // L4 hash on edge: (saddr, daddr, proto, sport, dport) picks the nexthop, per flow.
    this.addNamespaces(edge, (role) => (edge(role) ? ['net.ipv4.fib_multipath_hash_policy=1'] : []));

    // Links.
    this.vethNs('client', 'eth0', 'edge', 'lan');
    for (const node of ECMP_NODES) {
      this.vethRoot(this.rootDev(node, 'uplink'), 'edge', ECMP.nodes[node].uplink.edgeDev);
      this.vethRoot(this.rootDev(node, 'servers'), 'sw', node === 'node1' ? 'n1' : 'n2');
    }
    for (const rs of REAL_SERVERS) this.vethNs(rs, 'eth0', 'sw', rs);
    this.bridge('sw', [...REAL_SERVERS, 'n1', 'n2']);
    this.finishLinks(DEVICES, edge);

    // Addresses.
    this.ipn('client', 'addr', 'add', `${ECMP.client}/${ECMP.prefixLen}`, 'dev', 'eth0');
    for (const a of ECMP.clients) if (a !== ECMP.client) this.ipn('client', 'addr', 'add', `${a}/32`, 'dev', 'eth0');
    this.ipn('edge', 'addr', 'add', `${ECMP.edgeLan}/${ECMP.prefixLen}`, 'dev', 'lan');
    for (const node of ECMP_NODES) {
      const u = ECMP.nodes[node].uplink;
      this.ipn('edge', 'addr', 'add', `${u.edge}/${ECMP.prefixLen}`, 'dev', u.edgeDev);
    }
    for (const rs of REAL_SERVERS) this.ipn(rs, 'addr', 'add', `${ECMP.rs[rs]}/${ECMP.prefixLen}`, 'dev', 'eth0');
    this.linksUp(DEVICES);

    // Routes. The reals reach every LIP on-link (198.18.30.0/24): they need none.
    this.ipn('client', 'route', 'add', 'default', 'via', ECMP.edgeLan);
    for (const node of ECMP_NODES) {
      const p = ECMP.nodes[node];
      this.ipn('edge', 'route', 'add', `${ECMP.vip}/32`, 'via', p.uplink.addr, 'dev', p.uplink.edgeDev, 'table', String(p.table));
    }
    if (this.staticVipRoute) this.setVipNexthops(ECMP_NODES);
    this.waitLinksUp(5000);
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

  /** The lab's echo servers (dist/lab/echo-server.js) on rs1..rs3, as LabTopology runs them. */
  startEchoServers(timeoutMs = 15000): Promise<void> {
    return this.runEchoServers(REAL_SERVERS, ECMP.echoPort, ECMP.whoPort, timeoutMs);
  }

  // --- clients ----------------------------------------------------------------------------------

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
    return this.client('client', args, budget(count, o.concurrency ?? 1, o.timeoutMs ?? 2000));
  }

  /** TCP echo conns to the VIP (client.js tcp). */
  tcpEcho(o: EcmpClientOptions & { conns?: number; bytes?: number } = {}): Promise<TcpEchoReport> {
    const conns = o.conns ?? 1;
    const args = ['tcp', '--host', ECMP.vip, '--port', String(ECMP.echoPort), '--conns', String(conns), '--bytes', String(o.bytes ?? 1024)];
    this.common(args, o);
    return this.client('client', args, budget(conns, o.concurrency ?? 32, o.timeoutMs ?? 5000));
  }

  /** UDP echo datagrams to the VIP (client.js udp). */
  udpEcho(o: EcmpClientOptions & { count?: number; bytes?: number } = {}): Promise<UdpEchoReport> {
    const count = o.count ?? 1;
    const args = ['udp', '--host', ECMP.vip, '--port', String(ECMP.echoPort), '--count', String(count), '--bytes', String(o.bytes ?? 64)];
    this.common(args, o);
    return this.client('client', args, budget(count, o.concurrency ?? 32, o.timeoutMs ?? 2000));
  }

  /**
   * One TCP conn to the VIP's echo port held open (dist/lab/held-conn.js), driven step by step.
   * Resolves once connected.
   */
  async holdConn(o: { from?: string; localPort?: number; port?: number; timeoutMs?: number } = {}): Promise<HeldConn> {
    const args = ['--host', ECMP.vip, '--port', String(o.port ?? ECMP.echoPort)];
    if (o.from !== undefined) args.push('--local-address', o.from);
    if (o.localPort !== undefined) args.push('--local-port', String(o.localPort));
    const child = this.spawnScript('held-conn', 'client', 'held-conn', args);
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

  /** A node's YAML: its two af_packet ports (plus `portExtra` per port) and `extra` (e.g. timeouts). */
  applianceYaml(node: EcmpNode, extra = '', portExtra: Partial<Record<NodePort, Record<string, unknown>>> = {}): string {
    const ports = NODE_PORTS.map((name, i) => ({ name, device: `net_af_packet${i},iface=${this.rootDev(node, name)}`, ...(portExtra[name] ?? {}) }));
    return ['eal:\n  memory_mb: 256', 'dataplane:\n  mbufs: 8191\n  max_conns: 16384', YAML.stringify({ ports }), extra].join('\n');
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
    onJsonLines<HeldConnEvent>(child, (ev) => this.push(ev));
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

function nodeByUplinkAddr(addr: string): EcmpNode {
  const n = ECMP_NODES.find((x) => ECMP.nodes[x].uplink.addr === addr);
  if (!n) throw new Error(`${addr} is no node's uplink address`);
  return n;
}
