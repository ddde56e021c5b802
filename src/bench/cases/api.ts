/**
 * Case (7), `api`: unary API latency while forwarding, and ApplyConfig with 10,000 reals.
 *
 * The client making the calls is this process (grpc-js, like the appliance), on the same CPU as
 * the appliance's control thread. Its own garbage collection is part of what it sees, so it is
 * recorded beside the figures (clientGc): how long this process paused for GC during the calls,
 * and how many of the calls at or above the p99 overlapped such a pause (docs/bench.md, "Unary
 * latency while forwarding").
 */
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { VirtualService, Real } from '../../gen/retrace/v1/balancer';
import type { Config } from '../../gen/retrace/v1/config';
import { Protocol, Scheduler } from '../../gen/retrace/v1/types';
import { ForeignCpu } from '../machine';
import { RetraceRun } from '../retrace';
import { now, percentile, sleep } from '../stats';
import { clientFlows, FWD_FLOWS, figure, foreignJudge, pcapFor, tryQuiet, type Ctx, type Figure } from '../harness';

/** `base` plus `services` WRR services of `realsPer` reals each, all of weight `weight` (VIPs 198.18.2.x). */
function bigConfig(base: Config, { services, realsPer, weight }: { services: number; realsPer: number; weight: number }): Config {
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

export interface ClientGc {
  /** GC pauses of this process during the calls, their sum and the longest (ms). */
  pauses: number;
  totalMs: number;
  maxMs: number;
  /** Calls at or above the p99 of this run (both methods), and how many overlapped a pause. */
  slowCalls: number;
  slowInGc: number;
}

/** `calls` as [start s, duration ms] (now() clock), `gcs` as [start s, duration ms]. */
export function clientGcShare(calls: [number, number][], gcs: [number, number][]): ClientGc {
  const p99 = percentile(
    calls.map((c) => c[1]),
    99,
  );
  const slow = calls.filter((c) => c[1] >= p99);
  const overlaps = (c: [number, number]) => gcs.some(([g, ms]) => g < c[0] + c[1] / 1000 && g + ms / 1000 > c[0]);
  return {
    pauses: gcs.length,
    totalMs: gcs.reduce((a, g) => a + g[1], 0),
    maxMs: gcs.reduce((a, g) => Math.max(a, g[1]), 0),
    slowCalls: slow.length,
    slowInGc: slow.filter(overlaps).length,
  };
}

export async function caseApi(ctx: Ctx): Promise<Figure[]> {
  const flows = FWD_FLOWS(ctx);
  const pcap = pcapFor(ctx, 'fnat-tcp', clientFlows({ kind: 'tcp', flows, packetsPerFlow: 16 }));
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
    const rr = new RetraceRun({ pcap: pcap.file, packets: pcap.packets, maxConns: 16384, emptyPcap: ctx.emptyPcap, huge: ctx.huge });
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
      const calls: [number, number][] = [];
      // GC entries start on the performance clock (ms from timeOrigin); now() is in seconds.
      const perfToNow = now() - performance.now() / 1000;
      const gcs: [number, number][] = [];
      const gcObserver = new PerformanceObserver((list) => {
        for (const e of list.getEntries()) gcs.push([perfToNow + e.startTime / 1000, e.duration]);
      });
      gcObserver.observe({ entryTypes: ['gc'] });
      const until = now() + ctx.measureS;
      while (now() < until) {
        let t = now();
        await rr.api.system.getSystemInfo({});
        ms.GetSystemInfo.push((now() - t) * 1000);
        calls.push([t, ms.GetSystemInfo[ms.GetSystemInfo.length - 1]]);
        t = now();
        await rr.api.ports.listPorts({});
        ms.ListPorts.push((now() - t) * 1000);
        calls.push([t, ms.ListPorts[ms.ListPorts.length - 1]]);
      }
      for (const e of gcObserver.takeRecords()) gcs.push([perfToNow + e.startTime / 1000, e.duration]);
      gcObserver.disconnect();
      const clientGc = clientGcShare(calls, gcs);
      const foreignCores = foreign.stop();
      const s1 = await rr.snapshot();
      const pps = (s1.servers.tx - s0.servers.tx) / (s1.t - s0.t);
      // ApplyConfig: the running configuration plus 10 services of 1000 reals (at most 1024 per
      // service), while forwarding.
      const base = (await rr.api.config.getConfig({})).config!;
      const doc = bigConfig(base, { services, realsPer, weight: 1 });
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
      const update = await timeApply(bigConfig(base, { services, realsPer, weight: 2 }));
      const del = await timeApply(base);
      const s2 = await rr.snapshot();
      return { ms, pps, ppsDuringApply: (s2.servers.tx - s1.servers.tx) / (s2.t - s1.t), foreignCores, clientGc, create, noop, update, del };
    } finally {
      await rr.stop();
    }
  };
  for (let r = 0; r < ctx.runs; r++) {
    const at = await tryQuiet(ctx, { label: `api run ${r + 1}`, run: oneRun, judge: (x) => foreignJudge(ctx, x.foreignCores) });
    const { ms, pps, ppsDuringApply, foreignCores, clientGc, create, noop, update, del } = at.value;
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
      clientGc,
      apply: { create, noop, update, delete: del },
      attempts: at.attempts,
      discarded: at.discarded,
      noisy: at.noisy,
    });
    ctx.log(
      `  api run ${r + 1}${at.noisy ? ' (NOISY)' : ''}: GetSystemInfo p50 ${lat.GetSystemInfo.p50[r].toFixed(2)} p99 ${lat.GetSystemInfo.p99[r].toFixed(2)} ms, ListPorts p50 ${lat.ListPorts.p50[r].toFixed(2)} p99 ${lat.ListPorts.p99[r].toFixed(2)} ms (${lat.GetSystemInfo.n[r] + lat.ListPorts.n[r]} calls, forwarding ${(pps / 1e6).toFixed(2)} Mpps, other work ${foreignCores.toFixed(2)} cores; client GC ${clientGc.totalMs.toFixed(0)} ms in ${clientGc.pauses} pauses, max ${clientGc.maxMs.toFixed(1)} ms, in ${clientGc.slowInGc} of the ${clientGc.slowCalls} calls >= p99); ApplyConfig 10,000 reals: create ${create.s.toFixed(3)} s ${JSON.stringify(create.diff)}, no-op ${noop.s.toFixed(3)} s, update ${update.s.toFixed(3)} s, delete ${del.s.toFixed(3)} s`,
    );
  }
  const out: Figure[] = [];
  for (const k of Object.keys(lat)) {
    out.push(figure({ id: `api-${k.toLowerCase()}-p50`, label: `${k} latency p50 while forwarding`, unit: 'ms', runs: lat[k].p50, higherIsBetter: false }));
    const f = figure({ id: `api-${k.toLowerCase()}-p99`, label: `${k} latency p99 while forwarding`, unit: 'ms', runs: lat[k].p99, higherIsBetter: false });
    f.details = { max: lat[k].max, calls: lat[k].n };
    out.push(f);
  }
  const fc = figure({
    id: 'apply-config-10k',
    label: `ApplyConfig creating ${services} services × ${realsPer} reals (10,000 reals) while forwarding`,
    unit: 's',
    runs: apply.create,
    higherIsBetter: false,
  });
  fc.details = { runs, forwardingPps: fwd };
  out.push(fc);
  out.push(
    figure({ id: 'apply-config-10k-noop', label: 'ApplyConfig of the same document again (no change)', unit: 's', runs: apply.noop, higherIsBetter: false }),
  );
  out.push(
    figure({
      id: 'apply-config-10k-update',
      label: 'ApplyConfig changing the weight of all 10,000 reals',
      unit: 's',
      runs: apply.update,
      higherIsBetter: false,
    }),
  );
  out.push(figure({ id: 'apply-config-10k-delete', label: 'ApplyConfig deleting the 10 services', unit: 's', runs: apply.delete, higherIsBetter: false }));
  return out;
}
