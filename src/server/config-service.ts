/**
 * retrace.v1.ConfigService: the desired state as one document, applied as a diff, and drain.
 *
 * ApplyConfig runs in four steps, each its own function:
 *   validateConfig (pure)  the whole document, each entry and then the whole (invariants.ts, the rules
 *                          every unary call obeys too): INVALID_ARGUMENT naming `config.<path>`, or
 *                          RESOURCE_EXHAUSTED naming the entry beyond a table size; nothing changed yet
 *   readState              the current desired state, from Dataplane list/get calls only
 *   planConfig (pure)      current + desired → ordered steps, each carrying the diff entries it makes
 *   execute                one Dataplane call per step; a failure stops there and reports what was made
 * Everything runs synchronously on the control thread (every Dataplane call is synchronous), so no
 * other RPC can interleave with an ApplyConfig.
 *
 * Drain keeps every real at weight 0 in the dataplane and remembers the weights (DrainState);
 * readState shows the remembered weights, so GetConfig and the diff see the configured state and
 * Undrain puts it back.
 */
import { status, type sendUnaryData, type ServerUnaryCall, type ServiceError } from '@grpc/grpc-js';
import {
  DataplaneError,
  PROTOCOLS,
  serviceKeyString,
  tableLimits,
  type AddressSpec,
  type Dataplane,
  type LocalAddressSpec,
  type NeighborSpec,
  type Protocol,
  type RealSpec,
  type RouteSpec,
  type Scheduler,
  type ServiceKey,
  type ServiceSpec,
  type TableLimits,
  type Timeouts,
} from '../dataplane';
import {
  ConfigDiff,
  type ApplyConfigRequest,
  type ApplyConfigResponse,
  type Config,
  type ConfigServiceServer,
  type ResourceChanges,
} from '../gen/retrace/v1/config';
import { APPLIED_METADATA_KEY } from '../api/metadata';
import { LocalAddress, Real, VirtualService } from '../gen/retrace/v1/balancer';
import type { Logger } from '../log';
import { protocolToProto, schedulerToProto } from './enums';
import { boundDetails, echo, StatusError, ValidationError, toStatus } from './errors';
import { checkState, refPath, StateViolation } from './invariants';
import { unary } from './unary';
import * as v from './validate';

// ------------------------------------------------------------------------------------------ state

export interface ServiceState extends ServiceSpec {
  /** The complete set of reals (order does not matter). */
  reals: RealSpec[];
}

/** The configuration as the dataplane holds it (symmetric mode and every timeout included). */
export interface ConfigState {
  addresses: AddressSpec[];
  /** Static routes only: connected routes follow the addresses. */
  routes: RouteSpec[];
  /** Static neighbours only. */
  neighbors: NeighborSpec[];
  localAddresses: LocalAddressSpec[];
  services: ServiceState[];
  symmetric: Record<Protocol, boolean>;
  timeouts: Timeouts;
}

/** A validated ApplyConfig document: like ConfigState, but symmetric and timeouts may be left out. */
export interface DesiredConfig extends Omit<ConfigState, 'symmetric' | 'timeouts'> {
  symmetric?: Record<Protocol, boolean>;
  timeouts?: Partial<Timeouts>;
}

/** What Drain remembered: service key → real key ("address:port") → weight before the drain. */
export class DrainState {
  drained = false;
  readonly weights = new Map<string, Map<string, number>>();
}

export function realKey(r: { address: string; port: number }): string {
  return `${r.address}:${r.port}`;
}

/**
 * The reals as configured: a real at weight 0 gets back the weight Drain remembered for it; a real
 * given a non-zero weight since the drain keeps that weight.
 */
export function restoreWeights(live: readonly RealSpec[], remembered: ReadonlyMap<string, number> | undefined): RealSpec[] {
  return live.map((r) => {
    const w = r.weight === 0 ? remembered?.get(realKey(r)) : undefined;
    return { address: r.address, port: r.port, weight: w ?? r.weight };
  });
}

/** Numeric order of dotted quads. */
function ipOrder(a: string, b: string): number {
  const n = (s: string) => s.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  return n(a) - n(b);
}

/** The current configuration, read through Dataplane list/get calls only. */
export function readState(dp: Dataplane, drain: DrainState): ConfigState {
  return {
    addresses: dp.listAddresses(),
    routes: dp
      .listRoutes()
      .filter((r) => !r.connected)
      .map((r) => ({ prefix: r.prefix, prefixLength: r.prefixLength, port: r.port, gateway: r.gateway })),
    neighbors: dp
      .listNeighbors()
      .filter((n) => n.static)
      .map((n) => ({ address: n.address, mac: n.mac, port: n.port }))
      .sort((a, b) => ipOrder(a.address, b.address)),
    localAddresses: dp.listLocalAddresses().map((l) => ({ address: l.address, port: l.port })),
    services: dp.listServices().map((s) => ({
      protocol: s.protocol,
      vip: s.vip,
      port: s.port,
      scheduler: s.scheduler,
      seed: s.seed,
      reals: restoreWeights(s.reals, drain.weights.get(serviceKeyString(s))),
    })),
    symmetric: dp.symmetric(),
    timeouts: dp.timeouts(),
  };
}

/** ConfigState → the Config message GetConfig answers (output-only fields 0). */
export function toConfigMessage(s: ConfigState): Config {
  return {
    addresses: s.addresses.map((a) => ({ address: a.address, prefixLength: a.prefixLength, port: a.port })),
    routes: s.routes.map((r) => ({ prefix: r.prefix, prefixLength: r.prefixLength, port: r.port, gateway: r.gateway ?? '', connected: false })),
    neighbors: s.neighbors.map((n) => ({ address: n.address, mac: n.mac, port: n.port, static: false, ageSeconds: 0 })),
    localAddresses: s.localAddresses.map((l) => ({ ...LocalAddress.create(), address: l.address, port: l.port })),
    virtualServices: s.services.map((svc) => ({
      ...VirtualService.create(),
      protocol: protocolToProto(svc.protocol),
      vip: svc.vip,
      port: svc.port,
      scheduler: schedulerToProto(svc.scheduler),
      seed: svc.seed,
      reals: svc.reals.map((r) => ({ ...Real.create(), address: r.address, port: r.port, weight: r.weight })),
    })),
    symmetric: { ...s.symmetric },
    timeouts: { ...s.timeouts },
  };
}

// ------------------------------------------------------------------------------------- validation

/** Runs a request validator and re-roots the field it names: `address.port` → `config.addresses[3].port`. */
function at<T>(from: string, to: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ValidationError && (e.field === from || e.field.startsWith(`${from}.`) || e.field.startsWith(`${from}[`))) {
      throw new ValidationError(to + e.field.slice(from.length), e.message.slice(e.field.length + 2));
    }
    throw e;
  }
}

/**
 * Validates a whole ApplyConfig document against the appliance's port names and table sizes:
 * every entry with the request validators of the unary calls, then the whole with checkState, the
 * rules every unary call is checked against too. Throws ValidationError (INVALID_ARGUMENT) naming
 * the first bad field as `config.<list>[i].<field>`, or StatusError RESOURCE_EXHAUSTED naming the
 * first entry beyond a table's size; returns the desired state in dataplane terms.
 */
export function validateConfig(cfg: Config | undefined, portNames: readonly string[], limits: TableLimits = tableLimits()): DesiredConfig {
  if (cfg === undefined || cfg === null) throw new ValidationError('config', 'required');
  const knownPort = (name: string, field: string): void => {
    if (!portNames.includes(name)) throw new ValidationError(field, `no port named ${echo(name)} (ports: ${portNames.join(', ')})`);
  };

  const addresses = cfg.addresses.map((a, i) => {
    const f = `config.addresses[${i}]`;
    const spec = at('address', f, () => v.createAddress({ address: a }));
    knownPort(spec.port, `${f}.port`);
    return spec;
  });

  const routes = cfg.routes.map((r, i) => {
    const f = `config.routes[${i}]`;
    const spec = at('route', f, () => v.createRoute({ route: r }));
    if (r.connected) throw new ValidationError(`${f}.connected`, 'must be false: connected routes come from the addresses');
    knownPort(spec.port, `${f}.port`);
    return spec;
  });

  const neighbors = cfg.neighbors.map((n, i) => {
    const f = `config.neighbors[${i}]`;
    const spec = at('neighbor', f, () => v.createNeighbor({ neighbor: n }));
    knownPort(spec.port, `${f}.port`);
    return spec;
  });

  const localAddresses = cfg.localAddresses.map((l, i) => {
    const f = `config.local_addresses[${i}]`;
    const spec = at('local_address', f, () => v.createLocalAddress({ localAddress: l }));
    knownPort(spec.port, `${f}.port`);
    return spec;
  });

  const services = cfg.virtualServices.map((s, i) => {
    const f = `config.virtual_services[${i}]`;
    const spec = at('virtual_service', f, () => v.createVirtualService({ virtualService: { ...s, reals: [] } }));
    // Before validating each real: a million of them would take a while to refuse.
    if (s.reals.length > limits.realsPerService) throw new ValidationError(`${f}.reals`, `at most ${limits.realsPerService} reals, got ${s.reals.length}`);
    const { reals } = at('reals', `${f}.reals`, () => v.setReals({ key: { protocol: s.protocol, vip: s.vip, port: s.port }, reals: s.reals }));
    return { ...spec, reals };
  });

  try {
    checkState({ addresses, routes, neighbors, localAddresses, services }, limits);
  } catch (e) {
    if (!(e instanceof StateViolation)) throw e;
    const field = `config.${refPath(e.at)}`;
    const reason = e.reason(e.other === undefined ? '' : `config.${refPath(e.other)}`);
    throw e.kind === 'limit' ? new StatusError(status.RESOURCE_EXHAUSTED, field, reason) : new ValidationError(field, reason);
  }

  const timeouts = cfg.timeouts === undefined ? undefined : at('timeouts', 'config.timeouts', () => v.setTimeouts({ timeouts: cfg.timeouts }));
  const symmetric = cfg.symmetric === undefined ? undefined : { tcp: cfg.symmetric.tcp, udp: cfg.symmetric.udp, icmp: cfg.symmetric.icmp };
  return { addresses, routes, neighbors, localAddresses, services, symmetric, timeouts };
}

// --------------------------------------------------------------------------------------- planning

export type ResourceKind = 'addresses' | 'routes' | 'neighbors' | 'localAddresses' | 'virtualServices' | 'reals' | 'symmetric' | 'timeouts';
export const RESOURCE_KINDS: readonly ResourceKind[] = [
  'addresses',
  'routes',
  'neighbors',
  'localAddresses',
  'virtualServices',
  'reals',
  'symmetric',
  'timeouts',
];
export type ChangeKind = 'created' | 'updated' | 'deleted';
/** One diff entry: kind of resource, what happened, the resource's key. */
export type Change = [ResourceKind, ChangeKind, string];

/** One Dataplane call, with the diff entries it makes. */
export type Step = { changes: Change[] } & (
  | { op: 'deleteService'; key: ServiceKey }
  | { op: 'deleteLocalAddress'; address: string }
  | { op: 'deleteRoute'; prefix: string; prefixLength: number }
  | { op: 'deleteNeighbor'; address: string }
  | { op: 'deleteAddress'; address: string }
  | { op: 'addAddress'; address: AddressSpec }
  | { op: 'addRoute'; route: RouteSpec }
  | { op: 'addNeighbor'; neighbor: NeighborSpec }
  | { op: 'addLocalAddress'; localAddress: LocalAddressSpec }
  | { op: 'addService'; service: ServiceSpec }
  | { op: 'updateService'; key: ServiceKey; scheduler: Scheduler; seed: number }
  | { op: 'setReals'; key: ServiceKey; reals: RealSpec[] }
  | { op: 'setSymmetric'; protocol: Protocol; enabled: boolean }
  | { op: 'setTimeouts'; timeouts: Partial<Timeouts> }
);

/** A human description of a step, for error details ("creating route 10.0.0.0/8"). */
export function describeStep(s: Step): string {
  switch (s.op) {
    case 'deleteService':
      return `deleting virtual service ${serviceKeyString(s.key)}`;
    case 'deleteLocalAddress':
      return `deleting local address ${s.address}`;
    case 'deleteRoute':
      return `deleting route ${s.prefix}/${s.prefixLength}`;
    case 'deleteNeighbor':
      return `deleting neighbor ${s.address}`;
    case 'deleteAddress':
      return `deleting address ${s.address}`;
    case 'addAddress':
      return `creating address ${s.address.address}`;
    case 'addRoute':
      return `creating route ${s.route.prefix}/${s.route.prefixLength}`;
    case 'addNeighbor':
      return `setting neighbor ${s.neighbor.address}`;
    case 'addLocalAddress':
      return `creating local address ${s.localAddress.address}`;
    case 'addService':
      return `creating virtual service ${serviceKeyString(s.service)}`;
    case 'updateService':
      return `updating virtual service ${serviceKeyString(s.key)}`;
    case 'setReals':
      return `setting the reals of ${serviceKeyString(s.key)}`;
    case 'setSymmetric':
      return `setting symmetric mode of ${s.protocol}`;
    case 'setTimeouts':
      return 'setting timeouts';
  }
}

const routeKey = (r: { prefix: string; prefixLength: number }) => `${r.prefix}/${r.prefixLength}`;
const byKey = <T>(items: readonly T[], key: (t: T) => string) => new Map(items.map((t) => [key(t), t]));

const TIMEOUT_NAMES: Record<keyof Timeouts, string> = {
  tcpSyn: 'tcp_syn',
  tcpEstablished: 'tcp_established',
  tcpFin: 'tcp_fin',
  tcpClose: 'tcp_close',
  udp: 'udp',
  icmp: 'icmp',
};

/**
 * Keyed diff of one kind: deletions of keys that are gone or changed (`same` false), creations of
 * new or changed ones, in the desired list's order. A changed resource is deleted, then created:
 * its two entries fold into `updated` (foldChanges).
 */
function recreateDiff<T>(
  current: readonly T[],
  desired: readonly T[],
  key: (t: T) => string,
  same: (a: T, b: T) => boolean,
): { deletes: [string, T][]; creates: [string, T][] } {
  const want = byKey(desired, key);
  const have = byKey(current, key);
  const deletes: [string, T][] = [];
  const creates: [string, T][] = [];
  for (const [k, c] of have) {
    const d = want.get(k);
    if (d === undefined || !same(c, d)) deletes.push([k, c]);
  }
  for (const [k, d] of want) {
    const c = have.get(k);
    if (c === undefined || !same(c, d)) creates.push([k, d]);
  }
  return { deletes, creates };
}

/** Per-real diff of one service's reals; empty when the sets (with weights) are equal. */
export function realsDiff(svc: string, current: readonly RealSpec[], desired: readonly RealSpec[]): Change[] {
  const have = byKey(current, realKey);
  const want = byKey(desired, realKey);
  const out: Change[] = [];
  for (const r of [...desired].sort(realOrder)) {
    const c = have.get(realKey(r));
    if (c === undefined) out.push(['reals', 'created', `${svc} ${realKey(r)}`]);
    else if (c.weight !== r.weight) out.push(['reals', 'updated', `${svc} ${realKey(r)}`]);
  }
  for (const r of [...current].sort(realOrder)) if (!want.has(realKey(r))) out.push(['reals', 'deleted', `${svc} ${realKey(r)}`]);
  return out;
}

/** Canonical real order: address, then port (the dataplane's). */
function realOrder(a: RealSpec, b: RealSpec): number {
  return ipOrder(a.address, b.address) || a.port - b.port;
}

/**
 * The steps that turn `current` into `desired`: every deletion first (services, local addresses,
 * routes, neighbours, addresses), then creations and updates (routes, addresses, neighbours, local
 * addresses, services with their reals, symmetric mode, timeouts), so an address can change role
 * in one call. Pure.
 */
export function planConfig(current: ConfigState, desired: DesiredConfig): Step[] {
  const steps: Step[] = [];

  const addr = recreateDiff(current.addresses, desired.addresses, (a) => a.address, (a, b) => a.prefixLength === b.prefixLength && a.port === b.port);
  const route = recreateDiff(current.routes, desired.routes, routeKey, (a, b) => a.port === b.port && (a.gateway ?? '') === (b.gateway ?? ''));
  // A neighbour is replaced in place by CreateNeighbor: no deletion for a changed one.
  const neighWant = byKey(desired.neighbors, (n) => n.address);
  const neighHave = byKey(current.neighbors, (n) => n.address);
  const lip = recreateDiff(current.localAddresses, desired.localAddresses, (l) => l.address, (a, b) => a.port === b.port);
  const svcWant = byKey(desired.services, serviceKeyString);
  const svcHave = byKey(current.services, serviceKeyString);

  // ---- deletions
  for (const [k, s] of svcHave) {
    if (!svcWant.has(k)) steps.push({ op: 'deleteService', key: keyOf(s), changes: [['virtualServices', 'deleted', k], ...realsDiff(k, s.reals, [])] });
  }
  for (const [k] of lip.deletes) steps.push({ op: 'deleteLocalAddress', address: k, changes: [['localAddresses', 'deleted', k]] });
  for (const [k, r] of route.deletes) steps.push({ op: 'deleteRoute', prefix: r.prefix, prefixLength: r.prefixLength, changes: [['routes', 'deleted', k]] });
  for (const [k] of neighHave) if (!neighWant.has(k)) steps.push({ op: 'deleteNeighbor', address: k, changes: [['neighbors', 'deleted', k]] });
  for (const [k] of addr.deletes) steps.push({ op: 'deleteAddress', address: k, changes: [['addresses', 'deleted', k]] });

  // ---- creations and updates
  // Routes before addresses. (A static route for an address's own subnet takes the place of its
  // connected route in either order; this order just installs it once instead of twice.)
  for (const [k, r] of route.creates) steps.push({ op: 'addRoute', route: r, changes: [['routes', 'created', k]] });
  for (const [k, a] of addr.creates) steps.push({ op: 'addAddress', address: a, changes: [['addresses', 'created', k]] });
  for (const [k, n] of neighWant) {
    const c = neighHave.get(k);
    if (c === undefined) steps.push({ op: 'addNeighbor', neighbor: n, changes: [['neighbors', 'created', k]] });
    else if (c.mac !== n.mac || c.port !== n.port) steps.push({ op: 'addNeighbor', neighbor: n, changes: [['neighbors', 'updated', k]] });
  }
  for (const [k, l] of lip.creates) steps.push({ op: 'addLocalAddress', localAddress: l, changes: [['localAddresses', 'created', k]] });
  for (const [k, s] of svcWant) {
    const c = svcHave.get(k);
    if (c === undefined) {
      steps.push({ op: 'addService', service: specOf(s), changes: [['virtualServices', 'created', k]] });
      if (s.reals.length > 0) steps.push({ op: 'setReals', key: keyOf(s), reals: s.reals, changes: realsDiff(k, [], s.reals) });
      continue;
    }
    if (c.scheduler !== s.scheduler || c.seed !== s.seed) {
      steps.push({ op: 'updateService', key: keyOf(s), scheduler: s.scheduler, seed: s.seed, changes: [['virtualServices', 'updated', k]] });
    }
    const reals = realsDiff(k, c.reals, s.reals);
    if (reals.length > 0) steps.push({ op: 'setReals', key: keyOf(s), reals: s.reals, changes: reals });
  }
  if (desired.symmetric !== undefined) {
    for (const p of PROTOCOLS) {
      if (desired.symmetric[p] !== current.symmetric[p]) {
        steps.push({ op: 'setSymmetric', protocol: p, enabled: desired.symmetric[p], changes: [['symmetric', 'updated', p]] });
      }
    }
  }
  if (desired.timeouts !== undefined) {
    const changed: Partial<Timeouts> = {};
    const changes: Change[] = [];
    for (const [k, name] of Object.entries(TIMEOUT_NAMES) as [keyof Timeouts, string][]) {
      const want = desired.timeouts[k];
      if (want !== undefined && want !== current.timeouts[k]) {
        changed[k] = want;
        changes.push(['timeouts', 'updated', name]);
      }
    }
    if (changes.length > 0) steps.push({ op: 'setTimeouts', timeouts: changed, changes });
  }
  return steps;
}

function keyOf(k: ServiceKey): ServiceKey {
  return { protocol: k.protocol, vip: k.vip, port: k.port };
}

function specOf(s: ServiceSpec): ServiceSpec {
  return { protocol: s.protocol, vip: s.vip, port: s.port, scheduler: s.scheduler, seed: s.seed };
}

const emptyChanges = (): ResourceChanges => ({ created: [], updated: [], deleted: [], createdCount: 0, updatedCount: 0, deletedCount: 0 });

/**
 * Diff entries → ConfigDiff. A key deleted and then created again (a re-created address, route or
 * local address) is one `updated`; a deletion whose creation never happened (a failure in between)
 * stays `deleted`, which is what the dataplane then holds.
 */
export function foldChanges(changes: readonly Change[]): ConfigDiff {
  const diff = ConfigDiff.create();
  for (const kind of RESOURCE_KINDS) diff[kind] = emptyChanges();
  for (const [kind, what, key] of changes) {
    const c = diff[kind]!;
    if (what === 'created') {
      const i = c.deleted.indexOf(key);
      if (i >= 0) {
        c.deleted.splice(i, 1);
        c.updated.push(key);
        continue;
      }
    }
    c[what].push(key);
  }
  for (const kind of RESOURCE_KINDS) {
    const c = diff[kind]!;
    c.createdCount = c.created.length;
    c.updatedCount = c.updated.length;
    c.deletedCount = c.deleted.length;
  }
  return diff;
}

/** Keys the `retrace-applied-bin` trailer carries at most (with ~60-byte keys: ~2 KiB). */
export const APPLIED_TRAILER_MAX_KEYS = 32;

/**
 * A diff cut to its first `maxKeys` keys (in kind order: created, updated, deleted), counts kept,
 * `truncated` set when keys were left out. For the trailer of a failed ApplyConfig: a status with
 * tens of kilobytes of trailers never reaches grpc-js clients (the HTTP/2 stream stalls until
 * their deadline) and C-core clients refuse more than 8 KiB of metadata.
 */
export function boundDiff(d: ConfigDiff, maxKeys = APPLIED_TRAILER_MAX_KEYS): ConfigDiff {
  const out = ConfigDiff.create();
  let room = maxKeys;
  for (const kind of RESOURCE_KINDS) {
    const c = d[kind];
    if (c === undefined) continue;
    const take = (keys: string[]) => {
      const kept = keys.slice(0, Math.max(0, room));
      room -= kept.length;
      if (kept.length < keys.length) out.truncated = true;
      return kept;
    };
    out[kind] = { created: take(c.created), updated: take(c.updated), deleted: take(c.deleted), createdCount: c.createdCount, updatedCount: c.updatedCount, deletedCount: c.deletedCount };
  }
  return out;
}

/** Total entries of a diff. */
export function diffSize(d: ConfigDiff): number {
  return RESOURCE_KINDS.reduce((n, k) => n + (d[k] ? d[k]!.created.length + d[k]!.updated.length + d[k]!.deleted.length : 0), 0);
}

/** "addresses: 1 created, 2 deleted; reals: 1 updated" or "nothing". */
export function summarizeDiff(d: ConfigDiff): string {
  const parts: string[] = [];
  for (const kind of RESOURCE_KINDS) {
    const c = d[kind];
    if (c === undefined) continue;
    const n = (['created', 'updated', 'deleted'] as const).filter((w) => c[w].length > 0).map((w) => `${c[w].length} ${w}`);
    if (n.length > 0) parts.push(`${snake(kind)}: ${n.join(', ')}`);
  }
  return parts.length === 0 ? 'nothing' : parts.join('; ');
}

function snake(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

// -------------------------------------------------------------------------------------- execution

/** Zero weights: what the dataplane gets while drained. */
function drainedReals(reals: readonly RealSpec[]): RealSpec[] {
  return reals.map((r) => ({ ...r, weight: 0 }));
}

/** Makes one step's Dataplane call (and keeps DrainState in step with what it changes). */
function execute(dp: Dataplane, drain: DrainState, s: Step): void {
  switch (s.op) {
    case 'deleteService':
      dp.deleteService(s.key);
      drain.weights.delete(serviceKeyString(s.key));
      return;
    case 'deleteLocalAddress':
      return dp.deleteLocalAddress(s.address);
    case 'deleteRoute':
      return dp.deleteRoute(s.prefix, s.prefixLength);
    case 'deleteNeighbor':
      return dp.deleteNeighbor(s.address);
    case 'deleteAddress':
      return dp.deleteAddress(s.address);
    case 'addAddress':
      return dp.addAddress(s.address);
    case 'addRoute':
      return dp.addRoute(s.route);
    case 'addNeighbor':
      return dp.addNeighbor(s.neighbor);
    case 'addLocalAddress':
      return dp.addLocalAddress(s.localAddress);
    case 'addService':
      return dp.addService(s.service);
    case 'updateService':
      return dp.updateService(s.key, s.scheduler, s.seed);
    case 'setReals':
      if (drain.drained) {
        dp.setReals(s.key, drainedReals(s.reals));
        drain.weights.set(serviceKeyString(s.key), new Map(s.reals.map((r) => [realKey(r), r.weight])));
      } else {
        dp.setReals(s.key, s.reals);
      }
      return;
    case 'setSymmetric':
      return dp.setSymmetric(s.protocol, s.enabled);
    case 'setTimeouts':
      dp.setTimeouts(s.timeouts);
      return;
  }
}

/** ApplyConfig failed at a step after others were made: the status to answer. */
class PartialApplyError extends Error {
  constructor(readonly status: ServiceError) {
    super(status.details);
  }
}

export { APPLIED_METADATA_KEY };

// ---------------------------------------------------------------------------------------- service

export interface ConfigServiceHooks {
  /** Called with true on Drain and false on Undrain (the server turns health to match). */
  setDrained(drained: boolean): void;
}

function requireRunning(dp: Dataplane): void {
  if (dp.state !== 'running') throw new DataplaneError('EUNAVAILABLE', `dataplane is ${dp.state}`);
}

/** The service's state and logic, apart from the grpc-js wiring (tests call it directly). */
export class ConfigManager {
  readonly drain = new DrainState();

  constructor(
    private readonly dp: Dataplane,
    private readonly log: Logger,
    private readonly hooks: ConfigServiceHooks,
  ) {}

  get drained(): boolean {
    return this.drain.drained;
  }

  getConfig(): Config {
    requireRunning(this.dp);
    return toConfigMessage(readState(this.dp, this.drain));
  }

  /** Throws ValidationError / DataplaneError before any change, PartialApplyError after some. */
  apply(req: ApplyConfigRequest): ApplyConfigResponse {
    const desired = validateConfig(req.config, this.dp.config.ports.map((p) => p.name));
    requireRunning(this.dp);
    const steps = planConfig(readState(this.dp, this.drain), desired);
    if (req.dryRun) return { diff: foldChanges(steps.flatMap((s) => s.changes)), dryRun: true };
    const done: Change[] = [];
    for (const step of steps) {
      try {
        execute(this.dp, this.drain, step);
      } catch (e) {
        const applied = foldChanges(done);
        const st = toStatus(e, this.log, 'ApplyConfig');
        st.details = boundDetails(`${describeStep(step)}: ${st.details} (applied before the failure: ${summarizeDiff(applied)})`);
        st.message = st.details;
        st.metadata.set(APPLIED_METADATA_KEY, Buffer.from(ConfigDiff.encode(boundDiff(applied)).finish()));
        if (done.length > 0) this.log.warn({ step: describeStep(step), applied: summarizeDiff(applied) }, 'ApplyConfig failed midway');
        throw new PartialApplyError(st);
      }
      done.push(...step.changes);
    }
    const diff = foldChanges(done);
    if (done.length > 0) this.log.info({ changes: summarizeDiff(diff) }, 'configuration applied');
    return { diff, dryRun: false };
  }

  /** Sets every non-zero weight to 0, remembering it. */
  drainAll(): { realsDrained: number; virtualServices: number } {
    requireRunning(this.dp);
    this.drain.drained = true;
    this.hooks.setDrained(true);
    let realsDrained = 0;
    let virtualServices = 0;
    for (const s of this.dp.listServices()) {
      const live = s.reals.filter((r) => r.weight > 0);
      if (live.length === 0) continue;
      this.dp.setReals(s, drainedReals(s.reals));
      const key = serviceKeyString(s);
      const mem = this.drain.weights.get(key) ?? new Map<string, number>();
      for (const r of live) mem.set(realKey(r), r.weight);
      this.drain.weights.set(key, mem);
      realsDrained += live.length;
      virtualServices++;
    }
    this.log.info({ realsDrained, virtualServices }, 'drained');
    return { realsDrained, virtualServices };
  }

  /** Gives back the remembered weights to reals still at 0. */
  undrainAll(): { realsRestored: number; virtualServices: number } {
    requireRunning(this.dp);
    let realsRestored = 0;
    let virtualServices = 0;
    for (const s of this.dp.listServices()) {
      const key = serviceKeyString(s);
      const mem = this.drain.weights.get(key);
      if (mem === undefined) continue;
      const restored = restoreWeights(s.reals, mem);
      const n = restored.filter((r, i) => r.weight !== s.reals[i].weight).length;
      if (n > 0) {
        this.dp.setReals(s, restored);
        realsRestored += n;
        virtualServices++;
      }
      this.drain.weights.delete(key);
    }
    this.drain.weights.clear();
    this.drain.drained = false;
    this.hooks.setDrained(false);
    this.log.info({ realsRestored, virtualServices }, 'undrained');
    return { realsRestored, virtualServices };
  }
}

export function configService(manager: ConfigManager, log: Logger): ConfigServiceServer {
  return {
    // Not through unary(): a failure after some steps carries its own status and metadata.
    applyConfig: (call: ServerUnaryCall<ApplyConfigRequest, ApplyConfigResponse>, callback: sendUnaryData<ApplyConfigResponse>) => {
      try {
        callback(null, manager.apply(call.request));
      } catch (e) {
        callback(e instanceof PartialApplyError ? e.status : toStatus(e, log, 'ApplyConfig'));
      }
    },
    getConfig: unary(log, 'GetConfig', () => ({ config: manager.getConfig(), drained: manager.drained })),
    drain: unary(log, 'Drain', () => manager.drainAll()),
    undrain: unary(log, 'Undrain', () => manager.undrainAll()),
  };
}
