/**
 * Case (4), `new-conns`: new TCP conns per second from a pcap of unique SYNs. The run itself
 * (newConnsRun) also serves case (6), conn-events, which watches the same burst with a subscriber.
 */
import { DeleteConnsRequest } from '../../gen/retrace/v1/conn';
import { UpdateVirtualServiceRequest, type VirtualServiceLimits } from '../../gen/retrace/v1/balancer';
import { Protocol, Scheduler } from '../../gen/retrace/v1/types';
import { EventCounter } from '../events';
import { ForeignCpu, threadCpuSeconds } from '../machine';
import type { PcapInfo } from '../pcap';
import { profileWorker, workerTid, type Profile } from '../profile';
import { ResponsivenessProbe, type ResponsivenessResult } from '../responsiveness';
import { NET, RetraceRun, dropDelta, type RetraceOptions } from '../retrace';
import { lipsFor } from '../sizing';
import { now, sleep } from '../stats';
import { clientFlows, figure, foreignJudge, pcapFor, pct0, shareJudge, testpmd, tryQuiet, withBaseline, type Ctx, type Figure } from '../harness';

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
  /** Profiled runs (not counted). */
  profile?: Profile;
}

/** The pcap of unique SYNs, one per flow (newConnsPcap). */
export interface SynPcap {
  pcap: PcapInfo;
  flows: number;
}

export interface NewConnsOptions {
  syn: SynPcap;
  /** One conn-event subscriber, opened before SetReals (case 6); none by default (case 4). */
  watch?: {
    /** grpc.subscriber_buffer of the appliance. */
    subscriberBuffer: number;
    /** WatchConnEventBatches with this max_batch; WatchConnEvents (one event per message) if unset. */
    maxBatch?: number;
  };
  /** Profile the worker under perf during the burst, naming the data after this. */
  profileTag?: string;
  /** Admission limits set on the service before SetReals (case limits). */
  limits?: VirtualServiceLimits;
  /** dataplane.table_pressure (RetraceOptions.tablePressure). */
  tablePressure?: RetraceOptions['tablePressure'];
}

/**
 * The service exists without reals while the pcap of unique SYNs replays (SYNs dropped as no_real);
 * then SetReals, and every SYN of the next pass opens a conn. GetCounters' conn count is polled
 * back to back; the rate is taken between 5% and 95% of the flows.
 */
export async function newConnsRun(ctx: Ctx, opts: NewConnsOptions): Promise<NewConnsRun> {
  const { pcap, flows } = opts.syn;
  const { profileTag } = opts;
  const watch = opts.watch !== undefined;
  const rr = new RetraceRun({
    pcap: pcap.file,
    packets: pcap.packets,
    maxConns: Math.ceil(flows * 1.3),
    lips: lipsFor(flows) + 1,
    emptyPcap: ctx.emptyPcap,
    huge: ctx.huge,
    subscriberBuffer: opts.watch?.subscriberBuffer,
    tablePressure: opts.tablePressure,
  });
  let ev: EventCounter | undefined;
  let resp: ResponsivenessProbe | undefined;
  try {
    await rr.start();
    await rr.setupNetwork();
    await rr.addService('tcp', false);
    if (opts.limits !== undefined) {
      await rr.api.balancer.updateVirtualService({
        ...UpdateVirtualServiceRequest.create(),
        key: { protocol: Protocol.PROTOCOL_TCP, vip: NET.vip, port: NET.vport },
        scheduler: Scheduler.SCHEDULER_RR,
        seed: 0,
        limits: opts.limits,
      });
    }
    if (watch) {
      ev = new EventCounter(rr.app.address, opts.watch?.maxBatch);
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
    const prof = profileTag !== undefined ? profileWorker(rr.pid, { seconds: 2, dir: ctx.dir, tag: profileTag }) : undefined;
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
    if (prof) out.profile = await prof;
    return out;
  } finally {
    await resp?.stop();
    await ev?.stop();
    await rr.stop();
  }
}

export function newConnsPcap(ctx: Ctx): SynPcap {
  const flows = ctx.quick ? 20000 : 1_000_000;
  const pcap = pcapFor(ctx, 'syn-unique', clientFlows({ kind: 'tcp', flows, packetsPerFlow: 1 }));
  return { pcap, flows };
}

export async function caseNewConns(ctx: Ctx): Promise<Figure[]> {
  const syn = newConnsPcap(ctx);
  const { pcap, flows } = syn;
  const vals: number[] = [];
  const base: number[] = [];
  const runs: unknown[] = [];
  let profile: Profile | undefined;
  for (let r = 0; r < ctx.runs; r++) {
    const at = await tryQuiet(ctx, {
      label: `new-conns run ${r + 1}`,
      run: async () => ({ tp: await testpmd(ctx, pcap), res: await newConnsRun(ctx, { syn }) }),
      // Not the worker's share here: while it creates conns it first-touches fresh pages (hash key
      // slots and buckets), and in this VM the host backing them stalls the vCPU, which shows as
      // CPU the worker did not get although nothing else ran. So: testpmd's core, and other work.
      judge: ({ tp, res }) => {
        const q = shareJudge(ctx, [tp.cpuShare], Math.max(tp.foreignCores, res.foreignCores));
        const f = foreignJudge(ctx, res.foreignCores);
        return { ok: q.ok && f.ok, score: q.score + f.score, why: `${q.why}; during the burst ${f.why}, worker ${pct0(res.workerCpuShare)} of its CPU` };
      },
    });
    const { tp, res } = at.value;
    base.push(tp.pps);
    vals.push(res.connsPerS);
    runs.push({ run: r + 1, testpmdPps: tp.pps, testpmdCpuShare: tp.cpuShare, ...res, attempts: at.attempts, discarded: at.discarded, noisy: at.noisy });
    ctx.log(
      `  new-conns run ${r + 1}: ${(res.connsPerS / 1e6).toFixed(2)} M conns/s (created ${res.created}/${flows}, all in ${res.secondsToAll.toFixed(2)} s, ${res.samples} polls, worker cpu ${pct0(res.workerCpuShare)}), testpmd ${(tp.pps / 1e6).toFixed(2)} Mpps on the same pcap (cpu ${pct0(tp.cpuShare)}); drops ${JSON.stringify(res.drops)}${at.noisy ? ' NOISY' : ''}`,
    );
  }
  if (ctx.profile) {
    const res = await newConnsRun(ctx, { syn, profileTag: 'new-conns' });
    profile = res.profile;
    ctx.log(`  new-conns profile run: ${(res.connsPerS / 1e6).toFixed(2)} M conns/s under perf`);
  }
  const fig = withBaseline(figure({ id: 'new-conns', label: `New TCP conns per second (${flows} unique SYNs, first pass)`, unit: 'conns/s', runs: vals }), {
    label: 'testpmd macswap pps on the same pcap',
    runs: base,
    unit: 'pps',
  });
  fig.details = { flows, runs, profile };
  return [fig];
}
