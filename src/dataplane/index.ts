/**
 * The TypeScript face of the dataplane: typed calls over the native addon, the EAL/port
 * configuration derived from the appliance config, and counters in named form.
 *
 * Errors: every failure is a DataplaneError whose `code` is an errno name (`ENOENT`, `EINVAL`,
 * `ENODEV`, ...) or `EUNAVAILABLE` when the dataplane is not running. src/server maps codes to gRPC
 * status codes in one place (toStatus).
 *
 * Here: the Dataplane class (types.ts: its shapes; errors.ts, setup.ts: its helpers). Over 500
 * lines because the class is one unit: every table call checks and updates the same recorded
 * desired state, so splitting it would mean sharing those maps between objects.
 */
import type { Config } from '../config';
import { buildEalArgs } from './eal';
import {
  CADDR_ID,
  IPPROTO,
  SCHED_ID,
  SYN_PROXY_ID,
  loadNative,
  type Native,
  type NativeLcore,
  type NativeLimits,
  type NativeMempool,
  type NativePortInfo,
} from './binding';
import { ConnRecords, decodeConns, type ConnView } from './conns';
import { DataplaneError, quoteName, wrap } from './errors';
import { KernelInterfaces } from './kernel-if';
import { nativeConf, removeEalRuntimeDir } from './setup';
import {
  PROTOCOLS,
  serviceKeyString,
  type AddressSpec,
  type ConfigShape,
  type ConnFilter,
  type ConnKey,
  type CounterSnapshot,
  type DataplaneState,
  type LocalAddressSpec,
  type LocalAddressView,
  type NeighborSpec,
  type NeighborView,
  type PathCounters,
  type Protocol,
  type RealSpec,
  type RouteSpec,
  type RouteView,
  type Scheduler,
  type ServiceKey,
  type ServiceLimits,
  type ServiceSpec,
  type ServiceView,
  type Timeouts,
  type SynProxy,
  NO_LIMITS,
  SYN_PROXY_OFF,
  limitsEqual,
  synProxyEqual,
  copyHealthCheck,
  type ServiceChange,
} from './types';

export type { ConnView, ConnEventType, ConnSide, TcpState } from './conns';
export { ConnRecords, CONN_FLAG_LOCAL, RECORD_CODES, type ConnLayout } from './conns';

export type { NativeLimits as TableLimits } from './binding';
export type { NativePortInfo as PortInfo, NativeLcore as LcoreInfo, NativeMempool as MempoolInfo } from './binding';
export { DataplaneError } from './errors';
export { nativeConf } from './setup';
export * from './types';

/** The fixed table sizes of the native layer (no EAL needed: they are compile-time constants). */
export function tableLimits(): NativeLimits {
  return loadNative().limits();
}

function copyLimits(l: ServiceLimits): ServiceLimits {
  return { maxConns: l.maxConns, allow: [...l.allow], deny: [...l.deny], connRate: l.connRate, connBurst: l.connBurst };
}

export class Dataplane {
  private stateValue: DataplaneState = 'starting';
  private startedAtValue: Date | undefined;
  private startCalled = false;
  // Desired state, as configured through this object: the source for listings.
  private readonly addresses = new Map<string, AddressSpec>();
  private readonly routes = new Map<string, RouteSpec>();
  private readonly lips = new Map<string, LocalAddressSpec>();
  private readonly services = new Map<string, ServiceSpec & { reals: RealSpec[] }>();
  /** Static neighbours (learned ones never replace a static entry, so this is the native set). */
  private readonly staticNeighbors = new Map<string, NeighborSpec>();

  private readonly native: Native;
  /** The Linux side of the ports' kernel interfaces (ports[].kernel). */
  readonly kernel: KernelInterfaces;

  constructor(readonly config: Config) {
    this.native = loadNative();
    this.kernel = new KernelInterfaces(config);
  }

  /**
   * Initialises the EAL in this process and starts ports and workers. Once per process: DPDK's
   * EAL cannot be initialised twice (tests that need a dataplane spawn a child process). Calls made
   * while it runs fail with EUNAVAILABLE.
   */
  async start(): Promise<void> {
    if (this.stateValue !== 'starting' || this.startCalled) {
      throw new DataplaneError('EALREADY', 'dataplane already started in this process');
    }
    this.startCalled = true;
    try {
      this.native.ealInit(buildEalArgs(this.config, process.pid));
    } catch (e) {
      this.stateValue = 'stopped';
      throw wrap(e, 'EAL init');
    }
    try {
      await this.native.start(nativeConf(this.config));
    } catch (e) {
      this.stateValue = 'stopped';
      try {
        this.native.cleanup();
      } catch {
        // The start error is the one worth reporting.
      }
      throw wrap(e, 'dataplane start');
    }
    this.stateValue = 'running';
    this.startedAtValue = new Date();
    try {
      this.kernel.setup(this.native.ports());
    } catch (e) {
      this.stop();
      throw e;
    }
    for (const proto of PROTOCOLS) this.native.symmetricSet(IPPROTO[proto], this.config.symmetric[proto]);
    const t = this.config.timeouts;
    this.native.timeoutsSet({
      tcpSyn: t.tcp_syn,
      tcpEstablished: t.tcp_established,
      tcpFin: t.tcp_fin,
      tcpClose: t.tcp_close,
      udp: t.udp,
      icmp: t.icmp,
    });
  }

  get state(): DataplaneState {
    return this.stateValue;
  }

  get startedAt(): Date | undefined {
    return this.startedAtValue;
  }

  get dpdkVersion(): string {
    return this.native.dpdkVersion();
  }

  private requireRunning(): void {
    if (this.stateValue !== 'running') {
      throw new DataplaneError('EUNAVAILABLE', `dataplane is ${this.stateValue}`);
    }
  }

  ports(): NativePortInfo[] {
    this.requireRunning();
    try {
      return this.native.ports();
    } catch (e) {
      throw wrap(e, 'reading ports');
    }
  }

  port(name: string): NativePortInfo {
    const p = this.ports().find((x) => x.name === name);
    if (p === undefined) throw new DataplaneError('ENOENT', `no port named ${quoteName(name)}`);
    return p;
  }

  lcores(): NativeLcore[] {
    this.requireRunning();
    return this.native.lcores();
  }

  mempool(): NativeMempool {
    this.requireRunning();
    const m = this.native.mempool();
    if (m === null) throw new DataplaneError('EUNAVAILABLE', 'mbuf pool not created');
    return m;
  }

  counters(): CounterSnapshot {
    this.requireRunning();
    const layout = this.native.counterLayout();
    const flat = this.native.readCounters();
    const names = this.config.ports.map((p) => p.name);
    const snap: CounterSnapshot = { path: {}, drops: {}, conn: {} };
    const nCtr = layout.pathCounters.length;
    layout.protocols.forEach((proto, pi) => {
      const byPort: Record<string, PathCounters> = {};
      names.forEach((port, idx) => {
        const c: PathCounters = {};
        layout.pathCounters.forEach((ctr, ci) => {
          c[ctr] = flat[(pi * layout.maxPorts + idx) * nCtr + ci];
        });
        byPort[port] = c;
      });
      snap.path[proto] = byPort;
    });
    const dropBase = layout.protocols.length * layout.maxPorts * nCtr;
    names.forEach((port, idx) => {
      const d: Record<string, bigint> = {};
      layout.drops.forEach((reason, ri) => {
        d[reason] = flat[dropBase + idx * layout.drops.length + ri];
      });
      snap.drops[port] = d;
    });
    const connBase = dropBase + layout.maxPorts * layout.drops.length;
    layout.connCounters.forEach((name, i) => {
      snap.conn[name] = flat[connBase + i];
    });
    return snap;
  }

  // ---- control: every mutation validates names, calls the native layer once, then records the
  // desired state; a native failure leaves the recorded state unchanged ----

  private call<T>(what: string, fn: () => T): T {
    this.requireRunning();
    try {
      return fn();
    } catch (e) {
      throw wrap(e, what);
    }
  }

  private readonly changeListeners: (() => void)[] = [];

  /** Called after every successful configuration change (for persistence). */
  onChange(listener: () => void): void {
    this.changeListeners.push(listener);
  }

  private changed(): void {
    for (const l of this.changeListeners) l();
  }

  private portIndex(name: string): number {
    const i = this.config.ports.findIndex((p) => p.name === name);
    if (i < 0) throw new DataplaneError('ENOENT', `no port named ${quoteName(name)}`);
    return i;
  }

  private portName(index: number): string {
    return this.config.ports[index]?.name ?? `#${index}`;
  }

  addAddress(a: AddressSpec): void {
    const idx = this.portIndex(a.port);
    this.call(`address ${a.address}`, () => this.native.addrAdd(a.address, a.prefixLength, idx));
    try {
      this.kernel.addAddress(a.port, a.address, a.prefixLength);
    } catch (e) {
      // All or nothing: the port and its kernel interface carry the same addresses.
      this.native.addrDel(a.address, a.prefixLength);
      throw e;
    }
    this.addresses.set(a.address, { ...a });
    this.changed();
  }

  deleteAddress(address: string): void {
    const a = this.addresses.get(address);
    if (a === undefined) throw new DataplaneError('ENOENT', `no address ${address}`);
    this.call(`address ${address}`, () => this.native.addrDel(address, a.prefixLength));
    this.addresses.delete(address);
    this.changed();
    this.kernel.deleteAddress(a.port, address, a.prefixLength);
  }

  /** The configuration as recorded here: no native call, so cheap enough to check every change. */
  configShape(): ConfigShape {
    return {
      addresses: [...this.addresses.values()],
      routes: [...this.routes.values()],
      neighbors: [...this.staticNeighbors.values()],
      localAddresses: [...this.lips.values()],
      services: [...this.services.values()],
    };
  }

  listAddresses(): AddressSpec[] {
    return [...this.addresses.values()].map((a) => ({ ...a }));
  }

  addRoute(r: RouteSpec): void {
    const idx = this.portIndex(r.port);
    this.call(`route ${r.prefix}/${r.prefixLength}`, () => this.native.routeAdd(r.prefix, r.prefixLength, idx, r.gateway ?? ''));
    this.routes.set(`${r.prefix}/${r.prefixLength}`, { ...r });
    this.changed();
  }

  deleteRoute(prefix: string, prefixLength: number): void {
    const key = `${prefix}/${prefixLength}`;
    if (!this.routes.has(key)) {
      const connected = this.listRoutes().some((r) => r.connected && `${r.prefix}/${r.prefixLength}` === key);
      throw new DataplaneError(connected ? 'EPERM' : 'ENOENT', connected ? `route ${key} belongs to an address; delete the address` : `no route ${key}`);
    }
    this.call(`route ${key}`, () => this.native.routeDel(prefix, prefixLength));
    this.routes.delete(key);
    this.changed();
  }

  listRoutes(): RouteView[] {
    const out: RouteView[] = [...this.routes.values()].map((r) => ({ ...r, connected: false }));
    const seen = new Set<string>();
    for (const a of this.addresses.values()) {
      const prefix = networkOf(a.address, a.prefixLength);
      const key = `${prefix}/${a.prefixLength}`;
      // A user route for the subnet takes precedence (the dataplane routes by it).
      if (seen.has(key) || this.routes.has(key)) continue;
      seen.add(key);
      out.push({ prefix, prefixLength: a.prefixLength, port: a.port, connected: true });
    }
    return out;
  }

  addNeighbor(n: NeighborSpec): void {
    const idx = this.portIndex(n.port);
    this.call(`neighbor ${n.address}`, () => this.native.neighAdd(n.address, n.mac, idx));
    this.staticNeighbors.set(n.address, { ...n });
    this.changed();
  }

  deleteNeighbor(address: string): void {
    this.call(`neighbor ${address}`, () => this.native.neighDel(address));
    this.staticNeighbors.delete(address);
    this.changed();
  }

  listNeighbors(): NeighborView[] {
    return this.call('neighbors', () => this.native.neighList()).map((n) => ({
      address: n.addr,
      mac: n.mac,
      port: this.portName(n.port),
      static: n.static,
      ageSeconds: n.ageSeconds,
    }));
  }

  addLocalAddress(l: LocalAddressSpec): void {
    const idx = this.portIndex(l.port);
    this.call(`local address ${l.address}`, () => this.native.lipAdd(l.address, idx));
    this.lips.set(l.address, { ...l });
    this.changed();
  }

  deleteLocalAddress(address: string): void {
    if (!this.lips.has(address)) throw new DataplaneError('ENOENT', `no local address ${address}`);
    this.call(`local address ${address}`, () => this.native.lipDel(address));
    this.lips.delete(address);
    this.changed();
  }

  listLocalAddresses(): LocalAddressView[] {
    return [...this.lips.values()].map((l) => {
      const u = this.call(`local address ${l.address}`, () => this.native.lipUsage(l.address));
      return { ...l, portsInUse: u.inUse, portsTotal: u.capacity };
    });
  }

  addService(s: ServiceSpec): void {
    const key = serviceKeyString(s);
    this.call(`service ${key}`, () => this.native.serviceAdd(IPPROTO[s.protocol], s.vip, s.port, SCHED_ID[s.scheduler], s.seed));
    const mode = s.clientAddress ?? 'none';
    const synProxy = s.synProxy ?? SYN_PROXY_OFF;
    if (!limitsEqual(s.limits, NO_LIMITS) || mode !== 'none' || !synProxyEqual(synProxy, SYN_PROXY_OFF)) {
      try {
        if (!limitsEqual(s.limits, NO_LIMITS)) this.pushLimits(s, s.limits ?? NO_LIMITS);
        if (mode !== 'none') this.call(`service ${key}`, () => this.native.serviceSetCaddr(IPPROTO[s.protocol], s.vip, s.port, CADDR_ID[mode]));
        if (!synProxyEqual(synProxy, SYN_PROXY_OFF)) this.pushSynProxy(s, synProxy);
      } catch (e) {
        // All or nothing: a service that could not take its limits, mode or SYN proxy is not left without them.
        this.native.serviceDel(IPPROTO[s.protocol], s.vip, s.port);
        throw e;
      }
    }
    this.services.set(key, {
      ...s,
      limits: copyLimits(s.limits ?? NO_LIMITS),
      healthCheck: s.healthCheck === undefined ? undefined : copyHealthCheck(s.healthCheck),
      clientAddress: mode,
      synProxy: { ...synProxy },
      reals: [],
    });
    this.changed();
  }

  private pushLimits(k: ServiceKey, l: ServiceLimits): void {
    const split = (p: string) => {
      const [addr, plen] = p.split('/');
      return { addr, plen: Number(plen) };
    };
    this.call(`service ${serviceKeyString(k)}`, () =>
      this.native.serviceSetLimits(IPPROTO[k.protocol], k.vip, k.port, {
        maxConns: l.maxConns,
        connRate: l.connRate,
        connBurst: l.connBurst,
        allow: l.allow.map(split),
        deny: l.deny.map(split),
      }),
    );
  }

  private pushSynProxy(k: ServiceKey, p: SynProxy): void {
    this.call(`service ${serviceKeyString(k)}`, () => this.native.serviceSetSynProxy(IPPROTO[k.protocol], k.vip, k.port, SYN_PROXY_ID[p.mode], p.threshold));
  }

  /** Sets the SYN flood defence of a service (new conns only). */
  setSynProxy(k: ServiceKey, synProxy: SynProxy): void {
    const key = serviceKeyString(k);
    const s = this.services.get(key);
    if (s === undefined) throw new DataplaneError('ENOENT', `no service ${key}`);
    this.pushSynProxy(k, synProxy);
    s.synProxy = { ...synProxy };
    this.changed();
  }

  /** Half-open TCP conns (handshake not done) over every worker: what auto SYN proxy compares. */
  halfOpenConns(): bigint {
    return this.call('conns', () => this.native.halfOpen());
  }

  /** Replaces the admission limits of a service (new conns only). */
  setLimits(k: ServiceKey, limits: ServiceLimits): void {
    const key = serviceKeyString(k);
    const s = this.services.get(key);
    if (s === undefined) throw new DataplaneError('ENOENT', `no service ${key}`);
    this.pushLimits(k, limits);
    s.limits = copyLimits(limits);
    this.changed();
  }

  /** Conns the whole conn table holds (every worker's): the most max_conns can usefully be. */
  get connCapacity(): number {
    return this.config.dataplane.max_conns * this.config.dataplane.workers;
  }

  deleteService(k: ServiceKey): void {
    const key = serviceKeyString(k);
    this.call(`service ${key}`, () => this.native.serviceDel(IPPROTO[k.protocol], k.vip, k.port));
    this.services.delete(key);
    this.changed();
  }

  /**
   * New scheduler and seed; and whatever `change` names (unset = unchanged): limits, a health check
   * (null removes it), a client-address mode, a SYN proxy. Limits, mode and SYN proxy go first, so
   * values the native layer refuses change nothing of the scheduler.
   */
  updateService(k: ServiceKey, scheduler: Scheduler, seed: number, change: ServiceChange = {}): void {
    const { limits, healthCheck, clientAddress, synProxy } = change;
    const key = serviceKeyString(k);
    const s = this.services.get(key);
    if (s === undefined) throw new DataplaneError('ENOENT', `no service ${key}`);
    if (limits !== undefined && !limitsEqual(limits, s.limits)) this.setLimits(k, limits);
    if (clientAddress !== undefined && clientAddress !== (s.clientAddress ?? 'none')) {
      this.call(`service ${key}`, () => this.native.serviceSetCaddr(IPPROTO[k.protocol], k.vip, k.port, CADDR_ID[clientAddress]));
      s.clientAddress = clientAddress;
    }
    if (synProxy !== undefined && !synProxyEqual(synProxy, s.synProxy)) this.setSynProxy(k, synProxy);
    this.call(`service ${key}`, () => this.native.serviceSetSched(IPPROTO[k.protocol], k.vip, k.port, SCHED_ID[scheduler], seed));
    s.scheduler = scheduler;
    s.seed = seed;
    if (healthCheck !== undefined) s.healthCheck = healthCheck === null ? undefined : copyHealthCheck(healthCheck);
    this.changed();
  }

  /**
   * Inhibits a real (down: no new conns, whatever its weight) or lets it take new conns again: the
   * health checker's verdict. Not configuration: nothing is persisted and no change listener runs.
   */
  setRealDown(k: ServiceKey, address: string, port: number, down: boolean): void {
    this.call(`service ${serviceKeyString(k)} real ${address}:${port}`, () =>
      this.native.serviceSetRealDown(IPPROTO[k.protocol], k.vip, k.port, address, port, down),
    );
  }

  /** Replaces the whole set of reals (declarative). */
  setReals(k: ServiceKey, reals: RealSpec[]): void {
    const key = serviceKeyString(k);
    const s = this.services.get(key);
    if (s === undefined) throw new DataplaneError('ENOENT', `no service ${key}`);
    this.call(`service ${key}`, () =>
      this.native.serviceSetReals(
        IPPROTO[k.protocol],
        k.vip,
        k.port,
        reals.map((r) => ({ addr: r.address, port: r.port, weight: r.weight })),
      ),
    );
    s.reals = reals.map((r) => ({ ...r }));
    this.changed();
  }

  getService(k: ServiceKey): ServiceView {
    const key = serviceKeyString(k);
    const s = this.services.get(key);
    if (s === undefined) throw new DataplaneError('ENOENT', `no service ${key}`);
    const live = this.call(`service ${key}`, () => this.native.serviceReals(IPPROTO[k.protocol], k.vip, k.port));
    const drops = this.call(`service ${key}`, () => this.native.serviceDrops(IPPROTO[k.protocol], k.vip, k.port));
    const syn = this.call(`service ${key}`, () => this.native.serviceSynProxy(IPPROTO[k.protocol], k.vip, k.port));
    return {
      protocol: s.protocol,
      vip: s.vip,
      port: s.port,
      scheduler: s.scheduler,
      seed: s.seed,
      connsTotal: live.connsTotal,
      limits: copyLimits(s.limits ?? NO_LIMITS),
      healthCheck: s.healthCheck === undefined ? undefined : copyHealthCheck(s.healthCheck),
      clientAddress: s.clientAddress ?? 'none',
      activeConns: drops.activeConns,
      refusedMaxConns: drops.maxConns,
      refusedDenied: drops.denied,
      refusedNotAllowed: drops.notAllowed,
      refusedRateLimited: drops.rateLimited,
      synProxy: { ...(s.synProxy ?? SYN_PROXY_OFF) },
      synCookiesSent: syn.cookiesSent,
      synCookiesValid: syn.cookiesValid,
      synCookiesInvalid: syn.cookiesInvalid,
      reals: live.reals.map((r) => ({
        address: r.addr,
        port: r.port,
        weight: r.weight,
        down: r.down,
        activeConns: r.activeConns,
        connsTotal: r.connsTotal,
        packetsToReal: r.packetsToReal,
        packetsFromReal: r.packetsFromReal,
        bytesToReal: r.bytesToReal,
        bytesFromReal: r.bytesFromReal,
        proxyHeaders: r.proxyHeaders,
        segmentsShifted: r.segmentsShifted,
        toaAdded: r.toaAdded,
        toaNoRoom: r.toaNoRoom,
      })),
    };
  }

  listServices(): ServiceView[] {
    return [...this.services.values()].map((s) => this.getService(s));
  }

  /** Keys of the services, in creation order, without reading their reals. */
  serviceKeys(): ServiceKey[] {
    return [...this.services.values()].map((s) => ({ protocol: s.protocol, vip: s.vip, port: s.port }));
  }

  /** Conns created for all services together (the sum of their connsTotal), read in one pass. */
  servicesConnsTotal(): bigint {
    return this.call('services', () => this.native.servicesConnsTotal());
  }

  setSymmetric(protocol: Protocol, enabled: boolean): void {
    this.call('symmetric mode', () => this.native.symmetricSet(IPPROTO[protocol], enabled));
    this.changed();
  }

  symmetric(): Record<Protocol, boolean> {
    this.requireRunning();
    return { tcp: this.native.symmetricGet(IPPROTO.tcp), udp: this.native.symmetricGet(IPPROTO.udp), icmp: this.native.symmetricGet(IPPROTO.icmp) };
  }

  setTimeouts(t: Partial<Timeouts>): Timeouts {
    const merged = { ...this.timeouts(), ...t };
    this.call('timeouts', () => this.native.timeoutsSet(merged));
    this.changed();
    return merged;
  }

  timeouts(): Timeouts {
    this.requireRunning();
    return this.native.timeoutsGet();
  }

  connCount(): bigint {
    this.requireRunning();
    return this.native.connCount();
  }

  // ---- conns and conn events ----

  private layout: Record<string, number> | undefined;
  private names: string[] | undefined;

  private connLayout(): Record<string, number> {
    this.layout ??= this.native.connInfoLayout();
    return this.layout;
  }

  get workers(): number {
    this.requireRunning();
    return this.native.nbWorkers();
  }

  /** Turns conn event production on or off in every worker (off costs nothing per conn). */
  enableEvents(on: boolean): void {
    this.requireRunning();
    this.native.eventsEnable(on);
  }

  /** Takes up to max queued events; `dropped` is the running total lost to full worker rings. */
  drainEvents(max: number): { records: ConnRecords; dropped: bigint } {
    this.requireRunning();
    const r = this.native.eventsDrain(max);
    return { records: new ConnRecords(r.buffer, r.count, this.connLayout(), this.portNames()), dropped: r.dropped };
  }

  /** Port names by port index, as conn records name their sides' ports. */
  private portNames(): string[] {
    this.names ??= this.config.ports.map((p) => p.name);
    return this.names;
  }

  /**
   * One page of one worker's conns, from cursor (0 = start). The worker walks its own table between
   * bursts; `done` means the walk reached the end.
   */
  async dumpConns(worker: number, cursor: number, max: number): Promise<{ conns: ConnView[]; cursor: number; done: boolean }> {
    this.requireRunning();
    try {
      const r = await this.native.connsDump(worker, cursor, max);
      return { conns: decodeConns(r.buffer, r.count, this.connLayout(), this.portNames()), cursor: r.cursor, done: r.done };
    } catch (e) {
      throw wrap(e, 'conn dump');
    }
  }

  /**
   * The conn whose client-side key is (protocol, client, clientPort, vip, vipPort): an exact
   * lookup on each worker in turn. For ICMP clientPort is the echo id and vipPort is ignored.
   */
  async getConn(key: ConnKey): Promise<ConnView | undefined> {
    this.requireRunning();
    try {
      const r = await this.native.connGet({ ...key, protocol: IPPROTO[key.protocol], real: '', realPort: 0 });
      return r.count === 0 ? undefined : decodeConns(r.buffer, r.count, this.connLayout(), this.portNames())[0];
    } catch (e) {
      throw wrap(e, 'conn lookup');
    }
  }

  /** Deletes matching conns on every worker (each produces a closed event); returns how many. */
  async deleteConns(filter: Partial<ConnFilter>): Promise<bigint> {
    this.requireRunning();
    const f = {
      protocol: filter.protocol ? IPPROTO[filter.protocol] : 0,
      client: filter.client ?? '',
      clientPort: filter.clientPort ?? 0,
      vip: filter.vip ?? '',
      vipPort: filter.vipPort ?? 0,
      real: filter.real ?? '',
      realPort: filter.realPort ?? 0,
    };
    try {
      return await this.native.connsDelete(f);
    } catch (e) {
      throw wrap(e, 'conn delete');
    }
  }

  /** Stops workers and ports and releases the EAL. Idempotent. */
  stop(): void {
    if (this.stateValue !== 'running') return;
    this.stateValue = 'stopping';
    try {
      this.native.stop();
      this.native.cleanup();
    } catch (e) {
      throw wrap(e, 'dataplane stop');
    } finally {
      this.stateValue = 'stopped';
      removeEalRuntimeDir(this.config);
    }
  }
}

/** The network address of addr/len in dotted quad. */
export function networkOf(addr: string, len: number): string {
  const n = addr.split('.').reduce((acc, o) => (acc << 8) | Number(o), 0) >>> 0;
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const net = (n & mask) >>> 0;
  return [24, 16, 8, 0].map((sh) => (net >>> sh) & 0xff).join('.');
}
