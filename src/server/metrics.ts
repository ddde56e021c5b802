/**
 * Prometheus metrics (prom-client) served over plain HTTP at GET /metrics on `metrics.listen`.
 *
 * Nothing is counted here: every value is read from the dataplane when Prometheus scrapes, in the
 * metrics' collect callbacks, from one snapshot per scrape (the first callback reads, the others
 * reuse it until the scrape's tick ends). Names reuse the dataplane's counter names verbatim, as the
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
import type { CounterSnapshot, Dataplane, PortInfo, ServiceView } from '../dataplane';
import { DESCRIPTOR_SET_BASE64 } from '../gen/descriptors';
import type { Logger } from '../log';
import { serviceTraffic, type ServiceTraffic } from './balancer-service';

export interface MetricsSources {
  dp: Dataplane;
  /** True while ConfigService has the appliance drained. */
  drained: () => boolean;
  /** Conn event stages (ConnService's EventHub status), if the server has them. */
  events?: () => { seen: bigint; dataplaneLost: bigint; subscriberLost: bigint; subscribers: unknown[] };
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

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** One dataplane reading per scrape, shared by every collect callback of that scrape. */
class ScrapeCache {
  private value: { counters: CounterSnapshot; ports: PortInfo[]; services: ServiceView[]; conns: bigint } | undefined;

  constructor(private readonly dp: Dataplane) {}

  /** undefined while the dataplane is not running (the series are then absent). */
  get(): ScrapeCache['value'] {
    if (this.dp.state !== 'running') return undefined;
    if (this.value === undefined) {
      this.value = { counters: this.dp.counters(), ports: this.dp.ports(), services: this.dp.listServices(), conns: this.dp.connCount() };
      // Every collect callback of one scrape runs before the next macrotask.
      setImmediate(() => (this.value = undefined));
    }
    return this.value;
  }
}

/** A registry whose metrics read the dataplane on collect. */
export function createMetricsRegistry(src: MetricsSources): Registry {
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

  const svcLabels = (s: ServiceView) => ({ protocol: s.protocol, vip: s.vip, vport: String(s.port) });
  const realLabels = ['protocol', 'vip', 'vport', 'real'];
  const perService = (fn: (s: ServiceView) => void) => {
    for (const s of cache.get()?.services ?? []) fn(s);
  };

  new Gauge({
    name: 'retrace_virtual_services',
    help: 'Virtual services configured.',
    registers,
    collect() {
      this.set(cache.get()?.services.length ?? 0);
    },
  });
  new Gauge({
    name: 'retrace_service_reals',
    help: 'Reals of a virtual service (any weight).',
    labelNames: ['protocol', 'vip', 'vport'],
    registers,
    collect() {
      this.reset();
      perService((s) => this.set(svcLabels(s), s.reals.length));
    },
  });
  new Counter({
    name: 'retrace_service_conns_total',
    help: 'Conns created for a virtual service since it was created.',
    labelNames: ['protocol', 'vip', 'vport'],
    registers,
    collect() {
      this.reset();
      perService((s) => this.inc(svcLabels(s), Number(s.connsTotal)));
    },
  });
  // Per-service traffic: the per-real counters below summed over the service's current reals (the
  // VirtualService fields packets_to_reals, ...). Removing a real takes its counts out of the sum.
  for (const field of ['packetsToReals', 'packetsFromReals', 'bytesToReals', 'bytesFromReals'] as const satisfies readonly (keyof ServiceTraffic)[]) {
    const [unit, dir] = field.startsWith('packets') ? ['Packets', field.slice(7)] : ['Bytes', field.slice(5)];
    new Counter({
      name: `retrace_service_${snake(field)}_total`,
      help: `${unit} of a virtual service's conns forwarded ${dir === 'ToReals' ? 'toward its reals' : 'from its reals'}: the sum over its current reals, each counted since it was added (a removed real's counts leave the sum).`,
      labelNames: ['protocol', 'vip', 'vport'],
      registers,
      collect() {
        this.reset();
        perService((s) => this.inc(svcLabels(s), Number(serviceTraffic(s)[field])));
      },
    });
  }
  new Gauge({
    name: 'retrace_real_weight',
    help: 'Weight of a real in its virtual service (0 = drained: no new conns).',
    labelNames: realLabels,
    registers,
    collect() {
      this.reset();
      perService((s) => s.reals.forEach((r) => this.set({ ...svcLabels(s), real: `${r.address}:${r.port}` }, r.weight)));
    },
  });
  new Gauge({
    name: 'retrace_real_active_conns',
    help: 'Conns currently on a real.',
    labelNames: realLabels,
    registers,
    collect() {
      this.reset();
      perService((s) => s.reals.forEach((r) => this.set({ ...svcLabels(s), real: `${r.address}:${r.port}` }, Number(r.activeConns))));
    },
  });
  new Counter({
    name: 'retrace_real_conns_total',
    help: 'Conns sent to a real since it was added to its virtual service.',
    labelNames: realLabels,
    registers,
    collect() {
      this.reset();
      perService((s) => s.reals.forEach((r) => this.inc({ ...svcLabels(s), real: `${r.address}:${r.port}` }, Number(r.connsTotal))));
    },
  });

  // Per-real traffic, where the dataplane reports it (RealView fields packetsToReal, bytesFromReal, ...).
  for (const field of ['packetsToReal', 'packetsFromReal', 'bytesToReal', 'bytesFromReal']) {
    const [unit, dir] = field.startsWith('packets') ? ['Packets', field.slice(7)] : ['Bytes', field.slice(5)];
    new Counter({
      name: `retrace_real_${snake(field)}_total`,
      help: `${unit} of a real's conns forwarded ${dir === 'ToReal' ? 'toward it' : 'from it'} since it was added.`,
      labelNames: realLabels,
      registers,
      collect() {
        this.reset();
        perService((s) =>
          s.reals.forEach((r) => {
            const v = (r as unknown as Record<string, unknown>)[field];
            if (typeof v === 'bigint') this.inc({ ...svcLabels(s), real: `${r.address}:${r.port}` }, Number(v));
          }),
        );
      },
    });
  }

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

/** The tiny HTTP server: GET /metrics, nothing else. */
export class MetricsServer {
  private readonly http: http.Server;

  constructor(
    private readonly registry: Registry,
    private readonly log: Logger,
  ) {
    this.http = http.createServer((req, res) => void this.handle(req, res));
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
      const body = await this.registry.metrics();
      res.writeHead(200, { 'Content-Type': this.registry.contentType });
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
