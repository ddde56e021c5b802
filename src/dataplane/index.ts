/**
 * The TypeScript face of the dataplane: typed calls over the native addon, the EAL/port
 * configuration derived from the appliance config, and counters in named form.
 *
 * Errors: every failure is a DataplaneError whose `code` is an errno name (`ENOENT`, `EINVAL`,
 * `ENODEV`, ...) or `EUNAVAILABLE` when the dataplane is not running. src/server maps codes to gRPC
 * status codes in one place (toStatus).
 */
import { buildEalArgs, deviceName, type Config } from '../config';
import { isNativeError, loadNative, type Native, type NativeConf, type NativeLcore, type NativeMempool, type NativePortInfo } from './binding';

export type { NativePortInfo as PortInfo, NativeLcore as LcoreInfo, NativeMempool as MempoolInfo } from './binding';

export class DataplaneError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'DataplaneError';
  }
}

function wrap(e: unknown, context: string): DataplaneError {
  if (e instanceof DataplaneError) return e;
  if (isNativeError(e)) return new DataplaneError(e.code, `${context}: ${e.message}`);
  return new DataplaneError('EIO', `${context}: ${e instanceof Error ? e.message : String(e)}`);
}

export type DataplaneState = 'starting' | 'running' | 'stopping' | 'stopped';

/** Counters of one protocol on one port, named as in native/dp_counters.h. */
export type PathCounters = Record<string, bigint>;

export interface CounterSnapshot {
  /** protocol name -> port name -> counter name -> value */
  path: Record<string, Record<string, PathCounters>>;
  /** port name -> drop reason -> value */
  drops: Record<string, Record<string, bigint>>;
}

/** Maps the appliance config onto the addon's start() argument. */
export function nativeConf(cfg: Config): NativeConf {
  return {
    mbufs: cfg.dataplane.mbufs,
    mbufCache: cfg.dataplane.mbuf_cache,
    burst: cfg.dataplane.burst,
    idlePauseAfter: cfg.dataplane.idle.pause_after,
    idleSleepAfter: cfg.dataplane.idle.sleep_after,
    idleSleepUs: cfg.dataplane.idle.sleep_us,
    ports: cfg.ports.map((p) => ({
      name: p.name,
      devname: deviceName(p.device),
      mtu: p.mtu,
      rxDesc: p.rx_desc,
      txDesc: p.tx_desc,
      mac: p.mac,
      promiscuous: p.promiscuous,
    })),
  };
}

export class Dataplane {
  private stateValue: DataplaneState = 'starting';
  private startedAtValue: Date | undefined;
  private startCalled = false;

  private readonly native: Native;

  constructor(readonly config: Config) {
    this.native = loadNative();
  }

  /**
   * Initialises the EAL in this process and starts ports and workers. Once per process: DPDK's
   * EAL cannot be initialised twice (tests that need a dataplane spawn a child process). Calls made
   * while it runs fail with EUNAVAILABLE.
   */
  async start(): Promise<void> {
    if (this.stateValue !== 'starting' || this.startCalled) {
      throw new DataplaneError('EALREADY', 'dataplane already started in this process');
    }
    this.startCalled = true;
    try {
      this.native.ealInit(buildEalArgs(this.config, process.pid));
    } catch (e) {
      this.stateValue = 'stopped';
      throw wrap(e, 'EAL init');
    }
    try {
      await this.native.start(nativeConf(this.config));
    } catch (e) {
      this.stateValue = 'stopped';
      try {
        this.native.cleanup();
      } catch {
        // The start error is the one worth reporting.
      }
      throw wrap(e, 'dataplane start');
    }
    this.stateValue = 'running';
    this.startedAtValue = new Date();
  }

  get state(): DataplaneState {
    return this.stateValue;
  }

  get startedAt(): Date | undefined {
    return this.startedAtValue;
  }

  get dpdkVersion(): string {
    return this.native.dpdkVersion();
  }

  private requireRunning(): void {
    if (this.stateValue !== 'running') {
      throw new DataplaneError('EUNAVAILABLE', `dataplane is ${this.stateValue}`);
    }
  }

  ports(): NativePortInfo[] {
    this.requireRunning();
    try {
      return this.native.ports();
    } catch (e) {
      throw wrap(e, 'reading ports');
    }
  }

  port(name: string): NativePortInfo {
    const p = this.ports().find((x) => x.name === name);
    if (p === undefined) throw new DataplaneError('ENOENT', `no port named "${name}"`);
    return p;
  }

  lcores(): NativeLcore[] {
    this.requireRunning();
    return this.native.lcores();
  }

  mempool(): NativeMempool {
    this.requireRunning();
    const m = this.native.mempool();
    if (m === null) throw new DataplaneError('EUNAVAILABLE', 'mbuf pool not created');
    return m;
  }

  counters(): CounterSnapshot {
    this.requireRunning();
    const layout = this.native.counterLayout();
    const flat = this.native.readCounters();
    const names = this.config.ports.map((p) => p.name);
    const snap: CounterSnapshot = { path: {}, drops: {} };
    const nCtr = layout.pathCounters.length;
    layout.protocols.forEach((proto, pi) => {
      const byPort: Record<string, PathCounters> = {};
      names.forEach((port, idx) => {
        const c: PathCounters = {};
        layout.pathCounters.forEach((ctr, ci) => {
          c[ctr] = flat[(pi * layout.maxPorts + idx) * nCtr + ci];
        });
        byPort[port] = c;
      });
      snap.path[proto] = byPort;
    });
    const dropBase = layout.protocols.length * layout.maxPorts * nCtr;
    names.forEach((port, idx) => {
      const d: Record<string, bigint> = {};
      layout.drops.forEach((reason, ri) => {
        d[reason] = flat[dropBase + idx * layout.drops.length + ri];
      });
      snap.drops[port] = d;
    });
    return snap;
  }

  /** Stops workers and ports and releases the EAL. Idempotent. */
  stop(): void {
    if (this.stateValue !== 'running') return;
    this.stateValue = 'stopping';
    try {
      this.native.stop();
      this.native.cleanup();
    } catch (e) {
      throw wrap(e, 'dataplane stop');
    } finally {
      this.stateValue = 'stopped';
    }
  }
}
