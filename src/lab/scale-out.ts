/**
 * The scale-out lab's appliances: EcmpScaleOut starts node1 and node2 (ApplianceProcess) on an
 * EcmpLab, configures both through one client, reads their counters and plays the BGP sidecar
 * (withdrawOnDrain). See ecmp.ts for the topology.
 */
import { Real, VirtualService } from '../gen/retrace/v1/balancer';
import type { Config } from '../gen/retrace/v1/config';
import type { Conn } from '../gen/retrace/v1/conn';
import { PathCounters, type DropCounters, type GetCountersResponse } from '../gen/retrace/v1/path';
import { Protocol, Scheduler } from '../gen/retrace/v1/types';
import { ApplianceProcess } from './appliance';
import { Announcer, BirdRouter, GobgpSpeaker } from './bgp';
import { ECMP, ECMP_NODES, EcmpLab, type EcmpNode, type NodePort } from './ecmp';
import { LAB, REAL_SERVERS } from './topology';
// ---------------------------------------------------------------------------------------------
// EcmpScaleOut: the lab plus two appliances configured over gRPC
// ---------------------------------------------------------------------------------------------

export interface ScaleOutOptions {
  log?: (line: string) => void;
  /** Extra YAML for both nodes (e.g. log level). */
  extraYaml?: string;
  /** Conn timeouts applied with the configuration (seconds). */
  timeouts?: { tcpClose?: number; tcpFin?: number; udp?: number };
  /**
   * ECMP from BGP instead of a static route: each node's uplink gets a kernel interface (its own
   * namespace) with gobgpd and the BGP sidecar's announce.sh; BIRD on edge peers with both and
   * installs the VIP as one multipath route (merge paths). start() waits for both next hops.
   */
  bgp?: boolean;
}

/** AS numbers of the BGP variant: edge, and both nodes (one AS for the appliances). */
export const ECMP_BGP = { edgeAs: 64500, nodeAs: 64512 } as const;

const PROTOS = { tcp: Protocol.PROTOCOL_TCP, udp: Protocol.PROTOCOL_UDP } as const;

export class EcmpScaleOut {
  readonly nodes: Record<EcmpNode, ApplianceProcess> = { node1: new ApplianceProcess(), node2: new ApplianceProcess() };
  /** The BGP variant's speakers (ScaleOutOptions.bgp). */
  bird: BirdRouter | undefined;
  readonly gobgp: Partial<Record<EcmpNode, GobgpSpeaker>> = {};
  readonly announcers: Partial<Record<EcmpNode, Announcer>> = {};

  private constructor(readonly lab: EcmpLab) {}

  /** Namespace of a node's uplink kernel interface (BGP variant). */
  kernelNamespace(node: EcmpNode): string {
    return this.lab.extraNamespace(node === 'node1' ? 'k1' : 'k2');
  }

  /** Edge's next hops for the VIP as BIRD installed them, as nodes. */
  bgpNexthops(): EcmpNode[] {
    return (this.bird?.kernelNexthops(`${ECMP.vip}/32`) ?? []).map((gw) => ECMP_NODES.find((n) => ECMP.nodes[n].uplink.addr === gw)!);
  }

  /** Waits until edge's BGP route for the VIP goes through exactly these nodes. */
  waitBgpNexthops(nodes: readonly EcmpNode[], timeoutMs = 30000): Promise<void> {
    return this.bird!.waitKernelNexthops(
      `${ECMP.vip}/32`,
      nodes.map((n) => ECMP.nodes[n].uplink.addr),
      timeoutMs,
    );
  }

  /** BIRD on edge, gobgpd next to each node, announce.sh per node; waits for the ECMP route. */
  private async startBgp(): Promise<void> {
    this.bird = await BirdRouter.start({
      netns: this.lab.ns('edge'),
      dir: this.lab.dir,
      routerId: ECMP.edgeLan,
      as: ECMP_BGP.edgeAs,
      peers: ECMP_NODES.map((n) => ({ name: `retrace_${n}`, address: ECMP.nodes[n].uplink.addr, as: ECMP_BGP.nodeAs })),
    });
    for (const n of ECMP_NODES) {
      const u = ECMP.nodes[n].uplink;
      const g = await GobgpSpeaker.start({
        netns: this.kernelNamespace(n),
        dir: this.lab.dir,
        routerId: u.addr,
        as: ECMP_BGP.nodeAs,
        neighbor: { address: u.edge, as: ECMP_BGP.edgeAs },
        vipNet: LAB.vipNet,
      });
      this.gobgp[n] = g;
      this.announcers[n] = new Announcer({ dir: this.lab.dir, server: this.nodes[n].address, gobgpTarget: g.target, vips: [ECMP.vip] });
    }
    await this.waitBgpNexthops(ECMP_NODES, 60000);
  }

  /** Builds the lab, starts echo servers and both appliances, configures both over gRPC. */
  static async start(opts: ScaleOutOptions = {}): Promise<EcmpScaleOut> {
    const log = opts.log ?? (() => undefined);
    const lab = EcmpLab.create({ log: () => undefined, staticVipRoute: !opts.bgp });
    const so = new EcmpScaleOut(lab);
    try {
      log(`ecmp lab ${lab.tag}: namespaces up`);
      await lab.startEchoServers();
      for (const n of ECMP_NODES) {
        const kernel = opts.bgp ? { uplink: { kernel: { name: lab.rootName(n === 'node1' ? 'k1' : 'k2'), netns: so.kernelNamespace(n) } } } : {};
        so.nodes[n].start(lab.applianceYaml(n, opts.extraYaml, kernel));
      }
      await Promise.all(ECMP_NODES.map((n) => so.nodes[n].waitServing()));
      await so.configure(opts.timeouts);
      log('node1, node2 serving and configured');
      if (opts.bgp) {
        await so.startBgp();
        log('BGP: edge routes the VIP over both nodes');
      }
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

  /** Stops the BGP speakers, both appliances, and tears the lab down. Never throws. */
  async destroy(): Promise<void> {
    for (const n of ECMP_NODES) {
      this.announcers[n]?.stop();
      this.gobgp[n]?.stop();
    }
    this.bird?.stop();
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

const ZERO_PATH: PathCounters = PathCounters.create();

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
