/**
 * The shapes the Dataplane class takes and returns: table entries (specs as configured, views as
 * read back), conn selection, counter snapshots. Re-exported by index.ts.
 */
import type { NativeTimeouts } from './binding';

export type Protocol = 'tcp' | 'udp' | 'icmp';
export const PROTOCOLS: readonly Protocol[] = ['tcp', 'udp', 'icmp'];
export type Scheduler = 'rr' | 'wrr' | 'wlc' | 'maglev';
export const SCHEDULERS: readonly Scheduler[] = ['rr', 'wrr', 'wlc', 'maglev'];

/** An address on a port; it also installs the connected route of its prefix. */
export interface AddressSpec {
  address: string;
  prefixLength: number;
  port: string;
}

export interface RouteSpec {
  prefix: string;
  prefixLength: number;
  port: string;
  /** Next hop; undefined for a connected route. */
  gateway?: string;
}

export interface RouteView extends RouteSpec {
  /** True for routes installed by an address (deleted with it). */
  connected: boolean;
}

export interface NeighborSpec {
  address: string;
  mac: string;
  port: string;
}

export interface NeighborView extends NeighborSpec {
  static: boolean;
  ageSeconds: number;
}

/** A local address (LIP): source of the server-side half of FNAT conns. */
export interface LocalAddressSpec {
  address: string;
  port: string;
}

export interface LocalAddressView extends LocalAddressSpec {
  portsInUse: bigint;
  portsTotal: bigint;
}

export interface ServiceKey {
  protocol: Protocol;
  vip: string;
  /** 0 for ICMP. */
  port: number;
}

export interface RealSpec {
  address: string;
  /** 0 for ICMP. */
  port: number;
  /** 0 drains: no new conns, existing ones continue. */
  weight: number;
}

/**
 * Admission limits of a service; only the first packet of a conn is checked. Prefixes are
 * canonical "a.b.c.d/len" strings (no host bits), sorted by address then length, no repeats.
 */
export interface ServiceLimits {
  /** 0 = no limit. */
  maxConns: number;
  /** Client prefixes that may open conns; empty = every client. */
  allow: string[];
  /** Client prefixes that may not; wins over allow. */
  deny: string[];
  /** New conns per second per client address (0 = no limit), a token bucket of connBurst conns. */
  connRate: number;
  connBurst: number;
}

export const NO_LIMITS: Readonly<ServiceLimits> = Object.freeze({ maxConns: 0, allow: [], deny: [], connRate: 0, connBurst: 0 });

export function limitsEqual(a: ServiceLimits | undefined, b: ServiceLimits | undefined): boolean {
  const x = a ?? NO_LIMITS,
    y = b ?? NO_LIMITS;
  const same = (p: string[], q: string[]) => p.length === q.length && p.every((v, i) => v === q[i]);
  return x.maxConns === y.maxConns && same(x.allow, y.allow) && same(x.deny, y.deny) && x.connRate === y.connRate && x.connBurst === y.connBurst;
}

/**
 * SYN flood defence of a TCP service (native/dp_synproxy.c): off, on (every SYN for no conn is
 * answered with a cookie), or auto (on while the worker receiving the SYN holds at least
 * `threshold` half-open TCP conns). threshold is 0 unless auto.
 */
export type SynProxyMode = 'off' | 'on' | 'auto';
export interface SynProxy {
  mode: SynProxyMode;
  threshold: number;
}

export const SYN_PROXY_OFF: Readonly<SynProxy> = Object.freeze({ mode: 'off', threshold: 0 });

export function synProxyEqual(a: SynProxy | undefined, b: SynProxy | undefined): boolean {
  const x = a ?? SYN_PROXY_OFF,
    y = b ?? SYN_PROXY_OFF;
  return x.mode === y.mode && x.threshold === y.threshold;
}

export type HealthCheckKind = 'tcp' | 'http' | 'grpc' | 'udp' | 'icmp';
export const HEALTH_CHECK_KINDS: readonly HealthCheckKind[] = ['tcp', 'http', 'grpc', 'udp', 'icmp'];

/**
 * An active health check of a service's reals (proto/retrace/v1/health_check.proto). Held by the
 * control plane only: the dataplane sees its verdicts, one inhibit flag per real.
 */
export interface HealthCheckSpec {
  kind: HealthCheckKind;
  intervalMs: number;
  timeoutMs: number;
  rise: number;
  fall: number;
  /** 0 = the real's port. */
  port: number;
  httpPath: string;
  /** 0 = 200. */
  httpStatus: number;
  grpcService: string;
  udpPayload: Uint8Array;
  /** Empty = no reply needed, only no ICMP port unreachable. */
  udpExpect: Uint8Array;
  /** Remove a real's conns of the service when it goes down. */
  closeConns: boolean;
}

export function healthCheckEqual(a: HealthCheckSpec | undefined, b: HealthCheckSpec | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  const bytes = (x: Uint8Array, y: Uint8Array) => Buffer.from(x).equals(Buffer.from(y));
  return (
    a.kind === b.kind &&
    a.intervalMs === b.intervalMs &&
    a.timeoutMs === b.timeoutMs &&
    a.rise === b.rise &&
    a.fall === b.fall &&
    a.port === b.port &&
    a.httpPath === b.httpPath &&
    a.httpStatus === b.httpStatus &&
    a.grpcService === b.grpcService &&
    bytes(a.udpPayload, b.udpPayload) &&
    bytes(a.udpExpect, b.udpExpect) &&
    a.closeConns === b.closeConns
  );
}

export function copyHealthCheck(h: HealthCheckSpec): HealthCheckSpec {
  return { ...h, udpPayload: Uint8Array.from(h.udpPayload), udpExpect: Uint8Array.from(h.udpExpect) };
}

/**
 * How a service passes the client's address to its reals: nothing, a PROXY protocol v2 or v1
 * header, or the TOA TCP option (native/dp_caddr.c). v1 and toa are TCP only.
 */
export type ClientAddressMode = 'none' | 'proxy_v2' | 'proxy_v1' | 'toa';
export const CLIENT_ADDRESS_MODES: readonly ClientAddressMode[] = ['none', 'proxy_v2', 'proxy_v1', 'toa'];

export interface ServiceSpec extends ServiceKey {
  scheduler: Scheduler;
  /** Maglev hash seed (same seed + same reals = same table on every node). */
  seed: number;
  /** Unset = none. */
  limits?: ServiceLimits;
  /** Unset = off. */
  synProxy?: SynProxy;
  /** Unset = the reals are not checked. */
  healthCheck?: HealthCheckSpec;
  /** Unset = 'none'. */
  clientAddress?: ClientAddressMode;
}

/**
 * The configuration of a service and nothing else (a ServiceView or a config state carries more):
 * the one place that lists a service's settings, so a new one is added here and nowhere else.
 */
export function serviceSpecOf(s: ServiceSpec): ServiceSpec {
  return {
    protocol: s.protocol,
    vip: s.vip,
    port: s.port,
    scheduler: s.scheduler,
    seed: s.seed,
    limits: s.limits,
    synProxy: s.synProxy,
    clientAddress: s.clientAddress,
    ...(s.healthCheck === undefined ? {} : { healthCheck: s.healthCheck }),
  };
}

export interface RealView extends RealSpec {
  /** Inhibited by its health check in the dataplane (no new conns); the weight stays as set. */
  down: boolean;
  activeConns: bigint;
  connsTotal: bigint;
  /** Packets and bytes of this real's conns, toward it and from it. */
  packetsToReal: bigint;
  packetsFromReal: bigint;
  bytesToReal: bigint;
  bytesFromReal: bigint;
  /** What the service's client-address mode did on this real's conns (native/dp_counters.h). */
  proxyHeaders: bigint;
  segmentsShifted: bigint;
  toaAdded: bigint;
  toaNoRoom: bigint;
}

export interface ServiceView extends ServiceSpec {
  clientAddress: ClientAddressMode;
  reals: RealView[];
  connsTotal: bigint;
  limits: ServiceLimits;
  /** Conns on the current reals: what maxConns is checked against. */
  activeConns: bigint;
  /** New conns refused by the limits, by reason, since the service was created. */
  refusedMaxConns: bigint;
  refusedDenied: bigint;
  refusedNotAllowed: bigint;
  refusedRateLimited: bigint;
  synProxy: SynProxy;
  /** SYN cookies sent, and ACKs whose cookie verified or did not, since the service was created. */
  synCookiesSent: bigint;
  synCookiesValid: bigint;
  synCookiesInvalid: bigint;
}

export type Timeouts = NativeTimeouts;

/** Conn selection; unset fields match anything. */
export interface ConnFilter {
  protocol: Protocol;
  client: string;
  clientPort: number;
  vip: string;
  vipPort: number;
  real: string;
  realPort: number;
}

/** A conn's client-side key: what GetConn looks it up by. */
export type ConnKey = Pick<ConnFilter, 'protocol' | 'client' | 'clientPort' | 'vip' | 'vipPort'>;

/**
 * The configuration the Dataplane object holds, without a native call: what the control plane
 * checks a change against (reals are the live arrays; callers must not modify them).
 */
export interface ConfigShape {
  addresses: AddressSpec[];
  routes: RouteSpec[];
  neighbors: NeighborSpec[];
  localAddresses: LocalAddressSpec[];
  services: (ServiceKey & { reals: readonly RealSpec[]; healthCheck?: HealthCheckSpec })[];
}

export function serviceKeyString(k: ServiceKey): string {
  return `${k.protocol}/${k.vip}:${k.port}`;
}

export type DataplaneState = 'starting' | 'running' | 'stopping' | 'stopped';

/** Counters of one protocol on one port, named as in native/dp_counters.h. */
export type PathCounters = Record<string, bigint>;

export interface CounterSnapshot {
  /** protocol name -> port name -> counter name -> value */
  path: Record<string, Record<string, PathCounters>>;
  /** port name -> drop reason -> value */
  drops: Record<string, Record<string, bigint>>;
  /** conn table counter (table pressure) -> value, summed over workers */
  conn: Record<string, bigint>;
}

/** What an updateService call changes besides scheduler and seed; unset = unchanged. */
export interface ServiceChange {
  limits?: ServiceLimits;
  /** null removes the check. */
  healthCheck?: HealthCheckSpec | null;
  clientAddress?: ClientAddressMode;
  synProxy?: SynProxy;
}
