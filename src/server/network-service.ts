import type { Dataplane, RouteView } from '../dataplane';
import type { NetworkServiceServer, Route } from '../gen/retrace/v1/network';
import type { Logger } from '../log';
import { unary } from './unary';
import * as v from './validate';

export function toRoute(r: RouteView): Route {
  return { prefix: r.prefix, prefixLength: r.prefixLength, port: r.port, gateway: r.gateway ?? '', connected: r.connected };
}

export function networkService(dp: Dataplane, log: Logger): NetworkServiceServer {
  return {
    createAddress: unary(log, 'CreateAddress', (req) => {
      dp.addAddress(v.createAddress(req));
      return {};
    }),
    deleteAddress: unary(log, 'DeleteAddress', (req) => {
      dp.deleteAddress(v.deleteAddress(req));
      return {};
    }),
    listAddresses: unary(log, 'ListAddresses', () => ({ addresses: dp.listAddresses() })),

    createRoute: unary(log, 'CreateRoute', (req) => {
      dp.addRoute(v.createRoute(req));
      return {};
    }),
    deleteRoute: unary(log, 'DeleteRoute', (req) => {
      const r = v.deleteRoute(req);
      dp.deleteRoute(r.prefix, r.prefixLength);
      return {};
    }),
    listRoutes: unary(log, 'ListRoutes', () => ({ routes: dp.listRoutes().map(toRoute) })),

    createNeighbor: unary(log, 'CreateNeighbor', (req) => {
      dp.addNeighbor(v.createNeighbor(req));
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
