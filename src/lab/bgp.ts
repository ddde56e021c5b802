/**
 * BGP in the lab: the Debian daemons, started in namespaces, and the appliance's announcer.
 *
 *   appliance side                                  router side
 *   GoBGP (gobgpd) in a port's kernel interface     BIRD 2 (bird) in the router's namespace,
 *   namespace, eBGP to the directly connected       eBGP to each appliance, exports what it
 *   router over that port                           learns to the kernel (merge paths: ECMP)
 *        ^ gobgp global rib add/del <vip>/32
 *   announce.sh (deploy/k8s/overlays/bgp): the Kubernetes sidecar itself, run in the root
 *   namespace: announces the VIPs while the appliance's health is SERVING and withdraws them when
 *   it is not (Drain), probing with `retrace health` instead of grpc_health_probe.
 *
 * Every process is started here and stopped by PID (stop()). Control sockets and configuration
 * files live in the lab's scratch directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI_PATH, REPO_ROOT } from './appliance';
import { killSync, run, runAsync } from './sh';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a value other than undefined; throws `what` with the last state on timeout. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs: number, last: () => string = () => ''): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last() ? `: ${last()}` : ''}`);
    await sleep(200);
  }
}

/** A child process of the lab, with its output kept for error messages. */
class Daemon {
  output = '';
  readonly child: ChildProcess;

  constructor(
    readonly label: string,
    cmd: string,
    args: readonly string[],
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    const keep = (d: Buffer) => {
      this.output = (this.output + d.toString()).slice(-20000);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM by PID, SIGKILL after the grace period. */
  stop(graceMs = 3000): void {
    if (this.child.pid !== undefined && this.running) killSync(this.child.pid, graceMs);
  }
}

// ---------------------------------------------------------------------------------------------
// BIRD on a router
// ---------------------------------------------------------------------------------------------

export interface BirdPeer {
  /** Protocol name in BIRD (letters, digits, _). */
  name: string;
  address: string;
  as: number;
}

export interface BirdOptions {
  /** Namespace to run in. */
  netns: string;
  /** Scratch directory for the config and the control socket. */
  dir: string;
  routerId: string;
  as: number;
  peers: readonly BirdPeer[];
}

/**
 * BIRD 2 as the router's BGP speaker: one eBGP session per peer (directly connected), everything
 * learned by BGP exported to the kernel's main table with `merge paths` (equal routes from several
 * peers become one multipath route: ECMP). Nothing is exported to the peers.
 */
export class BirdRouter {
  private readonly daemon: Daemon;
  readonly socket: string;

  private constructor(readonly opts: BirdOptions) {
    const conf = path.join(opts.dir, `bird-${opts.routerId}.conf`);
    this.socket = path.join(opts.dir, `bird-${opts.routerId}.ctl`);
    fs.writeFileSync(conf, BirdRouter.config(opts));
    // -f: foreground, so the PID is BIRD's own.
    this.daemon = new Daemon(`bird ${opts.netns}`, 'ip', ['netns', 'exec', opts.netns, 'bird', '-f', '-c', conf, '-s', this.socket]);
  }

  static config(o: BirdOptions): string {
    const peers = o.peers
      .map(
        (p) => `protocol bgp ${p.name} {
  local as ${o.as};
  neighbor ${p.address} as ${p.as};
  direct;
  hold time 9; keepalive time 3; connect retry time 1; error wait time 1, 2;
  ipv4 { import all; export none; };
}`,
      )
      .join('\n');
    return `# written by src/lab/bgp.ts
log stderr all;
router id ${o.routerId};
protocol device { scan time 2; }
protocol kernel {
  ipv4 { import none; export where source = RTS_BGP; };
  merge paths on;
}
${peers}
`;
  }

  /** Starts BIRD and waits for its control socket. */
  static async start(opts: BirdOptions): Promise<BirdRouter> {
    const b = new BirdRouter(opts);
    try {
      await waitFor('bird control socket', () => (fs.existsSync(b.socket) ? true : b.daemon.running ? undefined : false), 10000);
      if (!b.daemon.running) throw new Error(`bird exited: ${b.daemon.output}`);
      return b;
    } catch (e) {
      b.stop();
      throw e;
    }
  }

  /** birdc command output. */
  async birdc(...args: string[]): Promise<string> {
    const r = await runAsync('birdc', ['-s', this.socket, ...args], { timeoutMs: 10000 });
    if (r.code !== 0) throw new Error(`birdc ${args.join(' ')}: exit ${r.code}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  /** A BGP protocol's state: "Established", "Active", "Connect", ... */
  async bgpState(peer: string): Promise<string> {
    const out = await this.birdc('show', 'protocols', 'all', peer);
    return /BGP state:\s+(\S+)/.exec(out)?.[1] ?? 'unknown';
  }

  async waitEstablished(peer: string, timeoutMs = 30000): Promise<void> {
    let last = '';
    await waitFor(
      `BGP session ${peer} Established`,
      async () => {
        last = await this.bgpState(peer);
        return last === 'Established' ? true : undefined;
      },
      timeoutMs,
      () => `state ${last}; bird: ${this.daemon.output.slice(-2000)}`,
    );
  }

  /** Next hops of `prefix` in the router's kernel main table as BIRD installed it ([] = no route from BIRD). */
  kernelNexthops(prefix: string): string[] {
    const routes = JSON.parse(run('ip', ['-n', this.opts.netns, '-j', 'route', 'show', prefix, 'proto', 'bird'])) as {
      gateway?: string;
      nexthops?: { gateway: string }[];
    }[];
    return routes.flatMap((r) => (r.nexthops ? r.nexthops.map((n) => n.gateway) : r.gateway ? [r.gateway] : [])).sort();
  }

  /** Waits until the kernel route of prefix has exactly these next hops (sorted compare). */
  async waitKernelNexthops(prefix: string, nexthops: readonly string[], timeoutMs = 30000): Promise<void> {
    const want = [...nexthops].sort().join(',');
    let last = '';
    await waitFor(
      `${prefix} via [${want}] in the kernel table`,
      () => {
        last = this.kernelNexthops(prefix).join(',');
        return last === want ? true : undefined;
      },
      timeoutMs,
      () => `now [${last}]`,
    );
  }

  stop(): void {
    this.daemon.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// GoBGP next to an appliance
// ---------------------------------------------------------------------------------------------

export interface GobgpOptions {
  /** Namespace to run in: the kernel interface's, so the session runs over the port. */
  netns: string;
  dir: string;
  /** The port address (router id, local address). */
  routerId: string;
  as: number;
  neighbor: { address: string; as: number };
  /** The prefix the VIPs are announced from: only its /32s may leave. */
  vipNet: string;
}

/**
 * gobgpd as the appliance's speaker: a directly connected eBGP session from the port address to
 * the router, the VIP /32s the announcer adds (locally originated routes) as the only thing it
 * exports, nothing imported. Next hop: the port address itself (eBGP, directly connected).
 */
export class GobgpSpeaker {
  private readonly daemon: Daemon;
  readonly target: string;

  private constructor(readonly opts: GobgpOptions) {
    const conf = path.join(opts.dir, `gobgpd-${opts.routerId}.toml`);
    const sock = path.join(opts.dir, `gobgp-${opts.routerId}.sock`);
    this.target = `unix://${sock}`;
    fs.writeFileSync(conf, GobgpSpeaker.config(opts));
    this.daemon = new Daemon(`gobgpd ${opts.netns}`, 'ip', [
      'netns',
      'exec',
      opts.netns,
      'gobgpd',
      '-f',
      conf,
      `--api-hosts=${this.target}`,
      '--pprof-disable',
      '--log-plain',
    ]);
  }

  static config(o: GobgpOptions): string {
    const [net, len] = o.vipNet.split('/');
    return `# written by src/lab/bgp.ts
[global.config]
  as = ${o.as}
  router-id = "${o.routerId}"
  # Listens on 179 in the kernel interface's namespace only (the router's connects are answered
  # at once instead of waiting for our next retry).
  port = 179
  local-address-list = ["${o.routerId}"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "${o.neighbor.address}"
    peer-as = ${o.neighbor.as}
  [neighbors.transport.config]
    local-address = "${o.routerId}"
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3

[[defined-sets.prefix-sets]]
  prefix-set-name = "vips"
  [[defined-sets.prefix-sets.prefix-list]]
    ip-prefix = "${net}/${len}"
    masklength-range = "32..32"

[[policy-definitions]]
  name = "vips"
  [[policy-definitions.statements]]
    name = "vips"
    [policy-definitions.statements.conditions.match-prefix-set]
      prefix-set = "vips"
    [policy-definitions.statements.actions]
      route-disposition = "accept-route"

[global.apply-policy.config]
  import-policy-list = ["vips"]
  default-import-policy = "reject-route"
  export-policy-list = ["vips"]
  default-export-policy = "reject-route"
`;
  }

  static async start(opts: GobgpOptions): Promise<GobgpSpeaker> {
    const g = new GobgpSpeaker(opts);
    try {
      await waitFor('gobgpd API', async () => ((await g.gobgp('global')).code === 0 ? true : g.daemon.running ? undefined : false), 15000);
      if (!g.daemon.running) throw new Error(`gobgpd exited: ${g.daemon.output}`);
      return g;
    } catch (e) {
      g.stop();
      throw e;
    }
  }

  gobgp(...args: string[]) {
    return runAsync('gobgp', ['--target', this.target, ...args], { timeoutMs: 10000 });
  }

  /** The session's state as gobgp names it ("established", "active", ...). */
  async neighborState(): Promise<string> {
    const r = await this.gobgp('neighbor', this.opts.neighbor.address, '-j');
    if (r.code !== 0) return `error: ${r.stderr.trim()}`;
    const n = JSON.parse(r.stdout) as { state?: { session_state?: number | string } };
    const s = n.state?.session_state;
    const names = ['unknown', 'idle', 'connect', 'active', 'opensent', 'openconfirm', 'established'];
    return typeof s === 'number' ? (names[s] ?? String(s)) : String(s ?? 'unknown').toLowerCase();
  }

  /** Prefixes in the global RIB (what the announcer added). */
  async ribPrefixes(): Promise<string[]> {
    const r = await this.gobgp('global', 'rib', '-a', 'ipv4', '-j');
    if (r.code !== 0) throw new Error(`gobgp global rib: ${r.stderr}`);
    return Object.keys(JSON.parse(r.stdout || '{}') as Record<string, unknown>).sort();
  }

  get log(): string {
    return this.daemon.output;
  }

  stop(): void {
    this.daemon.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// The announcer: deploy/k8s/overlays/bgp/announce.sh as it runs in the pod
// ---------------------------------------------------------------------------------------------

export const ANNOUNCE_SH = path.join(REPO_ROOT, 'deploy', 'k8s', 'overlays', 'bgp', 'announce.sh');

export interface AnnouncerOptions {
  dir: string;
  /** The appliance's gRPC address (health is served there). */
  server: string;
  gobgpTarget: string;
  vips: readonly string[];
  /** Seconds between polls (the pod's default is 2). */
  interval?: number;
}

/**
 * announce.sh, the BGP sidecar of deploy/k8s/overlays/bgp: VIPs in GoBGP's RIB exactly while the
 * appliance's health is SERVING. Health is probed with `retrace health` (HEALTH_PROBE).
 */
export class Announcer {
  private readonly daemon: Daemon;

  constructor(readonly opts: AnnouncerOptions) {
    const vipsFile = path.join(opts.dir, `vips-${path.basename(opts.gobgpTarget)}`);
    fs.writeFileSync(vipsFile, opts.vips.map((v) => `${v}\n`).join(''));
    this.daemon = new Daemon('announce.sh', 'sh', [ANNOUNCE_SH], {
      ...process.env,
      HEALTH_PROBE: `${process.execPath} ${CLI_PATH} health --server ${opts.server} --timeout-ms 1000`,
      GOBGP_TARGET: opts.gobgpTarget,
      VIPS_FILE: vipsFile,
      APPLIED_MARKER: '',
      INTERVAL: String(opts.interval ?? 1),
      RISE: '1',
      FALL: '1',
    });
  }

  get log(): string {
    return this.daemon.output;
  }

  get running(): boolean {
    return this.daemon.running;
  }

  /** SIGTERM: the script withdraws what it announced, then exits. */
  stop(): void {
    this.daemon.stop(5000);
  }
}
