/**
 * # Namespace lab machinery
 *
 * What every lab here is made of, whatever its address plan: network namespaces named
 * `rt-<tag>-<role>` (a random 6-hex-digit tag, so parallel runs never collide), veth pairs between
 * them or to a root-namespace end that an appliance's `net_af_packet` port opens, the processes
 * started inside them (echo servers, clients, captures), and a teardown that removes all of it.
 * LabTopology (topology.ts) and EcmpLab (ecmp.ts) only add their address plans on top.
 *
 * Conventions every lab keeps:
 * - In each namespace: IPv6 off (no router solicitations or MLD in captures), rp_filter 0, no ICMP
 *   redirects, forwarding only where the plan says so. The sysctls are set before any interface
 *   exists, so every new device inherits the `default` values.
 * - TX checksum offload off on every namespace veth end: with it on, af_packet would see partial
 *   L4 checksums (docs/design.md, "The lab").
 * - Root ends carry no IPv4 address, have IPv6 off, forwarding 0 and ARP off, so the host kernel
 *   neither routes nor answers anything arriving there: the appliance owns them.
 * - destroy() kills every process the lab started (by PID), deletes the root links and the
 *   namespaces and the scratch directory. It is idempotent, never throws, and also runs from a
 *   process 'exit' hook.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import type { EchoServerEvent } from './results';
import { killSync, run, runAsync, sleepSync, type RunOptions } from './sh';

export interface NetnsLabOptions {
  /** 6 lower-case hex digits; random by default. */
  tag?: string;
  /** Where echo-server.js and client.js live (default: dist/lab of this checkout). */
  scriptsDir?: string;
  /** The node binary that runs them (default: this process's). */
  node?: string;
  /** Receives every command the build runs. */
  log?: (line: string) => void;
  /** Run destroy() from a process 'exit' hook (default true). */
  cleanupOnExit?: boolean;
}

export type EchoConnEvent = Extract<EchoServerEvent, { event: 'conn' }>;

const DEFAULT_SCRIPTS_DIR = path.resolve(__dirname, '..', '..', 'dist', 'lab');
const TAG_RE = /^[0-9a-f]{6}$/;

export class NetnsLab<R extends string> {
  readonly tag: string;
  /** Scratch directory (captures, logs); removed by destroy(). */
  readonly dir: string;
  protected readonly log: (line: string) => void;
  private readonly scriptsDir: string;
  private readonly node: string;
  private readonly namespaces: string[] = [];
  private readonly rootLinks: string[] = [];
  private readonly children: { label: string; child: ChildProcess }[] = [];
  private readonly echoEvents = new Map<R, EchoServerEvent[]>();
  private destroyed = false;
  private readonly exitHook = (): void => this.destroy();

  constructor(
    readonly roles: readonly R[],
    opts: NetnsLabOptions = {},
    dirPrefix = 'retrace-lab',
  ) {
    if (opts.tag !== undefined && !TAG_RE.test(opts.tag)) throw new Error(`lab tag must be 6 lower-case hex digits, got "${opts.tag}"`);
    this.tag = opts.tag ?? crypto.randomBytes(3).toString('hex');
    this.scriptsDir = opts.scriptsDir ?? DEFAULT_SCRIPTS_DIR;
    this.node = opts.node ?? process.execPath;
    this.log = opts.log ?? (() => undefined);
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${dirPrefix}-${this.tag}-`));
    if (opts.cleanupOnExit ?? true) process.on('exit', this.exitHook);
  }

  /** Runs `build` on a new lab; on any failure tears down what it made and rethrows. */
  static built<L extends NetnsLab<string>>(lab: L, build: (lab: L) => void): L {
    try {
      build(lab);
      return lab;
    } catch (e) {
      lab.destroy();
      throw e;
    }
  }

  /**
   * Removes a lab by tag that no object owns any more (its process was SIGKILLed, so neither
   * destroy() nor the exit hook ran): kills the processes still inside its namespaces (those of
   * `roles`), deletes the root links `rootDevs` and the namespaces. Returns what it removed.
   * Never throws.
   */
  static destroyByTag(tag: string, roles: readonly string[], rootDevs: readonly string[]): { namespaces: string[]; links: string[]; pids: number[] } {
    const removed = { namespaces: [] as string[], links: [] as string[], pids: [] as number[] };
    if (!TAG_RE.test(tag)) return removed;
    const existing = run('ip', ['netns', 'list'], { allowFail: true })
      .split('\n')
      .map((l) => l.split(' ')[0])
      .filter((n) => n.startsWith(`rt-${tag}-`) && roles.includes(n.slice(`rt-${tag}-`.length)));
    for (const ns of existing) {
      for (const pid of run('ip', ['netns', 'pids', ns], { allowFail: true }).split('\n').filter(Boolean).map(Number)) {
        killSync(pid, 2000);
        removed.pids.push(pid);
      }
    }
    for (const dev of rootDevs) {
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
  ns(role: R): string {
    return `rt-${this.tag}-${role}`;
  }

  /** All namespace names of this lab's roles. */
  get allNamespaces(): string[] {
    return this.roles.map((r) => this.ns(r));
  }

  /** A root-namespace end's name: `rt<tag><suffix>` (veth names must fit in 15 characters). */
  rootName(suffix: string): string {
    return `rt${this.tag}${suffix}`;
  }

  /** Root ends made so far. */
  get allRootLinks(): string[] {
    return [...this.rootLinks];
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /** MAC address of `dev` in a role's namespace (role undefined: the root namespace). */
  mac(role: R | undefined, dev: string): string {
    return linkInfo(role === undefined ? undefined : this.ns(role), dev).address;
  }

  // --- commands ---------------------------------------------------------------------------------

  /** Runs `cmd args` inside a role's namespace and returns stdout; throws CommandError on failure. */
  exec(role: R, cmd: string, args: readonly string[] = [], opts: RunOptions = {}): string {
    return run('ip', ['netns', 'exec', this.ns(role), cmd, ...args], opts);
  }

  /** Like exec() but asynchronous; resolves with exit code and output, never rejects on exit code. */
  execAsync(role: R, cmd: string, args: readonly string[] = [], opts: { timeoutMs?: number } = {}) {
    return runAsync('ip', ['netns', 'exec', this.ns(role), cmd, ...args], opts);
  }

  /** `ip -n <ns> <args>` (faster than exec: no mount namespace). */
  ip(role: R, args: readonly string[], opts: RunOptions = {}): string {
    return run('ip', ['-n', this.ns(role), ...args], opts);
  }

  /** Runs and logs a build command. */
  protected sh(cmd: string, args: readonly string[]): string {
    this.log(`${cmd} ${args.join(' ')}`);
    return run(cmd, args);
  }

  protected nsSh(role: R, cmd: string, args: readonly string[]): string {
    return this.sh('ip', ['netns', 'exec', this.ns(role), cmd, ...args]);
  }

  protected ipn(role: R, ...args: string[]): void {
    this.sh('ip', ['-n', this.ns(role), ...args]);
  }

  // --- build ------------------------------------------------------------------------------------

  /**
   * Creates the namespace of every role with the lab sysctls (see the header); `forwards(role)`
   * says which ones route, `extra(role)` adds sysctls.
   */
  addNamespaces(forwards: (role: R) => boolean = () => false, extra: (role: R) => string[] = () => []): void {
    const existing = run('ip', ['netns', 'list'], { allowFail: true });
    if (existing.includes(`rt-${this.tag}-`)) throw new Error(`namespaces with tag ${this.tag} already exist`);
    for (const role of this.roles) {
      const ns = this.ns(role);
      this.sh('ip', ['netns', 'add', ns]);
      this.namespaces.push(ns);
      this.nsSh(role, 'sysctl', [
        '-q',
        '-w',
        'net.ipv6.conf.all.disable_ipv6=1',
        'net.ipv6.conf.default.disable_ipv6=1',
        'net.ipv4.conf.all.rp_filter=0',
        'net.ipv4.conf.default.rp_filter=0',
        `net.ipv4.ip_forward=${forwards(role) ? 1 : 0}`,
        'net.ipv4.conf.all.send_redirects=0',
        'net.ipv4.conf.default.send_redirects=0',
        ...extra(role),
      ]);
      this.ipn(role, 'link', 'set', 'dev', 'lo', 'up');
    }
  }

  /**
   * A namespace besides the roles' (`rt-<tag>-<suffix>`), with the lab sysctls, torn down with the
   * lab: e.g. the home of an appliance port's kernel interface. Idempotent per suffix.
   */
  extraNamespace(suffix: string): string {
    const ns = `rt-${this.tag}-${suffix}`;
    if (this.namespaces.includes(ns)) return ns;
    this.sh('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    this.sh('ip', [
      'netns',
      'exec',
      ns,
      'sysctl',
      '-q',
      '-w',
      'net.ipv6.conf.all.disable_ipv6=1',
      'net.ipv6.conf.default.disable_ipv6=1',
      'net.ipv4.conf.all.rp_filter=0',
      'net.ipv4.conf.default.rp_filter=0',
    ]);
    this.sh('ip', ['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
    return ns;
  }

  /** A veth pair with both ends created directly in their namespaces. */
  vethNs(a: R, aDev: string, b: R, bDev: string): void {
    this.ipn(a, 'link', 'add', 'name', aDev, 'type', 'veth', 'peer', 'name', bDev, 'netns', this.ns(b));
  }

  /** A veth pair from root end `root` (for an appliance port) to `dev` in `role`. */
  vethRoot(root: string, role: R, dev: string): void {
    this.sh('ip', ['link', 'add', 'name', root, 'type', 'veth', 'peer', 'name', dev, 'netns', this.ns(role)]);
    this.rootLinks.push(root);
  }

  /** A bridge `br0` in `role` with `ports` as its members. */
  bridge(role: R, ports: readonly string[]): void {
    this.ipn(role, 'link', 'add', 'name', 'br0', 'type', 'bridge', 'stp_state', '0', 'mcast_snooping', '0');
    for (const p of ports) this.ipn(role, 'link', 'set', 'dev', p, 'master', 'br0');
  }

  /**
   * Finishes the links: root ends become the appliance's (see the header), rp_filter 0 on every
   * device of a forwarding role (the effective value is max(all, dev)), TX checksum offload off on
   * every namespace veth end, and every device up.
   */
  finishLinks(devices: Readonly<Record<R, readonly string[]>>, forwards: (role: R) => boolean = () => false): void {
    const roots = this.rootLinks;
    if (roots.length > 0) {
      this.sh('sysctl', ['-q', '-w', ...roots.flatMap((d) => [`net.ipv6.conf.${d}.disable_ipv6=1`, `net.ipv4.conf.${d}.forwarding=0`])]);
      for (const d of roots) this.sh('ip', ['link', 'set', 'dev', d, 'arp', 'off', 'up']);
    }
    for (const role of this.roles) {
      const devs = devices[role];
      if (forwards(role) && devs.length > 0) this.nsSh(role, 'sysctl', ['-q', '-w', ...devs.map((d) => `net.ipv4.conf.${d}.rp_filter=0`)]);
      for (const dev of devs) if (dev !== 'br0') this.nsSh(role, 'ethtool', ['-K', dev, 'tx', 'off']);
    }
  }

  /** Brings up every device of every role (after addresses, so no link comes up unaddressed). */
  linksUp(devices: Readonly<Record<R, readonly string[]>>): void {
    for (const role of this.roles) for (const dev of devices[role]) this.ipn(role, 'link', 'set', 'dev', dev, 'up');
  }

  /**
   * Waits until every lab interface reports operstate UP. The kernel applies carrier changes
   * through linkwatch, which can lag `ip link set up` by several hundred ms (seen for veth pairs
   * whose two ends have the same ifindex in their namespaces); until then the device still has
   * the noop qdisc and drops what it is given, so a test's first packet would vanish.
   */
  waitLinksUp(timeoutMs: number): void {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const notUp: string[] = [];
      for (const role of this.roles) {
        const links = JSON.parse(run('ip', ['-n', this.ns(role), '-j', 'link', 'show'])) as { ifname: string; operstate: string }[];
        for (const l of links) if (l.ifname !== 'lo' && l.operstate !== 'UP') notUp.push(`${role}/${l.ifname} ${l.operstate}`);
      }
      for (const d of this.rootLinks) {
        const st = linkInfo(undefined, d).operstate;
        if (st !== 'UP') notUp.push(`root/${d} ${st}`);
      }
      if (notUp.length === 0) return;
      if (Date.now() > deadline) throw new Error(`lab ${this.tag}: links not up after ${timeoutMs} ms: ${notUp.join(', ')}`);
      sleepSync(25);
    }
  }

  // --- processes --------------------------------------------------------------------------------

  /** A lab script (dist/lab/<name>.js); the TypeScript must be built. */
  protected script(name: string): string {
    const file = path.join(this.scriptsDir, `${name}.js`);
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: build the TypeScript first (tsc -p tsconfig.json)`);
    return file;
  }

  /** Starts a lab script in a role's namespace; destroy() stops it. */
  protected spawnScript(label: string, role: R, name: string, args: readonly string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.ns(role), this.node, this.script(name), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.children.push({ label, child });
    return child;
  }

  /**
   * Starts a program (not a lab script) in a role's namespace, e.g. a Debian-packaged server the
   * tests talk to; destroy() stops it by PID like the lab's own scripts.
   */
  spawnIn(label: string, role: R, cmd: string, args: readonly string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.ns(role), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.push({ label, child });
    return child;
  }

  /** Starts a lab script (dist/lab/<name>.js) in a role's namespace; destroy() stops it. */
  spawnLabScript(label: string, role: R, name: string, args: readonly string[]): ChildProcess {
    return this.spawnScript(label, role, name, args);
  }

  /** Runs a lab script (dist/lab/<name>.js) to completion in a role's namespace. */
  runLabScript(role: R, name: string, args: readonly string[], timeoutMs: number) {
    return this.execAsync(role, this.node, [this.script(name), ...args], { timeoutMs });
  }

  /**
   * One echo server (src/lab/echo-server.ts) per role in `servers`: TCP+UDP echo on `echoPort`,
   * identity on `whoPort`. Resolves when all listen.
   */
  protected async runEchoServers(servers: readonly R[], echoPort: number, whoPort: number, timeoutMs: number): Promise<void> {
    await Promise.all(
      servers.map((rs) => {
        const events: EchoServerEvent[] = [];
        this.echoEvents.set(rs, events);
        const args = [
          '--name',
          rs,
          '--host',
          '0.0.0.0',
          '--tcp',
          String(echoPort),
          '--udp',
          String(echoPort),
          '--who',
          String(whoPort),
          '--log-peers',
          '--exit-on-stdin-eof',
        ];
        const child = this.spawnScript(`echo-server ${rs}`, rs, 'echo-server', args);
        return waitReady(child, `echo-server in ${this.ns(rs)}`, events, timeoutMs);
      }),
    );
  }

  /** What an echo server has seen so far: one entry per TCP connection / UDP datagram (peer = source). */
  echoLog(rs: R): EchoConnEvent[] {
    return (this.echoEvents.get(rs) ?? []).filter((e): e is EchoConnEvent => e.event === 'conn');
  }

  /** Forgets the echo servers' logs (e.g. between test cases). */
  clearEchoLogs(): void {
    for (const events of this.echoEvents.values()) events.length = 0;
  }

  /** Runs src/lab/client.ts in a role's namespace and returns its JSON result. */
  protected async client<T>(role: R, args: string[], timeoutMs: number): Promise<T> {
    const res = await runAsync('ip', ['netns', 'exec', this.ns(role), this.node, this.script('client'), ...args], { timeoutMs });
    const line = res.stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .pop();
    if (!line) throw new Error(`client ${args[0]} in ${this.ns(role)} printed no result (exit ${res.signal ?? res.code}): ${res.stderr.trim()}`);
    const out = JSON.parse(line) as T & { error?: string };
    if (out.error) throw new Error(`client ${args.join(' ')} in ${this.ns(role)}: ${out.error}`);
    return out;
  }

  // --- teardown ---------------------------------------------------------------------------------

  /** Stops what a subclass started besides children (captures); runs first in destroy(). */
  protected stopExtras(): void {}

  /**
   * Kills every process the lab started (SIGTERM by PID, SIGKILL after a grace period), deletes
   * the root links and the namespaces, removes the scratch directory. Idempotent; never throws.
   */
  destroy(): void {
    this.destroyed = true;
    process.removeListener('exit', this.exitHook);
    this.stopExtras();
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

export function linkExists(dev: string): boolean {
  return run('ip', ['-br', 'link', 'show', 'dev', dev], { allowFail: true }) !== '';
}

export function linkInfo(ns: string | undefined, dev: string): { address: string; mtu: number; operstate: string } {
  const out = run('ip', [...(ns ? ['-n', ns] : []), '-j', 'link', 'show', 'dev', dev]);
  return (JSON.parse(out) as { address: string; mtu: number; operstate: string }[])[0];
}

/** An overall time limit for a client run: waves of `concurrency` items, each up to `perItemMs`. */
export function budget(items: number, concurrency: number, perItemMs: number): number {
  return Math.ceil(Math.max(items, 1) / Math.max(concurrency, 1)) * perItemMs + 15000;
}

/** Calls `fn` with every line of the child's stdout that parses as JSON (others are ignored). */
export function onJsonLines<T>(child: ChildProcess, fn: (value: T) => void): void {
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    let v: T;
    try {
      v = JSON.parse(line) as T;
    } catch {
      return;
    }
    fn(v);
  });
}

/** Resolves when the child prints {"event":"ready"}; collects later JSON lines into `events`. */
export function waitReady(child: ChildProcess, label: string, events: EchoServerEvent[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    let ready = false;
    const timer = setTimeout(() => {
      if (!ready) reject(new Error(`${label} not ready after ${timeoutMs} ms: ${stderr.trim()}`));
    }, timeoutMs);
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    onJsonLines<EchoServerEvent>(child, (ev) => {
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
