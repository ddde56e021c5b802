/**
 * The lab with a running appliance, configured over gRPC the way an orchestrator would: port
 * addresses, ONE default route (via router-a, uplink-a), LIPs on the server side. Services are added
 * per scenario. Shared by `retrace lab demo` and the e2e tests, so both exercise the same setup.
 */
import { Protocol as PbProtocol, Scheduler as PbScheduler } from '../gen/retrace/v1/types';
import { Real, VirtualService } from '../gen/retrace/v1/balancer';
import { PathCounters, type GetCountersResponse } from '../gen/retrace/v1/path';
import { ApplianceProcess } from './appliance';
import { runAsync } from './sh';
import { LAB, LabTopology, ROOT_PORTS, type ApplianceYamlOptions, type RootPort } from './topology';

export type Proto = 'tcp' | 'udp' | 'icmp';
export type Sched = 'rr' | 'wrr' | 'wlc' | 'maglev';

const PB_PROTO: Record<Proto, PbProtocol> = {
  tcp: PbProtocol.PROTOCOL_TCP,
  udp: PbProtocol.PROTOCOL_UDP,
  icmp: PbProtocol.PROTOCOL_ICMP,
};
const PB_SCHED: Record<Sched, PbScheduler> = {
  rr: PbScheduler.SCHEDULER_RR,
  wrr: PbScheduler.SCHEDULER_WRR,
  wlc: PbScheduler.SCHEDULER_WLC,
  maglev: PbScheduler.SCHEDULER_MAGLEV,
};

/** A value of the appliance config's `dataplane:` section. */
export type DataplaneValue = string | number | boolean | { [k: string]: DataplaneValue };

export interface ScenarioOptions {
  /** Extra YAML appended to the generated config (e.g. "timeouts: {udp: 5}"). */
  extraYaml?: string;
  /** Log progress lines (the demo passes console.log). */
  log?: (line: string) => void;
  /** Reuse an existing topology (e.g. across an appliance restart). */
  lab?: LabTopology;
  /** Per-port overrides for the generated `ports:` section (e.g. `{ port: { servers: { mtu: 1200 } } }`). */
  ports?: ApplianceYamlOptions;
  /**
   * Extra `dataplane:` fields (e.g. `{ icmp_rate: 50, icmp_burst: 10 }`, or a nested one such as
   * `{ table_pressure: { evict_embryonic: false } }`, written as JSON, which YAML reads); extraYaml
   * cannot repeat that key.
   */
  dataplane?: Record<string, DataplaneValue>;
  /**
   * Kernel interfaces (ports[].kernel) on these ports, each in a namespace of its own
   * (kernelNamespace()); `true` = every port. Default: every port when RETRACE_LAB_KERNEL=1 is set
   * (to run any suite with kernel interfaces on), else none.
   */
  kernel?: boolean | readonly RootPort[];
  /** Every kernel interface in one namespace (`rt-<tag>-khost`), as in a host's root namespace. */
  kernelShared?: boolean;
}

/** The ports that get a kernel interface, from ScenarioOptions.kernel and RETRACE_LAB_KERNEL. */
export function kernelPorts(opt: ScenarioOptions['kernel']): RootPort[] {
  const o = opt ?? process.env.RETRACE_LAB_KERNEL === '1';
  return o === true ? [...ROOT_PORTS] : o === false ? [] : [...o];
}

export interface RealSpec {
  address: string;
  port: number;
  weight?: number;
}

export class LabScenario {
  readonly app = new ApplianceProcess();
  /** Ports started with a kernel interface (ScenarioOptions.kernel). */
  kernelPorts: RootPort[] = [];
  /** All kernel interfaces in one namespace (ScenarioOptions.kernelShared). */
  kernelShared = false;
  private constructor(
    readonly lab: LabTopology,
    private readonly ownsLab: boolean,
    private readonly log: (line: string) => void,
  ) {}

  /** Builds the lab (unless given), starts echo servers, the appliance, and the base network. */
  static async start(opts: ScenarioOptions = {}): Promise<LabScenario> {
    const log = opts.log ?? (() => {});
    const lab = opts.lab ?? LabTopology.create();
    const sc = new LabScenario(lab, opts.lab === undefined, log);
    try {
      if (opts.lab === undefined) {
        log(`lab ${lab.tag}: namespaces up`);
        await lab.startEchoServers();
        log('echo servers running on rs1, rs2, rs3');
      }
      sc.kernelPorts = kernelPorts(opts.kernel);
      sc.kernelShared = opts.kernelShared ?? false;
      await sc.startAppliance(opts.extraYaml, opts.ports, opts.dataplane);
      return sc;
    } catch (e) {
      await sc.destroy();
      throw e;
    }
  }

  /** Spawns `retrace serve` on the lab's ports and applies the base network over gRPC. */
  async startAppliance(extraYaml = '', ports: ApplianceYamlOptions = {}, dataplane: Record<string, DataplaneValue> = {}): Promise<void> {
    const dp = { mbufs: 8191, max_conns: 16384, ...dataplane };
    ports = this.withKernel(ports);
    const yaml = [
      'eal:\n  memory_mb: 256',
      `dataplane:\n${Object.entries(dp)
        .map(([k, v]) => `  ${k}: ${JSON.stringify(v)}`)
        .join('\n')}`,
      this.lab.applianceConfigYaml(ports),
      extraYaml,
    ].join('\n');
    this.app.start(yaml);
    await this.app.waitServing();
    const { network, balancer } = this.app.api;
    for (const port of ROOT_PORTS) {
      const p = LAB.ports[port];
      await network.createAddress({ address: { address: p.addr, prefixLength: p.prefixLen, port } });
    }
    // One default route, toward router-a: replies routed by it to client-b form a triangle.
    await network.createRoute({ route: { prefix: '0.0.0.0', prefixLength: 0, port: 'uplink-a', gateway: LAB.routerAUplink, connected: false } });
    for (const lip of LAB.lips) {
      await balancer.createLocalAddress({ localAddress: { address: lip, port: 'servers', portsInUse: 0n, portsTotal: 0n } });
    }
    this.log(`appliance up: ports ${ROOT_PORTS.join(', ')}; default route via router-a; LIPs ${LAB.lips.join(', ')}`);
  }

  /** Namespace of a port's kernel interface (`rt-<tag>-k<ua|ub|sv>`, or `rt-<tag>-khost` when shared), created on first use. */
  kernelNamespace(port: RootPort): string {
    return this.lab.extraNamespace(this.kernelShared ? 'khost' : `k${this.lab.rootDev(port).slice(-2)}`);
  }

  /** Name of a port's kernel interface: `rt<tag>k<ua|ub|sv>` (unique while it is created in the root namespace). */
  kernelIfName(port: RootPort): string {
    return this.lab.rootName(`k${this.lab.rootDev(port).slice(-2)}`);
  }

  /** Adds `kernel: {name, netns}` to the ports in kernelPorts (explicit per-port options win). */
  private withKernel(opts: ApplianceYamlOptions): ApplianceYamlOptions {
    if (this.kernelPorts.length === 0) return opts;
    const port: NonNullable<ApplianceYamlOptions['port']> = { ...(opts.port ?? {}) };
    for (const p of this.kernelPorts) port[p] = { kernel: { name: this.kernelIfName(p), netns: this.kernelNamespace(p) }, ...(port[p] ?? {}) };
    return { ...opts, port };
  }

  /** Runs a command in a port's kernel interface namespace (async; never rejects on exit code). */
  execKernel(port: RootPort, cmd: string, args: readonly string[], timeoutMs = 15000) {
    return runAsync('ip', ['netns', 'exec', this.kernelNamespace(port), cmd, ...args], { timeoutMs });
  }

  /** Creates a virtual service and sets its reals. */
  async addService(proto: Proto, vip: string, port: number, sched: Sched, reals: RealSpec[], seed = 0): Promise<void> {
    const { balancer } = this.app.api;
    await balancer.createVirtualService({
      virtualService: VirtualService.create({ protocol: PB_PROTO[proto], vip, port, scheduler: PB_SCHED[sched], seed }),
    });
    await this.setReals(proto, vip, port, reals);
  }

  async setReals(proto: Proto, vip: string, port: number, reals: RealSpec[]): Promise<void> {
    await this.app.api.balancer.setReals({
      key: { protocol: PB_PROTO[proto], vip, port },
      reals: reals.map((r) => Real.create({ address: r.address, port: r.port, weight: r.weight ?? 1 })),
    });
  }

  async setSymmetric(proto: Proto, enabled: boolean): Promise<void> {
    await this.app.api.path.setSymmetricMode({ protocol: PB_PROTO[proto], enabled });
  }

  async counters(): Promise<GetCountersResponse> {
    return this.app.api.path.getCounters({});
  }

  /** Path counters of one protocol on one port (zeros if absent). */
  static portCounters(c: GetCountersResponse, proto: Proto, port: RootPort): PathCounters {
    const pc = c[proto]?.ports.find((p) => p.port === port)?.counters;
    return pc ?? PathCounters.create();
  }

  async stopAppliance(): Promise<number | null> {
    const r = await this.app.stop();
    return r.code;
  }

  /** Stops the appliance and, if this scenario built it, the lab. Never throws. */
  async destroy(): Promise<void> {
    try {
      if (this.app.running) await this.app.stop();
    } catch {
      // fall through to kill
    }
    await this.app.kill();
    if (this.ownsLab) this.lab.destroy();
  }
}

/** Difference of two counter snapshots, per field (for "this traffic moved these counters"). */
export function pathDelta(after: PathCounters, before: PathCounters): PathCounters {
  return {
    rx: after.rx - before.rx,
    txSymmetric: after.txSymmetric - before.txSymmetric,
    txRouted: after.txRouted - before.txRouted,
    routeDivergence: after.routeDivergence - before.routeDivergence,
    asymmetric: after.asymmetric - before.asymmetric,
    pathChanges: after.pathChanges - before.pathChanges,
    synCookiesSent: after.synCookiesSent - before.synCookiesSent,
    synCookiesValid: after.synCookiesValid - before.synCookiesValid,
  };
}
