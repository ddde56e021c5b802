/**
 * Pure request validators: each takes a decoded request and returns the argument of the one
 * Dataplane call its handler makes, or throws ValidationError(field, reason) naming the first bad
 * field by its proto path (`address.prefix_length`, `reals[2].weight`). Nothing here touches the
 * dataplane: whether a port name exists, an address is already taken or a table is full is the
 * dataplane's answer (NOT_FOUND, ALREADY_EXISTS, RESOURCE_EXHAUSTED).
 */
import { createHash } from 'node:crypto';
import type {
  AddressSpec,
  ClientAddressMode as DpClientAddressMode,
  ConnEventType as DpEventType,
  ConnFilter as DpConnFilter,
  ConnKey as DpConnKey,
  ConnView,
  HealthCheckKind as DpHealthCheckKind,
  HealthCheckSpec,
  LocalAddressSpec,
  NeighborSpec,
  Protocol as DpProtocol,
  RealSpec,
  RouteSpec,
  Scheduler as DpScheduler,
  ServiceKey,
  ServiceLimits,
  ServiceSpec,
  SynProxy as DpSynProxy,
  TcpState,
  Timeouts as DpTimeouts,
} from '../dataplane';
import type {
  ClientAddressMode,
  CreateLocalAddressRequest,
  CreateVirtualServiceRequest,
  DeleteLocalAddressRequest,
  DeleteVirtualServiceRequest,
  GetVirtualServiceRequest,
  Real,
  SetRealsRequest,
  SetTimeoutsRequest,
  UpdateVirtualServiceRequest,
  VirtualServiceKey,
} from '../gen/retrace/v1/balancer';
import type {
  ConnFilter,
  DeleteConnsRequest,
  GetConnRequest,
  ListConnsRequest,
  WatchConnEventBatchesRequest,
  WatchConnEventsRequest,
} from '../gen/retrace/v1/conn';
import type {
  CreateAddressRequest,
  CreateNeighborRequest,
  CreateRouteRequest,
  DeleteAddressRequest,
  DeleteNeighborRequest,
  DeleteRouteRequest,
} from '../gen/retrace/v1/network';
import type { SetSymmetricModeRequest, WatchCountersRequest } from '../gen/retrace/v1/path';
import type { SynProxyMode } from '../gen/retrace/v1/types';
import { HealthCheckKind, type HealthCheck } from '../gen/retrace/v1/health_check';
import { clientAddressFromProto, connStateFromProto, eventTypeFromProto, protocolFromProto, schedulerFromProto, synProxyModeFromProto } from './enums';
import { echo, ValidationError } from './errors';

// ---- field checks ----

const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const IPV4_RE = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

/** A required message field (ts-proto leaves an absent sub-message undefined). */
function present<T>(v: T | undefined, field: string): T {
  if (v === undefined || v === null) throw new ValidationError(field, 'required');
  return v;
}

function ipv4Value(s: string): number {
  return s.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** A dotted-quad IPv4 address: four decimal octets 0..255, no leading zeros. */
export function ipv4(s: string, field: string, opts: { allowZero?: boolean } = {}): string {
  if (s === '') throw new ValidationError(field, 'required');
  if (!IPV4_RE.test(s)) throw new ValidationError(field, `${echo(s)} is not a dotted-quad IPv4 address`);
  if (!opts.allowZero && s === '0.0.0.0') throw new ValidationError(field, 'must not be 0.0.0.0');
  return s;
}

/**
 * A dotted quad that can be one host's address on the wire: not in 0.0.0.0/8 ("this network"),
 * 127.0.0.0/8 (loopback), 224.0.0.0/4 (multicast) or 240.0.0.0/4 (reserved, with the limited
 * broadcast 255.255.255.255). For the appliance's own addresses, reals, gateways and neighbours.
 */
export function unicast(s: string, field: string): string {
  ipv4(s, field);
  const first = Number(s.slice(0, s.indexOf('.')));
  const kind =
    first === 0
      ? 'in 0.0.0.0/8 ("this network")'
      : first === 127
        ? 'a loopback address'
        : first >= 240
          ? s === '255.255.255.255'
            ? 'the broadcast address'
            : 'in the reserved 240.0.0.0/4'
          : first >= 224
            ? 'a multicast address'
            : undefined;
  if (kind !== undefined) throw new ValidationError(field, `"${s}" is ${kind}, not a unicast address`);
  return s;
}

/** A unicast, non-zero MAC "aa:bb:cc:dd:ee:ff"; returned in lower case. */
export function mac(s: string, field: string): string {
  if (s === '') throw new ValidationError(field, 'required');
  if (!MAC_RE.test(s)) throw new ValidationError(field, `${echo(s)} is not a MAC address like 02:00:00:00:00:01`);
  if ((parseInt(s.slice(0, 2), 16) & 1) !== 0) throw new ValidationError(field, 'must be a unicast MAC (multicast bit set)');
  if (/^(00:){5}00$/.test(s)) throw new ValidationError(field, 'must not be the zero MAC');
  return s.toLowerCase();
}

/** A port name; whether a port has it is the dataplane's answer (NOT_FOUND). */
export function portName(s: string, field: string): string {
  if (s === '') throw new ValidationError(field, 'required');
  return s;
}

function intIn(n: number, min: number, max: number, field: string): number {
  if (!Number.isInteger(n) || n < min || n > max) throw new ValidationError(field, `must be ${min}..${max}, got ${n}`);
  return n;
}

/** The layer-4 port that goes with a protocol: 0 for ICMP, 1..65535 otherwise. */
export function l4Port(protocol: DpProtocol, n: number, field: string): number {
  if (protocol === 'icmp') {
    if (n !== 0) throw new ValidationError(field, `must be 0 for ICMP, got ${n}`);
    return 0;
  }
  return intIn(n, 1, 65535, field);
}

/** A network prefix: a dotted quad with every bit beyond prefixLength zero. */
export function prefix(s: string, prefixLength: number, field: string, lengthField: string): { prefix: string; prefixLength: number } {
  ipv4(s, field, { allowZero: true });
  intIn(prefixLength, 0, 32, lengthField);
  const hostBits = prefixLength === 32 ? 0 : ipv4Value(s) % 2 ** (32 - prefixLength);
  if (hostBits !== 0) throw new ValidationError(field, `"${s}" has host bits set beyond /${prefixLength}`);
  return { prefix: s, prefixLength };
}

// ---- NetworkService ----

export function createAddress(req: CreateAddressRequest): AddressSpec {
  const a = present(req.address, 'address');
  const address = unicast(a.address, 'address.address');
  const prefixLength = intIn(a.prefixLength, 1, 32, 'address.prefix_length');
  // The directed broadcast of its own subnet (all host bits set) is no host's address.
  if (prefixLength <= 30 && (ipv4Value(address) + 1) % 2 ** (32 - prefixLength) === 0) {
    throw new ValidationError('address.address', `"${address}" is the broadcast address of its subnet /${prefixLength}`);
  }
  return { address, prefixLength, port: portName(a.port, 'address.port') };
}

export function deleteAddress(req: DeleteAddressRequest): string {
  return ipv4(req.address, 'address');
}

export function createRoute(req: CreateRouteRequest): RouteSpec {
  const r = present(req.route, 'route');
  const p = prefix(r.prefix, r.prefixLength, 'route.prefix', 'route.prefix_length');
  const port = portName(r.port, 'route.port');
  if (r.gateway === '0.0.0.0') throw new ValidationError('route.gateway', 'use "" for a connected route, not 0.0.0.0');
  const gateway = r.gateway === '' ? undefined : unicast(r.gateway, 'route.gateway');
  return { ...p, port, gateway };
}

export function deleteRoute(req: DeleteRouteRequest): { prefix: string; prefixLength: number } {
  return prefix(req.prefix, req.prefixLength, 'prefix', 'prefix_length');
}

export function createNeighbor(req: CreateNeighborRequest): NeighborSpec {
  const n = present(req.neighbor, 'neighbor');
  return {
    address: unicast(n.address, 'neighbor.address'),
    mac: mac(n.mac, 'neighbor.mac'),
    port: portName(n.port, 'neighbor.port'),
  };
}

export function deleteNeighbor(req: DeleteNeighborRequest): string {
  return ipv4(req.address, 'address');
}

// ---- LoadBalancerService ----

function serviceKey(k: { protocol: number; vip: string; port: number }, prefix: string): ServiceKey {
  const protocol = protocolFromProto(k.protocol, `${prefix}protocol`);
  return { protocol, vip: ipv4(k.vip, `${prefix}vip`), port: l4Port(protocol, k.port, `${prefix}port`) };
}

/** A service key whose vip may be created: a unicast address. */
function newServiceKey(k: { protocol: number; vip: string; port: number }, prefix: string): ServiceKey {
  const key = serviceKey(k, prefix);
  unicast(key.vip, `${prefix}vip`);
  return key;
}

function key(k: VirtualServiceKey | undefined): ServiceKey {
  return serviceKey(present(k, 'key'), 'key.');
}

/** Prefixes per allow or deny list: DP_MAX_SVC_PREFIXES of native/dp_ctl.h (a linear scan). */
export const MAX_PREFIXES_PER_LIST = 64;

/** A client prefix list: "a.b.c.d/len" each, returned canonical (sorted by address then length, no repeats). */
function prefixList(list: readonly string[], field: string): string[] {
  if (list.length > MAX_PREFIXES_PER_LIST) throw new ValidationError(field, `at most ${MAX_PREFIXES_PER_LIST} prefixes, got ${list.length}`);
  const parsed = list.map((p, i) => {
    const f = `${field}[${i}]`;
    const m = /^([^/]*)\/([0-9]{1,2})$/.exec(p);
    if (m === null) throw new ValidationError(f, `${echo(p)} is not a prefix "a.b.c.d/len"`);
    const len = Number(m[2]);
    if (len > 32) throw new ValidationError(f, `${echo(p)}: prefix length ${len} is more than 32`);
    const addr = ipv4(m[1], f, { allowZero: true });
    prefix(addr, len, f, f);
    return { addr, len, value: ipv4Value(addr) };
  });
  parsed.sort((a, b) => a.value - b.value || a.len - b.len);
  const out: string[] = [];
  for (const p of parsed) {
    const text = `${p.addr}/${p.len}`;
    if (out[out.length - 1] !== text) out.push(text);
  }
  return out;
}

/**
 * Admission limits; `connCapacity` is the conn table's size (every worker's), when known: a
 * max_conns beyond it could never be reached, so it is a mistake.
 */
export function serviceLimits(
  l: { maxConns: number; allow: readonly string[]; deny: readonly string[]; connRate: number; connBurst: number },
  at: string,
  connCapacity = Number.MAX_SAFE_INTEGER,
): ServiceLimits {
  const maxConns = intIn(l.maxConns, 0, 0xffffffff, `${at}max_conns`);
  if (maxConns > connCapacity) throw new ValidationError(`${at}max_conns`, `${maxConns} is more than the conn table holds (${connCapacity}); 0 = no limit`);
  const connRate = intIn(l.connRate, 0, 1000000, `${at}conn_rate`);
  const connBurst = intIn(l.connBurst, 0, 1000000, `${at}conn_burst`);
  // One spelling per state, so GetConfig -> ApplyConfig stays a no-op: no burst without a rate.
  if (connRate > 0 && connBurst === 0) throw new ValidationError(`${at}conn_burst`, 'must be 1..1000000 with a conn_rate');
  if (connRate === 0 && connBurst > 0) throw new ValidationError(`${at}conn_burst`, 'must be 0 without a conn_rate');
  return { maxConns, allow: prefixList(l.allow, `${at}allow`), deny: prefixList(l.deny, `${at}deny`), connRate, connBurst };
}

/**
 * SYN flood defence of a service of protocol `protocol`; `modeField` and `thresholdField` name the
 * two fields. One spelling per state (a threshold only with auto), so GetConfig -> ApplyConfig is a
 * no-op.
 */
export function synProxy(mode: SynProxyMode, threshold: number, protocol: DpProtocol, modeField: string, thresholdField: string): DpSynProxy {
  const m = synProxyModeFromProto(mode, modeField);
  if (m !== 'off' && protocol !== 'tcp') throw new ValidationError(modeField, `a SYN proxy needs a TCP service, not ${protocol.toUpperCase()}`);
  if (m === 'auto') return { mode: m, threshold: intIn(threshold, 1, 0xffffffff, thresholdField) };
  if (threshold !== 0) throw new ValidationError(thresholdField, `must be 0 unless the mode is SYN_PROXY_MODE_AUTO, got ${threshold}`);
  return { mode: m, threshold: 0 };
}

const HEALTH_KINDS = new Map<HealthCheckKind, DpHealthCheckKind>([
  [HealthCheckKind.HEALTH_CHECK_KIND_TCP, 'tcp'],
  [HealthCheckKind.HEALTH_CHECK_KIND_HTTP, 'http'],
  [HealthCheckKind.HEALTH_CHECK_KIND_GRPC, 'grpc'],
  [HealthCheckKind.HEALTH_CHECK_KIND_UDP, 'udp'],
  [HealthCheckKind.HEALTH_CHECK_KIND_ICMP, 'icmp'],
]);
const HEALTH_KIND_VALUES = new Map([...HEALTH_KINDS].map(([k, v]) => [v, k]));

export function healthCheckKindToProto(k: DpHealthCheckKind): HealthCheckKind {
  return HEALTH_KIND_VALUES.get(k)!;
}

/** Health check bounds (health_check.proto). */
export const HEALTH_INTERVAL_MS = { min: 100, max: 3_600_000 };
export const HEALTH_MAX_RISE_FALL = 100;
export const HEALTH_MAX_BYTES = 1024;

/**
 * A service's health check (`at` ends with "health_check."). One spelling per state, so GetConfig ->
 * ApplyConfig stays a no-op: a field that belongs to another kind must be unset.
 */
export function healthCheck(h: HealthCheck, protocol: DpProtocol, at: string): HealthCheckSpec {
  const kind = HEALTH_KINDS.get(h.kind);
  if (kind === undefined) {
    throw new ValidationError(
      `${at}kind`,
      h.kind === HealthCheckKind.HEALTH_CHECK_KIND_UNSPECIFIED
        ? 'required (HEALTH_CHECK_KIND_TCP, _HTTP, _GRPC, _UDP or _ICMP)'
        : `unknown kind ${h.kind as number}`,
    );
  }
  if (h.intervalMs === 0) throw new ValidationError(`${at}interval_ms`, `required: ${HEALTH_INTERVAL_MS.min}..${HEALTH_INTERVAL_MS.max}`);
  const intervalMs = intIn(h.intervalMs, HEALTH_INTERVAL_MS.min, HEALTH_INTERVAL_MS.max, `${at}interval_ms`);
  if (h.timeoutMs === 0) throw new ValidationError(`${at}timeout_ms`, `required: 1..interval_ms (${intervalMs})`);
  if (h.timeoutMs > intervalMs) {
    throw new ValidationError(`${at}timeout_ms`, `${h.timeoutMs} is more than interval_ms (${intervalMs}): a probe must end before the next starts`);
  }
  const rise = intIn(h.rise, 1, HEALTH_MAX_RISE_FALL, `${at}rise`);
  const fall = intIn(h.fall, 1, HEALTH_MAX_RISE_FALL, `${at}fall`);
  const port = intIn(h.port, 0, 65535, `${at}port`);
  if (kind === 'icmp' && port !== 0) throw new ValidationError(`${at}port`, 'must be 0 for ICMP checks');
  if (kind !== 'icmp' && protocol === 'icmp' && port === 0)
    throw new ValidationError(`${at}port`, `required: the reals of an ICMP service have no port to probe with ${kind}`);
  const only = (field: string, set: boolean, k: DpHealthCheckKind) => {
    if (set && kind !== k) throw new ValidationError(`${at}${field}`, `only for ${k.toUpperCase()} checks (this one is ${kind.toUpperCase()})`);
  };
  only('http_path', h.httpPath !== '', 'http');
  only('http_status', h.httpStatus !== 0, 'http');
  only('grpc_service', h.grpcService !== '', 'grpc');
  only('udp_payload', h.udpPayload.length > 0, 'udp');
  only('udp_expect', h.udpExpect.length > 0, 'udp');
  if (kind === 'http') {
    if (h.httpPath === '') throw new ValidationError(`${at}http_path`, 'required for HTTP checks, e.g. "/healthz"');
    if (!h.httpPath.startsWith('/')) throw new ValidationError(`${at}http_path`, `${echo(h.httpPath)} does not start with "/"`);
    if (h.httpPath.length > HEALTH_MAX_BYTES || !/^[\x21-\x7e]+$/.test(h.httpPath)) {
      throw new ValidationError(`${at}http_path`, `must be at most ${HEALTH_MAX_BYTES} printable ASCII characters without spaces, got ${echo(h.httpPath)}`);
    }
    if (h.httpStatus !== 0) intIn(h.httpStatus, 100, 599, `${at}http_status`);
  }
  if (h.grpcService.length > HEALTH_MAX_BYTES) throw new ValidationError(`${at}grpc_service`, `at most ${HEALTH_MAX_BYTES} characters`);
  if (h.udpPayload.length > HEALTH_MAX_BYTES) throw new ValidationError(`${at}udp_payload`, `at most ${HEALTH_MAX_BYTES} bytes, got ${h.udpPayload.length}`);
  if (h.udpExpect.length > HEALTH_MAX_BYTES) throw new ValidationError(`${at}udp_expect`, `at most ${HEALTH_MAX_BYTES} bytes, got ${h.udpExpect.length}`);
  return {
    kind,
    intervalMs,
    timeoutMs: h.timeoutMs,
    rise,
    fall,
    port,
    httpPath: h.httpPath,
    httpStatus: h.httpStatus,
    grpcService: h.grpcService,
    udpPayload: Uint8Array.from(h.udpPayload),
    udpExpect: Uint8Array.from(h.udpExpect),
    closeConns: h.closeConns,
  };
}

/**
 * A client-address mode the protocol can carry: PROXY v1 and TOA are TCP only (a text header and a
 * TCP option), PROXY v2 is TCP or UDP (one header per datagram), ICMP takes none.
 */
export function clientAddress(m: ClientAddressMode, protocol: DpProtocol, field: string): DpClientAddressMode {
  const mode = clientAddressFromProto(m, field);
  if (mode === 'none') return mode;
  const what = mode === 'proxy_v2' ? 'PROXY protocol v2' : mode === 'proxy_v1' ? 'PROXY protocol v1' : 'TOA';
  if (protocol === 'icmp') throw new ValidationError(field, `${what} is not for ICMP services (CLIENT_ADDRESS_MODE_NONE only)`);
  if (protocol === 'udp' && mode !== 'proxy_v2') throw new ValidationError(field, `${what} is for TCP services only (UDP services take PROXY protocol v2)`);
  return mode;
}

export function createVirtualService(req: CreateVirtualServiceRequest, connCapacity?: number): ServiceSpec {
  const s = present(req.virtualService, 'virtual_service');
  const k = newServiceKey(s, 'virtual_service.');
  const scheduler: DpScheduler = schedulerFromProto(s.scheduler, 'virtual_service.scheduler');
  if (s.reals.length > 0) throw new ValidationError('virtual_service.reals', 'must be empty: set reals with SetReals');
  const hc = s.healthCheck === undefined || s.healthCheck === null ? undefined : healthCheck(s.healthCheck, k.protocol, 'virtual_service.health_check.');
  return {
    ...k,
    scheduler,
    seed: s.seed,
    limits: serviceLimits(s, 'virtual_service.', connCapacity),
    synProxy: synProxy(s.synProxy, s.synProxyThreshold, k.protocol, 'virtual_service.syn_proxy', 'virtual_service.syn_proxy_threshold'),
    clientAddress: clientAddress(s.clientAddress, k.protocol, 'virtual_service.client_address'),
    ...(hc === undefined ? {} : { healthCheck: hc }),
  };
}

export function getVirtualService(req: GetVirtualServiceRequest): ServiceKey {
  return key(req.key);
}

export function deleteVirtualService(req: DeleteVirtualServiceRequest): ServiceKey {
  return key(req.key);
}

export function updateVirtualService(
  req: UpdateVirtualServiceRequest,
  connCapacity?: number,
): {
  key: ServiceKey;
  scheduler: DpScheduler;
  seed: number;
  limits: ServiceLimits | undefined;
  healthCheck: HealthCheckSpec | null | undefined;
  clientAddress: DpClientAddressMode | undefined;
  synProxy: DpSynProxy | undefined;
} {
  const k = key(req.key);
  const given = req.healthCheck !== undefined && req.healthCheck !== null;
  if (given && req.removeHealthCheck) throw new ValidationError('remove_health_check', 'not together with health_check');
  const sp = req.synProxy;
  return {
    key: k,
    scheduler: schedulerFromProto(req.scheduler, 'scheduler'),
    seed: req.seed,
    limits: req.limits === undefined || req.limits === null ? undefined : serviceLimits(req.limits, 'limits.', connCapacity),
    healthCheck: req.removeHealthCheck ? null : given ? healthCheck(req.healthCheck!, k.protocol, 'health_check.') : undefined,
    clientAddress: req.clientAddress === undefined || req.clientAddress === null ? undefined : clientAddress(req.clientAddress, k.protocol, 'client_address'),
    synProxy: sp === undefined || sp === null ? undefined : synProxy(sp.mode, sp.threshold, k.protocol, 'syn_proxy.mode', 'syn_proxy.threshold'),
  };
}

function real(r: Real, protocol: DpProtocol, field: string): RealSpec {
  return {
    address: unicast(r.address, `${field}.address`),
    port: l4Port(protocol, r.port, `${field}.port`),
    weight: intIn(r.weight, 0, 65535, `${field}.weight`),
  };
}

export function setReals(req: SetRealsRequest): { key: ServiceKey; reals: RealSpec[] } {
  const k = key(req.key);
  const seen = new Map<string, number>();
  const reals = req.reals.map((r, i) => {
    const spec = real(r, k.protocol, `reals[${i}]`);
    const id = `${spec.address}:${spec.port}`;
    const first = seen.get(id);
    if (first !== undefined) throw new ValidationError(`reals[${i}]`, `repeats reals[${first}] (${id})`);
    seen.set(id, i);
    return spec;
  });
  return { key: k, reals };
}

export function createLocalAddress(req: CreateLocalAddressRequest): LocalAddressSpec {
  const l = present(req.localAddress, 'local_address');
  return { address: unicast(l.address, 'local_address.address'), port: portName(l.port, 'local_address.port') };
}

export function deleteLocalAddress(req: DeleteLocalAddressRequest): string {
  return ipv4(req.address, 'address');
}

const TIMEOUT_FIELDS: readonly [keyof DpTimeouts, string][] = [
  ['tcpSyn', 'tcp_syn'],
  ['tcpEstablished', 'tcp_established'],
  ['tcpFin', 'tcp_fin'],
  ['tcpClose', 'tcp_close'],
  ['udp', 'udp'],
  ['icmp', 'icmp'],
];

/** Timeout bounds in seconds (7 days), as the dataplane enforces them. */
export const TIMEOUT_MAX_S = 604800;

export function setTimeouts(req: SetTimeoutsRequest): Partial<DpTimeouts> {
  const t = present(req.timeouts, 'timeouts');
  const out: Partial<DpTimeouts> = {};
  for (const [k, name] of TIMEOUT_FIELDS) {
    const v = t[k];
    if (v !== undefined) out[k] = intIn(v, 1, TIMEOUT_MAX_S, `timeouts.${name}`);
  }
  return out;
}

// ---- PathService ----

/**
 * A google.protobuf.Duration as the proto defines it: nanos 0..999999999 and seconds >= 0 (no
 * request here takes a negative duration). A nanos of 1e9 or more is not a longer duration but a
 * malformed one.
 */
export function duration(d: { seconds: bigint; nanos: number }, field: string): { seconds: bigint; nanos: number } {
  if (d.seconds < 0n) throw new ValidationError(`${field}.seconds`, `must not be negative, got ${d.seconds}`);
  intIn(d.nanos, 0, 999_999_999, `${field}.nanos`);
  return d;
}

/** WatchCounters: the interval, when given, is a well-formed Duration (its range is the stream's to check). */
export function watchCounters(req: WatchCountersRequest): void {
  if (req.interval !== undefined) duration(req.interval, 'interval');
}

export function setSymmetricMode(req: SetSymmetricModeRequest): { protocol: DpProtocol; enabled: boolean } {
  return { protocol: protocolFromProto(req.protocol, 'protocol'), enabled: req.enabled };
}

// ---- ConnService ----

/**
 * A validated ConnFilter: a conn matches when its value is in every non-empty set (OR within a
 * set, AND across sets).
 */
export interface ConnQuery {
  protocols: ReadonlySet<DpProtocol>;
  clients: ReadonlySet<string>;
  vips: ReadonlySet<string>;
  reals: ReadonlySet<string>;
  states: ReadonlySet<TcpState>;
}

/** The fields of a conn a ConnQuery looks at (a ConnView, or an event the hub keeps). */
export type ConnKey = Pick<ConnView, 'protocol' | 'state' | 'client' | 'vip' | 'real'>;

function inSet<T>(set: ReadonlySet<T>, v: T): boolean {
  return set.size === 0 || set.has(v);
}

export function matchConn(q: ConnQuery, c: ConnKey): boolean {
  return inSet(q.protocols, c.protocol) && inSet(q.clients, c.client) && inSet(q.vips, c.vip) && inSet(q.reals, c.real) && inSet(q.states, c.state);
}

export function isEmptyQuery(q: ConnQuery): boolean {
  return q.protocols.size + q.clients.size + q.vips.size + q.reals.size + q.states.size === 0;
}

export function connFilter(f: ConnFilter | undefined, field: string): ConnQuery {
  const addrs = (list: string[] | undefined, name: string) => new Set((list ?? []).map((a, i) => ipv4(a, `${field}.${name}[${i}]`)));
  return {
    protocols: new Set((f?.protocols ?? []).map((p, i) => protocolFromProto(p, `${field}.protocols[${i}]`))),
    clients: addrs(f?.clients, 'clients'),
    vips: addrs(f?.vips, 'vips'),
    reals: addrs(f?.reals, 'reals'),
    states: new Set((f?.states ?? []).map((st, i) => connStateFromProto(st, `${field}.states[${i}]`))),
  };
}

/** Where a ListConns page starts: a worker lcore and a position in its table. */
export interface PagePosition {
  worker: number;
  cursor: number;
}

export const LIST_CONNS_DEFAULT_PAGE = 100;
export const LIST_CONNS_MAX_PAGE = 10000;

/** Short digest of a query, so a page token only continues the listing it came from. */
function queryDigest(q: ConnQuery): string {
  const canon = [q.protocols, q.clients, q.vips, q.reals, q.states].map((set) => [...set].sort());
  return createHash('sha256').update(JSON.stringify(canon)).digest('base64url').slice(0, 11);
}

/** An opaque token: version, worker, cursor, query digest. */
export function encodePageToken(pos: PagePosition, q: ConnQuery): string {
  return Buffer.from(`c1.${pos.worker}.${pos.cursor}.${queryDigest(q)}`).toString('base64url');
}

function decodePageToken(token: string, q: ConnQuery): PagePosition {
  const m = /^c1\.(\d{1,4})\.(\d{1,10})\.([A-Za-z0-9_-]{11})$/.exec(Buffer.from(token, 'base64url').toString('latin1'));
  if (m === null || Number(m[2]) > 0xffffffff) throw new ValidationError('page_token', 'not a token this server issued');
  if (m[3] !== queryDigest(q)) throw new ValidationError('page_token', 'was issued for another filter: page with the filter of the first request');
  return { worker: Number(m[1]), cursor: Number(m[2]) };
}

export function listConns(req: ListConnsRequest): { query: ConnQuery; pageSize: number; start: PagePosition } {
  const query = connFilter(req.filter, 'filter');
  const pageSize = req.pageSize === 0 ? LIST_CONNS_DEFAULT_PAGE : Math.min(req.pageSize, LIST_CONNS_MAX_PAGE);
  const start = req.pageToken === '' ? { worker: 0, cursor: 0 } : decodePageToken(req.pageToken, query);
  return { query, pageSize, start };
}

/** DeleteConns: the dataplane filter ({} with all = true removes every conn). */
export function getConn(req: GetConnRequest): DpConnKey {
  const protocol = protocolFromProto(req.protocol, 'protocol');
  const client = ipv4(req.client, 'client');
  // Echo id 0 is legal on the wire; a port 0 is not.
  const clientPort = intIn(req.clientPort, protocol === 'icmp' ? 0 : 1, 65535, 'client_port');
  const vip = ipv4(req.vip, 'vip');
  if (protocol === 'icmp' && req.vipPort !== 0) throw new ValidationError('vip_port', `must be 0 for ICMP, got ${req.vipPort}`);
  const vipPort = protocol === 'icmp' ? 0 : intIn(req.vipPort, 1, 65535, 'vip_port');
  return { protocol, client, clientPort, vip, vipPort };
}

export function deleteConns(req: DeleteConnsRequest): Partial<DpConnFilter> {
  const f: Partial<DpConnFilter> = {};
  if (req.protocol !== undefined) f.protocol = protocolFromProto(req.protocol, 'protocol');
  const icmp = f.protocol === 'icmp';
  const addr = (v: string, name: string) => (v === '' ? undefined : ipv4(v, name));
  const port = (v: number, name: string, icmpMustBeZero: boolean) => {
    if (v === 0) return undefined;
    if (icmp && icmpMustBeZero) throw new ValidationError(name, `must be 0 for ICMP, got ${v}`);
    return intIn(v, 1, 65535, name);
  };
  const fields: [keyof DpConnFilter, string | number | undefined][] = [
    ['client', addr(req.client, 'client')],
    ['clientPort', port(req.clientPort, 'client_port', false)],
    ['vip', addr(req.vip, 'vip')],
    ['vipPort', port(req.vipPort, 'vip_port', true)],
    ['real', addr(req.real, 'real')],
    ['realPort', port(req.realPort, 'real_port', true)],
  ];
  for (const [k, v] of fields) if (v !== undefined) (f as Record<string, unknown>)[k] = v;
  const empty = Object.keys(f).length === 0;
  if (req.all && !empty) throw new ValidationError('all', 'must not be combined with filter fields (all = true removes every conn)');
  if (!req.all && empty) throw new ValidationError('all', 'the filter is empty: set at least one field, or all = true to remove every conn');
  return f;
}

export interface WatchSpec {
  follow: boolean;
  sinceSeq?: bigint;
  initialState: boolean;
  query: ConnQuery;
  /** Empty: every type. */
  types: ReadonlySet<DpEventType>;
  /** WatchConnEventBatches: messages per batch. */
  maxBatch?: number;
}

/** Messages per WatchConnEventBatches batch: the default (max_batch 0) and the limit. */
export const EVENT_BATCH_DEFAULT = 1024;
export const EVENT_BATCH_MAX = 8192;

export function watchConnEventBatches(req: WatchConnEventBatchesRequest): WatchSpec {
  if (req.maxBatch > EVENT_BATCH_MAX) throw new ValidationError('max_batch', `${req.maxBatch} is over the limit of ${EVENT_BATCH_MAX} messages`);
  return { ...watchConnEvents(req), maxBatch: req.maxBatch === 0 ? EVENT_BATCH_DEFAULT : req.maxBatch };
}

export function watchConnEvents(req: WatchConnEventsRequest): WatchSpec {
  if (req.initialState && req.sinceSeq !== undefined) {
    throw new ValidationError('initial_state', 'cannot be combined with since_seq (a snapshot already is the current state)');
  }
  if (!req.follow && req.sinceSeq === undefined && !req.initialState) {
    throw new ValidationError('follow', 'nothing to send: set follow, since_seq or initial_state');
  }
  return {
    follow: req.follow,
    sinceSeq: req.sinceSeq,
    initialState: req.initialState,
    query: connFilter(req.filter, 'filter'),
    types: new Set(req.types.map((t, i) => eventTypeFromProto(t, `types[${i}]`))),
  };
}
