import { serviceKeyString, type Dataplane, type HealthCheckSpec, type ServiceView } from '../dataplane';
import { Real, VirtualService, type LoadBalancerServiceServer } from '../gen/retrace/v1/balancer';
import { HealthCheck, HealthState } from '../gen/retrace/v1/health_check';
import type { Logger } from '../log';
import { clientAddressToProto, protocolToProto, schedulerToProto, synProxyModeToProto } from './enums';
import { StateGuard } from './invariants';
import { unary } from './unary';
import * as v from './validate';

/** A service's traffic: the per-real packet and byte counters summed over its current reals. */
export interface ServiceTraffic {
  packetsToReals: bigint;
  packetsFromReals: bigint;
  bytesToReals: bigint;
  bytesFromReals: bigint;
}

export function serviceTraffic(s: ServiceView): ServiceTraffic {
  const t: ServiceTraffic = { packetsToReals: 0n, packetsFromReals: 0n, bytesToReals: 0n, bytesFromReals: 0n };
  for (const r of s.reals) {
    t.packetsToReals += r.packetsToReal;
    t.packetsFromReals += r.packetsFromReal;
    t.bytesToReals += r.bytesToReal;
    t.bytesFromReals += r.bytesFromReal;
  }
  return t;
}

export function healthCheckToProto(h: HealthCheckSpec): HealthCheck {
  return {
    ...HealthCheck.create(),
    kind: v.healthCheckKindToProto(h.kind),
    intervalMs: h.intervalMs,
    timeoutMs: h.timeoutMs,
    rise: h.rise,
    fall: h.fall,
    port: h.port,
    httpPath: h.httpPath,
    httpStatus: h.httpStatus,
    grpcService: h.grpcService,
    udpPayload: Buffer.from(h.udpPayload),
    udpExpect: Buffer.from(h.udpExpect),
    closeConns: h.closeConns,
  };
}

/** A real's health as the checker holds it (src/server/health/checker.ts). */
export interface RealHealthView {
  state: 'unknown' | 'up' | 'down';
  lastError: string;
  changedAt: Date;
}

/** The health of one real of one service ("tcp/1.2.3.4:80", "10.1.0.11:8080"), if checked. */
export type HealthLookup = (service: string, real: string) => RealHealthView | undefined;

export const HEALTH_STATE_TO_PROTO: Record<RealHealthView['state'], HealthState> = {
  unknown: HealthState.HEALTH_STATE_UNKNOWN,
  up: HealthState.HEALTH_STATE_UP,
  down: HealthState.HEALTH_STATE_DOWN,
};

/** What a service's client-address mode did: the per-real counters summed over its current reals. */
export function serviceClientAddress(s: ServiceView): { proxyHeaders: bigint; segmentsShifted: bigint; toaAdded: bigint; toaNoRoom: bigint } {
  const t = { proxyHeaders: 0n, segmentsShifted: 0n, toaAdded: 0n, toaNoRoom: 0n };
  for (const r of s.reals) {
    t.proxyHeaders += r.proxyHeaders;
    t.segmentsShifted += r.segmentsShifted;
    t.toaAdded += r.toaAdded;
    t.toaNoRoom += r.toaNoRoom;
  }
  return t;
}

export function toVirtualService(s: ServiceView, health: HealthLookup = () => undefined): VirtualService {
  const svcKey = serviceKeyString(s);
  return VirtualService.create({
    protocol: protocolToProto(s.protocol),
    vip: s.vip,
    port: s.port,
    scheduler: schedulerToProto(s.scheduler),
    seed: s.seed,
    reals: s.reals.map((r) =>
      Real.create({
        address: r.address,
        port: r.port,
        weight: r.weight,
        activeConns: r.activeConns,
        connsTotal: r.connsTotal,
        packetsToReal: r.packetsToReal,
        packetsFromReal: r.packetsFromReal,
        bytesToReal: r.bytesToReal,
        bytesFromReal: r.bytesFromReal,
        ...realHealthFields(s.healthCheck === undefined ? undefined : health(svcKey, `${r.address}:${r.port}`)),
        inhibited: r.down,
      }),
    ),
    connsTotal: s.connsTotal,
    ...serviceTraffic(s),
    maxConns: s.limits.maxConns,
    allow: s.limits.allow,
    deny: s.limits.deny,
    activeConns: s.activeConns,
    refusedMaxConns: s.refusedMaxConns,
    refusedDenied: s.refusedDenied,
    refusedNotAllowed: s.refusedNotAllowed,
    connRate: s.limits.connRate,
    connBurst: s.limits.connBurst,
    synProxy: synProxyModeToProto(s.synProxy.mode),
    synProxyThreshold: s.synProxy.threshold,
    synCookiesSent: s.synCookiesSent,
    synCookiesValid: s.synCookiesValid,
    synCookiesInvalid: s.synCookiesInvalid,
    refusedRateLimited: s.refusedRateLimited,
    healthCheck: s.healthCheck === undefined ? undefined : healthCheckToProto(s.healthCheck),
    clientAddress: clientAddressToProto(s.clientAddress),
    ...serviceClientAddress(s),
  });
}

function realHealthFields(h: RealHealthView | undefined): Pick<Real, 'health' | 'healthLastError' | 'healthChangedAt'> {
  if (h === undefined) return { health: HealthState.HEALTH_STATE_UNSPECIFIED, healthLastError: '', healthChangedAt: undefined };
  return { health: HEALTH_STATE_TO_PROTO[h.state], healthLastError: h.lastError, healthChangedAt: h.changedAt };
}

/** Every call that adds something is checked against the state it would leave (invariants.ts). */
export function balancerService(
  dp: Dataplane,
  log: Logger,
  health: HealthLookup = () => undefined,
  guard = new StateGuard(() => dp.configShape()),
): LoadBalancerServiceServer {
  return {
    createVirtualService: unary(log, 'CreateVirtualService', (req) => {
      const s = v.createVirtualService(req, dp.connCapacity);
      guard.check({ list: 'virtual_services', item: s }, 'virtual_service');
      dp.addService(s);
      return {};
    }),
    getVirtualService: unary(log, 'GetVirtualService', (req) => ({
      virtualService: toVirtualService(dp.getService(v.getVirtualService(req)), health),
    })),
    listVirtualServices: unary(log, 'ListVirtualServices', () => ({ virtualServices: dp.listServices().map((s) => toVirtualService(s, health)) })),
    updateVirtualService: unary(log, 'UpdateVirtualService', (req) => {
      const u = v.updateVirtualService(req, dp.connCapacity);
      dp.updateService(u.key, u.scheduler, u.seed, { limits: u.limits, healthCheck: u.healthCheck, clientAddress: u.clientAddress, synProxy: u.synProxy });
      return {};
    }),
    deleteVirtualService: unary(log, 'DeleteVirtualService', (req) => {
      dp.deleteService(v.deleteVirtualService(req));
      return {};
    }),
    setReals: unary(log, 'SetReals', (req) => {
      const s = v.setReals(req);
      guard.check({ list: 'reals', key: s.key, reals: s.reals }, '');
      dp.setReals(s.key, s.reals);
      return {};
    }),

    createLocalAddress: unary(log, 'CreateLocalAddress', (req) => {
      const l = v.createLocalAddress(req);
      guard.check({ list: 'local_addresses', item: l }, 'local_address');
      dp.addLocalAddress(l);
      return {};
    }),
    deleteLocalAddress: unary(log, 'DeleteLocalAddress', (req) => {
      dp.deleteLocalAddress(v.deleteLocalAddress(req));
      return {};
    }),
    listLocalAddresses: unary(log, 'ListLocalAddresses', () => ({ localAddresses: dp.listLocalAddresses() })),

    getTimeouts: unary(log, 'GetTimeouts', () => ({ timeouts: dp.timeouts() })),
    setTimeouts: unary(log, 'SetTimeouts', (req) => ({ timeouts: dp.setTimeouts(v.setTimeouts(req)) })),
  };
}
