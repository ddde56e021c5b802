/**
 * Active health checks: one target per (service with a health_check, real). Each target is probed
 * every interval_ms (start to start; first probes spread over one interval) through the prober
 * process, at most `maxInFlight` probes at once over all targets (a target whose turn comes while
 * the limit is reached waits for the next tick). `fall` failures in a row take a real DOWN: the
 * dataplane inhibits it (Dataplane.setRealDown; no new conns, its weight untouched) and, with the
 * check's close_conns, its conns of that service are removed; `rise` successes in a row bring it
 * back UP. Each transition goes to the HealthEventHub, in the order the transitions happened.
 *
 * Targets follow the configuration: reconcile() runs after every configuration change. A real
 * kept across changes keeps its state; a new real, or every real of a service whose check
 * changed, starts UNKNOWN (not inhibited); a check removed un-inhibits its reals.
 */
import { healthCheckEqual, serviceKeyString, type ConfigShape, type Dataplane, type HealthCheckSpec, type ServiceKey } from '../../dataplane';
import type { ProbeRequest, ProbeResult } from '../../health/probe';
import type { HealthEvent } from '../../gen/retrace/v1/health_check';
import type { Logger } from '../../log';
import { HEALTH_STATE_TO_PROTO, type RealHealthView } from '../balancer-service';
import { protocolToProto } from '../enums';
import type { HealthEventHub } from './hub';

export interface Prober {
  probe(req: Omit<ProbeRequest, 'id'>): Promise<ProbeResult>;
  close(): void;
}

/** Probers by network namespace, each started on first use. */
export class ProberPool {
  private readonly probers = new Map<string, Prober>();

  constructor(private readonly make: (netns: string) => Prober) {}

  get(netns: string): Prober {
    let p = this.probers.get(netns);
    if (p === undefined) {
      p = this.make(netns);
      this.probers.set(netns, p);
    }
    return p;
  }

  close(): void {
    for (const p of this.probers.values()) p.close();
    this.probers.clear();
  }
}

type State = RealHealthView['state'];

interface Target {
  svcKey: string;
  key: ServiceKey;
  address: string;
  port: number;
  check: HealthCheckSpec;
  state: State;
  okRun: number;
  failRun: number;
  lastError: string;
  changedAt: Date;
  /** Next probe start, ms (Date.now() clock). */
  nextAt: number;
  inFlight: boolean;
  /** Whether the dataplane has it inhibited (as this checker last set it). */
  inhibited: boolean;
  transitions: number;
  /** false once the target left the configuration: a late probe result is ignored. */
  live: boolean;
  /** Where its probes start (pathTo), recomputed at every configuration change. */
  path: { netns: string; source: string; port: string };
}

export interface HealthCheckerOptions {
  maxInFlight: number;
  /** Namespace of the prober for reals whose port has no kernel interface ("" = the appliance's). */
  netns: string;
  /** How often due targets are looked for. */
  tickMs?: number;
}

const targetKey = (svc: string, address: string, port: number) => `${svc} ${address}:${port}`;

export class HealthChecker {
  private readonly targets = new Map<string, Target>();
  private timer: NodeJS.Timeout | undefined;
  private inFlight = 0;
  /** Transitions are published in order, each after its conns were closed (when asked). */
  private publishChain: Promise<void> = Promise.resolve();
  /** Probes started and finished, in all (status, tests). */
  probesStarted = 0n;
  probesFailed = 0n;

  constructor(
    private readonly dp: Dataplane,
    private readonly probers: ProberPool,
    private readonly hub: HealthEventHub,
    private readonly log: Logger,
    private readonly opts: HealthCheckerOptions,
  ) {}

  /** Starts the probing loop (after the dataplane runs). */
  start(): void {
    this.reconcile();
    this.timer ??= setInterval(() => this.tick(), this.opts.tickMs ?? 50);
  }

  close(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    for (const t of this.targets.values()) t.live = false;
    this.targets.clear();
    this.probers.close();
  }

  /** The health of one real of one service, for the API; undefined when not checked. */
  lookup(service: string, real: string): (RealHealthView & { transitions: number }) | undefined {
    const t = this.targets.get(`${service} ${real}`);
    return t === undefined ? undefined : { state: t.state, lastError: t.lastError, changedAt: t.changedAt, transitions: t.transitions };
  }

  /** Every checked real, for WatchHealthEvents' initial state. */
  snapshot(): HealthEvent[] {
    return [...this.targets.values()].map((t) => this.event(t, t.state, t.state, 0n, t.changedAt));
  }

  /** Brings the targets in line with the configuration; see the file comment. */
  reconcile(): void {
    if (this.dp.state !== 'running') return;
    const seen = new Set<string>();
    const now = Date.now();
    const shape = this.dp.configShape();
    for (const s of shape.services) {
      const hc = s.healthCheck;
      if (hc === undefined) continue;
      const svcKey = serviceKeyString(s);
      for (const r of s.reals) {
        const k = targetKey(svcKey, r.address, r.port);
        seen.add(k);
        const t = this.targets.get(k);
        if (t !== undefined && healthCheckEqual(t.check, hc)) continue;
        if (t !== undefined) this.forget(t, shape); // the check changed: start over
        this.targets.set(k, {
          svcKey,
          key: { protocol: s.protocol, vip: s.vip, port: s.port },
          address: r.address,
          port: r.port,
          check: hc,
          state: 'unknown',
          okRun: 0,
          failRun: 0,
          lastError: '',
          changedAt: new Date(now),
          nextAt: now + Math.floor(Math.random() * hc.intervalMs),
          inFlight: false,
          inhibited: false,
          transitions: 0,
          live: true,
          path: { netns: '', source: '', port: '' },
        });
      }
    }
    for (const [k, t] of this.targets) {
      if (!seen.has(k)) {
        this.forget(t, shape);
        this.targets.delete(k);
      }
    }
    // Addresses and routes may have changed too: every probe's path, once per change, not per probe.
    for (const t of this.targets.values()) t.path = this.pathTo(t.address, shape);
  }

  /** A target leaves: un-inhibit its real if it is still in the service (the check went away). */
  private forget(t: Target, shape: ConfigShape): void {
    t.live = false;
    if (!t.inhibited) return;
    const svc = shape.services.find((s) => serviceKeyString(s) === t.svcKey);
    if (svc?.reals.some((r) => r.address === t.address && r.port === t.port)) {
      try {
        this.dp.setRealDown(t.key, t.address, t.port, false);
      } catch (e) {
        this.log.warn({ err: (e as Error).message, real: `${t.address}:${t.port}` }, 'could not lift a health inhibit');
      }
    }
  }

  /** Where the next tick starts looking: rotated, so a full in-flight budget starves no target. */
  private cursor = 0;

  private tick(): void {
    if (this.dp.state !== 'running') return;
    const now = Date.now();
    const all = [...this.targets.values()];
    for (let i = 0; i < all.length; i++) {
      const t = all[(this.cursor + i) % all.length];
      if (this.inFlight >= this.opts.maxInFlight) {
        this.cursor = (this.cursor + i) % all.length;
        return;
      }
      if (t.inFlight || t.nextAt > now) continue;
      // Start to start; a target late by more than an interval (a busy loop) is not made to catch up.
      t.nextAt = Math.max(t.nextAt + t.check.intervalMs, now + 1);
      this.launch(t);
    }
  }

  private launch(t: Target): void {
    t.inFlight = true;
    this.inFlight++;
    this.probesStarted++;
    const c = t.check;
    const path = t.path;
    this.probers
      .get(path.netns)
      .probe({
        kind: c.kind,
        address: t.address,
        port: c.kind === 'icmp' ? 0 : c.port || t.port,
        source: path.source,
        timeoutMs: c.timeoutMs,
        httpPath: c.httpPath,
        httpStatus: c.httpStatus,
        grpcService: c.grpcService,
        udpPayload: Buffer.from(c.udpPayload).toString('base64'),
        udpExpect: Buffer.from(c.udpExpect).toString('base64'),
      })
      .then((r) => {
        this.inFlight--;
        t.inFlight = false;
        if (!r.ok) this.probesFailed++;
        if (t.live && this.targets.get(targetKey(t.svcKey, t.address, t.port)) === t) this.result(t, r);
      });
  }

  /**
   * Where a probe of `address` starts. The port toward the real is the one with an address on the
   * real's subnet, else the one its longest static route leaves by. When that port has a kernel
   * interface, the probe runs in the interface's namespace from the port's address, so it leaves by
   * the dataplane port as the real's traffic does and the answer comes back up the same interface.
   * Otherwise it runs in health_checks.netns with the kernel's choice of source.
   */
  pathTo(address: string, shape: Pick<ConfigShape, 'addresses' | 'routes'> = this.dp.configShape()): { netns: string; source: string; port: string } {
    const n = ipNum(address);
    const inPrefix = (p: string, len: number) => len === 0 || ipNum(p) >>> (32 - len) === n >>> (32 - len);
    const onLink = shape.addresses.find((a) => inPrefix(a.address, a.prefixLength));
    const route = shape.routes.filter((r) => inPrefix(r.prefix, r.prefixLength)).sort((a, b) => b.prefixLength - a.prefixLength)[0];
    const port = onLink?.port ?? route?.port;
    const kernel = port === undefined ? undefined : this.dp.kernel.of(port);
    if (port === undefined || kernel === undefined) return { netns: this.opts.netns, source: '', port: port ?? '' };
    const source = onLink?.address ?? shape.addresses.find((a) => a.port === port)?.address ?? '';
    return { netns: kernel.netns, source, port };
  }

  private result(t: Target, r: ProbeResult): void {
    if (r.ok) {
      t.failRun = 0;
      t.okRun++;
      if (t.state !== 'up' && t.okRun >= t.check.rise) this.transition(t, 'up');
    } else {
      t.okRun = 0;
      t.failRun++;
      t.lastError = r.error;
      if (t.state !== 'down' && t.failRun >= t.check.fall) this.transition(t, 'down');
    }
  }

  private transition(t: Target, to: State): void {
    const from = t.state;
    t.state = to;
    t.changedAt = new Date();
    t.transitions++;
    const inhibit = to === 'down';
    if (inhibit !== t.inhibited) {
      try {
        this.dp.setRealDown(t.key, t.address, t.port, inhibit);
        t.inhibited = inhibit;
      } catch (e) {
        // The real went away in between (the next reconcile drops the target) or the dataplane stops.
        this.log.warn({ err: (e as Error).message, real: `${t.address}:${t.port}` }, 'could not set a real health inhibit');
      }
    }
    this.log.info({ service: t.svcKey, real: `${t.address}:${t.port}`, from, to, error: t.lastError }, 'real health changed');
    const at = t.changedAt;
    const closing: Promise<bigint> =
      to === 'down' && t.check.closeConns
        ? this.dp.deleteConns({ protocol: t.key.protocol, vip: t.key.vip, vipPort: t.key.port, real: t.address, realPort: t.port }).catch((e: unknown) => {
            this.log.warn({ err: (e as Error).message, real: `${t.address}:${t.port}` }, 'could not close the conns of a real that went down');
            return 0n;
          })
        : Promise.resolve(0n);
    const ev = this.event(t, from, to, 0n, at);
    this.publishChain = this.publishChain.then(async () => {
      const closed = await closing;
      this.hub.publish({ ...ev, connsClosed: closed });
    });
  }

  private event(t: Target, from: State, to: State, connsClosed: bigint, at: Date): Omit<HealthEvent, 'seq'> & { seq: bigint } {
    return {
      seq: 0n,
      time: at,
      protocol: protocolToProto(t.key.protocol),
      vip: t.key.vip,
      vipPort: t.key.port,
      real: t.address,
      realPort: t.port,
      from: HEALTH_STATE_TO_PROTO[from],
      to: HEALTH_STATE_TO_PROTO[to],
      lastError: t.lastError,
      connsClosed,
    };
  }

  /** Counts for /metrics: every checked real. */
  forEachTarget(fn: (svcKey: string, real: string, state: State, transitions: number) => void): void {
    for (const t of this.targets.values()) fn(t.svcKey, `${t.address}:${t.port}`, t.state, t.transitions);
  }
}

function ipNum(s: string): number {
  return s.split('.').reduce((acc, o) => acc * 256 + Number(o), 0) >>> 0;
}
