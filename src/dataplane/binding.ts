// The only module that loads the native addon. Everything else imports the
// typed wrapper in ./index.ts.
import path from 'node:path';

export type LinkState = 'up' | 'down' | 'unknown';

export interface NativePortConf {
  name: string;
  devname: string;
  mtu: number;
  rxDesc: number;
  txDesc: number;
  mac?: string;
  promiscuous: boolean;
}

export interface NativeConf {
  mbufs: number;
  mbufCache: number;
  burst: number;
  idlePauseAfter: number;
  idleSleepAfter: number;
  idleSleepUs: number;
  ports: NativePortConf[];
}

export interface NativePortStats {
  rxPackets: bigint;
  rxBytes: bigint;
  txPackets: bigint;
  txBytes: bigint;
  rxErrors: bigint;
  txErrors: bigint;
  rxMissed: bigint;
  rxNombuf: bigint;
  txDropped: bigint;
}

export interface NativePortInfo {
  index: number;
  name: string;
  devname: string;
  driver: string;
  portId: number;
  mac: string;
  mtu: number;
  link: LinkState;
  speedMbps: number;
  rxQueues: number;
  txQueues: number;
  stats: NativePortStats;
}

export interface NativeLcore {
  id: number;
  role: 'control' | 'worker';
  cpus: number[];
  busyPolls: bigint;
  idlePolls: bigint;
}

export interface NativeMempool {
  capacity: bigint;
  inUse: bigint;
  mbufSize: number;
}

export interface NativeCounterLayout {
  maxPorts: number;
  protocols: string[];
  pathCounters: string[];
  pathCounterHelp: string[];
  drops: string[];
  dropHelp: string[];
}

export type NativeState = 'init' | 'eal_ready' | 'running' | 'stopped';

/** Errors thrown by the addon carry the errno name, e.g. code === 'ENODEV'. */
export interface NativeError extends Error {
  code: string;
  errno: number;
}

export interface Native {
  ealInit(argv: string[]): void;
  start(conf: NativeConf): Promise<void>;
  stop(): void;
  cleanup(): void;
  state(): NativeState;
  dpdkVersion(): string;
  ports(): NativePortInfo[];
  lcores(): NativeLcore[];
  mempool(): NativeMempool | null;
  counterLayout(): NativeCounterLayout;
  readCounters(): BigUint64Array;
}

export const ADDON_PATH = path.resolve(__dirname, '..', '..', 'build', 'Release', 'retrace.node');

let native: Native | undefined;

/** Loads the addon on first use (so config errors surface before DPDK loads). */
export function loadNative(): Native {
  if (native === undefined) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    native = require(ADDON_PATH) as Native;
  }
  return native;
}

export function isNativeError(e: unknown): e is NativeError {
  return e instanceof Error && typeof (e as NativeError).code === 'string';
}
