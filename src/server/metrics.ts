/**
 * Prometheus metrics (prom-client) served over plain HTTP at GET /metrics on `metrics.listen`.
 *
 * Nothing is counted here: every value is read from the dataplane when a body is rendered, in the
 * metrics' collect callbacks, from one snapshot per render (the first callback reads, the others
 * reuse it until the render's tick ends); the per-service and per-real families are written as
 * text by renderServiceSeries, in slices. One render serves every scrape that arrives while it
 * runs and, for a second after, every later one (MetricsRenderer). Names reuse the dataplane's counter names verbatim, as the
 * proto fields do (retrace.v1.PathCounters, DropCounters, PortStats); help texts are those fields'
 * proto comments, taken from the generated descriptor set.
 *
 *   retrace_path_<counter>_total{protocol,port}   every path counter (rx, tx_symmetric, ...)
 *   retrace_drops_total{port,reason}              every drop counter
 *   retrace_port_<stat>_total{port}               driver statistics (rx_packets, tx_bytes, ...)
 *   retrace_conns                                 conns in the conn tables
 *   retrace_virtual_services, retrace_service_reals{protocol,vip,vport}, retrace_service_conns_total{...}
 *   retrace_service_{packets,bytes}_{to,from}_reals_total{...}   per-service traffic (sum over its reals)
 *   retrace_real_weight / _active_conns / _conns_total{protocol,vip,vport,real}
 *   retrace_real_{packets,bytes}_{to,from}_real_total{...}   per-real traffic
 *   retrace_conn_events_total, retrace_conn_events_lost_total{stage}, retrace_conn_event_streams
 *   retrace_drained, retrace_dataplane_running    0 or 1
 *   retrace_counter_streams, retrace_counter_{samples,messages_skipped}_total   WatchCounters' cost
 *   retrace_metrics_{renders,scrapes,refused_connections}_total, retrace_metrics_last_render_{seconds,bytes}
 * plus prom-client's default process and Node.js metrics.
 *
 * Precision: prom-client takes JavaScript numbers, so the dataplane's uint64 counters go through
 * Number(), which is exact up to 2^53 (9.007e15) and rounds above. At 100 Mpps a packet counter
 * reaches 2^53 after about 2.8 years; GetCounters over gRPC stays exact.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { DataplaneError, type CounterSnapshot, type Dataplane, type PortInfo, type RealView, type ServiceView } from '../dataplane';
import { DESCRIPTOR_SET_BASE64 } from '../gen/descriptors';
import type { Logger } from '../log';
import { serviceTraffic, type ServiceTraffic } from './balancer-service';

export interface MetricsSources {
  dp: Dataplane;
  /** True while ConfigService has the appliance drained. */
  drained: () => boolean;
  /** Conn event stages (ConnService's EventHub status), if the server has them. */
  events?: () => { seen: bigint; dataplaneLost: bigint; subscriberLost: bigint; subscribers: unknown[] };
  /** WatchCounters' shared sampler (its CounterSampler status), if the server has one. */
  counterStreams?: () => { streams: number; samples: bigint; skipped: bigint };
}

/** Leading comments of a message's fields, from the descriptor set (source info included). */
export function protoFieldComments(file: string, message: string): Map<string, string> {
  const set = fromBinary(FileDescriptorSetSchema, Buffer.from(DESCRIPTOR_SET_BASE64, 'base64'));
  const f = set.file.find((x) => x.name === file);
  const mi = f?.messageType.findIndex((m) => m.name === message) ?? -1;
  const out = new Map<string, string>();
  if (f === undefined || mi < 0) return out;
  const fields = f.messageType[mi].field;
  for (const loc of f.sourceCodeInfo?.location ?? []) {
    // Path of a field: 4 (message_type), message index, 2 (field), field index.
    const p = loc.path;
    if (p.length === 4 && p[0] === 4 && p[1] === mi && p[2] === 2 && loc.leadingComments) {
      out.set(fields[p[3]].name, loc.leadingComments.trim().replace(/\s+/g, ' '));
    }
  }
  return out;
}

/** One dataplane reading per scrape, shared by every collect callback of that scrape. */
class ScrapeCache {
  private value: { counters: CounterSnapshot; ports: PortInfo[]; conns: bigint } | undefined;

  constructor(private readonly dp: Dataplane) {}

  /** undefined while the dataplane is not running (the series are then absent). */
  get(): ScrapeCache['value'] {
    if (this.dp.state !== 'running') return undefined;
    if (this.value === undefined) {
      this.value = { counters: this.dp.counters(), ports: this.dp.ports(), conns: this.dp.connCount() };
      // Every collect callback of one scrape runs before the next macrotask.
      setImmediate(() => (this.value = undefined));
    }
    return this.value;
  }
}

/** The registry and its renderer, wired together: what `retrace serve` serves. */
export function createMetrics(src: MetricsSources, opts: RendererOptions = {}): MetricsRenderer {
  // The registry reports the renderer's own cost, so it reads the renderer made after it.
  const ref: { renderer?: MetricsRenderer } = {};
  const registry = createMetricsRegistry(src, () => ref.renderer?.stats);
  ref.renderer = new MetricsRenderer(registry, src, opts);
  return ref.renderer;
}

/**
 * A registry whose metrics read the dataplane on collect: everything but the per-service and
 * per-real families, which MetricsRenderer writes itself (renderServiceSeries).
 */
export function createMetricsRegistry(src: MetricsSources, self?: () => RenderStatus | undefined): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const cache = new ScrapeCache(src.dp);
  const registers = [registry];

  // Path counters: one metric per counter name, as listed by the proto (= the dataplane's list).
  const pathHelp = protoFieldComments('retrace/v1/path.proto', 'PathCounters');
  for (const [name, help] of pathHelp) {
    new Counter({
      name: `retrace_path_${name}_total`,
      help: `${help} Per protocol and port.`,
      labelNames: ['protocol', 'port'],
      registers,
      collect() {
        this.reset();
        const snap = cache.get();
        if (snap === undefined) return;
        for (const [protocol, byPort] of Object.entries(snap.counters.path)) {
          for (const [port, c] of Object.entries(byPort)) this.inc({ protocol, port }, Number(c[name] ?? 0n));
        }
      },
    });
  }

  new Counter({
    name: 'retrace_drops_total',
    help: 'Packets the dataplane dropped, per port and reason (the fields of retrace.v1.DropCounters).',
    labelNames: ['port', 'reason'],
    registers,
    collect() {
      this.reset();
      const snap = cache.get();
      if (snap === undefined) return;
      for (const [port, reasons] of Object.entries(snap.counters.drops)) {
        for (const [reason, value] of Object.entries(reasons)) this.inc({ port, reason }, Number(value));
      }
    },
  });

  const portHelp = protoFieldComments('retrace/v1/port.proto', 'PortStats');
  for (const [name, help] of portHelp) {
    const key = name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()) as keyof PortInfo['stats'];
    new Counter({
      name: `retrace_port_${name}_total`,
      help: `${help} Per port.`,
      labelNames: ['port'],
      registers,
      collect() {
        this.reset();
        for (const p of cache.get()?.ports ?? []) this.inc({ port: p.name }, Number(p.stats[key] ?? 0n));
      },
    });
  }

  new Gauge({
    name: 'retrace_conns',
    help: 'Conns currently in the conn tables, summed over worker lcores.',
    registers,
    collect() {
      this.reset();
      const snap = cache.get();
      if (snap !== undefined) this.set(Number(snap.conns));
    },
  });

  new Gauge({
    name: 'retrace_virtual_services',
    help: 'Virtual services configured.',
    registers,
    collect() {
      this.set(src.dp.state === 'running' ? src.dp.serviceKeys().length : 0);
    },
  });

  const events = src.events;
  if (events !== undefined) {
    new Counter({
      name: 'retrace_conn_events_total',
      help: 'Conn events drained from the dataplane and numbered (WatchConnEvents; produced only while a following stream is open).',
      registers,
      collect() {
        this.reset();
        this.inc(Number(events().seen));
      },
    });
    new Counter({
      name: 'retrace_conn_events_lost_total',
      help: 'Conn events lost, by stage: dataplane_ring (a worker ring was full), subscriber_buffer (a stream read too slowly; summed over streams).',
      labelNames: ['stage'],
      registers,
      collect() {
        this.reset();
        const st = events();
        this.inc({ stage: 'dataplane_ring' }, Number(st.dataplaneLost));
        this.inc({ stage: 'subscriber_buffer' }, Number(st.subscriberLost));
      },
    });
    new Gauge({
      name: 'retrace_conn_event_streams',
      help: 'WatchConnEvents streams open.',
      registers,
      collect() {
        this.set(events().subscribers.length);
      },
    });
  }

  const counterStreams = src.counterStreams;
  if (counterStreams !== undefined) {
    new Gauge({
      name: 'retrace_counter_streams',
      help: 'WatchCounters streams open.',
      registers,
      collect() {
        this.set(counterStreams().streams);
      },
    });
    new Counter({
      name: 'retrace_counter_samples_total',
      help: 'Dataplane reads made for WatchCounters: one per tick of each interval in use, shared by every stream at that interval (plus one when a stream starts with no recent sample).',
      registers,
      collect() {
        this.reset();
        this.inc(Number(counterStreams().samples));
      },
    });
    new Counter({
      name: 'retrace_counter_messages_skipped_total',
      help: 'WatchCounters ticks a stream skipped because its previous message had not been read yet (summed over streams).',
      registers,
      collect() {
        this.reset();
        this.inc(Number(counterStreams().skipped));
      },
    });
  }
  if (self !== undefined) {
    const stat = <K extends keyof RenderStatus>(k: K): number => Number(self()?.[k] ?? 0);
    new Counter({
      name: 'retrace_metrics_renders_total',
      help: 'Renders of /metrics, this one included: concurrent scrapes share one render, and a body is served again until it is 1 s old or the configuration changed.',
      registers,
      collect() {
        this.reset();
        this.inc(stat('renders'));
      },
    });
    new Counter({
      name: 'retrace_metrics_scrapes_total',
      help: 'Scrapes of /metrics answered, before this one.',
      registers,
      collect() {
        this.reset();
        this.inc(stat('scrapes'));
      },
    });
    new Counter({
      name: 'retrace_metrics_refused_connections_total',
      help: 'Connections to the metrics listener closed at once because the limit of open connections was reached.',
      registers,
      collect() {
        this.reset();
        this.inc(stat('refused'));
      },
    });
    new Gauge({
      name: 'retrace_metrics_last_render_seconds',
      help: 'Wall time of the previous /metrics render (it yields to the event loop between slices of services).',
      registers,
      collect() {
        this.set(stat('lastSeconds'));
      },
    });
    new Gauge({
      name: 'retrace_metrics_last_render_bytes',
      help: 'Size of the previous /metrics body.',
      registers,
      collect() {
        this.set(stat('lastBytes'));
      },
    });
  }

  new Gauge({
    name: 'retrace_drained',
    help: '1 while the appliance is drained (ConfigService.Drain), else 0.',
    registers,
    collect() {
      this.set(src.drained() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'retrace_dataplane_running',
    help: '1 while the dataplane forwards, else 0 (the other retrace_ series are then absent).',
    registers,
    collect() {
      this.set(src.dp.state === 'running' ? 1 : 0);
    },
  });
  return registry;
}

/** host:port or [v6]:port → host and port. */
export function parseHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(listen.slice(i + 1)) };
}

// ---------------------------------------------------------------------------------------------
// Per-service and per-real series, written as text directly
// ---------------------------------------------------------------------------------------------

/**
 * The per-service and per-real families are most of a scrape (1500 services of 4 reals: ~80k
 * lines, 5 MB). Through prom-client they cost ~250 ms of one event-loop turn (a labels object,
 * its hash and a map entry per series, then formatting); written straight to text they cost a
 * few ms, in slices of SERVICES_PER_SLICE services with the event loop free in between, so unary
 * calls and health probes are answered while a scrape renders.
 */
const SERVICES_PER_SLICE = 100;

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  lines: string[];
}

type ServiceFamily = Family & { value: (s: ServiceView) => number | bigint };
type RealFamily = Family & { value: (r: RealView) => number | bigint };

const TRAFFIC_HELP = {
  service: (unit: string, to: boolean) =>
    `${unit} of a virtual service's conns forwarded ${to ? 'toward its reals' : 'from its reals'}: the sum over its current reals, each counted since it was added (a removed real's counts leave the sum).`,
  real: (unit: string, to: boolean) => `${unit} of a real's conns forwarded ${to ? 'toward it' : 'from it'} since it was added.`,
};

function serviceFamilies(): ServiceFamily[] {
  const f = (name: string, type: Family['type'], help: string, value: ServiceFamily['value']): ServiceFamily => ({ name, type, help, value, lines: [] });
  const traffic = (field: keyof ServiceTraffic) => (s: ServiceView) => serviceTraffic(s)[field];
  return [
    f('retrace_service_reals', 'gauge', 'Reals of a virtual service (any weight).', (s) => s.reals.length),
    f('retrace_service_conns_total', 'counter', 'Conns created for a virtual service since it was created.', (s) => s.connsTotal),
    f('retrace_service_packets_to_reals_total', 'counter', TRAFFIC_HELP.service('Packets', true), traffic('packetsToReals')),
    f('retrace_service_packets_from_reals_total', 'counter', TRAFFIC_HELP.service('Packets', false), traffic('packetsFromReals')),
    f('retrace_service_bytes_to_reals_total', 'counter', TRAFFIC_HELP.service('Bytes', true), traffic('bytesToReals')),
    f('retrace_service_bytes_from_reals_total', 'counter', TRAFFIC_HELP.service('Bytes', false), traffic('bytesFromReals')),
  ];
}

function realFamilies(): RealFamily[] {
  const f = (name: string, type: Family['type'], help: string, value: RealFamily['value']): RealFamily => ({ name, type, help, value, lines: [] });
  return [
    f('retrace_real_weight', 'gauge', 'Weight of a real in its virtual service (0 = drained: no new conns).', (r) => r.weight),
    f('retrace_real_active_conns', 'gauge', 'Conns currently on a real.', (r) => r.activeConns),
    f('retrace_real_conns_total', 'counter', 'Conns sent to a real since it was added to its virtual service.', (r) => r.connsTotal),
    f('retrace_real_packets_to_real_total', 'counter', TRAFFIC_HELP.real('Packets', true), (r) => r.packetsToReal),
    f('retrace_real_packets_from_real_total', 'counter', TRAFFIC_HELP.real('Packets', false), (r) => r.packetsFromReal),
    f('retrace_real_bytes_to_real_total', 'counter', TRAFFIC_HELP.real('Bytes', true), (r) => r.bytesToReal),
    f('retrace_real_bytes_from_real_total', 'counter', TRAFFIC_HELP.real('Bytes', false), (r) => r.bytesFromReal),
  ];
}

/** A label value in the text format: backslash, double quote and newline escaped. */
export function escapeLabel(v: string): string {
  return /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v;
}

/** A sample value as prom-client writes it (uint64 counters through Number(), see above). */
function sampleValue(v: number | bigint): string {
  const n = Number(v);
  return Number.isFinite(n) ? String(n) : Number.isNaN(n) ? 'NaN' : n > 0 ? '+Inf' : '-Inf';
}

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * The per-service and per-real families as Prometheus text. Each service is read on its own
 * (GetVirtualService's read), SERVICES_PER_SLICE per event-loop turn; a service deleted
 * meanwhile is left out. Absent (headers only) while the dataplane is not running.
 */
export async function renderServiceSeries(dp: Dataplane): Promise<Buffer[]> {
  const svc = serviceFamilies();
  const real = realFamilies();
  const keys = dp.state === 'running' ? dp.serviceKeys() : [];
  for (let i = 0; i < keys.length; i++) {
    if (i > 0 && i % SERVICES_PER_SLICE === 0) {
      await yieldToLoop();
      if (dp.state !== 'running') break;
    }
    let s: ServiceView;
    try {
      s = dp.getService(keys[i]);
    } catch (e) {
      if (e instanceof DataplaneError && e.code === 'ENOENT') continue; // deleted since the keys were taken
      throw e;
    }
    const labels = `protocol="${escapeLabel(s.protocol)}",vip="${escapeLabel(s.vip)}",vport="${s.port}"`;
    for (const f of svc) f.lines.push(`${f.name}{${labels}} ${sampleValue(f.value(s))}`);
    for (const r of s.reals) {
      const rl = `${labels},real="${escapeLabel(`${r.address}:${r.port}`)}"`;
      for (const f of real) f.lines.push(`${f.name}{${rl}} ${sampleValue(f.value(r))}`);
    }
  }
  // One Buffer per family, a turn each: joining and encoding all 5 MB at once took ~15 ms.
  const out: Buffer[] = [];
  for (const f of [...svc, ...real]) {
    await yieldToLoop();
    const head = `# HELP ${f.name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${f.name} ${f.type}\n`;
    out.push(Buffer.from(f.lines.length > 0 ? `${head}${f.lines.join('\n')}\n` : head));
  }
  return out;
}

/** What a render costs, for the metrics about the metrics (and tests). */
export interface RenderStatus {
  /** Renders started (each serves every scrape that arrives while it runs or while cached). */
  renders: bigint;
  /** Scrapes answered (200). */
  scrapes: bigint;
  /** Connections refused because `maxConnections` were open. */
  refused: bigint;
  /** Wall time and body size of the last render. */
  lastSeconds: number;
  lastBytes: number;
}

export interface RendererOptions {
  /** A body is served for this long after its render began (default 1000 ms). */
  cacheMs?: number;
}

/**
 * One render for many scrapes: concurrent scrapes share the render in flight, and a finished
 * body is served until it is `cacheMs` old or the configuration (or drain) changed since, so
 * the render cost is bounded by one per cacheMs whatever the number of scrapers. Values are
 * therefore up to cacheMs old; a configuration change is always visible in the next scrape.
 */
export class MetricsRenderer {
  readonly cacheMs: number;
  private inflight: Promise<Buffer> | undefined;
  private cached: { body: Buffer; at: number; gen: string } | undefined;
  private changes = 0;
  readonly stats: RenderStatus = { renders: 0n, scrapes: 0n, refused: 0n, lastSeconds: 0, lastBytes: 0 };

  constructor(
    private readonly registry: Registry,
    private readonly src: MetricsSources,
    opts: RendererOptions = {},
  ) {
    this.cacheMs = opts.cacheMs ?? 1000;
    src.dp.onChange(() => this.changes++);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private generation(): string {
    return `${this.changes}/${this.src.drained()}/${this.src.dp.state}`;
  }

  /** The current body: cached, the render in flight, or a new render. */
  body(): Promise<Buffer> {
    const c = this.cached;
    if (c !== undefined && performance.now() - c.at < this.cacheMs && c.gen === this.generation()) return Promise.resolve(c.body);
    this.inflight ??= this.render().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private async render(): Promise<Buffer> {
    this.stats.renders++;
    const at = performance.now();
    const gen = this.generation();
    const head = await this.registry.metrics();
    const services = await renderServiceSeries(this.src.dp);
    const body = Buffer.concat([Buffer.from(head), ...services]);
    this.stats.lastSeconds = (performance.now() - at) / 1000;
    this.stats.lastBytes = body.length;
    this.cached = { body, at, gen };
    return body;
  }
}

/** The tiny HTTP server: GET /metrics, nothing else. */
export interface MetricsServerOptions {
  /** Open connections at most; more are closed at once (default 32). */
  maxConnections?: number;
}

export class MetricsServer {
  private readonly http: http.Server;

  constructor(
    private readonly renderer: MetricsRenderer,
    private readonly log: Logger,
    opts: MetricsServerOptions = {},
  ) {
    this.http = http.createServer((req, res) => void this.handle(req, res));
    // Bounds: a scrape holds a connection for as long as it reads the shared body; slow or stuck
    // clients are cut off rather than piling up.
    this.http.maxConnections = opts.maxConnections ?? 32;
    this.http.headersTimeout = 5000;
    this.http.requestTimeout = 10000;
    this.http.setTimeout(30000);
    this.http.on('drop', () => renderer.stats.refused++);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'Content-Type': 'text/plain', Allow: 'GET, HEAD' }).end('method not allowed\n');
      return;
    }
    try {
      const body = await this.renderer.body();
      this.renderer.stats.scrapes++;
      res.writeHead(200, { 'Content-Type': this.renderer.contentType, 'Content-Length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch (e) {
      this.log.error({ err: e }, 'metrics scrape failed');
      res.writeHead(500, { 'Content-Type': 'text/plain' }).end('scrape failed\n');
    }
  }

  /** Binds host:port; resolves to the address bound (port 0 → the real port). */
  async listen(listen: string): Promise<string> {
    const { host, port } = parseHostPort(listen);
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(port, host, () => {
        this.http.off('error', reject);
        resolve();
      });
    });
    const a = this.http.address() as AddressInfo;
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  /** Stops accepting and closes open connections (keep-alive scrapers included). */
  async close(): Promise<void> {
    if (!this.http.listening) return;
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeAllConnections();
    await closed;
  }
}
