/**
 * The benchmark cases. Each returns figures: a measured quantity with its value per run, the median
 * and spread, and where it makes sense the testpmd baseline on the same pcap (run right before it,
 * in the same iteration, so both sides see the same machine conditions) and the ratio per pair.
 * docs/bench.md says what each case measures and how.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { VirtualService, Real } from '../gen/retrace/v1/balancer';
import type { Config } from '../gen/retrace/v1/config';
import { DeleteConnsRequest } from '../gen/retrace/v1/conn';
import { Protocol, Scheduler } from '../gen/retrace/v1/types';
import { track } from './children';
import type { LoadOptions, LoadTally } from './cp-load-client';
import { EventCounter } from './events';
import { ResponsivenessProbe, type ResponsivenessResult } from './responsiveness';
import { ForeignCpu, memAvailable, rssBytes, threadCpuSeconds } from './machine';
import { writePcap, type FlowSpec, type PcapInfo } from './pcap';
import { profileWorker, workerTid, type Profile } from './profile';
import { NET, RetraceRun, dropDelta, type Proto } from './retrace';
import { CONN_OBJ_BYTES, CONN_STRUCT_BYTES, LIP_RING_BYTES, connTableBytes, lipsFor, mbufPoolBytes, mbufsFor, perPageObjBytes } from './sizing';
import { median, now, percentile, sleep, spread, type Spread } from './stats';
import { runTestpmd, type Sink } from './testpmd';

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
}

interface Quality {
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

/**
 * Runs fn until judge calls a run quiet, at most ctx.attempts times, waiting for a quiet machine
 * between attempts; keeps the quietest attempt if none was. The machine is shared: a run during
 * which something else took the forwarding core measures that, not the dataplane.
 */
async function tryQuiet<T>(ctx: Ctx, label: string, fn: () => Promise<T>, judge: (t: T) => Quality): Promise<Attempted<T>> {
  let best: { value: T; q: Quality } | undefined;
  const discarded: string[] = [];
  for (let a = 1; a <= ctx.attempts; a++) {
    const value = await fn();
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

const pct0 = (x: number): string => `${(x * 100).toFixed(0)}%`;

/** Both forwarding cores got (nearly) all of their CPU. */
function shareJudge(ctx: Ctx, shares: number[], foreign: number): Quality {
  const s = Math.min(...shares.map((x) => (Number.isFinite(x) ? x : 0)));
  return {
    ok: s >= ctx.minShare,
    score: s,
    why: `forwarding cores got ${shares.map((x) => pct0(x)).join(' / ')} of their CPU, other work ${foreign.toFixed(2)} cores`,
  };
}

/** Little other work on the machine (control-plane figures: CPU 0 is shared with the client). */
function foreignJudge(ctx: Ctx, foreign: number): Quality {
  return { ok: foreign <= ctx.maxForeign, score: -foreign, why: `other work took ${foreign.toFixed(2)} cores` };
}

export function figure(id: string, label: string, unit: string, runs: number[], opts: Partial<Figure> = {}): Figure {
  return { id, label, unit, higherIsBetter: true, runs, value: spread(runs), details: {}, notes: [], ...opts };
}

function withBaseline(f: Figure, label: string, base: number[], unit?: string): Figure {
  f.baseline = { label, runs: base, value: spread(base), unit };
  const ratios = f.runs.map((v, i) => v / base[i]);
  f.ratio = { runs: ratios, value: spread(ratios) };
  return f;
}

/** The pcap for `spec`, generated once per suite. */
function pcapFor(ctx: Ctx, name: string, spec: FlowSpec): PcapInfo {
  const key = JSON.stringify(spec);
  const hit = ctx.pcaps.get(key);
  if (hit) return hit;
  const t = now();
  const info = writePcap(path.join(ctx.dir, `${name}-${ctx.pcaps.size}.pcap`), spec);
  ctx.log(`  pcap ${name}: ${info.packets} frames, ${(info.bytes / 2 ** 20).toFixed(1)} MiB in ${(now() - t).toFixed(1)} s`);
  ctx.pcaps.set(key, info);
  return info;
}

function prefix(ctx: Ctx): string {
  return `rtbench-${process.pid}-${ctx.seq++}`;
}

async function testpmd(ctx: Ctx, pcap: PcapInfo, sink: Sink = 'pcap'): Promise<{ pps: number; cpuShare: number; foreignCores: number; samples: number[] }> {
  const r = await runTestpmd({
    pcap: pcap.file,
    packets: pcap.packets,
    warmupS: ctx.warmupS,
    seconds: ctx.measureS,
    prefix: prefix(ctx),
    sink,
    emptyPcap: ctx.emptyPcap,
  });
  if (r.rxPps.length === 0) throw new Error('testpmd gave no samples');
  return { pps: median(r.rxPps), cpuShare: r.cpuShare, foreignCores: r.foreignCores, samples: r.rxPps };
}

/** Measures a running, configured retrace: per-second rates over measureS after warmupS. */
async function measure(
  ctx: Ctx,
  rr: RetraceRun,
  which: 'servers' | 'client',
  profileTag?: string,
): Promise<{
  pps: number;
  rxPps: number;
  samples: number[];
  drops: Record<string, number>;
  cpuShare: number;
  foreignCores: number;
  conns: number;
  profile?: Profile;
}> {
  await sleep(ctx.warmupS * 1000);
  const c0 = await rr.counters();
  const foreign = new ForeignCpu(() => [rr.pid]).start();
  const tid = workerTid(rr.pid);
  const cpuStart = tid !== undefined ? { t: now(), cpu: threadCpuSeconds(rr.pid, tid) } : undefined;
  const prof = profileTag !== undefined ? profileWorker(rr.pid, Math.max(2, Math.min(5, ctx.measureS - 1)), ctx.dir, profileTag) : undefined;
  const samples = await rr.sampleRates(ctx.measureS);
  const cpuShare = cpuStart && tid !== undefined ? (threadCpuSeconds(rr.pid, tid) - cpuStart.cpu) / (now() - cpuStart.t) : NaN;
  const foreignCores = foreign.stop();
  const c1 = await rr.counters();
  const profile = prof ? await prof : undefined;
  const fwd = samples.map((s) => (which === 'servers' ? s.serversTx : s.clientTx));
  return {
    pps: median(fwd),
    rxPps: median(samples.map((s) => s.clientRx)),
    samples: fwd,
    drops: dropDelta(c1, c0),
    cpuShare,
    foreignCores,
    conns: Number(c1.connCount),
    profile,
  };
}

// ---------------------------------------------------------------------------------------------
// (1)-(3) forwarding: FNAT TCP/UDP, ICMP local echo, ICMP FNAT echo
// ---------------------------------------------------------------------------------------------

interface FwdSpec {
  id: string;
  label: string;
  spec: FlowSpec;
  services: Proto[];
  /** Where forwarded packets leave: servers (FNAT) or client (local echo replies). */
  out: 'servers' | 'client';
}

async function forwarding(ctx: Ctx, f: FwdSpec): Promise<Figure> {
  const pcap = pcapFor(ctx, f.id, f.spec);
  const base: number[] = [];
  const vals: number[] = [];
  const details: Record<string, unknown>[] = [];
  let profile: Profile | undefined;
  const retrace = async (profileTag?: string) => {
    const rr = new RetraceRun({ pcap: pcap.file, packets: pcap.packets, maxConns: Math.max(16384, f.spec.flows * 2), emptyPcap: ctx.emptyPcap });
    try {
      await rr.start();
      await rr.setupNetwork();
      for (const p of f.services) await rr.addService(p);
      const conns = await rr.waitConns(f.spec.flows, 30);
      return { ...(await measure(ctx, rr, f.out, profileTag)), connsBefore: conns };
    } finally {
      await rr.stop();
    }
  };
  for (let r = 0; r < ctx.runs; r++) {
    const at = await tryQuiet(
      ctx,
      `${f.id} run ${r + 1}`,
      async () => ({ tp: await testpmd(ctx, pcap), m: await retrace() }),
      ({ tp, m }) => shareJudge(ctx, [tp.cpuShare, m.cpuShare], Math.max(tp.foreignCores, m.foreignCores)),
    );
    const { tp, m } = at.value;
    base.push(tp.pps);
    vals.push(m.pps);
    details.push({
      run: r + 1,
      testpmdPps: tp.pps,
      testpmdCpuShare: tp.cpuShare,
      testpmdForeignCores: tp.foreignCores,
      pps: m.pps,
      clientRxPps: m.rxPps,
      workerCpuShare: m.cpuShare,
      foreignCores: m.foreignCores,
      conns: m.connsBefore,
      dropsInWindow: m.drops,
      attempts: at.attempts,
      discarded: at.discarded,
      noisy: at.noisy,
    });
    ctx.log(
      `  ${f.id} run ${r + 1}: testpmd ${(tp.pps / 1e6).toFixed(2)} Mpps (cpu ${pct0(tp.cpuShare)}), retrace ${(m.pps / 1e6).toFixed(2)} Mpps (cpu ${pct0(m.cpuShare)}), conns ${m.connsBefore}, drops ${JSON.stringify(m.drops)}${at.noisy ? ' NOISY' : ''}`,
    );
  }
  // With --profile, one more retrace run (not counted) under perf.
  if (ctx.profile) {
    const m = await retrace(f.id);
    profile = m.profile;
    ctx.log(`  ${f.id} profile run: ${(m.pps / 1e6).toFixed(2)} Mpps under perf`);
  }
  const fig = withBaseline(figure(f.id, f.label, 'pps', vals, { chart: true }), 'testpmd macswap', base);
  fig.details = {
    pcap: { flows: f.spec.flows, packetsPerFlow: f.spec.packetsPerFlow, packets: pcap.packets, frameLen: pcap.frameLen },
    runs: details,
    profile,
  };
  return fig;
}

const FWD_FLOWS = (ctx: Ctx): number => (ctx.quick ? 256 : 1024);

export async function caseFnat(ctx: Ctx): Promise<Figure[]> {
  const flows = FWD_FLOWS(ctx);
  const out: Figure[] = [];
  for (const kind of ['tcp', 'udp'] as const) {
    out.push(
      await forwarding(ctx, {
        id: `fnat-${kind}`,
        label: `FNAT ${kind.toUpperCase()} ${kind === 'tcp' ? 'established ' : ''}(${flows} flows, 16 packets each per pass)`,
        spec: { kind, flows, packetsPerFlow: 16, dstMac: NET.clientMac, srcMac: NET.gatewayMac, dst: NET.vip, dport: NET.vport, clientBase: NET.clientBase },
        services: ['icmp', 'tcp', 'udp'],
        out: 'servers',
      }),
    );
  }
  // The sink check: testpmd with the net_null,no-rx=1 sink the issue names, once per run, to show
  // that the empty-pcap sink both sides use costs the same.
  const tcp = out[0];
  const pcap = pcapFor(ctx, 'fnat-tcp', {
    kind: 'tcp',
    flows,
    packetsPerFlow: 16,
    dstMac: NET.clientMac,
    srcMac: NET.gatewayMac,
    dst: NET.vip,
    dport: NET.vport,
    clientBase: NET.clientBase,
  });
  const nullRuns: number[] = [];
  for (let r = 0; r < Math.min(ctx.runs, 2); r++) nullRuns.push((await testpmd(ctx, pcap, 'null')).pps);
  tcp.details.testpmdNullSink = { runs: nullRuns, value: spread(nullRuns) };
  ctx.log(
    `  testpmd with net_null0,no-rx=1 as the sink: ${nullRuns.map((x) => (x / 1e6).toFixed(2)).join(', ')} Mpps (empty-pcap sink: ${(tcp.baseline!.value.median / 1e6).toFixed(2)})`,
  );
  return out;
}

export async function caseIcmpLocal(ctx: Ctx): Promise<Figure[]> {
  const flows = FWD_FLOWS(ctx);
  return [
    await forwarding(ctx, {
      id: 'icmp-local',
      label: `ICMP echo to a local address (${flows} flows, 16 requests each per pass; replies out of the pcap port)`,
      spec: { kind: 'icmp', flows, packetsPerFlow: 16, dstMac: NET.clientMac, srcMac: NET.gatewayMac, dst: NET.clientAddr, clientBase: NET.clientBase },
      services: ['icmp', 'tcp', 'udp'],
      out: 'client',
    }),
  ];
}

export async function caseIcmpFnat(ctx: Ctx): Promise<Figure[]> {
  const flows = FWD_FLOWS(ctx);
  return [
    await forwarding(ctx, {
      id: 'icmp-fnat',
      label: `ICMP echo through FNAT to a VIP (${flows} flows, 16 requests each per pass)`,
      spec: { kind: 'icmp', flows, packetsPerFlow: 16, dstMac: NET.clientMac, srcMac: NET.gatewayMac, dst: NET.vip, clientBase: NET.clientBase },
      services: ['icmp', 'tcp', 'udp'],
      out: 'servers',
    }),
  ];
}

// ---------------------------------------------------------------------------------------------
// (4) new conns per second, (6) conn events to one subscriber
// ---------------------------------------------------------------------------------------------

interface NewConnsRun {
  connsPerS: number;
  /** CPU share of the worker and other work (cores) from SetReals until every conn existed
   * (watched runs: until the stream went quiet). */
  workerCpuShare: number;
  foreignCores: number;
  /** How connsPerS was measured (watched runs). */
  connsPerSFrom?: string;
  connsPerSPolled?: number;
  created: number;
  secondsToAll: number;
  samples: number;
  drops: Record<string, number>;
  events?: {
    received: number;
    perS: number;
    byType: Record<number, number>;
    lost: Record<string, number>;
    /** At the end of the burst, once the stream went quiet. */
    unreported: number;
    /** After one more event was produced (a loss notice waits for the next event). */
    unreportedAfterNextEvent: number;
    lostAfterNextEvent: Record<string, number>;
    produced: number;
    status: unknown;
    streamSeconds: number;
    error?: string;
  };
  /** Watched runs: the control thread's responsiveness from SetReals until the stream went quiet. */
  responsiveness?: ResponsivenessResult;
}

/**
 * The service exists without reals while the pcap of unique SYNs replays (SYNs dropped as no_real);
 * then SetReals, and every SYN of the next pass opens a conn. GetCounters' conn count is polled
 * back to back; the rate is taken between 5% and 95% of the flows.
 */
async function newConnsRun(
  ctx: Ctx,
  pcap: PcapInfo,
  flows: number,
  watch: boolean,
  profileTag?: string,
  subscriberBuffer?: number,
  batch?: number,
): Promise<NewConnsRun> {
  const rr = new RetraceRun({
    pcap: pcap.file,
    packets: pcap.packets,
    maxConns: Math.ceil(flows * 1.3),
    lips: lipsFor(flows) + 1,
    emptyPcap: ctx.emptyPcap,
    subscriberBuffer,
  });
  let ev: EventCounter | undefined;
  let resp: ResponsivenessProbe | undefined;
  try {
    await rr.start();
    await rr.setupNetwork();
    await rr.addService('tcp', false);
    if (watch) {
      ev = new EventCounter(rr.app.address, batch);
      ev.start();
      for (let i = 0; ; i++) {
        const st = await rr.api.conns.getEventStatus({});
        if (st.producing && (st.subscribers?.streams.length ?? 0) > 0) break;
        if (i > 100) throw new Error('WatchConnEvents stream never registered');
        await sleep(50);
      }
    }
    await sleep(1000);
    const c0 = await rr.counters();
    const created0 = Number(c0.connCount);
    const samples: [number, number][] = [];
    const prof = profileTag !== undefined ? profileWorker(rr.pid, 2, ctx.dir, profileTag) : undefined;
    const tid = workerTid(rr.pid);
    const cpu0 = tid !== undefined ? threadCpuSeconds(rr.pid, tid) : NaN;
    const foreign = new ForeignCpu(() => [rr.pid]).start();
    const tSet = now();
    // In its own process: this one reads the event stream, and its busy event loop would delay
    // the probe's own calls.
    if (watch) {
      resp = new ResponsivenessProbe({ address: rr.app.address, gapMs: 20 });
      await resp.started();
    }
    const setP = rr.setReals('tcp');
    let lastChange = now();
    let last = -1;
    for (;;) {
      const c = Number((await rr.counters()).connCount) - created0;
      const t = now();
      samples.push([t, c]);
      if (c !== last) {
        last = c;
        lastChange = t;
      }
      if (c >= flows || t - lastChange > 5 || t - tSet > 120) break;
      // Back to back without a subscriber; with one, leave the control thread (which also drains
      // and encodes the events) some room.
      if (watch) await sleep(20);
    }
    await setP;
    const workerCpuShare = tid !== undefined ? (threadCpuSeconds(rr.pid, tid) - cpu0) / (now() - tSet) : NaN;
    let foreignCores = watch ? NaN : foreign.stop();
    const c1 = await rr.counters();
    const at = (frac: number): number => samples.findIndex(([, c]) => c >= frac * flows);
    let a = at(0.05);
    let b = at(0.95);
    if (b < 0) b = samples.length - 1;
    if (a < 0 || b <= a) {
      // Too few polls inside the burst: from the last poll that saw none yet (a lower bound).
      let z = -1;
      for (let i = 0; i < b; i++) if (samples[i][1] === 0) z = i;
      a = Math.max(0, z);
    }
    const [ta, ca] = samples[a];
    const [tb, cb] = samples[b];
    const created = Number(c1.connCount) - created0;
    const tAll = samples.find(([, c]) => c >= flows)?.[0];
    const firstNonZero = samples.find(([, c]) => c > 0)?.[0] ?? tSet;
    const out: NewConnsRun = {
      workerCpuShare,
      foreignCores,
      connsPerS: tb > ta ? (cb - ca) / (tb - ta) : NaN,
      created,
      secondsToAll: tAll !== undefined ? tAll - firstNonZero : NaN,
      samples: samples.length,
      drops: dropDelta(c1, c0),
    };
    if (ev) {
      // Every conn made one CREATED event. Wait until the stream goes quiet, then account: every
      // event the hub numbered (seen) or the dataplane dropped is either received or reported lost
      // in the stream, or it is an unreported loss.
      const e = ev;
      const quietS = 3;
      let seen = -1;
      let since = now();
      while (now() - since < quietS && now() - tSet < 300) {
        await sleep(100);
        const x = e.tally.events + e.lostTotal;
        if (x !== seen) {
          seen = x;
          since = now();
        }
      }
      const account = async (): Promise<{ produced: number; received: number; lost: Record<string, number>; unreported: number; status: unknown }> => {
        const st = await rr.api.conns.getEventStatus({});
        const produced = Number(st.seen) + Number(st.dataplane?.lost ?? 0n);
        return {
          produced,
          received: e.tally.events,
          lost: { ...e.tally.lost },
          unreported: produced - e.tally.events - e.lostTotal,
          status: JSON.parse(JSON.stringify(st, (_k, v) => (typeof v === 'bigint' ? Number(v) : v))),
        };
      };
      const atQuiet = await account();
      out.responsiveness = await resp!.stop();
      foreignCores = foreign.stop();
      out.foreignCores = foreignCores;
      const t = e.tally;
      const burst = { min: t.createdMinS, max: t.createdMaxS, created: t.byType[1] ?? 0, lost: e.lostTotal };
      const perS = t.events > 1 ? t.events / (t.lastT - t.firstT) : NaN;
      const streamSeconds = t.lastT - t.firstT;
      // A subscriber-buffer loss is reported just before the next event that fits, so after a
      // burst it waits for more traffic. Make one more event: delete one conn (CLOSED; the next
      // pass recreates it: CREATED), then account again.
      await rr.api.conns.deleteConns(DeleteConnsRequest.fromPartial({ client: NET.clientBase, clientPort: 10000, protocol: Protocol.PROTOCOL_TCP }));
      await sleep(1500);
      const afterNudge = await account();
      // With a subscriber the control thread is busy encoding, so the conn-count polls answer late;
      // the CREATED events carry the worker's own clock. When every event arrived, the span of their
      // times is the burst's.
      const allHere = e.lostTotal === 0 && burst.lost === 0 && burst.created >= created;
      if (allHere && burst.max > burst.min) {
        out.connsPerSPolled = out.connsPerS;
        out.connsPerS = (created - 1) / (burst.max - burst.min);
        out.connsPerSFrom = 'event times';
      } else {
        out.connsPerSFrom =
          'conn-count polls (events were lost, so their times do not bound the burst; the polls answer late while the control thread encodes events)';
      }
      out.events = {
        received: atQuiet.received,
        perS,
        byType: { ...t.byType },
        lost: atQuiet.lost,
        unreported: atQuiet.unreported,
        unreportedAfterNextEvent: afterNudge.unreported,
        lostAfterNextEvent: afterNudge.lost,
        produced: atQuiet.produced,
        streamSeconds,
        status: atQuiet.status,
        error: t.error,
      };
    }
    if (prof) (out as NewConnsRun & { profile?: Profile }).profile = await prof;
    return out;
  } finally {
    await resp?.stop();
    await ev?.stop();
    await rr.stop();
  }
}

function newConnsPcap(ctx: Ctx): { pcap: PcapInfo; flows: number } {
  const flows = ctx.quick ? 20000 : 1_000_000;
  const pcap = pcapFor(ctx, 'syn-unique', {
    kind: 'tcp',
    flows,
    packetsPerFlow: 1,
    dstMac: NET.clientMac,
    srcMac: NET.gatewayMac,
    dst: NET.vip,
    dport: NET.vport,
    clientBase: NET.clientBase,
  });
  return { pcap, flows };
}

export async function caseNewConns(ctx: Ctx): Promise<Figure[]> {
  const { pcap, flows } = newConnsPcap(ctx);
  const vals: number[] = [];
  const base: number[] = [];
  const runs: unknown[] = [];
  let profile: Profile | undefined;
  for (let r = 0; r < ctx.runs; r++) {
    const at = await tryQuiet(
      ctx,
      `new-conns run ${r + 1}`,
      async () => ({ tp: await testpmd(ctx, pcap), res: await newConnsRun(ctx, pcap, flows, false) }),
      // Not the worker's share here: while it creates conns it first-touches fresh pages (hash key
      // slots and buckets), and in this VM the host backing them stalls the vCPU, which shows as
      // CPU the worker did not get although nothing else ran. So: testpmd's core, and other work.
      ({ tp, res }) => {
        const q = shareJudge(ctx, [tp.cpuShare], Math.max(tp.foreignCores, res.foreignCores));
        const f = foreignJudge(ctx, res.foreignCores);
        return { ok: q.ok && f.ok, score: q.score + f.score, why: `${q.why}; during the burst ${f.why}, worker ${pct0(res.workerCpuShare)} of its CPU` };
      },
    );
    const { tp, res } = at.value;
    base.push(tp.pps);
    vals.push(res.connsPerS);
    runs.push({ run: r + 1, testpmdPps: tp.pps, testpmdCpuShare: tp.cpuShare, ...res, attempts: at.attempts, discarded: at.discarded, noisy: at.noisy });
    ctx.log(
      `  new-conns run ${r + 1}: ${(res.connsPerS / 1e6).toFixed(2)} M conns/s (created ${res.created}/${flows}, all in ${res.secondsToAll.toFixed(2)} s, ${res.samples} polls, worker cpu ${pct0(res.workerCpuShare)}), testpmd ${(tp.pps / 1e6).toFixed(2)} Mpps on the same pcap (cpu ${pct0(tp.cpuShare)}); drops ${JSON.stringify(res.drops)}${at.noisy ? ' NOISY' : ''}`,
    );
  }
  if (ctx.profile) {
    const res = await newConnsRun(ctx, pcap, flows, false, 'new-conns');
    profile = (res as NewConnsRun & { profile?: Profile }).profile;
    ctx.log(`  new-conns profile run: ${(res.connsPerS / 1e6).toFixed(2)} M conns/s under perf`);
  }
  const fig = withBaseline(
    figure('new-conns', `New TCP conns per second (${flows} unique SYNs, first pass)`, 'conns/s', vals),
    'testpmd macswap pps on the same pcap',
    base,
    'pps',
  );
  fig.details = { flows, runs, profile };
  return [fig];
}

export async function caseConnEvents(ctx: Ctx): Promise<Figure[]> {
  const { pcap, flows } = newConnsPcap(ctx);
  const out: Figure[] = [];
  // The default per-stream buffer (grpc.subscriber_buffer 4096), and one large enough to hold the
  // whole burst, which shows how fast the stream itself drains.
  for (const v of [
    { id: '-batches', buffer: 4096, batch: 4096, rpc: 'WatchConnEventBatches', what: 'max_batch 4096, grpc.subscriber_buffer 4096 (default)' },
    { id: '', buffer: 4096, batch: undefined, rpc: 'WatchConnEvents', what: 'one event per message, grpc.subscriber_buffer 4096 (default)' },
    { id: '-buffer-1m', buffer: 1 << 20, batch: undefined, rpc: 'WatchConnEvents', what: 'one event per message, grpc.subscriber_buffer 1048576' },
  ]) {
    const perS: number[] = [];
    const conns: number[] = [];
    const lost: number[] = [];
    const unreported: number[] = [];
    const unreportedNext: number[] = [];
    const unaryP99: number[] = [];
    const healthOk: number[] = [];
    const runs: unknown[] = [];
    for (let r = 0; r < ctx.runs; r++) {
      const at = await tryQuiet(
        ctx,
        `conn-events${v.id} run ${r + 1}`,
        () => newConnsRun(ctx, pcap, flows, true, undefined, v.buffer, v.batch),
        (res) => foreignJudge(ctx, res.foreignCores),
      );
      const res = at.value;
      const e = res.events!;
      perS.push(e.perS);
      conns.push(res.connsPerS);
      lost.push(Object.values(e.lost).reduce((x, y) => x + y, 0));
      unreported.push(e.unreported);
      unreportedNext.push(e.unreportedAfterNextEvent);
      const rs = res.responsiveness!;
      unaryP99.push(rs.p99);
      healthOk.push(rs.probes > 0 ? (100 * rs.probesOk) / rs.probes : NaN);
      runs.push({ run: r + 1, ...res, attempts: at.attempts, discarded: at.discarded, noisy: at.noisy });
      ctx.log(
        `  conn-events${v.id} run ${r + 1}${at.noisy ? ' (NOISY)' : ''}: ${e.received} of ${e.produced} events received at ${(e.perS / 1e3).toFixed(0)}k/s over ${e.streamSeconds.toFixed(2)} s; lost reported ${JSON.stringify(e.lost)}; unreported at the end of the burst ${e.unreported}, after one more event ${e.unreportedAfterNextEvent} (lost then ${JSON.stringify(e.lostAfterNextEvent)}); conns ${(res.connsPerS / 1e6).toFixed(2)} M/s, created ${res.created}${e.error ? `; stream error ${e.error}` : ''}; meanwhile GetTimeouts p50 ${rs.p50.toFixed(2)} p99 ${rs.p99.toFixed(2)} max ${rs.max.toFixed(1)} ms (${rs.calls} calls, ${rs.errors} errors), health ${rs.probesOk}/${rs.probes}`,
      );
    }
    const f1 = figure(`conn-events${v.id}`, `Conn events/s received by one ${v.rpc} subscriber during new-conns (${flows} conns), ${v.what}`, 'events/s', perS);
    f1.details = { flows, subscriberBuffer: v.buffer, maxBatch: v.batch, runs };
    out.push(f1);
    out.push(figure(`conn-events${v.id}-lost`, `Conn events reported lost in the stream (LostEvents), ${v.what}`, 'events', lost, { higherIsBetter: false }));
    out.push(
      figure(`conn-events${v.id}-unreported`, `Conn events neither received nor reported, once the burst is over, ${v.what}`, 'events', unreported, {
        higherIsBetter: false,
      }),
    );
    out.push(figure(`conn-events${v.id}-unreported-next`, `The same after one more event, ${v.what}`, 'events', unreportedNext, { higherIsBetter: false }));
    out.push(figure(`new-conns-watched${v.id}`, `New TCP conns/s while the subscriber watches, ${v.what}`, 'conns/s', conns));
    out.push(
      figure(`conn-events${v.id}-unary-p99`, `Unary (GetTimeouts) p99 from SetReals until the stream went quiet, ${v.what}`, 'ms', unaryP99, {
        higherIsBetter: false,
      }),
    );
    out.push(figure(`conn-events${v.id}-health-ok`, `Health probes answered SERVING within 1 s over the same time, ${v.what}`, '%', healthOk));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// (5) forwarding with many live conns, memory per conn
// ---------------------------------------------------------------------------------------------

interface Level {
  flows: number;
  name: string;
}

function levels(ctx: Ctx): Level[] {
  if (ctx.quick)
    return [
      { flows: 1000, name: '1K' },
      { flows: 20000, name: '20K' },
    ];
  return [
    { flows: 1000, name: '1K' },
    { flows: 100_000, name: '100K' },
    { flows: 1_000_000, name: '1M' },
    { flows: 4_000_000, name: '4M' },
  ];
}

/** Bytes a run of `packets` frames and `maxConns` conns needs, for retrace and for testpmd. */
function needBytes(packets: number, maxConns: number): number {
  const retrace = mbufPoolBytes(mbufsFor(packets)) + connTableBytes(maxConns).total + 600 * 2 ** 20;
  const tp = mbufPoolBytes(packets + 32768) + 300 * 2 ** 20;
  return Math.max(retrace, tp);
}

/** What the scale runs may use: what the kernel says is available, minus a 3 GiB margin for the rest of the machine, and never more than 24 GiB minus that margin. */
export function memoryBudget(): number {
  const margin = 3 * 2 ** 30;
  return Math.min(memAvailable(), 24 * 2 ** 30) - margin;
}

export async function caseConnScale(ctx: Ctx): Promise<Figure[]> {
  const out: Figure[] = [];
  const byKey = new Map<string, Figure>();
  const lvls = levels(ctx);
  const runLevel = async (variant: 'random' | 'locality', lv: Level): Promise<boolean> => {
    const ppf = variant === 'random' ? 1 : 8;
    const packets = lv.flows * ppf;
    const maxConns = Math.max(4096, Math.ceil(lv.flows * 1.25));
    const need = needBytes(packets, maxConns);
    const budget = memoryBudget();
    const id = `scale-${variant}-${lv.name}`;
    if (need > budget) {
      const note = `${id} not run: net_pcap (infinite_rx) holds all ${packets} frames of the pcap as mbufs (4 KiB each without hugepages) and with the conn table that needs ~${(need / 2 ** 30).toFixed(1)} GiB, over the budget of ${(budget / 2 ** 30).toFixed(1)} GiB (MemAvailable minus a 3 GiB margin)`;
      ctx.log(`  ${note}`);
      const f = figure(id, `UDP, ${lv.name} live conns, ${variant}`, 'pps', []);
      f.notes.push(note);
      f.details = { skipped: true, needGiB: need / 2 ** 30, budgetGiB: budget / 2 ** 30, packets };
      out.push(f);
      return false;
    }
    const spec: FlowSpec = {
      kind: 'udp',
      flows: lv.flows,
      packetsPerFlow: ppf,
      burst: ppf,
      dstMac: NET.clientMac,
      srcMac: NET.gatewayMac,
      dst: NET.vip,
      dport: NET.vport,
      clientBase: NET.clientBase,
    };
    const pcap = pcapFor(ctx, id, spec);
    const base: number[] = [];
    const vals: number[] = [];
    const runs: unknown[] = [];
    let profile: Profile | undefined;
    const retrace = async (profileTag?: string) => {
      const rr = new RetraceRun({ pcap: pcap.file, packets: pcap.packets, maxConns, lips: lipsFor(lv.flows) + 1, emptyPcap: ctx.emptyPcap });
      try {
        const t0 = now();
        await rr.start();
        const startS = now() - t0;
        const rssIdle = rssBytes(rr.pid);
        await rr.setupNetwork();
        await rr.addService('udp');
        const t1 = now();
        let conns = await rr.waitConns(lv.flows, 300);
        const fillS = now() - t1;
        // Conn records and hash key slots are handed out in creation order, which here is the
        // replay order: later passes would walk them sequentially, which the prefetchers love.
        // Deleting every conn returns records and slots in hash-walk order; the conns the next
        // pass recreates then sit in an order unrelated to the replay order, as in life.
        let scrambleS = NaN;
        let scrambleNote: string | undefined;
        if (lv.flows >= 10000) {
          const t2 = now();
          scrambleNote = await deleteAllConns(rr);
          conns = await rr.waitConns(lv.flows, 300);
          scrambleS = now() - t2;
          if (scrambleNote) ctx.log(`  ${id}: ${scrambleNote}`);
        }
        const rssLive = rssBytes(rr.pid);
        const m = await measure(ctx, rr, 'servers', profileTag);
        return { m, conns, startS, fillS, scrambleS, scrambleNote, rssIdle, rssLive };
      } finally {
        await rr.stop();
      }
    };
    for (let r = 0; r < ctx.runs; r++) {
      const at = await tryQuiet(
        ctx,
        `${id} run ${r + 1}`,
        async () => ({ tp: await testpmd(ctx, pcap), rt: await retrace() }),
        ({ tp, rt }) => shareJudge(ctx, [tp.cpuShare, rt.m.cpuShare], Math.max(tp.foreignCores, rt.m.foreignCores)),
      );
      const { tp, rt } = at.value;
      const { m, conns, startS, fillS, scrambleS, scrambleNote, rssIdle, rssLive } = rt;
      base.push(tp.pps);
      vals.push(m.pps);
      runs.push({
        run: r + 1,
        testpmdPps: tp.pps,
        testpmdCpuShare: tp.cpuShare,
        testpmdForeignCores: tp.foreignCores,
        pps: m.pps,
        clientRxPps: m.rxPps,
        workerCpuShare: m.cpuShare,
        foreignCores: m.foreignCores,
        conns,
        connsAfter: m.conns,
        startS,
        fillS,
        scrambleS,
        scrambleNote,
        rssIdle,
        rssLive,
        rssLivePerConn: (rssLive - rssIdle) / lv.flows,
        dropsInWindow: m.drops,
        attempts: at.attempts,
        discarded: at.discarded,
        noisy: at.noisy,
      });
      ctx.log(
        `  ${id} run ${r + 1}: testpmd ${(tp.pps / 1e6).toFixed(2)} Mpps (cpu ${pct0(tp.cpuShare)}), retrace ${(m.pps / 1e6).toFixed(2)} Mpps (cpu ${pct0(m.cpuShare)}), conns ${conns} (start ${startS.toFixed(0)} s, filled in ${fillS.toFixed(1)} s, rescrambled in ${scrambleS.toFixed(1)} s), RSS +${((rssLive - rssIdle) / 2 ** 20).toFixed(0)} MiB live, drops ${JSON.stringify(m.drops)}${at.noisy ? ' NOISY' : ''}`,
      );
    }
    // Profile runs only up to 1M conns: beyond, a run takes minutes of pcap loading.
    if (ctx.profile && lv.flows <= 1_000_000) {
      const rt = await retrace(id);
      profile = rt.m.profile;
      ctx.log(`  ${id} profile run: ${(rt.m.pps / 1e6).toFixed(2)} Mpps under perf`);
    }
    const f = withBaseline(
      figure(id, `UDP, ${lv.name} live conns, ${variant === 'random' ? '1 packet per flow per pass' : 'bursts of 8 packets per flow'}`, 'pps', vals, {
        chart: true,
      }),
      'testpmd macswap',
      base,
    );
    f.details = { flows: lv.flows, packets, maxConns, runs, profile };
    byKey.set(`${variant}-${lv.name}`, f);
    out.push(f);
    return true;
  };
  const fallbacks: Level[] = [];
  for (const variant of ['random', 'locality'] as const) {
    for (const lv of lvls) {
      const ok = await runLevel(variant, lv);
      // The 1M locality pcap (8 frames per flow) is 8M mbufs: when it does not fit, measure the
      // largest level that does, so the 1M target has the nearest figure beside it.
      if (!ok && variant === 'locality' && lv.name === '1M') {
        for (const fb of [
          { flows: 500_000, name: '500K' },
          { flows: 250_000, name: '250K' },
        ]) {
          if (await runLevel(variant, fb)) {
            fallbacks.push(fb);
            break;
          }
        }
      }
    }
  }
  // Relative to the smallest level of the same variant, run pair by run pair.
  const small = lvls[0].name;
  for (const variant of ['random', 'locality'] as const) {
    const ref = byKey.get(`${variant}-${small}`);
    for (const lv of [...lvls.slice(1), ...fallbacks]) {
      const f = byKey.get(`${variant}-${lv.name}`);
      if (!ref || !f) continue;
      const rel = f.runs.map((v, i) => v / ref.runs[i]);
      out.push(figure(`scale-${variant}-${lv.name}-vs-${small}`, `${variant}: ${lv.name} conns rate ÷ ${small} conns rate`, 'ratio', rel));
    }
  }
  return out;
}

/**
 * DeleteConns {all}. The control side waits ~2 s for the worker's mailbox (native/dp_events.c) and
 * then answers an error (INTERNAL) while the worker goes on deleting; a later mailbox request
 * (ListConns) is refused until it is done. So: on an error, poll ListConns until it answers.
 * Returns a note when that happened.
 */
async function deleteAllConns(rr: RetraceRun): Promise<string | undefined> {
  const t = now();
  try {
    await rr.api.conns.deleteConns(DeleteConnsRequest.fromPartial({ all: true }), 600000);
    return undefined;
  } catch (e) {
    const msg = (e as Error).message;
    const failedAfter = now() - t;
    for (;;) {
      try {
        await rr.api.conns.listConns({ filter: undefined, pageSize: 1, pageToken: '' });
        break;
      } catch {
        if (now() - t > 600) throw new Error(`the conn table never became available after DeleteConns failed (${msg})`);
        await sleep(250);
      }
    }
    return `DeleteConns {all: true} failed with "${msg}" after ${failedAfter.toFixed(1)} s; the worker finished the deletion anyway (ListConns answered again after ${(now() - t).toFixed(1)} s)`;
  }
}

/**
 * Memory per conn, two ways.
 *
 * Measured: the resident memory (RSS) of an appliance with `flows` live UDP conns in a table sized
 * for 1.25 × flows (as conn-scale runs it), minus the RSS of the same appliance (same pcap, same
 * mbufs, same eal.memory_mb) started with max_conns 1024 and no service, divided by the conns.
 * That is what the conns cost in pages actually touched: the record pool (its object headers are
 * written at start, so every page of it is resident), the hash key slots and buckets in use, and
 * the LIP source-port rings. Untouched zeroed allocations do not count (DPDK does not memset fresh
 * pages from the OS), so it is a floor.
 *
 * Reserved: what the allocations need in EAL memory (eal.memory_mb must hold it), from sizing.ts,
 * per live conn (table sized 1.25 × flows) and per slot.
 */
export async function caseMemory(ctx: Ctx): Promise<Figure[]> {
  const flows = ctx.quick ? 50_000 : 1_000_000;
  const maxConns = Math.ceil(flows * 1.25);
  const lips = lipsFor(flows) + 1;
  const pcap = pcapFor(ctx, ctx.quick ? 'memory-udp' : 'scale-random-1M', {
    kind: 'udp',
    flows,
    packetsPerFlow: 1,
    burst: 1,
    dstMac: NET.clientMac,
    srcMac: NET.gatewayMac,
    dst: NET.vip,
    dport: NET.vport,
    clientBase: NET.clientBase,
  });
  const memoryMb = new RetraceRun({ pcap: pcap.file, packets: pcap.packets, maxConns, lips, emptyPcap: ctx.emptyPcap }).memoryMb;
  const live: number[] = [];
  const idleSlot: number[] = [];
  const runs: unknown[] = [];
  for (let r = 0; r < ctx.runs; r++) {
    let rssBase: number;
    const base = new RetraceRun({ pcap: pcap.file, packets: pcap.packets, maxConns: 1024, lips: 0, memoryMb, emptyPcap: ctx.emptyPcap });
    try {
      await base.start();
      await sleep(1000);
      rssBase = rssBytes(base.pid);
    } finally {
      await base.stop();
    }
    const big = new RetraceRun({ pcap: pcap.file, packets: pcap.packets, maxConns, lips, memoryMb, emptyPcap: ctx.emptyPcap });
    let rssIdle: number;
    let rssLive: number;
    let conns: number;
    try {
      await big.start();
      await sleep(1000);
      rssIdle = rssBytes(big.pid);
      await big.setupNetwork();
      await big.addService('udp');
      conns = await big.waitConns(flows, 300);
      await sleep(1000);
      rssLive = rssBytes(big.pid);
    } finally {
      await big.stop();
    }
    live.push((rssLive - rssBase) / conns);
    idleSlot.push((rssIdle - rssBase) / (maxConns - 1024));
    runs.push({ run: r + 1, rssBase, rssIdle, rssLive, conns });
    ctx.log(
      `  memory run ${r + 1}: RSS ${(rssBase / 2 ** 20).toFixed(0)} MiB (max_conns 1024), ${(rssIdle / 2 ** 20).toFixed(0)} MiB (max_conns ${maxConns}, idle), ${(rssLive / 2 ** 20).toFixed(0)} MiB (${conns} conns live): ${live[r].toFixed(0)} B per live conn, ${idleSlot[r].toFixed(0)} B per slot at start`,
    );
  }
  const est = connTableBytes(maxConns);
  const lipBytes = lips * 3 * LIP_RING_BYTES;
  const f = figure('memory-per-conn', `Resident memory per live conn (${flows} UDP conns, table sized for ${maxConns}; RSS difference)`, 'B/conn', live, {
    higherIsBetter: false,
  });
  f.details = { flows, maxConns, lips, memoryMb, runs, perSlotAtStart: spread(idleSlot) };
  const reservedLive = (est.total + lipBytes) / flows;
  const f2 = figure(
    'memory-per-conn-reserved',
    `Reserved EAL memory per live conn (allocation sizes, table sized for 1.25× the conns, LIP port rings included)`,
    'B/conn',
    [reservedLive],
    { higherIsBetter: false },
  );
  f2.details = { ...est, lipRings: lipBytes, flows, maxConns };
  const f3 = figure('memory-per-conn-slot', 'Reserved EAL memory per conn table slot (allocation sizes, no hugepages)', 'B/conn', [est.perConn], {
    higherIsBetter: false,
  });
  f3.details = { ...est, structBytes: CONN_STRUCT_BYTES, recordObjectBytes: perPageObjBytes(CONN_OBJ_BYTES) };
  return [f, f2, f3];
}

// ---------------------------------------------------------------------------------------------
// (7) unary API latency under load, ApplyConfig with 10,000 reals
// ---------------------------------------------------------------------------------------------

function bigConfig(base: Config, services: number, realsPer: number, weight: number): Config {
  const vs: VirtualService[] = [];
  for (let s = 0; s < services; s++) {
    const reals: Real[] = [];
    for (let i = 0; i < realsPer; i++) {
      const k = s * realsPer + i + 1;
      reals.push(Real.fromPartial({ address: `10.2.${k >> 8}.${k & 255}`, port: 8080, weight }));
    }
    vs.push(VirtualService.fromPartial({ protocol: Protocol.PROTOCOL_TCP, vip: `198.18.2.${s + 1}`, port: 80, scheduler: Scheduler.SCHEDULER_WRR, reals }));
  }
  return { ...base, virtualServices: [...base.virtualServices, ...vs] };
}

export async function caseApi(ctx: Ctx): Promise<Figure[]> {
  const flows = FWD_FLOWS(ctx);
  const pcap = pcapFor(ctx, 'fnat-tcp', {
    kind: 'tcp',
    flows,
    packetsPerFlow: 16,
    dstMac: NET.clientMac,
    srcMac: NET.gatewayMac,
    dst: NET.vip,
    dport: NET.vport,
    clientBase: NET.clientBase,
  });
  const lat: Record<string, { p50: number[]; p99: number[]; max: number[]; n: number[] }> = {
    GetSystemInfo: { p50: [], p99: [], max: [], n: [] },
    ListPorts: { p50: [], p99: [], max: [], n: [] },
  };
  const apply: Record<string, number[]> = { create: [], noop: [], update: [], delete: [] };
  const fwd: number[] = [];
  const runs: unknown[] = [];
  const services = 10;
  const realsPer = 1000;
  const oneRun = async () => {
    const rr = new RetraceRun({ pcap: pcap.file, packets: pcap.packets, maxConns: 16384, emptyPcap: ctx.emptyPcap });
    try {
      await rr.start();
      await rr.setupNetwork();
      for (const p of ['icmp', 'tcp', 'udp'] as const) await rr.addService(p);
      await rr.waitConns(flows, 30);
      await sleep(ctx.warmupS * 1000);
      // Latency: back-to-back calls, one at a time, alternating methods, for measureS seconds.
      const s0 = await rr.snapshot();
      const foreign = new ForeignCpu(() => [rr.pid]).start();
      const ms: Record<string, number[]> = { GetSystemInfo: [], ListPorts: [] };
      const until = now() + ctx.measureS;
      while (now() < until) {
        let t = now();
        await rr.api.system.getSystemInfo({});
        ms.GetSystemInfo.push((now() - t) * 1000);
        t = now();
        await rr.api.ports.listPorts({});
        ms.ListPorts.push((now() - t) * 1000);
      }
      const foreignCores = foreign.stop();
      const s1 = await rr.snapshot();
      const pps = (s1.servers.tx - s0.servers.tx) / (s1.t - s0.t);
      // ApplyConfig: the running configuration plus 10 services of 1000 reals (at most 1024 per
      // service), while forwarding.
      const base = (await rr.api.config.getConfig({})).config!;
      const doc = bigConfig(base, services, realsPer, 1);
      const timeApply = async (cfg: Config): Promise<{ s: number; diff: unknown }> => {
        const t = now();
        const res = await rr.api.config.applyConfig({ config: cfg, dryRun: false }, 120000);
        const s = now() - t;
        const d = res.diff;
        const count = (x?: { created: string[]; updated: string[]; deleted: string[] }): number[] => [
          x?.created.length ?? 0,
          x?.updated.length ?? 0,
          x?.deleted.length ?? 0,
        ];
        return { s, diff: { virtualServices: count(d?.virtualServices), reals: count(d?.reals) } };
      };
      const create = await timeApply(doc);
      const noop = await timeApply(doc);
      const update = await timeApply(bigConfig(base, services, realsPer, 2));
      const del = await timeApply(base);
      const s2 = await rr.snapshot();
      return { ms, pps, ppsDuringApply: (s2.servers.tx - s1.servers.tx) / (s2.t - s1.t), foreignCores, create, noop, update, del };
    } finally {
      await rr.stop();
    }
  };
  for (let r = 0; r < ctx.runs; r++) {
    const at = await tryQuiet(ctx, `api run ${r + 1}`, oneRun, (x) => foreignJudge(ctx, x.foreignCores));
    const { ms, pps, ppsDuringApply, foreignCores, create, noop, update, del } = at.value;
    fwd.push(pps);
    for (const [k, xs] of Object.entries(ms)) {
      lat[k].p50.push(percentile(xs, 50));
      lat[k].p99.push(percentile(xs, 99));
      lat[k].max.push(Math.max(...xs));
      lat[k].n.push(xs.length);
    }
    apply.create.push(create.s);
    apply.noop.push(noop.s);
    apply.update.push(update.s);
    apply.delete.push(del.s);
    runs.push({
      run: r + 1,
      forwardingPps: pps,
      forwardingPpsDuringApply: ppsDuringApply,
      foreignCores,
      calls: lat.GetSystemInfo.n[r] + lat.ListPorts.n[r],
      apply: { create, noop, update, delete: del },
      attempts: at.attempts,
      discarded: at.discarded,
      noisy: at.noisy,
    });
    ctx.log(
      `  api run ${r + 1}${at.noisy ? ' (NOISY)' : ''}: GetSystemInfo p50 ${lat.GetSystemInfo.p50[r].toFixed(2)} p99 ${lat.GetSystemInfo.p99[r].toFixed(2)} ms, ListPorts p50 ${lat.ListPorts.p50[r].toFixed(2)} p99 ${lat.ListPorts.p99[r].toFixed(2)} ms (${lat.GetSystemInfo.n[r] + lat.ListPorts.n[r]} calls, forwarding ${(pps / 1e6).toFixed(2)} Mpps, other work ${foreignCores.toFixed(2)} cores); ApplyConfig 10,000 reals: create ${create.s.toFixed(3)} s ${JSON.stringify(create.diff)}, no-op ${noop.s.toFixed(3)} s, update ${update.s.toFixed(3)} s, delete ${del.s.toFixed(3)} s`,
    );
  }
  const out: Figure[] = [];
  for (const k of Object.keys(lat)) {
    out.push(figure(`api-${k.toLowerCase()}-p50`, `${k} latency p50 while forwarding`, 'ms', lat[k].p50, { higherIsBetter: false }));
    const f = figure(`api-${k.toLowerCase()}-p99`, `${k} latency p99 while forwarding`, 'ms', lat[k].p99, { higherIsBetter: false });
    f.details = { max: lat[k].max, calls: lat[k].n };
    out.push(f);
  }
  const fc = figure('apply-config-10k', `ApplyConfig creating ${services} services × ${realsPer} reals (10,000 reals) while forwarding`, 's', apply.create, {
    higherIsBetter: false,
  });
  fc.details = { runs, forwardingPps: fwd };
  out.push(fc);
  out.push(figure('apply-config-10k-noop', 'ApplyConfig of the same document again (no change)', 's', apply.noop, { higherIsBetter: false }));
  out.push(figure('apply-config-10k-update', 'ApplyConfig changing the weight of all 10,000 reals', 's', apply.update, { higherIsBetter: false }));
  out.push(figure('apply-config-10k-delete', 'ApplyConfig deleting the 10 services', 's', apply.delete, { higherIsBetter: false }));
  return out;
}

// ---------------------------------------------------------------------------------------------
// (8) the control plane under counter streams and metric scrapes
// ---------------------------------------------------------------------------------------------

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
    this.child = spawn(process.execPath, [path.join(__dirname, 'cp-load-client.js'), JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'inherit'] });
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
    const at = await tryQuiet(ctx, `control-load run ${r + 1}`, oneRun, (x) => foreignJudge(ctx, x.foreignCores));
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
  const p99 = figure('control-load-unary-p99', `Unary p99 under ${lbl}`, 'ms', fig.p99, { higherIsBetter: false });
  p99.details = { runs };
  return [
    figure('control-load-unary-p50', `Unary p50 under ${lbl}`, 'ms', fig.p50, { higherIsBetter: false }),
    p99,
    figure('control-load-unary-max', 'Unary max under the same load', 'ms', fig.max, { higherIsBetter: false }),
    figure('control-load-health-ok', 'Health probes answered SERVING within 1 s under the same load', '%', fig.probeOk),
    figure('control-load-idle-unary-p99', `Unary p99 with ${services} services and no streams or scrapes`, 'ms', fig.idleP99, { higherIsBetter: false }),
    figure(
      'control-load-stream-msgs',
      `WatchCounters messages received per second, all streams (one per tick each would be ${(streams * 1000) / intervalMs})`,
      '/s',
      fig.streamRate,
    ),
    figure('control-load-scrapes', '/metrics scrapes answered per second (all scrapers)', '/s', fig.scrapeRate),
    figure('control-load-shutdown', `SIGTERM to exit with ${shutdownStreams} WatchCounters streams and ${scrapers} scrapers open`, 's', fig.exitS, {
      higherIsBetter: false,
    }),
  ];
}

export const CASES: Record<string, { title: string; run: (ctx: Ctx) => Promise<Figure[]> }> = {
  fnat: { title: '(1) FNAT forwarding, TCP and UDP', run: caseFnat },
  'icmp-local': { title: '(2) ICMP echo to a local address', run: caseIcmpLocal },
  'icmp-fnat': { title: '(3) ICMP echo through FNAT', run: caseIcmpFnat },
  'new-conns': { title: '(4) New conns per second', run: caseNewConns },
  'conn-scale': { title: '(5) Forwarding with many live conns', run: caseConnScale },
  memory: { title: '(5) Memory per conn', run: caseMemory },
  'conn-events': { title: '(6) Conn events to one subscriber', run: caseConnEvents },
  api: { title: '(7) Unary API latency under load, ApplyConfig with 10,000 reals', run: caseApi },
  'control-load': { title: '(8) Control plane under counter streams and metric scrapes', run: caseControlLoad },
};
