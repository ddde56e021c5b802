/**
 * What every benchmark case shares: the suite context, the figure and result types the report
 * reads, the noise guard (tryQuiet and its judges), the pcap cache, and the two measurements most
 * cases take (testpmd on a pcap, a running retrace's forwarding rate). The cases themselves live
 * in src/bench/cases/, one file each; docs/bench.md says what each measures and how.
 */
import path from 'node:path';
import { ForeignCpu, threadCpuSeconds } from './machine';
import { writePcap, type FlowSpec, type PcapInfo } from './pcap';
import { profileWorker, workerTid, type Profile } from './profile';
import { NET, RetraceRun, dropDelta } from './retrace';
import { median, now, sleep, spread, type Spread } from './stats';
import { runTestpmd, testpmdMbufs, type Sink } from './testpmd';
import { hugepagesInUseMiB, type Hugepages } from './hugepages';
import { testpmdMemoryMb } from './sizing';

export interface Figure {
  id: string;
  label: string;
  unit: string;
  higherIsBetter: boolean;
  runs: number[];
  value: Spread;
  baseline?: { label: string; runs: number[]; value: Spread; unit?: string };
  /** retrace / testpmd, per run pair. */
  ratio?: { runs: number[]; value: Spread };
  /** Part of the forwarding chart. */
  chart?: boolean;
  details: Record<string, unknown>;
  notes: string[];
}

export interface CaseResult {
  name: string;
  title: string;
  figures: Figure[];
  notes: string[];
  seconds: number;
  loadBefore: number[];
  loadAfter: number[];
  error?: string;
}

export interface Ctx {
  quick: boolean;
  runs: number;
  warmupS: number;
  measureS: number;
  /** Scratch directory (pcaps, perf data). */
  dir: string;
  profile: boolean;
  log: (line: string) => void;
  emptyPcap: string;
  pcaps: Map<string, PcapInfo>;
  seq: number;
  /** Noise guard: attempts per run, the CPU share both forwarding cores must get, the other work
   * (in cores) tolerated while the control-plane figures are measured, and a wait for quiet. */
  attempts: number;
  minShare: number;
  maxForeign: number;
  waitQuiet: () => Promise<void>;
  /** --hugepages: both sides take 2 MiB pages from this hugetlbfs mount instead of running --no-huge. */
  huge?: Hugepages;
  /** --scale-levels: the conn-scale levels to run, by figure id (scale-locality-500K...); all when absent. */
  scaleLevels?: string[];
}

export interface Quality {
  ok: boolean;
  /** Higher is quieter: the best attempt is kept when none is quiet. */
  score: number;
  why: string;
}

export interface Attempted<T> {
  value: T;
  attempts: number;
  /** Why earlier attempts were thrown away. */
  discarded: string[];
  /** No attempt was quiet; value is the quietest. */
  noisy: boolean;
}

export interface Attempt<T> {
  /** Names the attempt in the log. */
  label: string;
  run: () => Promise<T>;
  judge: (t: T) => Quality;
}

/**
 * Runs `run` until `judge` calls a run quiet, at most ctx.attempts times, waiting for a quiet
 * machine between attempts; keeps the quietest attempt if none was. The machine is shared: a run
 * during which something else took the forwarding core measures that, not the dataplane.
 */
export async function tryQuiet<T>(ctx: Ctx, { label, run, judge }: Attempt<T>): Promise<Attempted<T>> {
  let best: { value: T; q: Quality } | undefined;
  const discarded: string[] = [];
  for (let a = 1; a <= ctx.attempts; a++) {
    const value = await run();
    const q = judge(value);
    if (q.ok) return { value, attempts: a, discarded, noisy: false };
    discarded.push(q.why);
    if (best === undefined || q.score > best.q.score) best = { value, q };
    if (a < ctx.attempts) {
      ctx.log(`  ${label}: attempt ${a} discarded (${q.why}); waiting for a quiet machine`);
      await ctx.waitQuiet();
    }
  }
  if (ctx.attempts > 1) ctx.log(`  ${label}: no quiet attempt in ${ctx.attempts}; keeping the quietest (${best!.q.why})`);
  return { value: best!.value, attempts: ctx.attempts, discarded, noisy: true };
}

export const pct0 = (x: number): string => `${(x * 100).toFixed(0)}%`;

/** Both forwarding cores got (nearly) all of their CPU. */
export function shareJudge(ctx: Ctx, shares: number[], foreign: number): Quality {
  const s = Math.min(...shares.map((x) => (Number.isFinite(x) ? x : 0)));
  return {
    ok: s >= ctx.minShare,
    score: s,
    why: `forwarding cores got ${shares.map((x) => pct0(x)).join(' / ')} of their CPU, other work ${foreign.toFixed(2)} cores`,
  };
}

/** Little other work on the machine (control-plane figures: CPU 0 is shared with the client). */
export function foreignJudge(ctx: Ctx, foreign: number): Quality {
  return { ok: foreign <= ctx.maxForeign, score: -foreign, why: `other work took ${foreign.toFixed(2)} cores` };
}

/** A figure's own fields; the rest (higherIsBetter, details, notes...) default unless given. */
export type FigureSpec = Pick<Figure, 'id' | 'label' | 'unit' | 'runs'> & Partial<Omit<Figure, 'value'>>;

/** A figure whose value is the spread of its runs; higher is better unless said otherwise. */
export function figure({ id, label, unit, runs, ...opts }: FigureSpec): Figure {
  return { id, label, unit, higherIsBetter: true, runs, value: spread(runs), details: {}, notes: [], ...opts };
}

/** Adds the baseline measured beside f (run i with run i) and the ratio f / baseline per pair. */
export function withBaseline(f: Figure, base: { label: string; runs: number[]; unit?: string }): Figure {
  f.baseline = { label: base.label, runs: base.runs, value: spread(base.runs), unit: base.unit };
  const ratios = f.runs.map((v, i) => v / base.runs[i]);
  f.ratio = { runs: ratios, value: spread(ratios) };
  return f;
}

/**
 * Traffic as the client side sends it: to the `client` port's MAC from the gateway's, from the
 * client addresses, to `dst` (the VIP unless given), TCP and UDP to the service port. The key
 * order is fixed here, so equal specs hit the same cached pcap (pcapFor keys on the JSON).
 */
export function clientFlows({
  kind,
  flows,
  packetsPerFlow,
  burst,
  dst = NET.vip,
}: Pick<FlowSpec, 'kind' | 'flows' | 'packetsPerFlow' | 'burst'> & { dst?: string }): FlowSpec {
  return {
    kind,
    flows,
    packetsPerFlow,
    ...(burst !== undefined ? { burst } : {}),
    dstMac: NET.clientMac,
    srcMac: NET.gatewayMac,
    dst,
    ...(kind !== 'icmp' ? { dport: NET.vport } : {}),
    clientBase: NET.clientBase,
  };
}

/** The pcap for `spec`, generated once per suite. */
export function pcapFor(ctx: Ctx, name: string, spec: FlowSpec): PcapInfo {
  const key = JSON.stringify(spec);
  const hit = ctx.pcaps.get(key);
  if (hit) return hit;
  const t = now();
  const info = writePcap(path.join(ctx.dir, `${name}-${ctx.pcaps.size}.pcap`), spec);
  ctx.log(`  pcap ${name}: ${info.packets} frames, ${(info.bytes / 2 ** 20).toFixed(1)} MiB in ${(now() - t).toFixed(1)} s`);
  ctx.pcaps.set(key, info);
  return info;
}

export function prefix(ctx: Ctx): string {
  return `rtbench-${process.pid}-${ctx.seq++}`;
}

export async function testpmd(
  ctx: Ctx,
  pcap: PcapInfo,
  sink: Sink = 'pcap',
): Promise<{ pps: number; cpuShare: number; foreignCores: number; samples: number[]; hugeMiB?: number }> {
  const pre = prefix(ctx);
  ctx.huge?.ensure(testpmdMemoryMb(testpmdMbufs(pcap.packets), true), 'testpmd');
  let r;
  // With --hugepages: the most hugepage memory in use while it ran (shows it took its pages there).
  let hugeMiB = ctx.huge ? 0 : undefined;
  const poll = ctx.huge ? setInterval(() => (hugeMiB = Math.max(hugeMiB ?? 0, hugepagesInUseMiB())), 1000) : undefined;
  try {
    r = await runTestpmd({
      pcap: pcap.file,
      packets: pcap.packets,
      warmupS: ctx.warmupS,
      seconds: ctx.measureS,
      prefix: pre,
      sink,
      emptyPcap: ctx.emptyPcap,
      hugeDir: ctx.huge?.dir,
    });
  } finally {
    if (poll) clearInterval(poll);
    ctx.huge?.cleanPrefix(pre);
  }
  if (r.rxPps.length === 0) throw new Error('testpmd gave no samples');
  return { pps: median(r.rxPps), cpuShare: r.cpuShare, foreignCores: r.foreignCores, samples: r.rxPps, hugeMiB };
}

export interface MeasureOptions {
  /** The port whose tx rate is the figure: servers (FNAT) or client (local echo replies). */
  out: 'servers' | 'client';
  /** Profile the worker under perf meanwhile, naming the data after this. */
  profileTag?: string;
}

export interface Measured {
  pps: number;
  rxPps: number;
  samples: number[];
  drops: Record<string, number>;
  cpuShare: number;
  foreignCores: number;
  conns: number;
  profile?: Profile;
  /** With --hugepages: hugepage memory in use on the machine while measuring (the appliance's). */
  hugeMiB?: number;
}

/** Measures a running, configured retrace: per-second rates over measureS after warmupS. */
export async function measure(ctx: Ctx, rr: RetraceRun, { out, profileTag }: MeasureOptions): Promise<Measured> {
  await sleep(ctx.warmupS * 1000);
  const c0 = await rr.counters();
  const foreign = new ForeignCpu(() => [rr.pid]).start();
  const tid = workerTid(rr.pid);
  const cpuStart = tid !== undefined ? { t: now(), cpu: threadCpuSeconds(rr.pid, tid) } : undefined;
  const prof =
    profileTag !== undefined ? profileWorker(rr.pid, { seconds: Math.max(2, Math.min(5, ctx.measureS - 1)), dir: ctx.dir, tag: profileTag }) : undefined;
  const samples = await rr.sampleRates(ctx.measureS);
  const cpuShare = cpuStart && tid !== undefined ? (threadCpuSeconds(rr.pid, tid) - cpuStart.cpu) / (now() - cpuStart.t) : NaN;
  const foreignCores = foreign.stop();
  const c1 = await rr.counters();
  const hugeMiB = ctx.huge ? hugepagesInUseMiB() : undefined;
  const profile = prof ? await prof : undefined;
  const fwd = samples.map((s) => (out === 'servers' ? s.serversTx : s.clientTx));
  return {
    pps: median(fwd),
    rxPps: median(samples.map((s) => s.clientRx)),
    samples: fwd,
    drops: dropDelta(c1, c0),
    cpuShare,
    foreignCores,
    conns: Number(c1.connCount),
    profile,
    hugeMiB,
  };
}

export const FWD_FLOWS = (ctx: Ctx): number => (ctx.quick ? 256 : 1024);
