/**
 * The control API end to end: a real `retrace serve` child process with two net_ring ports (no
 * namespaces, no NIC), called over its unix socket. One describe per RPC; each failure case checks
 * the status code, that INVALID_ARGUMENT names the field, and that nothing changed.
 *
 * One file (over 500 lines): one appliance, started once in beforeAll, serves every RPC's cases;
 * splitting by RPC would start (and EAL-initialise) it once per file.
 */
import { execFileSync } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { type LoadBalancerServiceClient, Real, type Timeouts, VirtualService, type VirtualServiceKey } from '../../src/gen/retrace/v1/balancer';
import type { NetworkServiceClient, Address } from '../../src/gen/retrace/v1/network';
import { type PathServiceClient, type PathCounters, type WatchCountersRequest, type WatchCountersResponse } from '../../src/gen/retrace/v1/path';
import { Protocol, Scheduler } from '../../src/gen/retrace/v1/types';
import { loadNative } from '../../src/dataplane/binding';
import type { Promised } from '../../src/api/client';
import { ApplianceProcess } from '../../src/lab/appliance';
import { listServices } from '../helpers/reflection';
import { fails } from '../helpers/wait';
import { GRPCURL, itWith } from '../helpers/tools';

const NEW_SERVICES = ['retrace.v1.NetworkService', 'retrace.v1.LoadBalancerService', 'retrace.v1.PathService'];

const tcp80: VirtualServiceKey = { protocol: Protocol.PROTOCOL_TCP, vip: '198.18.10.1', port: 80 };
const real = (address: string, port: number, weight: number): Real => Real.create({ address, port, weight });
const svc = (k: VirtualServiceKey, scheduler = Scheduler.SCHEDULER_WRR, seed = 0): VirtualService => VirtualService.create({ ...k, scheduler, seed });

describe('control API on a two-port net_ring appliance', () => {
  const app = new ApplianceProcess();
  let net: Promised<NetworkServiceClient>;
  let lb: Promised<LoadBalancerServiceClient>;
  let path: Promised<PathServiceClient>;
  /** The raw client, for the WatchCounters streams. */
  let pathSvc: PathServiceClient;

  beforeAll(async () => {
    app.start(`
eal:
  memory_mb: 128
dataplane:
  mbufs: 4095
  max_conns: 4096
ports:
  - name: p0
    device: net_ring0
    mac: "02:00:00:00:00:01"
  - name: p1
    device: net_ring1
    mac: "02:00:00:00:00:02"
timeouts:
  tcp_syn: 20
symmetric:
  udp: false
`);
    await app.waitServing();
    ({ network: net, balancer: lb, path } = app.api);
    pathSvc = app.api.raw.path;
  }, 60000);

  afterAll(async () => {
    await app.kill();
  });

  // Short forms for the calls used in many cases.
  const addresses = async () => (await net.listAddresses({})).addresses;
  const routes = async () => (await net.listRoutes({})).routes;
  const neighbors = async () => (await net.listNeighbors({})).neighbors;
  const services = async () => (await lb.listVirtualServices({})).virtualServices;
  const getService = async (key: VirtualServiceKey) => (await lb.getVirtualService({ key })).virtualService!;
  const lips = async () => (await lb.listLocalAddresses({})).localAddresses;
  const timeouts = async () => (await lb.getTimeouts({})).timeouts!;
  const createAddress = (address: Address) => net.createAddress({ address });

  describe('health and reflection', () => {
    it.each(NEW_SERVICES)('reports %s SERVING', async (name) => {
      expect(await app.healthCheck(name)).toBe('SERVING');
    });

    it('lists the new services over reflection', async () => {
      expect(await listServices(app.address, 'v1')).toEqual(expect.arrayContaining(NEW_SERVICES));
    });
  });

  // ------------------------------------------------------------------ NetworkService

  describe('CreateAddress', () => {
    it('adds the address and its connected route', async () => {
      await createAddress({ address: '10.0.0.1', prefixLength: 24, port: 'p0' });
      expect(await addresses()).toContainEqual({ address: '10.0.0.1', prefixLength: 24, port: 'p0' });
      expect(await routes()).toContainEqual({ prefix: '10.0.0.0', prefixLength: 24, port: 'p0', gateway: '', connected: true });
    });

    it('rejects prefix_length 0 naming the field, changing nothing', async () => {
      const before = await addresses();
      await fails(createAddress({ address: '10.0.1.1', prefixLength: 0, port: 'p0' }), grpc.status.INVALID_ARGUMENT, /^address\.prefix_length: /);
      expect(await addresses()).toEqual(before);
    });

    it('rejects an address that is not a dotted quad naming the field, changing nothing', async () => {
      const before = await addresses();
      await fails(createAddress({ address: '10.0.1.256', prefixLength: 24, port: 'p0' }), grpc.status.INVALID_ARGUMENT, /^address\.address: /);
      await fails(net.createAddress({ address: undefined }), grpc.status.INVALID_ARGUMENT, /^address: required/);
      expect(await addresses()).toEqual(before);
    });

    it('answers NOT_FOUND for a port that does not exist', async () => {
      await fails(createAddress({ address: '10.0.1.1', prefixLength: 24, port: 'nope' }), grpc.status.NOT_FOUND, 'no port named "nope"');
      expect((await addresses()).map((a) => a.address)).not.toContain('10.0.1.1');
    });

    it('answers ALREADY_EXISTS for an address that is already local', async () => {
      await fails(createAddress({ address: '10.0.0.1', prefixLength: 24, port: 'p1' }), grpc.status.ALREADY_EXISTS);
      expect((await addresses()).filter((a) => a.address === '10.0.0.1')).toEqual([{ address: '10.0.0.1', prefixLength: 24, port: 'p0' }]);
    });
  });

  describe('DeleteAddress', () => {
    it('removes the address and its connected route', async () => {
      await createAddress({ address: '10.0.2.1', prefixLength: 24, port: 'p1' });
      await net.deleteAddress({ address: '10.0.2.1' });
      expect((await addresses()).map((a) => a.address)).not.toContain('10.0.2.1');
      expect((await routes()).map((r) => r.prefix)).not.toContain('10.0.2.0');
    });

    it('answers NOT_FOUND for an address that is not a port address', async () => {
      await fails(net.deleteAddress({ address: '10.0.2.99' }), grpc.status.NOT_FOUND);
    });

    it('rejects an empty address naming the field', async () => {
      await fails(net.deleteAddress({ address: '' }), grpc.status.INVALID_ARGUMENT, /^address: required/);
    });
  });

  describe('connected routes shared by addresses and user routes', () => {
    it('keeps a subnet routed while another address in it remains', async () => {
      await createAddress({ address: '10.0.9.1', prefixLength: 24, port: 'p0' });
      await createAddress({ address: '10.0.9.2', prefixLength: 24, port: 'p0' });
      await net.deleteAddress({ address: '10.0.9.1' });
      expect((await routes()).filter((r) => r.prefix === '10.0.9.0')).toHaveLength(1);
      // A static route for the subnet takes the connected route's place, as it does when created
      // before the address (issue 18: either order ends in the same state), and gives it back.
      await net.createRoute({ route: { prefix: '10.0.9.0', prefixLength: 24, port: 'p1', gateway: '', connected: false } });
      expect((await routes()).filter((r) => r.prefix === '10.0.9.0')).toEqual([expect.objectContaining({ connected: false, port: 'p1' })]);
      await net.deleteRoute({ prefix: '10.0.9.0', prefixLength: 24 });
      expect((await routes()).filter((r) => r.prefix === '10.0.9.0')).toEqual([expect.objectContaining({ connected: true, port: 'p0' })]);
      await net.deleteAddress({ address: '10.0.9.2' });
      expect((await routes()).filter((r) => r.prefix === '10.0.9.0')).toHaveLength(0);
    });

    it('leaves a user route alone when an address in its prefix comes and goes', async () => {
      await net.createRoute({ route: { prefix: '10.0.8.0', prefixLength: 24, port: 'p1', gateway: '', connected: false } });
      await createAddress({ address: '10.0.8.1', prefixLength: 24, port: 'p1' });
      const listed = (await routes()).filter((r) => r.prefix === '10.0.8.0');
      expect(listed).toHaveLength(1);
      expect(listed[0].connected).toBe(false);
      await net.deleteAddress({ address: '10.0.8.1' });
      expect((await routes()).filter((r) => r.prefix === '10.0.8.0')).toHaveLength(1);
      await net.deleteRoute({ prefix: '10.0.8.0', prefixLength: 24 });
      expect((await routes()).filter((r) => r.prefix === '10.0.8.0')).toHaveLength(0);
    });

    it('falls back to the connected route when the user route over an address is deleted', async () => {
      await net.createRoute({ route: { prefix: '10.0.7.0', prefixLength: 24, port: 'p1', gateway: '', connected: false } });
      await createAddress({ address: '10.0.7.1', prefixLength: 24, port: 'p0' });
      await net.deleteRoute({ prefix: '10.0.7.0', prefixLength: 24 });
      const listed = (await routes()).filter((r) => r.prefix === '10.0.7.0');
      expect(listed).toEqual([expect.objectContaining({ connected: true, port: 'p0' })]);
      await fails(net.deleteRoute({ prefix: '10.0.7.0', prefixLength: 24 }), grpc.status.FAILED_PRECONDITION);
      await net.deleteAddress({ address: '10.0.7.1' });
    });
  });

  describe('ListAddresses', () => {
    it('lists addresses in creation order', async () => {
      await createAddress({ address: '10.0.3.2', prefixLength: 24, port: 'p1' });
      await createAddress({ address: '10.0.3.1', prefixLength: 32, port: 'p0' });
      const list = (await addresses()).map((a) => a.address);
      expect(list.indexOf('10.0.3.2')).toBeLessThan(list.indexOf('10.0.3.1'));
    });
  });

  describe('CreateRoute', () => {
    it('adds a route via a gateway and a connected route', async () => {
      await net.createRoute({ route: { prefix: '172.16.0.0', prefixLength: 12, port: 'p1', gateway: '10.0.0.254', connected: false } });
      await net.createRoute({ route: { prefix: '172.32.0.0', prefixLength: 16, port: 'p0', gateway: '', connected: false } });
      const rs = await routes();
      expect(rs).toContainEqual({ prefix: '172.16.0.0', prefixLength: 12, port: 'p1', gateway: '10.0.0.254', connected: false });
      expect(rs).toContainEqual({ prefix: '172.32.0.0', prefixLength: 16, port: 'p0', gateway: '', connected: false });
    });

    it('rejects a prefix with host bits set naming the field, changing nothing', async () => {
      const before = await routes();
      await fails(
        net.createRoute({ route: { prefix: '172.33.1.0', prefixLength: 16, port: 'p0', gateway: '', connected: false } }),
        grpc.status.INVALID_ARGUMENT,
        /^route\.prefix: .*host bits/,
      );
      await fails(
        net.createRoute({ route: { prefix: '172.33.0.0', prefixLength: 16, port: 'p0', gateway: '10.0.0', connected: false } }),
        grpc.status.INVALID_ARGUMENT,
        /^route\.gateway: /,
      );
      expect(await routes()).toEqual(before);
    });

    it('answers NOT_FOUND for a port that does not exist', async () => {
      await fails(
        net.createRoute({ route: { prefix: '172.34.0.0', prefixLength: 16, port: 'nope', gateway: '', connected: false } }),
        grpc.status.NOT_FOUND,
        'no port named',
      );
    });

    it('answers ALREADY_EXISTS for a prefix that has a static route', async () => {
      await fails(
        net.createRoute({ route: { prefix: '172.16.0.0', prefixLength: 12, port: 'p0', gateway: '', connected: false } }),
        grpc.status.ALREADY_EXISTS,
        /^route\.prefix: repeats the static route 172\.16\.0\.0\/12/,
      );
      expect((await routes()).filter((r) => r.prefix === '172.16.0.0')).toHaveLength(1);
    });
  });

  describe('DeleteRoute', () => {
    it('removes a static route', async () => {
      await net.createRoute({ route: { prefix: '172.40.0.0', prefixLength: 16, port: 'p0', gateway: '', connected: false } });
      await net.deleteRoute({ prefix: '172.40.0.0', prefixLength: 16 });
      expect((await routes()).map((r) => r.prefix)).not.toContain('172.40.0.0');
    });

    it('answers NOT_FOUND for a prefix with no route', async () => {
      await fails(net.deleteRoute({ prefix: '172.41.0.0', prefixLength: 16 }), grpc.status.NOT_FOUND);
    });

    it('answers FAILED_PRECONDITION for the connected route of an address', async () => {
      await fails(net.deleteRoute({ prefix: '10.0.0.0', prefixLength: 24 }), grpc.status.FAILED_PRECONDITION, 'delete the address');
      expect(await routes()).toContainEqual(expect.objectContaining({ prefix: '10.0.0.0', connected: true }));
    });

    it('rejects a prefix_length beyond 32 naming the field', async () => {
      await fails(net.deleteRoute({ prefix: '172.41.0.0', prefixLength: 33 }), grpc.status.INVALID_ARGUMENT, /^prefix_length: /);
    });
  });

  describe('ListRoutes', () => {
    it('lists static routes first, then connected ones', async () => {
      const rs = await routes();
      const firstConnected = rs.findIndex((r) => r.connected);
      expect(firstConnected).toBeGreaterThan(0);
      expect(rs.slice(firstConnected).every((r) => r.connected)).toBe(true);
    });
  });

  describe('CreateNeighbor', () => {
    it('adds a static entry with the MAC in lower case', async () => {
      await net.createNeighbor({ neighbor: { address: '10.0.0.10', mac: '02:AA:00:00:00:10', port: 'p0', static: false, ageSeconds: 0 } });
      expect(await neighbors()).toContainEqual({ address: '10.0.0.10', mac: '02:aa:00:00:00:10', port: 'p0', static: true, ageSeconds: 0 });
    });

    it('replaces an existing entry (idempotent create-or-replace)', async () => {
      const n = { address: '10.0.0.11', mac: '02:00:00:00:00:11', port: 'p0', static: true, ageSeconds: 0 };
      await net.createNeighbor({ neighbor: n });
      await net.createNeighbor({ neighbor: n });
      await net.createNeighbor({ neighbor: { ...n, mac: '02:00:00:00:00:12', port: 'p1' } });
      expect((await neighbors()).filter((x) => x.address === '10.0.0.11')).toEqual([{ ...n, mac: '02:00:00:00:00:12', port: 'p1' }]);
    });

    it('rejects a multicast MAC naming the field, changing nothing', async () => {
      const before = await neighbors();
      await fails(
        net.createNeighbor({ neighbor: { address: '10.0.0.12', mac: '01:00:5e:00:00:01', port: 'p0', static: false, ageSeconds: 0 } }),
        grpc.status.INVALID_ARGUMENT,
        /^neighbor\.mac: /,
      );
      expect(await neighbors()).toEqual(before);
    });

    it('answers NOT_FOUND for a port that does not exist', async () => {
      await fails(
        net.createNeighbor({ neighbor: { address: '10.0.0.12', mac: '02:00:00:00:00:12', port: 'nope', static: false, ageSeconds: 0 } }),
        grpc.status.NOT_FOUND,
        'no port named',
      );
    });
  });

  describe('DeleteNeighbor', () => {
    it('removes an entry', async () => {
      await net.createNeighbor({ neighbor: { address: '10.0.0.13', mac: '02:00:00:00:00:13', port: 'p0', static: true, ageSeconds: 0 } });
      await net.deleteNeighbor({ address: '10.0.0.13' });
      expect((await neighbors()).map((n) => n.address)).not.toContain('10.0.0.13');
    });

    it('answers NOT_FOUND for an address with no entry', async () => {
      await fails(net.deleteNeighbor({ address: '10.0.0.14' }), grpc.status.NOT_FOUND);
    });
  });

  describe('ListNeighbors', () => {
    it('lists static entries with age 0', async () => {
      const ns = await neighbors();
      expect(ns.length).toBeGreaterThanOrEqual(2);
      expect(ns.filter((n) => n.static).every((n) => n.ageSeconds === 0)).toBe(true);
    });
  });

  // ------------------------------------------------------------- LoadBalancerService

  describe('CreateVirtualService', () => {
    it('creates a TCP service with no reals', async () => {
      await lb.createVirtualService({ virtualService: svc(tcp80, Scheduler.SCHEDULER_WRR, 7) });
      expect(await getService(tcp80)).toEqual({ ...svc(tcp80, Scheduler.SCHEDULER_WRR, 7), connsTotal: 0n });
    });

    it('creates an ICMP service with port 0', async () => {
      const icmp = { protocol: Protocol.PROTOCOL_ICMP, vip: '198.18.10.1', port: 0 };
      await lb.createVirtualService({ virtualService: svc(icmp, Scheduler.SCHEDULER_RR) });
      expect((await getService(icmp)).scheduler).toBe(Scheduler.SCHEDULER_RR);
    });

    it('rejects a port that does not go with the protocol naming the field, changing nothing', async () => {
      const before = await services();
      await fails(
        lb.createVirtualService({ virtualService: svc({ ...tcp80, port: 0 }) }),
        grpc.status.INVALID_ARGUMENT,
        /^virtual_service\.port: must be 1\.\.65535/,
      );
      await fails(
        lb.createVirtualService({ virtualService: svc({ protocol: Protocol.PROTOCOL_ICMP, vip: '198.18.10.2', port: 1 }) }),
        grpc.status.INVALID_ARGUMENT,
        /^virtual_service\.port: must be 0 for ICMP/,
      );
      expect(await services()).toEqual(before);
    });

    it('rejects unspecified enums and reals naming the field, changing nothing', async () => {
      const before = await services();
      const k = { ...tcp80, port: 81 };
      await fails(
        lb.createVirtualService({ virtualService: svc({ ...k, protocol: Protocol.PROTOCOL_UNSPECIFIED }) }),
        grpc.status.INVALID_ARGUMENT,
        /^virtual_service\.protocol: required/,
      );
      await fails(
        lb.createVirtualService({ virtualService: svc(k, Scheduler.SCHEDULER_UNSPECIFIED) }),
        grpc.status.INVALID_ARGUMENT,
        /^virtual_service\.scheduler: required/,
      );
      await fails(
        lb.createVirtualService({ virtualService: { ...svc(k), reals: [real('10.1.0.1', 80, 1)] } }),
        grpc.status.INVALID_ARGUMENT,
        /^virtual_service\.reals: /,
      );
      expect(await services()).toEqual(before);
    });

    it('answers ALREADY_EXISTS for the same protocol, vip and port', async () => {
      await fails(lb.createVirtualService({ virtualService: svc(tcp80, Scheduler.SCHEDULER_RR) }), grpc.status.ALREADY_EXISTS);
      expect((await getService(tcp80)).scheduler).toBe(Scheduler.SCHEDULER_WRR);
    });
  });

  describe('GetVirtualService', () => {
    it('answers NOT_FOUND for a service that does not exist', async () => {
      await fails(lb.getVirtualService({ key: { ...tcp80, port: 8443 } }), grpc.status.NOT_FOUND);
    });

    it('rejects a missing key naming the field', async () => {
      await fails(lb.getVirtualService({ key: undefined }), grpc.status.INVALID_ARGUMENT, /^key: required/);
      await fails(lb.getVirtualService({ key: { ...tcp80, vip: '198.18.10' } }), grpc.status.INVALID_ARGUMENT, /^key\.vip: /);
    });
  });

  describe('ListVirtualServices', () => {
    it('lists services in creation order with their reals', async () => {
      const k = { protocol: Protocol.PROTOCOL_UDP, vip: '198.18.10.3', port: 53 };
      await lb.createVirtualService({ virtualService: svc(k) });
      await lb.setReals({ key: k, reals: [real('10.1.0.53', 53, 1)] });
      const list = await services();
      expect(list[list.length - 1]).toMatchObject({ ...k, reals: [{ address: '10.1.0.53', port: 53, weight: 1, activeConns: 0n, connsTotal: 0n }] });
      expect(list.findIndex((s) => s.port === 80)).toBeLessThan(list.length - 1);
    });
  });

  describe('UpdateVirtualService', () => {
    it('replaces the scheduler and seed', async () => {
      await lb.updateVirtualService({
        key: tcp80,
        scheduler: Scheduler.SCHEDULER_MAGLEV,
        seed: 0xdeadbeef,
        limits: undefined,
        healthCheck: undefined,
        removeHealthCheck: false,
        synProxy: undefined,
      });
      expect(await getService(tcp80)).toMatchObject({ scheduler: Scheduler.SCHEDULER_MAGLEV, seed: 0xdeadbeef });
    });

    it('rejects SCHEDULER_UNSPECIFIED naming the field, changing nothing', async () => {
      await fails(
        lb.updateVirtualService({
          key: tcp80,
          scheduler: Scheduler.SCHEDULER_UNSPECIFIED,
          seed: 1,
          limits: undefined,
          healthCheck: undefined,
          removeHealthCheck: false,
          synProxy: undefined,
        }),
        grpc.status.INVALID_ARGUMENT,
        /^scheduler: /,
      );
      expect(await getService(tcp80)).toMatchObject({ scheduler: Scheduler.SCHEDULER_MAGLEV, seed: 0xdeadbeef });
    });

    it('answers NOT_FOUND for a service that does not exist', async () => {
      await fails(
        lb.updateVirtualService({
          key: { ...tcp80, port: 8443 },
          scheduler: Scheduler.SCHEDULER_RR,
          seed: 0,
          limits: undefined,
          healthCheck: undefined,
          removeHealthCheck: false,
          synProxy: undefined,
        }),
        grpc.status.NOT_FOUND,
      );
    });
  });

  describe('SetReals', () => {
    const set = [real('10.1.0.3', 8080, 5), real('10.1.0.1', 8080, 1), real('10.1.0.2', 8080, 0)];
    const canonical = [real('10.1.0.1', 8080, 1), real('10.1.0.2', 8080, 0), real('10.1.0.3', 8080, 5)];

    it('installs the set, listed in canonical order, weight 0 included', async () => {
      await lb.setReals({ key: tcp80, reals: set });
      expect((await getService(tcp80)).reals).toEqual(canonical);
    });

    it('is idempotent: the same set twice is OK and changes nothing', async () => {
      await lb.setReals({ key: tcp80, reals: set });
      await lb.setReals({ key: tcp80, reals: [...set].reverse() });
      expect((await getService(tcp80)).reals).toEqual(canonical);
    });

    it('replaces the whole set (declarative)', async () => {
      await lb.setReals({ key: tcp80, reals: [real('10.1.0.2', 8080, 3), real('10.1.0.4', 8080, 1)] });
      expect((await getService(tcp80)).reals).toEqual([real('10.1.0.2', 8080, 3), real('10.1.0.4', 8080, 1)]);
    });

    it('rejects a weight beyond 65535 naming the real, changing nothing', async () => {
      const before = (await getService(tcp80)).reals;
      await fails(
        lb.setReals({ key: tcp80, reals: [real('10.1.0.1', 8080, 1), real('10.1.0.5', 8080, 70000)] }),
        grpc.status.INVALID_ARGUMENT,
        /^reals\[1\]\.weight: /,
      );
      expect((await getService(tcp80)).reals).toEqual(before);
    });

    it('rejects a repeated real naming it, changing nothing', async () => {
      const before = (await getService(tcp80)).reals;
      await fails(
        lb.setReals({ key: tcp80, reals: [real('10.1.0.1', 8080, 1), real('10.1.0.7', 8080, 1), real('10.1.0.1', 8080, 2)] }),
        grpc.status.INVALID_ARGUMENT,
        /^reals\[2\]: repeats reals\[0\]/,
      );
      expect((await getService(tcp80)).reals).toEqual(before);
    });

    it('rejects more reals than a service holds as INVALID_ARGUMENT, changing nothing', async () => {
      const before = (await getService(tcp80)).reals;
      const many = Array.from({ length: 1025 }, (_, i) => real(`10.2.${i >> 8}.${i & 255}`, 8080, 1));
      await fails(lb.setReals({ key: tcp80, reals: many }), grpc.status.INVALID_ARGUMENT, '1024');
      expect((await getService(tcp80)).reals).toEqual(before);
    });

    it('requires port 0 on the reals of an ICMP service', async () => {
      const icmp = { protocol: Protocol.PROTOCOL_ICMP, vip: '198.18.10.1', port: 0 };
      await fails(lb.setReals({ key: icmp, reals: [real('10.1.0.1', 80, 1)] }), grpc.status.INVALID_ARGUMENT, /^reals\[0\]\.port: /);
      await lb.setReals({ key: icmp, reals: [real('10.1.0.1', 0, 1)] });
      expect((await getService(icmp)).reals).toEqual([real('10.1.0.1', 0, 1)]);
    });

    it('answers NOT_FOUND for a service that does not exist', async () => {
      await fails(lb.setReals({ key: { ...tcp80, port: 8443 }, reals: [] }), grpc.status.NOT_FOUND);
    });

    it('empties the set with an empty list', async () => {
      const k = { protocol: Protocol.PROTOCOL_UDP, vip: '198.18.10.3', port: 53 };
      await lb.setReals({ key: k, reals: [] });
      expect((await getService(k)).reals).toEqual([]);
    });
  });

  describe('DeleteVirtualService', () => {
    it('removes the service', async () => {
      const k = { ...tcp80, port: 443 };
      await lb.createVirtualService({ virtualService: svc(k) });
      await lb.deleteVirtualService({ key: k });
      await fails(lb.getVirtualService({ key: k }), grpc.status.NOT_FOUND);
      expect((await services()).map((s) => s.port)).not.toContain(443);
    });

    it('answers NOT_FOUND for a service that does not exist', async () => {
      await fails(lb.deleteVirtualService({ key: { ...tcp80, port: 443 } }), grpc.status.NOT_FOUND);
    });
  });

  describe('CreateLocalAddress', () => {
    it('adds a local address with its source ports', async () => {
      await lb.createLocalAddress({ localAddress: { address: '10.1.0.100', port: 'p1', portsInUse: 0n, portsTotal: 0n } });
      // 1024..65535 for each of TCP, UDP and ICMP.
      expect(await lips()).toContainEqual({ address: '10.1.0.100', port: 'p1', portsInUse: 0n, portsTotal: 3n * 64512n });
    });

    it('answers ALREADY_EXISTS for an address that is already local in any role', async () => {
      const before = await lips();
      await fails(lb.createLocalAddress({ localAddress: { address: '10.1.0.100', port: 'p1', portsInUse: 0n, portsTotal: 0n } }), grpc.status.ALREADY_EXISTS);
      await fails(lb.createLocalAddress({ localAddress: { address: '10.0.0.1', port: 'p0', portsInUse: 0n, portsTotal: 0n } }), grpc.status.ALREADY_EXISTS);
      await fails(createAddress({ address: '10.1.0.100', prefixLength: 24, port: 'p1' }), grpc.status.ALREADY_EXISTS);
      expect(await lips()).toEqual(before);
    });

    it('rejects a bad address naming the field and answers NOT_FOUND for an unknown port', async () => {
      const before = await lips();
      await fails(
        lb.createLocalAddress({ localAddress: { address: '0.0.0.0', port: 'p1', portsInUse: 0n, portsTotal: 0n } }),
        grpc.status.INVALID_ARGUMENT,
        /^local_address\.address: /,
      );
      await fails(lb.createLocalAddress({ localAddress: { address: '10.1.0.101', port: 'nope', portsInUse: 0n, portsTotal: 0n } }), grpc.status.NOT_FOUND);
      expect(await lips()).toEqual(before);
    });
  });

  describe('DeleteLocalAddress', () => {
    it('removes a local address with no conns', async () => {
      await lb.createLocalAddress({ localAddress: { address: '10.1.0.102', port: 'p1', portsInUse: 0n, portsTotal: 0n } });
      await lb.deleteLocalAddress({ address: '10.1.0.102' });
      expect((await lips()).map((l) => l.address)).not.toContain('10.1.0.102');
    });

    it('answers NOT_FOUND for an address that is not a local address', async () => {
      await fails(lb.deleteLocalAddress({ address: '10.1.0.102' }), grpc.status.NOT_FOUND);
    });
  });

  describe('ListLocalAddresses', () => {
    it('lists local addresses in creation order', async () => {
      await lb.createLocalAddress({ localAddress: { address: '10.1.0.99', port: 'p0', portsInUse: 0n, portsTotal: 0n } });
      expect((await lips()).map((l) => l.address)).toEqual(['10.1.0.100', '10.1.0.99']);
    });
  });

  describe('GetTimeouts', () => {
    it('returns every timeout, from the configuration file and its defaults', async () => {
      expect(await timeouts()).toEqual({ tcpSyn: 20, tcpEstablished: 900, tcpFin: 60, tcpClose: 10, udp: 300, icmp: 60 });
    });
  });

  describe('SetTimeouts', () => {
    it('changes the fields that are set, keeps the others and returns them all', async () => {
      const res = await lb.setTimeouts({ timeouts: { udp: 30, tcpFin: 5 } });
      const want: Timeouts = { tcpSyn: 20, tcpEstablished: 900, tcpFin: 5, tcpClose: 10, udp: 30, icmp: 60 };
      expect(res.timeouts).toEqual(want);
      expect(await timeouts()).toEqual(want);
    });

    it('changes nothing for an empty Timeouts', async () => {
      const before = await timeouts();
      expect((await lb.setTimeouts({ timeouts: {} })).timeouts).toEqual(before);
    });

    it('rejects 0 and more than 7 days naming the field, changing nothing', async () => {
      const before = await timeouts();
      await fails(lb.setTimeouts({ timeouts: { tcpSyn: 1, udp: 0 } }), grpc.status.INVALID_ARGUMENT, /^timeouts\.udp: /);
      await fails(lb.setTimeouts({ timeouts: { icmp: 604801 } }), grpc.status.INVALID_ARGUMENT, /^timeouts\.icmp: /);
      await fails(lb.setTimeouts({ timeouts: undefined }), grpc.status.INVALID_ARGUMENT, /^timeouts: required/);
      expect(await timeouts()).toEqual(before);
    });
  });

  // --------------------------------------------------------------------- PathService

  describe('GetSymmetricMode', () => {
    it('starts from the configuration file', async () => {
      expect((await path.getSymmetricMode({})).mode).toEqual({ tcp: true, udp: false, icmp: true });
    });
  });

  describe('SetSymmetricMode', () => {
    it('switches one protocol and reads back', async () => {
      await path.setSymmetricMode({ protocol: Protocol.PROTOCOL_ICMP, enabled: false });
      expect((await path.getSymmetricMode({})).mode).toEqual({ tcp: true, udp: false, icmp: false });
      await path.setSymmetricMode({ protocol: Protocol.PROTOCOL_ICMP, enabled: true });
      await path.setSymmetricMode({ protocol: Protocol.PROTOCOL_UDP, enabled: true });
      await path.setSymmetricMode({ protocol: Protocol.PROTOCOL_UDP, enabled: true });
      expect((await path.getSymmetricMode({})).mode).toEqual({ tcp: true, udp: true, icmp: true });
    });

    it('rejects PROTOCOL_UNSPECIFIED naming the field, changing nothing', async () => {
      await fails(path.setSymmetricMode({ protocol: Protocol.PROTOCOL_UNSPECIFIED, enabled: false }), grpc.status.INVALID_ARGUMENT, /^protocol: /);
      expect((await path.getSymmetricMode({})).mode).toEqual({ tcp: true, udp: true, icmp: true });
    });
  });

  describe('GetCounters', () => {
    it('returns path counters per protocol and port, drops per port and the conn count, all as bigint', async () => {
      const layout = loadNative().counterLayout();
      const camel = (s: string) => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
      const res = await path.getCounters({});
      for (const proto of [res.tcp, res.udp, res.icmp]) {
        expect(proto?.ports.map((p) => p.port)).toEqual(['p0', 'p1']);
        for (const c of [proto!.total!, ...proto!.ports.map((p) => p.counters!)]) {
          expect(Object.keys(c)).toEqual(layout.pathCounters.map(camel));
          for (const v of Object.values(c)) expect(typeof v).toBe('bigint');
        }
        for (const name of Object.keys(proto!.total!) as (keyof PathCounters)[]) {
          expect(proto!.total![name]).toBe(proto!.ports.reduce((s, p) => s + p.counters![name], 0n));
        }
      }
      expect(res.drops.map((d) => d.port)).toEqual(['p0', 'p1']);
      for (const d of res.drops) {
        expect(Object.keys(d.counters!)).toEqual(layout.drops.map(camel));
        for (const v of Object.values(d.counters!)) expect(typeof v).toBe('bigint');
      }
      expect(res.connCount).toBe(0n);
    });
  });

  describe('WatchCounters', () => {
    const watch = (req: Partial<WatchCountersRequest>) =>
      new Promise<{ messages: WatchCountersResponse[]; error?: grpc.ServiceError }>((resolve) => {
        const messages: WatchCountersResponse[] = [];
        const stream = pathSvc.watchCounters({ count: 0, ...req } as WatchCountersRequest);
        stream.on('data', (m: WatchCountersResponse) => messages.push(m));
        stream.on('error', (error: grpc.ServiceError) => resolve({ messages, error }));
        stream.on('end', () => resolve({ messages }));
      });

    it('streams count messages at the interval, each with counters and rates over that interval', async () => {
      const { messages, error } = await watch({ interval: { seconds: 0n, nanos: 150_000_000 }, count: 3 });
      expect(error).toBeUndefined();
      expect(messages).toHaveLength(3);
      for (const m of messages) {
        expect(m.counters?.tcp?.ports.map((p) => p.port)).toEqual(['p0', 'p1']);
        expect(m.rates?.seconds).toBeGreaterThan(0.1);
        expect(m.rates?.ports.map((p) => p.port)).toEqual(['p0', 'p1']);
      }
    });

    it('rejects an interval under 100 ms naming the field', async () => {
      const { messages, error } = await watch({ interval: { seconds: 0n, nanos: 10_000_000 } });
      expect(messages).toHaveLength(0);
      expect(error).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/^interval:/) });
    });

    it('stops when the client cancels', async () => {
      const stream = pathSvc.watchCounters({ interval: { seconds: 0n, nanos: 100_000_000 }, count: 0 });
      await new Promise<void>((resolve) => stream.once('data', () => resolve()));
      const ended = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
      stream.cancel();
      expect((await ended).code).toBe(grpc.status.CANCELLED);
    });
  });

  // ------------------------------------------------------------------------ grpcurl

  describe('grpcurl (real client, JSON field names)', () => {
    const grpcurl = (args: string[], target: string[]) =>
      execFileSync(GRPCURL.path!, ['-plaintext', '-unix', ...args, app.socket, ...target], { encoding: 'utf8' });

    itWith(GRPCURL).each([
      [
        'retrace.v1.NetworkService',
        ['CreateAddress', 'DeleteAddress', 'ListAddresses', 'CreateRoute', 'DeleteRoute', 'ListRoutes', 'CreateNeighbor', 'DeleteNeighbor', 'ListNeighbors'],
      ],
      [
        'retrace.v1.LoadBalancerService',
        [
          'CreateVirtualService',
          'GetVirtualService',
          'ListVirtualServices',
          'UpdateVirtualService',
          'DeleteVirtualService',
          'SetReals',
          'CreateLocalAddress',
          'DeleteLocalAddress',
          'ListLocalAddresses',
          'GetTimeouts',
          'SetTimeouts',
        ],
      ],
      ['retrace.v1.PathService', ['GetSymmetricMode', 'SetSymmetricMode', 'GetCounters']],
    ])('describes %s with every RPC', (service, rpcs) => {
      const out = grpcurl([], ['describe', service as string]);
      for (const r of rpcs as string[]) expect(out).toContain(`rpc ${r} ( .retrace.v1.${r}Request )`);
    });

    itWith(GRPCURL)('creates an address from JSON field names and lists it', () => {
      grpcurl(['-d', '{"address":{"address":"10.0.9.1","prefixLength":24,"port":"p1"}}'], ['retrace.v1.NetworkService/CreateAddress']);
      const list = JSON.parse(grpcurl([], ['retrace.v1.NetworkService/ListAddresses']));
      expect(list.addresses).toContainEqual({ address: '10.0.9.1', prefixLength: 24, port: 'p1' });
    });

    itWith(GRPCURL)('reports INVALID_ARGUMENT with the field to grpcurl', () => {
      let err = '';
      try {
        grpcurl(['-d', '{"address":{"address":"10.0.9.2","prefixLength":40,"port":"p1"}}'], ['retrace.v1.NetworkService/CreateAddress']);
      } catch (e) {
        err = String((e as { stderr?: string }).stderr);
      }
      expect(err).toContain('InvalidArgument');
      expect(err).toContain('address.prefix_length');
    });

    itWith(GRPCURL)('renders uint64 counters as exact decimal strings', () => {
      const c = JSON.parse(grpcurl(['-emit-defaults'], ['retrace.v1.PathService/GetCounters']));
      expect(c.tcp.total.rx).toMatch(/^\d+$/);
      expect(c.drops[0].counters.notForUs).toMatch(/^\d+$/);
      expect(c.connCount).toBe('0');
      const l = JSON.parse(grpcurl([], ['retrace.v1.LoadBalancerService/ListLocalAddresses']));
      expect(l.localAddresses[0].portsTotal).toBe(String(3 * 64512));
    });
  });
});
