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
  /** The port's kernel interface (net_tap ethdev), absent = none. */
  kernel?: { devname: string; queue: number; rate: number; burst: number };
}

export interface NativeConf {
  mbufs: number;
  mbufCache: number;
  burst: number;
  idlePauseAfter: number;
  idleSleepAfter: number;
  idleSleepUs: number;
  maxConns: number;
  icmpRate: number;
  icmpBurst: number;
  eventRing: number;
  /** Table pressure (native/dp.h): evict embryonic TCP conns first. */
  evictEmbryonic: boolean;
  pressureConnsPercent: number;
  pressurePortsPercent: number;
  evictMinAgeMs: number;
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
  /** Frames handed to the kernel interface, taken from it, dropped at its bound. */
  toKernel: bigint;
  fromKernel: bigint;
  kernelDropped: bigint;
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
  hasKernel: boolean;
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
  /** Per-worker conn table counters (table pressure), summed over workers. */
  connCounters: string[];
  connCounterHelp: string[];
}

/** Fixed sizes of the control tables (native/dp_ctl.h). */
export interface NativeLimits {
  /** Local addresses of every role: port addresses, LIPs and distinct VIPs share one table. */
  localAddresses: number;
  lips: number;
  services: number;
  realsPerService: number;
  /** Distinct prefixes: static routes and the connected routes of the addresses. */
  routes: number;
  /** Distinct (port, gateway) pairs the routes use; a connected route uses (port, none). */
  nextHops: number;
  /** Distinct /24s that hold a prefix longer than /24. */
  routeTbl8Groups: number;
  /** Static and learned entries together. */
  neighbors: number;
  /** Prefixes per allow or deny list of a service. */
  prefixesPerList: number;
}

export type NativeState = 'init' | 'eal_ready' | 'running' | 'stopped';

/** Errors thrown by the addon carry the errno name, e.g. code === 'ENODEV'. */
export interface NativeError extends Error {
  code: string;
  errno: number;
}

export interface NativeNeighbor {
  addr: string;
  mac: string;
  port: number;
  static: boolean;
  ageSeconds: number;
}

export interface NativeRealInfo {
  addr: string;
  port: number;
  weight: number;
  activeConns: bigint;
  connsTotal: bigint;
  /** Inhibited by its health check (no new conns). */
  down: boolean;
  packetsToReal: bigint;
  packetsFromReal: bigint;
  bytesToReal: bigint;
  bytesFromReal: bigint;
  proxyHeaders: bigint;
  segmentsShifted: bigint;
  toaAdded: bigint;
  toaNoRoom: bigint;
}

export interface NativeTimeouts {
  tcpSyn: number;
  tcpEstablished: number;
  tcpFin: number;
  tcpClose: number;
  udp: number;
  icmp: number;
}

/** IANA protocol numbers, as the native layer takes them. */
export const IPPROTO = { tcp: 6, udp: 17, icmp: 1 } as const;
/** Scheduler ids of native/dp_ctl.h (DP_SCHED_ARG_*). */
export const SCHED_ID = { rr: 1, wrr: 2, wlc: 3, maglev: 4 } as const;
/** SYN proxy modes as native/dp_ctl.h numbers them (DP_SYN_PROXY_ARG_*). */
export const SYN_PROXY_ID = { off: 0, on: 1, auto: 2 } as const;
/** Client-address modes of native/dp_ctl.h (enum dp_caddr_mode). */
export const CADDR_ID = { none: 0, proxy_v2: 1, proxy_v1: 2, toa: 3 } as const;

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
  limits(): NativeLimits;
  addrAdd(addr: string, plen: number, port: number): void;
  addrDel(addr: string, plen: number): void;
  routeAdd(prefix: string, plen: number, port: number, gateway: string): void;
  routeDel(prefix: string, plen: number): void;
  neighAdd(addr: string, mac: string, port: number): void;
  neighDel(addr: string): void;
  neighList(): NativeNeighbor[];
  lipAdd(addr: string, port: number): void;
  lipDel(addr: string): void;
  lipUsage(addr: string): { inUse: bigint; capacity: bigint };
  serviceAdd(proto: number, vip: string, port: number, sched: number, seed: number): void;
  serviceDel(proto: number, vip: string, port: number): void;
  serviceSetSched(proto: number, vip: string, port: number, sched: number, seed: number): void;
  serviceSetReals(proto: number, vip: string, port: number, reals: { addr: string; port: number; weight: number }[]): void;
  serviceReals(proto: number, vip: string, port: number): { reals: NativeRealInfo[]; connsTotal: bigint };
  serviceSetRealDown(proto: number, vip: string, port: number, real: string, realPort: number, down: boolean): void;
  serviceSetCaddr(proto: number, vip: string, port: number, mode: number): void;
  serviceSetLimits(
    proto: number,
    vip: string,
    port: number,
    limits: { maxConns: number; connRate: number; connBurst: number; allow: { addr: string; plen: number }[]; deny: { addr: string; plen: number }[] },
  ): void;
  serviceDrops(proto: number, vip: string, port: number): { activeConns: bigint; maxConns: bigint; denied: bigint; notAllowed: bigint; rateLimited: bigint };
  serviceSetSynProxy(proto: number, vip: string, port: number, mode: number, threshold: number): void;
  serviceSynProxy(
    proto: number,
    vip: string,
    port: number,
  ): { mode: number; threshold: number; cookiesSent: bigint; cookiesValid: bigint; cookiesInvalid: bigint };
  /** Half-open TCP conns (handshake not done), summed over workers. */
  halfOpen(): bigint;
  symmetricSet(proto: number, on: boolean): void;
  symmetricGet(proto: number): boolean;
  timeoutsSet(t: NativeTimeouts): void;
  timeoutsGet(): NativeTimeouts;
  connCount(): bigint;
  /** Sum of connsTotal over every service, in one pass (no per-real reads). */
  servicesConnsTotal(): bigint;
  connInfoLayout(): Record<string, number>;
  eventsEnable(on: boolean): void;
  eventsDrain(max: number): { buffer: Buffer; count: number; dropped: bigint };
  /** An encoder for encodeEvents (native/dp_event_wire.h): record code tables and port names. */
  eventEncoder(spec: NativeEventEncoderSpec): NativeEventEncoder;
  /**
   * Drained records as WatchConnEventsResponse messages numbered from firstSeq, each behind its
   * WatchConnEventBatchesResponse element tag and length: message i is buf[starts[i]..ends[i]).
   */
  encodeEvents(encoder: NativeEventEncoder, records: Buffer, count: number, firstSeq: bigint): { buf: Buffer; starts: Uint32Array; ends: Uint32Array };
  connsDump(worker: number, cursor: number, max: number): Promise<{ buffer: Buffer; count: number; cursor: number; done: boolean }>;
  connsDelete(filter: NativeConnFilter): Promise<bigint>;
  /** One conn by its client-side key (real/realPort ignored); count 0 = no worker has it. */
  connGet(key: NativeConnFilter): Promise<{ buffer: Buffer; count: number }>;
  nbWorkers(): number;
}

/** Record code → proto enum value tables (256 entries each) and port names by port index. */
export interface NativeEventEncoderSpec {
  eventType: number[];
  state: number[];
  protocol: number[];
  sideClient: number;
  sideServer: number;
  codeClosed: number;
  codePath: number;
  codeIcmp: number;
  flagLocal: number;
  names: string[];
}

/** An opaque native encoder (a Node-API external). */
export type NativeEventEncoder = { readonly __nativeEventEncoder: unique symbol };

export interface NativeConnFilter {
  /** IANA number; 0 = any. */
  protocol: number;
  /** "" = any. */
  client: string;
  clientPort: number;
  vip: string;
  vipPort: number;
  real: string;
  realPort: number;
}

export const ADDON_PATH = path.resolve(__dirname, '..', '..', 'build', 'Release', 'retrace.node');

let native: Native | undefined;

/** Loads the addon on first use (so config errors surface before DPDK loads). */
export function loadNative(): Native {
  if (native === undefined) {
    // A native addon loads only through require() (its path is known at run time).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    native = require(ADDON_PATH) as Native;
  }
  return native;
}

export function isNativeError(e: unknown): e is NativeError {
  return e instanceof Error && typeof (e as NativeError).code === 'string';
}
