/**
 * Case (8), `control-load`: the control plane under counter streams and metric scrapes: unary
 * latency, health probes, stream and scrape rates, and SIGTERM with many streams open.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { VirtualService, Real } from '../../gen/retrace/v1/balancer';
import type { Config } from '../../gen/retrace/v1/config';
import { Protocol, Scheduler } from '../../gen/retrace/v1/types';
import { track } from '../children';
import type { LoadOptions, LoadTally } from '../cp-load-client';
import { ForeignCpu, rssBytes } from '../machine';
import { RetraceRun } from '../retrace';
import { now, percentile, sleep } from '../stats';
import { figure, foreignJudge, tryQuiet, type Ctx, type Figure } from '../harness';

/** 1500 TCP services of 4 reals each (VIPs 198.18.2.1-250, ports 80-85). */
function loadConfig(base: Config, services: number, realsPer: number): Config {
  const vs: VirtualService[] = [];
  for (let s = 0; s < services; s++) {
    const reals: Real[] = [];
    for (let i = 0; i < realsPer; i++) {
      const k = s * realsPer + i + 1;
      reals.push(Real.fromPartial({ address: `10.2.${k >> 8}.${k & 255}`, port: 8080, weight: 1 }));
    }
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
  return { ...base, virtualServices: [...base.virtualServices, ...vs] };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** The load generator (cp-load-client.ts) as a child process; stop() returns what it received. */
class LoadClient {
  private readonly child: ChildProcess;
  private out = '';
  private readonly ready: Promise<void>;
  private readonly exited: Promise<void>;

  constructor(opts: LoadOptions) {
    this.child = spawn(process.execPath, [path.join(__dirname, '..', 'cp-load-client.js'), JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'inherit'] });
    track(this.child);
    this.ready = new Promise((resolve, reject) => {
      this.child.stdout!.on('data', (d: Buffer) => {
        this.out += d.toString();
        if (this.out.startsWith('ready\n')) resolve();
      });
      this.child.once('exit', (code) => reject(new Error(`load client exited (${code}) before it was ready`)));
    });
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  started(): Promise<void> {
    return this.ready;
  }

  async stop(): Promise<LoadTally> {
    this.child.kill('SIGTERM');
    await this.exited;
    const line = this.out.split('\n').find((l) => l.startsWith('{'));
    if (line === undefined) throw new Error(`load client printed no tally: ${this.out}`);
    return JSON.parse(line) as LoadTally;
  }
}

interface ProbeResult {
  unaryMs: number[];
  unaryErrors: number;
  probes: number;
  probesOk: number;
  probeMs: number[];
}

/**
 * For `seconds`: unary calls back to back, one at a time (GetTimeouts and GetSystemInfo in turn,
 * 2 s deadline), and beside them a health probe (grpc.health.v1 Check, 1 s deadline, as a
 * kubelet probe has by default) every 100 ms on its own channel.
 */
async function probe(rr: RetraceRun, seconds: number): Promise<ProbeResult> {
  const r: ProbeResult = { unaryMs: [], unaryErrors: 0, probes: 0, probesOk: 0, probeMs: [] };
  const until = now() + seconds;
  const HealthClient = grpc.makeGenericClientConstructor(healthService, 'Health');
  const health = new HealthClient(rr.app.address, grpc.credentials.createInsecure());
  const probes = (async () => {
    while (now() < until) {
      const t = now();
      await new Promise<void>((resolve) => {
        health.check({ service: '' }, { deadline: Date.now() + 1000 }, (err: grpc.ServiceError | null, res: { status: string | number }) => {
          r.probes++;
          if (err === null && (res.status === 'SERVING' || res.status === 1)) r.probesOk++;
          r.probeMs.push((now() - t) * 1000);
          resolve();
        });
      });
      const wait = t + 0.1 - now();
      if (wait > 0) await sleep(wait * 1000);
    }
  })();
  let i = 0;
  while (now() < until) {
    const t = now();
    try {
      if (i++ % 2 === 0) await rr.api.balancer.getTimeouts({}, 2000);
      else await rr.api.system.getSystemInfo({}, 2000);
      r.unaryMs.push((now() - t) * 1000);
    } catch {
      r.unaryErrors++;
      r.unaryMs.push((now() - t) * 1000);
    }
  }
  await probes;
  health.close();
  return r;
}

export async function caseControlLoad(ctx: Ctx): Promise<Figure[]> {
  const services = 1500;
  const realsPer = 4;
  const streams = 50;
  const scrapers = 20;
  const intervalMs = 100;
  const shutdownStreams = 200;
  const fig: Record<string, number[]> = { p50: [], p99: [], max: [], probeOk: [], idleP99: [], exitS: [], streamRate: [], scrapeRate: [] };
  const runs: unknown[] = [];
  const oneRun = async () => {
    const metricsPort = await freePort();
    const rr = new RetraceRun({
      pcap: ctx.emptyPcap,
      packets: 0,
      maxConns: 16384,
      emptyPcap: ctx.emptyPcap,
      huge: ctx.huge,
      busyPoll: false,
      extraYaml: `metrics: {listen: "127.0.0.1:${metricsPort}"}`,
    });
    let load: LoadClient | undefined;
    try {
      await rr.start();
      await rr.setupNetwork();
      const base = (await rr.api.config.getConfig({})).config!;
      const t0 = now();
      await rr.api.config.applyConfig({ config: loadConfig(base, services, realsPer), dryRun: false }, 120000);
      const applyS = now() - t0;
      await sleep(ctx.warmupS * 1000);
      const idle = await probe(rr, ctx.measureS);

      const opts: LoadOptions = { address: rr.app.address, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`, streams, scrapers, intervalMs };
      load = new LoadClient(opts);
      await load.started();
      await sleep(ctx.warmupS * 1000);
      const foreign = new ForeignCpu(() => [rr.pid, load!.pid]).start();
      const rss0 = rssBytes(rr.pid);
      const loaded = await probe(rr, ctx.measureS);
      const foreignCores = foreign.stop();
      const rss1 = rssBytes(rr.pid);
      const tally = await load.stop();
      load = undefined;

      // Shutdown under streams: SIGTERM with many counter streams and scrapers open.
      load = new LoadClient({ ...opts, streams: shutdownStreams });
      await load.started();
      await sleep(1000);
      const stopped = await rr.app.stop(20000);
      const shutdownTally = await load.stop();
      load = undefined;
      return { applyS, idle, loaded, tally, foreignCores, rss: [rss0, rss1], exit: { ...stopped, streamErrors: shutdownTally.streamErrors } };
    } finally {
      if (load !== undefined) await load.stop().catch(() => undefined);
      await rr.stop();
    }
  };
  const summary = (p: ProbeResult) => ({
    calls: p.unaryMs.length,
    errors: p.unaryErrors,
    p50: percentile(p.unaryMs, 50),
    p99: percentile(p.unaryMs, 99),
    max: Math.max(...p.unaryMs),
    probes: p.probes,
    probesOk: p.probesOk,
    probeP99: percentile(p.probeMs, 99),
  });
  for (let r = 0; r < ctx.runs; r++) {
    const at = await tryQuiet(ctx, { label: `control-load run ${r + 1}`, run: oneRun, judge: (x) => foreignJudge(ctx, x.foreignCores) });
    const { applyS, idle, loaded, tally, foreignCores, rss, exit } = at.value;
    const li = summary(loaded);
    const id = summary(idle);
    fig.p50.push(li.p50);
    fig.p99.push(li.p99);
    fig.max.push(li.max);
    fig.probeOk.push(li.probes > 0 ? (100 * li.probesOk) / li.probes : NaN);
    fig.idleP99.push(id.p99);
    fig.exitS.push(exit.ms / 1000);
    fig.streamRate.push(tally.streamMessages / tally.seconds);
    fig.scrapeRate.push(tally.scrapes / tally.seconds);
    runs.push({
      run: r + 1,
      applyS,
      idle: id,
      loaded: li,
      load: tally,
      foreignCores,
      rssBytes: rss,
      exit,
      attempts: at.attempts,
      discarded: at.discarded,
      noisy: at.noisy,
    });
    ctx.log(
      `  control-load run ${r + 1}${at.noisy ? ' (NOISY)' : ''}: unary p50 ${li.p50.toFixed(2)} p99 ${li.p99.toFixed(2)} max ${li.max.toFixed(1)} ms (${li.calls} calls, ${li.errors} errors; idle p99 ${id.p99.toFixed(2)} ms), ` +
        `health ${li.probesOk}/${li.probes} (p99 ${li.probeP99.toFixed(1)} ms); ${streams} streams got ${(tally.streamMessages / tally.seconds).toFixed(0)} messages/s (${((100 * tally.streamMessages) / (tally.seconds * streams * (1000 / intervalMs))).toFixed(0)}% of one per tick each), ${tally.scrapes} scrapes (${(tally.scrapeBytes / Math.max(1, tally.scrapes) / 1e6).toFixed(2)} MB each, p50 ${tally.scrapeMsP50.toFixed(0)} ms, status ${JSON.stringify(tally.scrapeStatus)}, ${tally.scrapeErrors} errors); ` +
        `RSS ${(rss[1] / 2 ** 20).toFixed(0)} MiB; SIGTERM with ${shutdownStreams} streams: exit ${exit.code} in ${(exit.ms / 1000).toFixed(2)} s (streams ended: ${JSON.stringify(exit.streamErrors.slice(0, 2))}); other work ${foreignCores.toFixed(2)} cores`,
    );
  }
  const lbl = `${streams} WatchCounters streams (${intervalMs} ms) + ${scrapers} concurrent /metrics scrapes, ${services} services × ${realsPer} reals`;
  const p99 = figure({ id: 'control-load-unary-p99', label: `Unary p99 under ${lbl}`, unit: 'ms', runs: fig.p99, higherIsBetter: false });
  p99.details = { runs };
  return [
    figure({ id: 'control-load-unary-p50', label: `Unary p50 under ${lbl}`, unit: 'ms', runs: fig.p50, higherIsBetter: false }),
    p99,
    figure({ id: 'control-load-unary-max', label: 'Unary max under the same load', unit: 'ms', runs: fig.max, higherIsBetter: false }),
    figure({ id: 'control-load-health-ok', label: 'Health probes answered SERVING within 1 s under the same load', unit: '%', runs: fig.probeOk }),
    figure({
      id: 'control-load-idle-unary-p99',
      label: `Unary p99 with ${services} services and no streams or scrapes`,
      unit: 'ms',
      runs: fig.idleP99,
      higherIsBetter: false,
    }),
    figure({
      id: 'control-load-stream-msgs',
      label: `WatchCounters messages received per second, all streams (one per tick each would be ${(streams * 1000) / intervalMs})`,
      unit: '/s',
      runs: fig.streamRate,
    }),
    figure({ id: 'control-load-scrapes', label: '/metrics scrapes answered per second (all scrapers)', unit: '/s', runs: fig.scrapeRate }),
    figure({
      id: 'control-load-shutdown',
      label: `SIGTERM to exit with ${shutdownStreams} WatchCounters streams and ${scrapers} scrapers open`,
      unit: 's',
      runs: fig.exitS,
      higherIsBetter: false,
    }),
  ];
}
