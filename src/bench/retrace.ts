/**
 * retrace under the benchmark: a `retrace serve` child (src/lab/appliance.ts) whose `client` port
 * replays a pcap forever (net_pcap infinite_rx; what it transmits is dropped) and whose `servers`
 * port is a sink (drops what it transmits, receives nothing; see configYaml), one busy-polling
 * worker. Configured
 * over gRPC the way an operator would: port addresses (the servers address gives the connected
 * route to the reals), a default route toward the client side, static neighbours for every real and
 * the gateway (so nothing waits on ARP), LIPs on `servers`, services on the VIP with 3 reals.
 * Rates come from the driver counters (ListPorts), drops from GetCounters.
 */
import { execFileSync } from 'node:child_process';
import { ApplianceProcess } from '../lab/appliance';
import type { DropCounters, GetCountersResponse } from '../gen/retrace/v1/path';
import type { PortStats } from '../gen/retrace/v1/port';
import { Real, VirtualService } from '../gen/retrace/v1/balancer';
import { Protocol, Scheduler } from '../gen/retrace/v1/types';
import { track } from './children';
import { intToIp, ipToInt } from './pcap';
import type { Hugepages } from './hugepages';
import { lipsFor, mbufsFor, retraceMemoryMb } from './sizing';
import { now, sleep } from './stats';

export const NET = {
  clientMac: '02:00:00:00:00:01',
  serversMac: '02:00:00:00:00:02',
  /** The pcap's source MAC: the client-side router. */
  gatewayMac: '02:00:00:00:0c:01',
  clientAddr: '198.18.0.1',
  clientPrefix: 24,
  gateway: '198.18.0.254',
  serversAddr: '10.1.0.1',
  serversPrefix: 16,
  vip: '198.18.1.10',
  vport: 80,
  reals: ['10.1.0.11', '10.1.0.12', '10.1.0.13'],
  realPort: 8080,
  lipBase: '10.1.1.1',
  clientBase: '100.64.0.0',
} as const;

export type Proto = 'tcp' | 'udp' | 'icmp';
const PB: Record<Proto, Protocol> = { tcp: Protocol.PROTOCOL_TCP, udp: Protocol.PROTOCOL_UDP, icmp: Protocol.PROTOCOL_ICMP };

export interface RetraceOptions {
  pcap: string;
  packets: number;
  /** A pcap holding no packet: the `servers` port (see configYaml). */
  emptyPcap: string;
  /** Overrides eal.memory_mb (default: computed from the pools). */
  memoryMb?: number;
  /** dataplane.max_conns (conn table of the one worker). */
  maxConns: number;
  /** LIPs to create (default: enough for maxConns conns of one protocol). */
  lips?: number;
  /** Overrides of dataplane.mbufs (default: the pcap plus working room). */
  mbufs?: number;
  eventRing?: number;
  subscriberBuffer?: number;
  eventHistory?: number;
  /** Extra YAML appended to the config. */
  extraYaml?: string;
  /**
   * dataplane.table_pressure. Default: eviction on, but only when the table or the ports are full
   * (percentages 0): the benchmark's TCP flows never finish their handshake (the servers port is
   * a sink), so at the 90% defaults the cases that fill most of a table or of the LIPs' ports
   * (new-conns, conn-scale) would evict their own conns older than min_age_ms.
   */
  tablePressure?: { evictEmbryonic?: boolean; connsPercent?: number; portsPercent?: number; minAgeMs?: number };
  /**
   * The worker polls without ever backing off (default true: forwarding figures). The
   * control-plane load case has no traffic and turns it off, so the idle worker does not hold a
   * core the load generator needs.
   */
  busyPoll?: boolean;
  /**
   * --hugepages: eal.hugepages with eal.huge_dir = this mount, eal.memory_mb sized for 2 MiB
   * pages, and a file prefix of the run's own whose hugepage files are removed after it stops.
   */
  huge?: Hugepages;
}

let runSeq = 0;

export interface PortSnap {
  rx: number;
  tx: number;
  txDropped: number;
  rxNombuf: number;
}

export interface Snapshot {
  t: number;
  client: PortSnap;
  servers: PortSnap;
}

export interface RateSample {
  seconds: number;
  clientRx: number;
  clientTx: number;
  serversTx: number;
}

const portSnap = (s: PortStats | undefined): PortSnap => ({
  rx: Number(s?.rxPackets ?? 0n),
  tx: Number(s?.txPackets ?? 0n),
  txDropped: Number(s?.txDropped ?? 0n),
  rxNombuf: Number(s?.rxNombuf ?? 0n),
});

/** Non-zero drop counters summed over ports, by reason (after - before). */
export function dropDelta(after: GetCountersResponse, before?: GetCountersResponse): Record<string, number> {
  const sum = (c: GetCountersResponse | undefined): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const p of c?.drops ?? []) {
      for (const [k, v] of Object.entries(p.counters ?? ({} as DropCounters))) {
        out[k] = (out[k] ?? 0) + Number(v as bigint);
      }
    }
    return out;
  };
  const a = sum(after);
  const b = sum(before);
  const out: Record<string, number> = {};
  for (const k of Object.keys(a)) {
    const d = a[k] - (b[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

export class RetraceRun {
  readonly app = new ApplianceProcess();
  readonly lips: number;
  readonly mbufs: number;
  readonly memoryMb: number;
  /** eal.file_prefix: unique per run, so that its hugepage files can be told apart. */
  readonly filePrefix = `rtbench-${process.pid}-r${runSeq++}`;

  constructor(readonly opts: RetraceOptions) {
    this.lips = opts.lips ?? lipsFor(opts.maxConns);
    this.mbufs = opts.mbufs ?? mbufsFor(opts.packets);
    this.memoryMb =
      opts.memoryMb ??
      retraceMemoryMb({ mbufs: this.mbufs, maxConns: opts.maxConns, lips: this.lips, eventRing: opts.eventRing, huge: opts.huge !== undefined });
  }

  configYaml(): string {
    const o = this.opts;
    // --kernel (RETRACE_BENCH_KERNEL=1): every port gets a kernel interface that stays idle, to
    // measure what the option costs the packet path when on. They live in a namespace of this
    // run's own (kernelNetns), so the bench's addresses never reach the host's routing table.
    const kernel = (p: string) => (this.kernelNetns !== undefined ? `, kernel: {name: "rtb${process.pid % 10000000}${p}", netns: "${this.kernelNetns}"}` : '');
    return [
      'log: {level: warn}',
      `grpc: {event_history: ${o.eventHistory ?? 65536}, subscriber_buffer: ${o.subscriberBuffer ?? 4096}}`,
      o.huge !== undefined
        ? `eal: {memory_mb: ${this.memoryMb}, hugepages: true, huge_dir: "${o.huge.dir}", file_prefix: "${this.filePrefix}"}`
        : `eal: {memory_mb: ${this.memoryMb}}`,
      'dataplane:',
      '  workers: 1',
      `  mbufs: ${this.mbufs}`,
      `  max_conns: ${o.maxConns}`,
      '  icmp_rate: 0',
      `  event_ring: ${o.eventRing ?? 65536}`,
      `  table_pressure: {evict_embryonic: ${o.tablePressure?.evictEmbryonic ?? true}, conns_percent: ${o.tablePressure?.connsPercent ?? 0}, ` +
        `ports_percent: ${o.tablePressure?.portsPercent ?? 0}, min_age_ms: ${o.tablePressure?.minAgeMs ?? 1000}}`,
      o.busyPoll === false ? '' : '  idle: {pause_after: 0, sleep_after: 0}',
      'ports:',
      // packets 0: no traffic (infinite_rx needs at least one packet to replay).
      `  - {name: client, device: "net_pcap0,rx_pcap=${o.pcap}${o.packets > 0 ? ',infinite_rx=1' : ''}", mac: "${NET.clientMac}"${kernel('c')}}`,
      // The sink. net_null0,no-rx=1 would be the obvious one, but ports[].device rejects the "-"
      // in "no-rx" (src/config/fields.ts VDEV_RE), and net_null without it floods the worker with frames
      // (a second --vdev in eal.extra_args does not replace the first). net_pcap reading a pcap
      // with no packet, given no tx argument, drops what it transmits and counts it: the same
      // thing. testpmd gets the same sink (testpmd.ts).
      `  - {name: servers, device: "net_pcap1,rx_pcap=${o.emptyPcap}", mac: "${NET.serversMac}"${kernel('s')}}`,
      // Flows here only ever send from the client side (SYN_SENT for TCP): keep them alive.
      'timeouts: {tcp_syn: 3600, tcp_established: 3600, udp: 3600, icmp: 3600}',
      o.extraYaml ?? '',
    ].join('\n');
  }

  /** The namespace of the kernel interfaces under --kernel; made by start(), removed by stop(). */
  private kernelNetns: string | undefined;

  async start(): Promise<void> {
    if (process.env.RETRACE_BENCH_KERNEL === '1') {
      this.kernelNetns = `retrace-bench-${process.pid}`;
      execFileSync('ip', ['netns', 'add', this.kernelNetns]);
    }
    this.opts.huge?.ensure(this.memoryMb, 'retrace');
    this.app.start(this.configYaml());
    if (this.app.child) track(this.app.child);
    // Loading the pcap into mbufs and populating pools scale with their size.
    await this.app.waitServing(60000 + this.opts.packets / 50 + this.opts.maxConns / 50);
  }

  get pid(): number {
    return this.app.child?.pid ?? -1;
  }

  get api() {
    return this.app.api;
  }

  /** Addresses, default route, static neighbours, LIPs. */
  async setupNetwork(): Promise<void> {
    const { network, balancer } = this.app.api;
    await network.createAddress({ address: { address: NET.clientAddr, prefixLength: NET.clientPrefix, port: 'client' } });
    await network.createAddress({ address: { address: NET.serversAddr, prefixLength: NET.serversPrefix, port: 'servers' } });
    await network.createNeighbor({ neighbor: { address: NET.gateway, mac: NET.gatewayMac, port: 'client', static: true, ageSeconds: 0 } });
    await network.createRoute({ route: { prefix: '0.0.0.0', prefixLength: 0, port: 'client', gateway: NET.gateway, connected: false } });
    for (const [i, r] of NET.reals.entries()) {
      await network.createNeighbor({
        neighbor: { address: r, mac: `02:00:00:00:0b:${(i + 1).toString(16).padStart(2, '0')}`, port: 'servers', static: true, ageSeconds: 0 },
      });
    }
    const base = ipToInt(NET.lipBase);
    for (let i = 0; i < this.lips; i++) {
      await balancer.createLocalAddress({ localAddress: { address: intToIp(base + i), port: 'servers', portsInUse: 0n, portsTotal: 0n } });
    }
  }

  async addService(proto: Proto, withReals = true): Promise<void> {
    await this.app.api.balancer.createVirtualService({
      virtualService: VirtualService.fromPartial({
        protocol: PB[proto],
        vip: NET.vip,
        port: proto === 'icmp' ? 0 : NET.vport,
        scheduler: Scheduler.SCHEDULER_RR,
      }),
    });
    if (withReals) await this.setReals(proto);
  }

  async setReals(proto: Proto): Promise<void> {
    await this.app.api.balancer.setReals({
      key: { protocol: PB[proto], vip: NET.vip, port: proto === 'icmp' ? 0 : NET.vport },
      reals: NET.reals.map((address) => Real.fromPartial({ address, port: proto === 'icmp' ? 0 : NET.realPort, weight: 1 })),
    });
  }

  async snapshot(): Promise<Snapshot> {
    const t0 = now();
    const r = await this.app.api.ports.listPorts({});
    const t1 = now();
    const by = (n: string): PortStats | undefined => r.ports.find((p) => p.name === n)?.stats;
    return { t: (t0 + t1) / 2, client: portSnap(by('client')), servers: portSnap(by('servers')) };
  }

  async counters(): Promise<GetCountersResponse> {
    return this.app.api.path.getCounters({});
  }

  async connCount(): Promise<number> {
    return Number((await this.counters()).connCount);
  }

  /** Waits until the conn count reaches `n` (or stops growing for `stallS`); returns the count. */
  async waitConns(n: number, timeoutS: number, stallS = 5): Promise<number> {
    const deadline = now() + timeoutS;
    let last = -1;
    let lastChange = now();
    for (;;) {
      const c = await this.connCount();
      if (c >= n) return c;
      if (c !== last) {
        last = c;
        lastChange = now();
      }
      if (now() > deadline || now() - lastChange > stallS) return c;
      await sleep(100);
    }
  }

  /** One rate sample per `periodS` for `count` periods (rates from driver counters). */
  async sampleRates(count: number, periodS = 1): Promise<RateSample[]> {
    const out: RateSample[] = [];
    let prev = await this.snapshot();
    for (let i = 0; i < count; i++) {
      const wait = prev.t + periodS - now();
      if (wait > 0) await sleep(wait * 1000);
      const cur = await this.snapshot();
      const dt = cur.t - prev.t;
      out.push({
        seconds: dt,
        clientRx: (cur.client.rx - prev.client.rx) / dt,
        clientTx: (cur.client.tx - prev.client.tx) / dt,
        serversTx: (cur.servers.tx - prev.servers.tx) / dt,
      });
      prev = cur;
    }
    return out;
  }

  async stop(): Promise<void> {
    try {
      if (this.app.running) await this.app.stop(20000);
    } finally {
      await this.app.kill();
      this.opts.huge?.cleanPrefix(this.filePrefix);
      if (this.kernelNetns !== undefined) {
        execFileSync('ip', ['netns', 'del', this.kernelNetns], { stdio: 'ignore' });
        this.kernelNetns = undefined;
      }
    }
  }
}
