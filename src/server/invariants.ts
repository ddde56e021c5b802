/**
 * The rules a whole configuration obeys, checked in one place for both ways of changing it:
 * ApplyConfig checks the document it is given (validateConfig), and every unary call that adds
 * something (CreateAddress, CreateRoute, CreateNeighbor, CreateLocalAddress, CreateVirtualService,
 * SetReals) checks the state it would leave (StateGuard). So a state a unary call accepts is one
 * ApplyConfig, and the restore from state.file, accept too.
 *
 * Rules:
 *   - no duplicate within a list (address, route prefix, neighbour, local address, service key);
 *   - an address is local in one role: port address, local address (LIP) or vip (a vip may serve
 *     several services);
 *   - no static neighbour for an address of the appliance (any role);
 *   - a subnet is connected on one port: port addresses that share a prefix share their port
 *     (the connected route leaves by one port, so an address on another would be unreachable);
 *   - the fixed table sizes of the native layer (tableLimits(), from native/dp_ctl.h).
 * Deleting, updating a scheduler, timeouts and symmetric mode cannot break any of them.
 *
 * Field-level checks (a dotted quad, a unicast address, a weight's range) are the request
 * validators' (validate.ts), which ApplyConfig runs on each entry of its document.
 */
import {
  networkOf,
  serviceKeyString,
  tableLimits,
  type AddressSpec,
  type ConfigShape,
  type LocalAddressSpec,
  type NeighborSpec,
  type RealSpec,
  type RouteSpec,
  type ServiceKey,
  type TableLimits,
} from '../dataplane';
import { status } from '@grpc/grpc-js';
import { StatusError } from './errors';

/** A list of the configuration, named as in the Config message (snake_case). */
export type ListName = 'addresses' | 'routes' | 'neighbors' | 'local_addresses' | 'virtual_services';

/** One field of one entry: `virtual_services[3].vip`. */
export interface Ref {
  list: ListName;
  index: number;
  field: string;
}

/**
 * duplicate and conflict: two entries that cannot both be; limit: the entry beyond a table's size;
 * too_many_reals: a service with more reals than it holds (a property of one request).
 */
export type ViolationKind = 'duplicate' | 'conflict' | 'limit' | 'too_many_reals';

export class StateViolation extends Error {
  constructor(
    readonly kind: ViolationKind,
    /** The entry reported: the later of two, or the first beyond a limit. */
    readonly at: Ref,
    /** The earlier entry of a duplicate or a conflict. */
    readonly other: Ref | undefined,
    /** The reason, given how to name `other`. */
    readonly reason: (other: string) => string,
  ) {
    super(reason(other === undefined ? '' : refPath(other)));
    this.name = 'StateViolation';
  }
}

export function refPath(r: Ref): string {
  return `${r.list}[${r.index}].${r.field}`;
}

const ordinal = (n: number): string => {
  const s = n % 100 >= 11 && n % 100 <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th');
  return `${n}${s}`;
};

/** The entry that is one too many for a table of `max`. */
function beyond(ref: Ref, count: number, max: number, what: string): StateViolation {
  return new StateViolation('limit', ref, undefined, () => `the ${ordinal(count)} of the ${what}; the table holds ${max}`);
}

const ref = (list: ListName, index: number, field: string): Ref => ({ list, index, field });

/**
 * Throws the first StateViolation of a whole configuration. Linear in its size, and cheap enough
 * to run on every unary change (a few milliseconds for thousands of entries): refs are only built
 * for the violation reported.
 */
export function checkState(s: ConfigShape, limits: TableLimits): void {
  // ---- duplicates within a list
  const unique = <T>(list: ListName, items: readonly T[], key: (t: T) => string, field: string, what: string): void => {
    const first = new Map<string, number>();
    for (let i = 0; i < items.length; i++) {
      const k = key(items[i]);
      const j = first.get(k);
      if (j !== undefined) throw new StateViolation('duplicate', ref(list, i, field), ref(list, j, field), (o) => `repeats ${o} (${what} ${k})`);
      first.set(k, i);
    }
  };
  unique('addresses', s.addresses, (a) => a.address, 'address', 'address');
  unique('routes', s.routes, (r) => `${r.prefix}/${r.prefixLength}`, 'prefix', 'route');
  unique('neighbors', s.neighbors, (n) => n.address, 'address', 'neighbor');
  unique('local_addresses', s.localAddresses, (l) => l.address, 'address', 'local address');
  unique('virtual_services', s.services, serviceKeyString, 'vip', 'virtual service');

  // ---- one role per local address; vips may repeat. `local` keeps first uses in order: port
  // addresses, local addresses, vips (the order the address table is counted in below).
  const local = new Map<string, [ListName, number]>();
  const role = (address: string, list: ListName, i: number, field: string): void => {
    const other = local.get(address);
    if (other === undefined) {
      local.set(address, [list, i]);
      return;
    }
    if (other[0] === 'virtual_services' && list === 'virtual_services') return;
    const o = ref(other[0], other[1], other[0] === 'virtual_services' ? 'vip' : 'address');
    throw new StateViolation('conflict', ref(list, i, field), o, (n) => `"${address}" is also ${n}: an address is local in one role only`);
  };
  s.addresses.forEach((a, i) => role(a.address, 'addresses', i, 'address'));
  s.localAddresses.forEach((l, i) => role(l.address, 'local_addresses', i, 'address'));
  s.services.forEach((v, i) => role(v.vip, 'virtual_services', i, 'vip'));

  // ---- the appliance answers ARP for its own addresses: a static neighbour for one is a mistake
  s.neighbors.forEach((n, i) => {
    const own = local.get(n.address);
    if (own !== undefined) {
      const o = ref(own[0], own[1], own[0] === 'virtual_services' ? 'vip' : 'address');
      throw new StateViolation(
        'conflict',
        ref('neighbors', i, 'address'),
        o,
        (x) => `"${n.address}" is also ${x}: no static neighbor for the appliance's own addresses`,
      );
    }
  });

  // ---- one port per connected subnet
  const subnets = new Map<string, number>();
  s.addresses.forEach((a, i) => {
    const subnet = `${networkOf(a.address, a.prefixLength)}/${a.prefixLength}`;
    const j = subnets.get(subnet);
    if (j === undefined) subnets.set(subnet, i);
    else if (s.addresses[j].port !== a.port) {
      throw new StateViolation(
        'conflict',
        ref('addresses', i, 'port'),
        ref('addresses', j, 'port'),
        (o) => `"${a.port}" is not the port of subnet ${subnet}, which is connected on "${s.addresses[j].port}" (${o}): one port per subnet`,
      );
    }
  });

  // ---- fixed table sizes (lists are free of duplicates by now)
  if (local.size > limits.localAddresses) {
    const [list, i] = [...local.values()][limits.localAddresses];
    throw beyond(
      ref(list, i, list === 'virtual_services' ? 'vip' : 'address'),
      limits.localAddresses + 1,
      limits.localAddresses,
      'local addresses of all roles (port addresses, local addresses, distinct vips)',
    );
  }
  if (s.localAddresses.length > limits.lips)
    throw beyond(ref('local_addresses', limits.lips, 'address'), limits.lips + 1, limits.lips, 'local addresses (LIPs)');
  if (s.services.length > limits.services)
    throw beyond(ref('virtual_services', limits.services, 'vip'), limits.services + 1, limits.services, 'virtual services');
  s.services.forEach((v, i) => {
    if (v.reals.length > limits.realsPerService) {
      throw new StateViolation(
        'too_many_reals',
        ref('virtual_services', i, 'reals'),
        undefined,
        () => `at most ${limits.realsPerService} reals, got ${v.reals.length}`,
      );
    }
  });

  // Routes: one entry per distinct prefix, static or the connected route of addresses (a static
  // route takes the place of the connected one). Each uses a next hop (port, gateway) while in
  // the LPM, and a prefix longer than /24 uses the tbl8 group of its /24.
  const routeRef = (i: number): Ref => (i < s.routes.length ? ref('routes', i, 'prefix') : ref('addresses', i - s.routes.length, 'prefix_length'));
  const prefixes = new Set<string>();
  const nextHops = new Set<string>();
  const tbl8 = new Set<string>();
  const prefix = (key: string, nextHop: string, net: string, prefixLength: number, i: number): void => {
    if (prefixes.has(key)) return;
    prefixes.add(key);
    if (prefixes.size > limits.routes)
      throw beyond(routeRef(i), prefixes.size, limits.routes, 'route prefixes (static routes and the connected routes of the addresses)');
    nextHops.add(nextHop);
    if (nextHops.size > limits.nextHops) throw beyond(routeRef(i), nextHops.size, limits.nextHops, 'next hops (distinct port and gateway pairs of the routes)');
    if (prefixLength > 24) {
      tbl8.add(net.slice(0, net.lastIndexOf('.')));
      if (tbl8.size > limits.routeTbl8Groups) throw beyond(routeRef(i), tbl8.size, limits.routeTbl8Groups, '/24 blocks holding a prefix longer than /24');
    }
  };
  s.routes.forEach((r, i) => prefix(`${r.prefix}/${r.prefixLength}`, `${r.port} ${r.gateway ?? ''}`, r.prefix, r.prefixLength, i));
  s.addresses.forEach((a, i) => {
    const net = networkOf(a.address, a.prefixLength);
    prefix(`${net}/${a.prefixLength}`, `${a.port} `, net, a.prefixLength, s.routes.length + i);
  });

  if (s.neighbors.length > limits.neighbors) throw beyond(ref('neighbors', limits.neighbors, 'address'), limits.neighbors + 1, limits.neighbors, 'neighbors');
}

// ---------------------------------------------------------------------------- unary calls

/** What a unary call adds (or replaces: a neighbour of the same address, a service's reals). */
export type Addition =
  | { list: 'addresses'; item: AddressSpec }
  | { list: 'routes'; item: RouteSpec }
  | { list: 'neighbors'; item: NeighborSpec }
  | { list: 'local_addresses'; item: LocalAddressSpec }
  | { list: 'virtual_services'; item: ServiceKey }
  | { list: 'reals'; key: ServiceKey; reals: readonly RealSpec[] };

/** The name of an existing entry in an error of a unary call. */
function describe(s: ConfigShape, r: Ref): string {
  switch (r.list) {
    case 'addresses': {
      const a = s.addresses[r.index];
      return `the port address ${a.address}/${a.prefixLength} on ${a.port}`;
    }
    case 'routes': {
      const x = s.routes[r.index];
      return `the static route ${x.prefix}/${x.prefixLength}`;
    }
    case 'neighbors':
      return `the static neighbor ${s.neighbors[r.index].address}`;
    case 'local_addresses':
      return `the local address ${s.localAddresses[r.index].address}`;
    case 'virtual_services':
      return `the vip of virtual service ${serviceKeyString(s.services[r.index])}`;
  }
}

const UNARY_CODE: Record<ViolationKind, status> = {
  duplicate: status.ALREADY_EXISTS,
  conflict: status.ALREADY_EXISTS,
  limit: status.RESOURCE_EXHAUSTED,
  too_many_reals: status.INVALID_ARGUMENT,
};

/**
 * Checks unary calls against the state they would leave. The state is the one the Dataplane
 * object records (no native call), the limits the native layer's.
 */
export class StateGuard {
  private readonly limits: TableLimits;

  constructor(
    private readonly shape: () => ConfigShape,
    limits: TableLimits = tableLimits(),
  ) {
    this.limits = limits;
  }

  /**
   * Throws a StatusError naming the request field (`prefix`, e.g. "virtual_service") when the
   * addition breaks a rule: ALREADY_EXISTS for a duplicate or a conflict, RESOURCE_EXHAUSTED for
   * a full table, INVALID_ARGUMENT for too many reals.
   */
  check(add: Addition, prefix: string): void {
    const cur = this.shape();
    const next: ConfigShape = { ...cur };
    let mine: Ref;
    switch (add.list) {
      case 'addresses':
        next.addresses = [...cur.addresses, add.item];
        mine = { list: 'addresses', index: cur.addresses.length, field: '' };
        break;
      case 'routes':
        next.routes = [...cur.routes, add.item];
        mine = { list: 'routes', index: cur.routes.length, field: '' };
        break;
      case 'neighbors': {
        // CreateNeighbor replaces the entry of the same address.
        const i = cur.neighbors.findIndex((n) => n.address === add.item.address);
        next.neighbors = i < 0 ? [...cur.neighbors, add.item] : cur.neighbors.map((n, j) => (j === i ? add.item : n));
        mine = { list: 'neighbors', index: i < 0 ? cur.neighbors.length : i, field: '' };
        break;
      }
      case 'local_addresses':
        next.localAddresses = [...cur.localAddresses, add.item];
        mine = { list: 'local_addresses', index: cur.localAddresses.length, field: '' };
        break;
      case 'virtual_services':
        next.services = [...cur.services, { ...add.item, reals: [] }];
        mine = { list: 'virtual_services', index: cur.services.length, field: '' };
        break;
      case 'reals': {
        const k = serviceKeyString(add.key);
        const i = cur.services.findIndex((v) => serviceKeyString(v) === k);
        if (i < 0) return; // NOT_FOUND is the dataplane's answer
        next.services = cur.services.map((v, j) => (j === i ? { ...v, reals: add.reals } : v));
        mine = { list: 'virtual_services', index: i, field: '' };
        break;
      }
    }
    try {
      checkState(next, this.limits);
    } catch (e) {
      if (!(e instanceof StateViolation)) throw e;
      const isMine = (r: Ref | undefined) => r !== undefined && r.list === mine.list && r.index === mine.index;
      // Report on the request's own field; the other entry is an existing one, named by what it is.
      // A table is full whichever entry is counted last: the request's entry is the one too many.
      const own: Ref = isMine(e.at)
        ? e.at
        : e.other !== undefined && isMine(e.other)
          ? e.other
          : e.kind === 'limit'
            ? { ...mine, field: MAIN_FIELD[mine.list] }
            : e.at;
      const other = own === e.at ? e.other : e.at;
      const field = requestField(add.list, prefix, own.field);
      throw new StatusError(UNARY_CODE[e.kind], field, e.reason(other === undefined ? '' : describe(next, other)));
    }
  }
}

const MAIN_FIELD: Record<ListName, string> = {
  addresses: 'address',
  routes: 'prefix',
  neighbors: 'address',
  local_addresses: 'address',
  virtual_services: 'vip',
};

/** The request field of an entry's field: ("address", "prefix_length") → "address.prefix_length". */
function requestField(list: Addition['list'], prefix: string, field: string): string {
  if (list === 'reals') return 'reals';
  return prefix === '' ? field : `${prefix}.${field}`;
}
