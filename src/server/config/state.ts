/**
 * The configuration as the dataplane holds it (ConfigState), read back from Dataplane list/get
 * calls only, and what Drain remembers (DrainState): readState shows the remembered weights, so
 * GetConfig and the diff see the configured state while drained.
 */
import {
  serviceKeyString,
  type AddressSpec,
  type Dataplane,
  type LocalAddressSpec,
  type NeighborSpec,
  type Protocol,
  type RealSpec,
  type RouteSpec,
  serviceSpecOf,
  type ServiceSpec,
  type Timeouts,
} from '../../dataplane';
import { type Config } from '../../gen/retrace/v1/config';
import { LocalAddress, Real, VirtualService } from '../../gen/retrace/v1/balancer';
import { healthCheckToProto } from '../balancer-service';
import { clientAddressToProto, protocolToProto, schedulerToProto, synProxyModeToProto } from '../enums';

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
export function ipOrder(a: string, b: string): number {
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
      ...serviceSpecOf(s),
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
      maxConns: svc.limits?.maxConns ?? 0,
      allow: [...(svc.limits?.allow ?? [])],
      deny: [...(svc.limits?.deny ?? [])],
      connRate: svc.limits?.connRate ?? 0,
      connBurst: svc.limits?.connBurst ?? 0,
      synProxy: synProxyModeToProto(svc.synProxy?.mode ?? 'off'),
      synProxyThreshold: svc.synProxy?.threshold ?? 0,
      healthCheck: svc.healthCheck === undefined ? undefined : healthCheckToProto(svc.healthCheck),
      clientAddress: clientAddressToProto(svc.clientAddress),
      reals: svc.reals.map((r) => ({ ...Real.create(), address: r.address, port: r.port, weight: r.weight })),
    })),
    symmetric: { ...s.symmetric },
    timeouts: { ...s.timeouts },
  };
}
