import type { Dataplane, RouteView } from '../dataplane';
import type { NetworkServiceServer, Route } from '../gen/retrace/v1/network';
import type { Logger } from '../log';
import { StateGuard } from './invariants';
import { unary } from './unary';
import * as v from './validate';

export function toRoute(r: RouteView): Route {
  return { prefix: r.prefix, prefixLength: r.prefixLength, port: r.port, gateway: r.gateway ?? '', connected: r.connected };
}

/** Every call that adds something is checked against the state it would leave (invariants.ts). */
export function networkService(dp: Dataplane, log: Logger, guard = new StateGuard(() => dp.configShape())): NetworkServiceServer {
  return {
    createAddress: unary(log, 'CreateAddress', (req) => {
      const a = v.createAddress(req);
      guard.check({ list: 'addresses', item: a }, 'address');
      dp.addAddress(a);
      return {};
    }),
    deleteAddress: unary(log, 'DeleteAddress', (req) => {
      dp.deleteAddress(v.deleteAddress(req));
      return {};
    }),
    listAddresses: unary(log, 'ListAddresses', () => ({ addresses: dp.listAddresses() })),

    createRoute: unary(log, 'CreateRoute', (req) => {
      const r = v.createRoute(req);
      guard.check({ list: 'routes', item: r }, 'route');
      dp.addRoute(r);
      return {};
    }),
    deleteRoute: unary(log, 'DeleteRoute', (req) => {
      const r = v.deleteRoute(req);
      dp.deleteRoute(r.prefix, r.prefixLength);
      return {};
    }),
    listRoutes: unary(log, 'ListRoutes', () => ({ routes: dp.listRoutes().map(toRoute) })),

    createNeighbor: unary(log, 'CreateNeighbor', (req) => {
      const n = v.createNeighbor(req);
      guard.check({ list: 'neighbors', item: n }, 'neighbor');
      dp.addNeighbor(n);
      return {};
    }),
    deleteNeighbor: unary(log, 'DeleteNeighbor', (req) => {
      dp.deleteNeighbor(v.deleteNeighbor(req));
      return {};
    }),
    listNeighbors: unary(log, 'ListNeighbors', () => ({
      neighbors: dp.listNeighbors().map((n) => ({ address: n.address, mac: n.mac, port: n.port, static: n.static, ageSeconds: n.ageSeconds })),
    })),
  };
}
