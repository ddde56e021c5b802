/**
 * ApplyConfig's planning, pure: current + desired state -> ordered steps, each carrying the diff
 * entries it makes; and the diff's folding, bounding (the applied-trailer) and summary.
 */
import {
  PROTOCOLS,
  serviceKeyString,
  type AddressSpec,
  type LocalAddressSpec,
  type NeighborSpec,
  type Protocol,
  type RealSpec,
  type RouteSpec,
  type Scheduler,
  type ClientAddressMode,
  type ServiceKey,
  type ServiceLimits,
  type SynProxy,
  SYN_PROXY_OFF,
  synProxyEqual,
  serviceSpecOf,
  type ServiceSpec,
  NO_LIMITS,
  limitsEqual,
  healthCheckEqual,
  type HealthCheckSpec,
  type Timeouts,
} from '../../dataplane';
import { ConfigDiff, type ResourceChanges } from '../../gen/retrace/v1/config';
import { ipOrder, realKey, type ConfigState, type DesiredConfig } from './state';

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
  | {
      op: 'updateService';
      key: ServiceKey;
      scheduler: Scheduler;
      seed: number;
      limits: ServiceLimits;
      healthCheck: HealthCheckSpec | null;
      clientAddress: ClientAddressMode;
      synProxy: SynProxy;
    }
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

  const addr = recreateDiff(
    current.addresses,
    desired.addresses,
    (a) => a.address,
    (a, b) => a.prefixLength === b.prefixLength && a.port === b.port,
  );
  const route = recreateDiff(current.routes, desired.routes, routeKey, (a, b) => a.port === b.port && (a.gateway ?? '') === (b.gateway ?? ''));
  // A neighbour is replaced in place by CreateNeighbor: no deletion for a changed one.
  const neighWant = byKey(desired.neighbors, (n) => n.address);
  const neighHave = byKey(current.neighbors, (n) => n.address);
  const lip = recreateDiff(
    current.localAddresses,
    desired.localAddresses,
    (l) => l.address,
    (a, b) => a.port === b.port,
  );
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
      steps.push({ op: 'addService', service: serviceSpecOf(s), changes: [['virtualServices', 'created', k]] });
      if (s.reals.length > 0) steps.push({ op: 'setReals', key: keyOf(s), reals: s.reals, changes: realsDiff(k, [], s.reals) });
      continue;
    }
    const mode = s.clientAddress ?? 'none';
    if (
      c.scheduler !== s.scheduler ||
      c.seed !== s.seed ||
      !limitsEqual(c.limits, s.limits) ||
      !healthCheckEqual(c.healthCheck, s.healthCheck) ||
      (c.clientAddress ?? 'none') !== mode ||
      !synProxyEqual(c.synProxy, s.synProxy)
    ) {
      const limits = s.limits ?? NO_LIMITS;
      const healthCheck = s.healthCheck ?? null;
      const synProxy = s.synProxy ?? SYN_PROXY_OFF;
      steps.push({
        op: 'updateService',
        key: keyOf(s),
        scheduler: s.scheduler,
        seed: s.seed,
        limits,
        healthCheck,
        clientAddress: mode,
        synProxy,
        changes: [['virtualServices', 'updated', k]],
      });
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
    out[kind] = {
      created: take(c.created),
      updated: take(c.updated),
      deleted: take(c.deleted),
      createdCount: c.createdCount,
      updatedCount: c.updatedCount,
      deletedCount: c.deletedCount,
    };
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
