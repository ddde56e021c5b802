/**
 * The prom-client registry of /metrics: every family but the per-service and per-real ones
 * (metrics-text.ts), each reading the dataplane in its collect callback (metrics.ts describes
 * the families and their precision).
 */
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { CounterSnapshot, Dataplane, PortInfo } from '../dataplane';
import { DESCRIPTOR_SET_BASE64 } from '../gen/descriptors';
import type { MetricsSources, RenderStatus } from './metrics';

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

  for (const [name, help] of protoFieldComments('retrace/v1/path.proto', 'ConnTableCounters')) {
    new Counter({
      name: `retrace_conns_${name}_total`,
      help: `${help} Summed over worker lcores.`,
      registers,
      collect() {
        this.reset();
        const snap = cache.get();
        if (snap !== undefined) this.inc(Number(snap.counters.conn[name] ?? 0n));
      },
    });
  }

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
    name: 'retrace_half_open_conns',
    help: 'TCP conns whose handshake is not done (SYN_SENT, SYN_RECV), summed over worker lcores: what a SYN proxy in auto mode compares with its threshold (per worker).',
    registers,
    collect() {
      this.set(src.dp.state === 'running' ? Number(src.dp.halfOpenConns()) : 0);
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

  const healthEvents = src.healthEvents;
  if (healthEvents !== undefined) {
    new Counter({
      name: 'retrace_health_events_total',
      help: 'Health transitions of reals since start (the last seq of WatchHealthEvents).',
      registers,
      collect() {
        this.reset();
        this.inc(Number(healthEvents()));
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
