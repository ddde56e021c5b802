/**
 * Soak: conn churn through the lab for a while, watching the appliance for leaks.
 *
 *   node dist/lab/soak.js            (scripts/soak.sh; root, like the lab)
 *
 * Environment:
 *   SOAK_SECONDS          churn duration (default 600)
 *   SOAK_SAMPLE_SECONDS   sampling period (default 10)
 *   SOAK_OUT              results directory (default <repo>/bench/results)
 *   SOAK_RSS_SLOPE_MAX    largest acceptable RSS growth in KiB/min (trough slope, default 1024)
 *   SOAK_MAX_FAILURE_RATE largest acceptable share of failed conns/datagrams/pings (default 0.01)
 *
 * One lab and one appliance (short idle timeouts so conns expire during the run). Both clients
 * open new conns continuously toward one VIP, each in three loops at once: TCP echo connections,
 * UDP echo flows (one new source port per flow) and ping runs (a new echo id per run), so the conn
 * table fills and drains all the time. Every SOAK_SAMPLE_SECONDS: the mbuf pool's in-use count
 * (GetSystemInfo), the appliance process's RSS (/proc/<pid>/status VmRSS), the conn count and the
 * traffic done so far. After the churn the conns must expire, the mbuf in-use count must return to
 * its baseline and the RSS must be flat: least-squares slopes over all the churn samples and over
 * the second half are reported (with the anonymous/shared split), and the slope through the lowest
 * sample of each quarter (the garbage collector's troughs, which a leak raises) is compared with
 * SOAK_RSS_SLOPE_MAX.
 *
 * Writes bench/results/soak-<date>.json and .md and exits 0 when every check passed, 1 otherwise.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from './appliance';
import { LabScenario, type RealSpec } from './scenario';
import { LAB, labVip, REAL_SERVERS, type Role } from './topology';

const VIP = labVip(90);
const ECHO = LAB.echoPort;
const TIMEOUTS = 'timeouts: {tcp_syn: 5, tcp_established: 30, tcp_fin: 5, tcp_close: 2, udp: 5, icmp: 5}';

interface Sample {
  /** Seconds since the churn started (negative: before). */
  t: number;
  phase: 'baseline' | 'churn' | 'drain';
  mbufInUse: number;
  rssKiB: number;
  /** VmRSS split: anonymous (JS heap, malloc), file-backed, shared (DPDK memory without hugepages is a memfd). */
  rssAnonKiB: number;
  rssFileKiB: number;
  rssShmemKiB: number;
  conns: number;
  tcp: { ok: number; failed: number };
  udp: { ok: number; failed: number };
  icmp: { ok: number; failed: number };
  /** Sum of every drop counter. */
  drops: number;
}

interface Tally {
  ok: number;
  failed: number;
  runs: number;
  reasons: Record<string, number>;
}

const num = (name: string, def: number): number => {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got "${v}"`);
  return n;
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function memory(pid: number): { rss: number; anon: number; file: number; shmem: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
    if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(m[1]);
  };
  return { rss: kib('VmRSS'), anon: kib('RssAnon'), file: kib('RssFile'), shmem: kib('RssShmem') };
}

/** Least-squares slope of y over x, per unit of x. */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  return sxx === 0 ? 0 : sxy / sxx;
}

/**
 * Slope (KiB/min) through the lowest RSS sample of each quarter of `ss`: the lower envelope, which
 * a leak raises and the garbage collector's sawtooth does not.
 */
export function troughSlope(ss: readonly { t: number; rssKiB: number }[]): number {
  const q = Math.floor(ss.length / 4);
  if (q < 1) return 0;
  const mins = [0, 1, 2, 3].map((i) => {
    const part = ss.slice(i * q, i === 3 ? ss.length : (i + 1) * q);
    return part.reduce((m, s) => (s.rssKiB < m.rssKiB ? s : m));
  });
  return (
    Math.round(
      slope(
        mins.map((s) => s.t / 60),
        mins.map((s) => s.rssKiB),
      ) * 10,
    ) / 10
  );
}

function stamp(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}T${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
}

async function main(): Promise<number> {
  const seconds = num('SOAK_SECONDS', 600);
  const every = num('SOAK_SAMPLE_SECONDS', 10);
  const slopeMax = num('SOAK_RSS_SLOPE_MAX', 1024);
  const maxFailureRate = Number(process.env.SOAK_MAX_FAILURE_RATE ?? '0.01');
  const outDir = process.env.SOAK_OUT ? path.resolve(process.env.SOAK_OUT) : path.join(REPO_ROOT, 'bench', 'results');
  const log = (line: string): void => console.error(`[soak ${new Date().toISOString().slice(11, 19)}] ${line}`);
  const started = new Date();

  log(
    `${seconds} s of churn, a sample every ${every} s; load ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  const sc = await LabScenario.start({ extraYaml: TIMEOUTS, log });
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const pid = sc.app.child?.pid;
    if (pid === undefined) throw new Error('appliance has no pid');
    const reals: RealSpec[] = REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: ECHO }));
    await sc.addService('tcp', VIP, ECHO, 'rr', reals);
    await sc.addService('udp', VIP, ECHO, 'rr', reals);
    await sc.addService(
      'icmp',
      VIP,
      0,
      'rr',
      REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: 0 })),
    );

    const tally: Record<'tcp' | 'udp' | 'icmp', Tally> = {
      tcp: { ok: 0, failed: 0, runs: 0, reasons: {} },
      udp: { ok: 0, failed: 0, runs: 0, reasons: {} },
      icmp: { ok: 0, failed: 0, runs: 0, reasons: {} },
    };
    const reason = (t: Tally, r: string): void => {
      const k = r.replace(/\d+/g, 'N');
      t.reasons[k] = (t.reasons[k] ?? 0) + 1;
    };
    const samples: Sample[] = [];
    let t0 = Date.now();
    const sample = async (phase: Sample['phase']): Promise<Sample> => {
      const [info, counters] = await Promise.all([sc.app.api.system.getSystemInfo({}), sc.counters()]);
      const mem = memory(pid);
      const drops = counters.drops.reduce((s, d) => s + Object.values(d.counters!).reduce((x: bigint, y) => x + (y as bigint), 0n), 0n);
      const s: Sample = {
        t: Math.round((Date.now() - t0) / 100) / 10,
        phase,
        mbufInUse: Number(info.mempool!.inUse),
        rssKiB: mem.rss,
        rssAnonKiB: mem.anon,
        rssFileKiB: mem.file,
        rssShmemKiB: mem.shmem,
        conns: Number(counters.connCount),
        tcp: { ok: tally.tcp.ok, failed: tally.tcp.failed },
        udp: { ok: tally.udp.ok, failed: tally.udp.failed },
        icmp: { ok: tally.icmp.ok, failed: tally.icmp.failed },
        drops: Number(drops),
      };
      samples.push(s);
      log(
        `${phase} t=${s.t}s mbufs=${s.mbufInUse} rss=${s.rssKiB}KiB (anon ${s.rssAnonKiB} file ${s.rssFileKiB} shmem ${s.rssShmemKiB}) conns=${s.conns} tcp=${s.tcp.ok}/${s.tcp.failed} udp=${s.udp.ok}/${s.udp.failed} icmp=${s.icmp.ok}/${s.icmp.failed} drops=${s.drops}`,
      );
      return s;
    };
    const waitNoConns = async (limitMs: number): Promise<boolean> => {
      const deadline = Date.now() + limitMs;
      while (Date.now() < deadline) {
        if ((await sc.counters()).connCount === 0n) return true;
        await sleep(500);
      }
      return false;
    };

    // Warm up (ARP, first-touch of buffers and JIT), let it settle, take the baseline.
    for (const c of ['client-a', 'client-b'] as const) {
      await sc.lab.tcpEcho(c, VIP, ECHO, { conns: 20, concurrency: 10 });
      await sc.lab.udpEcho(c, VIP, ECHO, { count: 20, concurrency: 10 });
      await sc.lab.ping(c, VIP, { count: 3, deadline: 20 });
    }
    await waitNoConns(60000);
    await sleep(2000);
    const baseline = await sample('baseline');

    // Churn: three loops per client until the deadline.
    t0 = Date.now();
    samples[0].t = 0;
    const deadline = t0 + seconds * 1000;
    const running = (): boolean => !interrupted && Date.now() < deadline;
    const loops: Promise<void>[] = [];
    for (const c of ['client-a', 'client-b'] as Role[]) {
      loops.push(
        (async () => {
          while (running()) {
            const r = await sc.lab.tcpEcho(c, VIP, ECHO, { conns: 40, concurrency: 8, bytes: 2048, timeoutMs: 10000 });
            tally.tcp.runs++;
            tally.tcp.ok += r.ok;
            tally.tcp.failed += r.failed;
            for (const f of r.failures) reason(tally.tcp, f.reason ?? '?');
          }
        })(),
        (async () => {
          while (running()) {
            const r = await sc.lab.udpEcho(c, VIP, ECHO, { count: 40, concurrency: 8, bytes: 256, rounds: 2, intervalMs: 50, timeoutMs: 3000 });
            tally.udp.runs++;
            tally.udp.ok += r.ok;
            tally.udp.failed += r.failed;
            for (const f of r.failures) reason(tally.udp, f.reason ?? '?');
          }
        })(),
        (async () => {
          while (running()) {
            const r = await sc.lab.ping(c, VIP, { count: 5, interval: 0.2, deadline: 15 });
            tally.icmp.runs++;
            const got = Math.min(r.received, 5);
            tally.icmp.ok += got;
            tally.icmp.failed += 5 - got;
            if (got < 5) reason(tally.icmp, `lost ${5 - got}/5 (exit ${r.exitCode})`);
          }
        })(),
      );
    }
    const loopsDone = Promise.all(loops);
    let nextSample = t0 + every * 1000;
    while (running()) {
      await sleep(Math.max(0, Math.min(nextSample, deadline) - Date.now()));
      if (!running()) break;
      await sample('churn');
      nextSample += every * 1000;
    }
    await loopsDone;
    const endOfChurn = await sample('churn');

    // Drain: conns expire (short timeouts), the pool returns to its baseline.
    const drained = await waitNoConns(120000);
    let mbufBack = false;
    for (let i = 0; i < 30 && !mbufBack; i++) {
      mbufBack = Number((await sc.app.api.system.getSystemInfo({})).mempool!.inUse) <= baseline.mbufInUse;
      if (!mbufBack) await sleep(500);
    }
    const final = await sample('drain');
    const health = await sc.app.healthCheck('').catch((e: Error) => e.message);

    // RSS: slope over the churn samples, all and the second half, in KiB per minute.
    const churn = samples.filter((s) => s.phase === 'churn');
    const half = churn.slice(Math.floor(churn.length / 2));
    const perMin = (ss: Sample[], k: 'rssKiB' | 'rssAnonKiB' | 'rssShmemKiB' = 'rssKiB'): number =>
      Math.round(
        slope(
          ss.map((s) => s.t / 60),
          ss.map((s) => s[k]),
        ) * 10,
      ) / 10;
    const rss = {
      baselineKiB: baseline.rssKiB,
      endOfChurnKiB: endOfChurn.rssKiB,
      finalKiB: final.rssKiB,
      minKiB: Math.min(...churn.map((s) => s.rssKiB)),
      maxKiB: Math.max(...churn.map((s) => s.rssKiB)),
      slopeAllKiBPerMin: perMin(churn),
      slopeSecondHalfKiBPerMin: perMin(half),
      anonSlopeSecondHalfKiBPerMin: perMin(half, 'rssAnonKiB'),
      shmemSlopeSecondHalfKiBPerMin: perMin(half, 'rssShmemKiB'),
      troughSlopeKiBPerMin: troughSlope(churn),
    };
    const total = (k: 'tcp' | 'udp' | 'icmp'): number => tally[k].ok + tally[k].failed;
    const failureRate = (k: 'tcp' | 'udp' | 'icmp'): number => (total(k) === 0 ? 1 : tally[k].failed / total(k));
    const checks = {
      servingAtEnd: health === 'SERVING',
      connsExpired: drained && final.conns === 0,
      mbufBackToBaseline: mbufBack && final.mbufInUse <= baseline.mbufInUse,
      // The JS heap is a sawtooth (it grows until a collection), so a plain slope over a few
      // minutes says more about where the collections fell than about leaks. A leak raises the
      // troughs: the check is on the slope through the lowest sample of each quarter of the run.
      rssFlat: churn.length >= 8 && rss.troughSlopeKiBPerMin <= slopeMax,
      trafficFailuresUnderLimit: (['tcp', 'udp', 'icmp'] as const).every((k) => total(k) > 0 && failureRate(k) <= maxFailureRate),
      ranFullDuration: !interrupted,
    };
    const pass = Object.values(checks).every(Boolean);
    const result = {
      kind: 'soak',
      started: started.toISOString(),
      finished: new Date().toISOString(),
      host: { hostname: os.hostname(), cpus: os.cpus().length, loadavgAtEnd: os.loadavg() },
      config: { seconds, sampleSeconds: every, rssSlopeMaxKiBPerMin: slopeMax, maxFailureRate, timeouts: TIMEOUTS, vip: VIP },
      pass,
      checks,
      mbuf: { baseline: baseline.mbufInUse, endOfChurn: endOfChurn.mbufInUse, final: final.mbufInUse, max: Math.max(...churn.map((s) => s.mbufInUse)) },
      rss,
      conns: { max: Math.max(...churn.map((s) => s.conns)), final: final.conns },
      traffic: Object.fromEntries((['tcp', 'udp', 'icmp'] as const).map((k) => [k, { ...tally[k], failureRate: Math.round(failureRate(k) * 1e5) / 1e5 }])),
      samples,
    };

    fs.mkdirSync(outDir, { recursive: true });
    const base = path.join(outDir, `soak-${stamp(started)}`);
    fs.writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
    fs.writeFileSync(`${base}.md`, markdown(result));
    log(`${pass ? 'PASS' : 'FAIL'} ${JSON.stringify(checks)}`);
    log(
      `RSS slope ${rss.slopeAllKiBPerMin} KiB/min (all), ${rss.slopeSecondHalfKiBPerMin} KiB/min (second half), ${rss.troughSlopeKiBPerMin} KiB/min (troughs, checked); ` +
        `mbufs in use ${baseline.mbufInUse} -> ${final.mbufInUse}`,
    );
    log(`results: ${path.relative(process.cwd(), base)}.json, .md`);
    return pass ? 0 : 1;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await sc.destroy();
  }
}

function markdown(r: {
  started: string;
  finished: string;
  host: { hostname: string; cpus: number; loadavgAtEnd: number[] };
  config: { seconds: number; sampleSeconds: number; rssSlopeMaxKiBPerMin: number; maxFailureRate: number };
  pass: boolean;
  checks: Record<string, boolean>;
  mbuf: Record<string, number>;
  rss: Record<string, number>;
  conns: Record<string, number>;
  traffic: Record<string, Tally & { failureRate: number }>;
  samples: Sample[];
}): string {
  const lines = [
    `# Soak ${r.started}`,
    '',
    `**${r.pass ? 'PASS' : 'FAIL'}** — ${r.config.seconds} s of TCP/UDP/ICMP conn churn from client-a and client-b through one VIP, a sample every ${r.config.sampleSeconds} s.`,
    '',
    `Host ${r.host.hostname}, ${r.host.cpus} CPUs, load at the end ${r.host.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')}. Finished ${r.finished}.`,
    '',
    '| check | result |',
    '|---|---|',
    ...Object.entries(r.checks).map(([k, v]) => `| ${k} | ${v ? 'ok' : 'FAILED'} |`),
    '',
    '| figure | value |',
    '|---|---|',
    `| mbufs in use: baseline / end of churn / after drain / max | ${r.mbuf.baseline} / ${r.mbuf.endOfChurn} / ${r.mbuf.final} / ${r.mbuf.max} |`,
    `| RSS KiB: baseline / end of churn / after drain | ${r.rss.baselineKiB} / ${r.rss.endOfChurnKiB} / ${r.rss.finalKiB} |`,
    `| RSS KiB during churn: min / max | ${r.rss.minKiB} / ${r.rss.maxKiB} |`,
    `| RSS slope, all churn samples | ${r.rss.slopeAllKiBPerMin} KiB/min |`,
    `| RSS slope, second half | ${r.rss.slopeSecondHalfKiBPerMin} KiB/min |`,
    `| of which anonymous (JS heap, malloc) / shared (DPDK memory) | ${r.rss.anonSlopeSecondHalfKiBPerMin} / ${r.rss.shmemSlopeSecondHalfKiBPerMin} KiB/min |`,
    `| RSS slope through each quarter's lowest sample (checked, limit ${r.config.rssSlopeMaxKiBPerMin}) | ${r.rss.troughSlopeKiBPerMin} KiB/min |`,
    `| conns: max / after drain | ${r.conns.max} / ${r.conns.final} |`,
    ...Object.entries(r.traffic).map(
      ([k, t]) =>
        `| ${k}: ok / failed (rate, limit ${r.config.maxFailureRate}) | ${t.ok} / ${t.failed} (${t.failureRate})${
          Object.keys(t.reasons).length
            ? ` — ${Object.entries(t.reasons)
                .map(([x, n]) => `${x}: ${n}`)
                .join('; ')}`
            : ''
        } |`,
    ),
    '',
    '## Samples',
    '',
    '| t (s) | phase | mbufs in use | RSS KiB | anon / file / shmem KiB | conns | tcp ok/failed | udp ok/failed | icmp ok/failed | drops |',
    '|---:|---|---:|---:|---|---:|---:|---:|---:|---:|',
    ...r.samples.map(
      (s) =>
        `| ${s.t} | ${s.phase} | ${s.mbufInUse} | ${s.rssKiB} | ${s.rssAnonKiB} / ${s.rssFileKiB} / ${s.rssShmemKiB} | ${s.conns} | ${s.tcp.ok}/${s.tcp.failed} | ${s.udp.ok}/${s.udp.failed} | ${s.icmp.ok}/${s.icmp.failed} | ${s.drops} |`,
    ),
    '',
  ];
  return lines.join('\n');
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e: Error) => {
      console.error(`soak: ${e.stack ?? e.message}`);
      process.exit(2);
    },
  );
}
