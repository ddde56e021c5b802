/**
 * ConfigManager (ConfigService's logic) over a fake Dataplane that records every call: which
 * Dataplane calls an ApplyConfig makes, what a failure midway reports, and drain bookkeeping.
 */
import { status, type ServiceError } from '@grpc/grpc-js';
import { DataplaneError, serviceKeyString, type Dataplane, type RealSpec, type ServiceKey, type ServiceSpec } from '../../src/dataplane';
import { Real, VirtualService } from '../../src/gen/retrace/v1/balancer';
import { ConfigDiff, type Config } from '../../src/gen/retrace/v1/config';
import { Protocol, Scheduler } from '../../src/gen/retrace/v1/types';
import { APPLIED_METADATA_KEY } from '../../src/api/metadata';
import { ConfigManager } from '../../src/server/config/apply';
import { createLogger } from '../../src/log';

type Svc = ServiceSpec & { reals: RealSpec[] };

/** Just enough of Dataplane for ConfigManager: tables in memory, every mutation logged. */
class FakeDataplane {
  state = 'running';
  config = { ports: [{ name: 'uplink-a' }, { name: 'uplink-b' }] };
  calls: string[] = [];
  failOn: string | undefined;
  addresses: { address: string; prefixLength: number; port: string }[] = [];
  routes: { prefix: string; prefixLength: number; port: string; gateway?: string }[] = [];
  services = new Map<string, Svc>();
  sym = { tcp: true, udp: true, icmp: true };
  tmo = { tcpSyn: 30, tcpEstablished: 900, tcpFin: 60, tcpClose: 10, udp: 300, icmp: 60 };

  private log(call: string): void {
    if (this.failOn !== undefined && call.startsWith(this.failOn)) throw new DataplaneError('ENOSPC', `${call}: table full`);
    this.calls.push(call);
  }

  listAddresses() {
    return this.addresses.map((a) => ({ ...a }));
  }
  listRoutes() {
    return this.routes.map((r) => ({ ...r, connected: false }));
  }
  listNeighbors() {
    return [];
  }
  listLocalAddresses() {
    return [];
  }
  listServices() {
    return [...this.services.values()].map((s) => ({ ...s, connsTotal: 0n, reals: s.reals.map((r) => ({ ...r, activeConns: 0n, connsTotal: 0n })) }));
  }
  symmetric() {
    return { ...this.sym };
  }
  timeouts() {
    return { ...this.tmo };
  }
  addAddress(a: { address: string; prefixLength: number; port: string }) {
    this.log(`addAddress ${a.address}`);
    this.addresses.push(a);
  }
  deleteAddress(address: string) {
    this.log(`deleteAddress ${address}`);
    this.addresses = this.addresses.filter((a) => a.address !== address);
  }
  addRoute(r: { prefix: string; prefixLength: number; port: string; gateway?: string }) {
    this.log(`addRoute ${r.prefix}/${r.prefixLength}`);
    this.routes.push(r);
  }
  deleteRoute(prefix: string, len: number) {
    this.log(`deleteRoute ${prefix}/${len}`);
    this.routes = this.routes.filter((r) => r.prefix !== prefix || r.prefixLength !== len);
  }
  addService(s: ServiceSpec) {
    this.log(`addService ${serviceKeyString(s)}`);
    this.services.set(serviceKeyString(s), { ...s, reals: [] });
  }
  deleteService(k: ServiceKey) {
    this.log(`deleteService ${serviceKeyString(k)}`);
    this.services.delete(serviceKeyString(k));
  }
  updateService(k: ServiceKey, scheduler: Svc['scheduler'], seed: number) {
    this.log(`updateService ${serviceKeyString(k)} ${scheduler} ${seed}`);
    Object.assign(this.services.get(serviceKeyString(k))!, { scheduler, seed });
  }
  setReals(k: ServiceKey, reals: RealSpec[]) {
    this.log(`setReals ${serviceKeyString(k)} ${reals.map((r) => `${r.address}:${r.port}@${r.weight}`).join(',')}`);
    this.services.get(serviceKeyString(k))!.reals = reals.map((r) => ({ address: r.address, port: r.port, weight: r.weight }));
  }
  setSymmetric(p: 'tcp' | 'udp' | 'icmp', on: boolean) {
    this.log(`setSymmetric ${p} ${on}`);
    this.sym[p] = on;
  }
  setTimeouts(t: Partial<FakeDataplane['tmo']>) {
    this.log(`setTimeouts ${JSON.stringify(t)}`);
    Object.assign(this.tmo, t);
    return { ...this.tmo };
  }
}

const real = (address: string, port: number, weight: number): Real => ({ ...Real.create(), address, port, weight });
const svc = (port: number, reals: Real[], scheduler = Scheduler.SCHEDULER_WRR) =>
  VirtualService.create({ protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.10', port, scheduler, seed: 0, reals });

function doc(): Config {
  return {
    addresses: [{ address: '198.18.0.1', prefixLength: 24, port: 'uplink-a' }],
    routes: [{ prefix: '0.0.0.0', prefixLength: 0, port: 'uplink-a', gateway: '198.18.0.254', connected: false }],
    neighbors: [],
    localAddresses: [],
    virtualServices: [svc(80, [real('10.1.0.11', 80, 1), real('10.1.0.12', 80, 1)]), svc(443, [real('10.1.0.11', 443, 1)])],
    symmetric: undefined,
    timeouts: undefined,
  };
}

describe('ConfigManager', () => {
  let dp: FakeDataplane;
  let drained: boolean[];
  let m: ConfigManager;

  beforeEach(() => {
    dp = new FakeDataplane();
    drained = [];
    m = new ConfigManager(dp as unknown as Dataplane, createLogger('silent'), { setDrained: (d) => drained.push(d) });
  });

  it('makes one SetReals for the service whose reals changed and leaves the other alone', () => {
    m.apply({ config: doc(), dryRun: false });
    dp.calls = [];
    const next = doc();
    next.virtualServices[0].reals[1].weight = 3;
    const res = m.apply({ config: next, dryRun: false });
    expect(dp.calls).toEqual(['setReals tcp/198.18.0.10:80 10.1.0.11:80@1,10.1.0.12:80@3']);
    expect(res.diff!.reals!.updated).toEqual(['tcp/198.18.0.10:80 10.1.0.12:80']);
  });

  it('calls nothing for the same document twice, and nothing on a dry run', () => {
    m.apply({ config: doc(), dryRun: false });
    dp.calls = [];
    m.apply({ config: doc(), dryRun: false });
    const next = doc();
    next.virtualServices.pop();
    const dry = m.apply({ config: next, dryRun: true });
    expect(dp.calls).toEqual([]);
    expect(dry.dryRun).toBe(true);
    expect(dry.diff!.virtualServices!.deleted).toEqual(['tcp/198.18.0.10:443']);
  });

  it('changes nothing for an invalid document', () => {
    const bad = doc();
    bad.virtualServices[1].reals[0].weight = 70000;
    expect(() => m.apply({ config: bad, dryRun: false })).toThrow('config.virtual_services[1].reals[0].weight: must be 0..65535, got 70000');
    expect(dp.calls).toEqual([]);
  });

  it('reports a failure midway with its code, the step, and what was applied', () => {
    dp.failOn = 'addService tcp/198.18.0.10:443';
    let err: unknown;
    try {
      m.apply({ config: doc(), dryRun: false });
    } catch (e) {
      err = (e as { status?: ServiceError }).status;
    }
    const st = err as ServiceError;
    expect(st.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(st.details).toMatch(
      /^creating virtual service tcp\/198\.18\.0\.10:443: .*table full \(applied before the failure: addresses: 1 created; routes: 1 created; virtual_services: 1 created; reals: 2 created\)$/,
    );
    const applied = ConfigDiff.decode(st.metadata.get(APPLIED_METADATA_KEY)[0] as Buffer);
    expect(applied.virtualServices!.created).toEqual(['tcp/198.18.0.10:80']);
    // Applying again resumes where it stopped.
    dp.failOn = undefined;
    dp.calls = [];
    m.apply({ config: doc(), dryRun: false });
    expect(dp.calls).toEqual(['addService tcp/198.18.0.10:443', 'setReals tcp/198.18.0.10:443 10.1.0.11:443@1']);
  });

  it('drains to weight 0, keeps configured weights through ApplyConfig, and restores them', () => {
    m.apply({ config: doc(), dryRun: false });
    expect(m.drainAll()).toEqual({ realsDrained: 3, virtualServices: 2 });
    expect(drained).toEqual([true]);
    expect(m.drainAll()).toEqual({ realsDrained: 0, virtualServices: 0 });
    expect([...dp.services.values()].flatMap((s) => s.reals.map((r) => r.weight))).toEqual([0, 0, 0]);
    // The configured weights show through GetConfig, so the same document changes nothing.
    expect(m.getConfig().virtualServices.flatMap((s) => s.reals.map((r) => r.weight))).toEqual([1, 1, 1]);
    dp.calls = [];
    expect(m.apply({ config: doc(), dryRun: false }).diff!.reals!.updated).toEqual([]);
    expect(dp.calls).toEqual([]);
    // A weight change while drained is remembered, not applied.
    const next = doc();
    next.virtualServices[0].reals[0].weight = 5;
    m.apply({ config: next, dryRun: false });
    expect(dp.calls).toEqual(['setReals tcp/198.18.0.10:80 10.1.0.11:80@0,10.1.0.12:80@0']);
    expect(m.undrainAll()).toEqual({ realsRestored: 3, virtualServices: 2 });
    expect([...dp.services.values()].flatMap((s) => s.reals.map((r) => r.weight))).toEqual([5, 1, 1]);
    expect(drained).toEqual([true, true, false]);
    expect(m.undrainAll()).toEqual({ realsRestored: 0, virtualServices: 0 });
  });

  it('answers UNAVAILABLE-coded errors while the dataplane is not running', () => {
    dp.state = 'starting';
    expect(() => m.getConfig()).toThrow(expect.objectContaining({ code: 'EUNAVAILABLE' }));
    expect(() => m.drainAll()).toThrow(expect.objectContaining({ code: 'EUNAVAILABLE' }));
  });
});
