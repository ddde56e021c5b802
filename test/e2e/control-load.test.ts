/**
 * The control plane's cost under many clients, functionally (the figures are in the
 * `control-load` bench case): WatchCounters streams share one dataplane read per tick, concurrent
 * /metrics scrapes share one render, the metrics listener bounds its connections, and shutdown
 * ends open counter streams with UNAVAILABLE instead of holding the grace period.
 * A real `retrace serve` child on net_ring ports with 300 services of 4 reals (more than one
 * render slice of 100 services).
 */
import http from 'node:http';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { Real, VirtualService } from '../../src/gen/retrace/v1/balancer';
import { PathServiceClient, type WatchCountersResponse } from '../../src/gen/retrace/v1/path';
import { Protocol, Scheduler } from '../../src/gen/retrace/v1/types';
import { ApplianceProcess } from '../../src/lab/appliance';
import { sleep, until } from '../helpers/wait';

const SERVICES = 300;
const REALS = 4;

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** The value of an unlabelled sample (or of the first sample of that name with these labels). */
function sample(body: string, name: string, labels = ''): number {
  const line = body.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  if (line === undefined) throw new Error(`no sample ${name}{${labels}}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('control plane cost under many clients', () => {
  const app = new ApplianceProcess();
  let metricsUrl = '';
  let pathClient: PathServiceClient;

  /** Reads a counter without waiting out the render cache: the body of a fresh render. */
  const scrape = async () => (await get(metricsUrl)).body;

  beforeAll(async () => {
    app.start(`
eal:
  memory_mb: 128
dataplane:
  mbufs: 4095
  max_conns: 4096
metrics:
  listen: "127.0.0.1:0"
ports:
  - name: p0
    device: net_ring0
    mac: "02:00:00:00:00:01"
  - name: p1
    device: net_ring1
    mac: "02:00:00:00:00:02"
`);
    await app.waitServing();
    const listening = app.output.split('\n').find((l) => l.includes('metrics listening'));
    metricsUrl = `http://${JSON.parse(listening!).listen as string}/metrics`;
    pathClient = new PathServiceClient(app.address, grpc.credentials.createInsecure());
    const base = (await app.api.config.getConfig({})).config!;
    const vs: VirtualService[] = [];
    for (let s = 0; s < SERVICES; s++) {
      const reals = Array.from({ length: REALS }, (_, i) =>
        Real.fromPartial({ address: `10.2.${s >> 5}.${((s & 31) << 3) + i + 1}`, port: 8080, weight: i + 1 }),
      );
      vs.push(
        VirtualService.fromPartial({
          protocol: Protocol.PROTOCOL_TCP,
          vip: `198.18.2.${(s % 250) + 1}`,
          port: 80 + Math.floor(s / 250),
          scheduler: Scheduler.SCHEDULER_RR,
          reals,
        }),
      );
    }
    await app.api.config.applyConfig({ config: { ...base, virtualServices: vs }, dryRun: false }, 60000);
  }, 90000);

  afterAll(async () => {
    pathClient?.close();
    await app.kill();
  });

  const watch = (intervalMs: number, count: number) => {
    const messages: WatchCountersResponse[] = [];
    const stream = pathClient.watchCounters({ interval: { seconds: 0n, nanos: intervalMs * 1e6 }, count });
    stream.on('data', (m: WatchCountersResponse) => messages.push(m));
    const done = new Promise<grpc.ServiceError | undefined>((resolve) => {
      stream.on('error', (e: grpc.ServiceError) => resolve(e));
      stream.on('end', () => resolve(undefined));
    });
    return { stream, messages, done };
  };

  describe('WatchCounters', () => {
    it('reads the dataplane once per tick whatever the number of streams', async () => {
      const before = sample(await scrape(), 'retrace_counter_samples_total');
      const streams = Array.from({ length: 20 }, () => watch(100, 10));
      const ends = await Promise.all(streams.map((s) => s.done));
      expect(ends.every((e) => e === undefined)).toBe(true);
      for (const s of streams) {
        expect(s.messages).toHaveLength(10);
        expect(s.messages[0].counters?.tcp?.ports.map((p) => p.port)).toEqual(['p0', 'p1']);
        expect(s.messages[0].rates?.seconds).toBeGreaterThan(0);
      }
      await sleep(1100); // past the render cache
      const after = await scrape();
      // 20 streams x 10 messages: one read per tick (about 10 ticks) and at most one to start
      // with, not one per stream per tick (200).
      const reads = sample(after, 'retrace_counter_samples_total') - before;
      expect(reads).toBeGreaterThanOrEqual(10);
      expect(reads).toBeLessThanOrEqual(13);
      expect(sample(after, 'retrace_counter_streams')).toBe(0);
    }, 30000);

    it('sends streams that joined together the same message, with the rates since each one began', async () => {
      const a = watch(200, 3);
      const b = watch(200, 3);
      await Promise.all([a.done, b.done]);
      expect(b.messages.map((m) => m.time)).toEqual(a.messages.map((m) => m.time));
      expect(b.messages.map((m) => m.rates?.seconds)).toEqual(a.messages.map((m) => m.rates?.seconds));
      for (const m of a.messages.slice(1)) expect(m.rates!.seconds).toBeGreaterThan(0.15);
    }, 30000);
  });

  describe('/metrics', () => {
    it('serves concurrent scrapes from one render, and renders again after 1 s', async () => {
      await sleep(1100);
      const bodies = await Promise.all(Array.from({ length: 10 }, () => get(metricsUrl)));
      expect(bodies.map((b) => b.status)).toEqual(Array(10).fill(200));
      const renders = bodies.map((b) => sample(b.body, 'retrace_metrics_renders_total'));
      expect(new Set(renders).size).toBe(1);
      expect(new Set(bodies.map((b) => b.body)).size).toBe(1);
      await sleep(1100);
      expect(sample(await scrape(), 'retrace_metrics_renders_total')).toBe(renders[0] + 1);
    }, 30000);

    it('lists every service and real, and shows a configuration change in the next scrape', async () => {
      const first = await scrape();
      const lines = first.split('\n');
      expect(lines.filter((l) => l.startsWith('retrace_service_reals{'))).toHaveLength(SERVICES);
      expect(lines.filter((l) => l.startsWith('retrace_real_weight{'))).toHaveLength(SERVICES * REALS);
      expect(sample(first, 'retrace_virtual_services')).toBe(SERVICES);
      expect(sample(first, 'retrace_real_weight', 'protocol="tcp",vip="198.18.2.1",vport="80",real="10.2.0.3:8080"')).toBe(3);
      for (const name of ['retrace_real_weight', 'retrace_service_conns_total', 'retrace_real_bytes_from_real_total']) {
        expect(lines.filter((l) => l.startsWith(`# TYPE ${name} `))).toHaveLength(1);
      }

      // Within the cache interval, but after a change: the change shows.
      await app.api.balancer.setReals({
        key: { protocol: Protocol.PROTOCOL_TCP, vip: '198.18.2.1', port: 80 },
        reals: [Real.fromPartial({ address: '10.2.0.3', port: 8080, weight: 7 })],
      });
      const next = await scrape();
      expect(sample(next, 'retrace_real_weight', 'protocol="tcp",vip="198.18.2.1",vport="80",real="10.2.0.3:8080"')).toBe(7);
      expect(sample(next, 'retrace_service_reals', 'protocol="tcp",vip="198.18.2.1",vport="80"')).toBe(1);
    }, 30000);

    it('closes connections beyond its limit at once and serves again when they are gone', async () => {
      const [host, port] = new URL(metricsUrl).host.split(':');
      const held: net.Socket[] = [];
      try {
        for (let i = 0; i < 32; i++) {
          const s = net.connect(Number(port), host);
          await new Promise<void>((resolve, reject) => s.once('connect', () => resolve()).once('error', reject));
          held.push(s);
        }
        await sleep(200); // the server has accepted them all
        await expect(get(metricsUrl)).rejects.toThrow();
      } finally {
        for (const s of held) s.destroy();
      }
      // Served again; the refusal is counted (once the cached body has expired).
      await until(
        'a scrape counting the refused connection',
        () => get(metricsUrl).catch(() => ({ status: 0, body: '' })),
        (r) => r.status === 200 && sample(r.body, 'retrace_metrics_refused_connections_total') >= 1,
        5000,
      );
    }, 30000);
  });

  describe('shutdown', () => {
    it('ends open WatchCounters and health Watch streams with UNAVAILABLE and exits 0', async () => {
      const streams = Array.from({ length: 20 }, () => watch(100, 0));
      // Another service's stream, which nothing of ours ends by itself: grpc.health.v1 Watch.
      const HealthClient = grpc.makeGenericClientConstructor(healthService, 'Health');
      const health = new HealthClient(app.address, grpc.credentials.createInsecure());
      const statuses: string[] = [];
      const healthWatch = health.watch({ service: '' }) as grpc.ClientReadableStream<{ status: string }>;
      healthWatch.on('data', (m) => statuses.push(m.status));
      const healthEnd = new Promise<grpc.ServiceError>((resolve) => healthWatch.on('error', resolve));
      await until(
        'every stream has a message',
        () => streams.every((s) => s.messages.length > 0) && statuses.length > 0,
        (x) => x,
        10000,
      );
      const stopped = app.stop(20000);
      const ends = await Promise.all(streams.map((s) => s.done));
      // Before: the streams held the graceful shutdown until the grace ran out and forceShutdown
      // cancelled them (CANCELLED on the client).
      for (const e of ends)
        expect({ code: e?.code, details: e?.details }).toEqual({ code: grpc.status.UNAVAILABLE, details: expect.stringContaining('shutting down') });
      const he = await healthEnd;
      expect({ statuses, code: he.code, details: he.details }).toEqual({
        statuses: ['SERVING', 'NOT_SERVING'],
        code: grpc.status.UNAVAILABLE,
        details: expect.stringContaining('shutting down'),
      });
      expect((await stopped).code).toBe(0);
      health.close();
    }, 30000);
  });
});
