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
 *   retrace_conns, retrace_half_open_conns        conns in the conn tables; of them TCP in SYN_SENT or SYN_RECV
 *   retrace_conns_evicted_embryonic_{table,ports}_total   table pressure (retrace.v1.ConnTableCounters)
 *   retrace_virtual_services, retrace_service_reals{protocol,vip,vport}, retrace_service_conns_total{...}
 *   retrace_service_{packets,bytes}_{to,from}_reals_total{...}   per-service traffic (sum over its reals)
 *   retrace_service_active_conns / _max_conns{...}, retrace_service_refused_{max_conns,denied,not_allowed,rate_limited}_total{...}
 *                                                 admission limits and the new conns they refused
 *   retrace_service_syn_cookies_{sent,valid,invalid}_total{...}   the SYN proxy's cookies
 *   retrace_service_client_address_mode{...}, retrace_service_{proxy_headers,segments_shifted,toa_added,toa_no_room}_total{...}
 *                                                 client-address mode and what it did (sum over its reals)
 *   retrace_real_weight / _active_conns / _conns_total{protocol,vip,vport,real}
 *   retrace_real_{packets,bytes}_{to,from}_real_total{...}   per-real traffic
 *   retrace_real_health{...,state}, retrace_real_health_transitions_total{...}   health checks (checked reals only)
 *   retrace_health_events_total                  health transitions streamed (WatchHealthEvents)
 *   retrace_conn_events_total, retrace_conn_events_lost_total{stage}, retrace_conn_event_streams
 *   retrace_drained, retrace_dataplane_running    0 or 1
 *   retrace_counter_streams, retrace_counter_{samples,messages_skipped}_total   WatchCounters' cost
 *   retrace_metrics_{renders,scrapes,refused_connections}_total, retrace_metrics_last_render_{seconds,bytes}
 * plus prom-client's default process and Node.js metrics.
 *
 * Precision: prom-client takes JavaScript numbers, so the dataplane's uint64 counters go through
 * Number(), which is exact up to 2^53 (9.007e15) and rounds above. At 100 Mpps a packet counter
 * reaches 2^53 after about 2.8 years; GetCounters over gRPC stays exact.
 *
 * Here: MetricsRenderer and the HTTP listener. The prom-client registry is metrics-registry.ts,
 * the per-service and per-real text metrics-text.ts.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Dataplane } from '../dataplane';
import type { Logger } from '../log';
import { createMetricsRegistry } from './metrics-registry';
import { renderServiceSeries } from './metrics-text';

export { createMetricsRegistry, protoFieldComments } from './metrics-registry';
export { escapeLabel, renderServiceSeries } from './metrics-text';

export interface MetricsSources {
  dp: Dataplane;
  /** True while ConfigService has the appliance drained. */
  drained: () => boolean;
  /** Conn event stages (ConnService's EventHub status), if the server has them. */
  events?: () => { seen: bigint; dataplaneLost: bigint; subscriberLost: bigint; subscribers: unknown[] };
  /** WatchCounters' shared sampler (its CounterSampler status), if the server has one. */
  counterStreams?: () => { streams: number; samples: bigint; skipped: bigint };
  /** A real's health (health checks), if the server checks reals. */
  health?: (service: string, real: string) => { state: 'unknown' | 'up' | 'down'; transitions: number } | undefined;
  /** Health transitions so far (the health event sequence). */
  healthEvents?: () => bigint;
}

/** The registry and its renderer, wired together: what `retrace serve` serves. */
export function createMetrics(src: MetricsSources, opts: RendererOptions = {}): MetricsRenderer {
  // The registry reports the renderer's own cost, so it reads the renderer made after it.
  const ref: { renderer?: MetricsRenderer } = {};
  const registry = createMetricsRegistry(src, () => ref.renderer?.stats);
  ref.renderer = new MetricsRenderer(registry, src, opts);
  return ref.renderer;
}

/** host:port or [v6]:port → host and port. */
export function parseHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(listen.slice(i + 1)) };
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
    const services = await renderServiceSeries(this.src.dp, this.src.health);
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
