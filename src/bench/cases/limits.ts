/**
 * Cases (9) `limits` and (10) `table-pressure`: what the admission limits of a service and the
 * table-pressure machinery cost.
 *
 * (9) New conns per second and FNAT TCP forwarding with the heaviest limits a service can have
 * (max_conns, 64 allow prefixes with the clients' last, 64 deny prefixes none of which matches, a
 * per-client conn_rate that admits everything), each as a ratio to the same run without limits,
 * run with run alternately. Only the first packet of a conn reads the limits, so forwarding should
 * not move.
 *
 * (10) New conns per second under table pressure: unique SYNs replayed into a table of 65536
 * conns (two LIPs, so the table is the limit), every SYN evicting the oldest embryonic conn, as a
 * ratio to new conns per second into a table with room (the new-conns run); and new conns per
 * second with eviction on but no pressure as a ratio to eviction off (the FIFO's cost per conn).
 *
 * Each figure comes twice: as measured, and per second of CPU the worker thread got (the rate
 * divided by its CPU share over the run). On a machine shared with other work the worker is
 * preempted for much of a run, differently in each, and the ratio of raw rates mostly measures
 * that; the per-CPU-second figures compare the cost of the code.
 */
import { UpdateVirtualServiceRequest, type VirtualServiceLimits } from '../../gen/retrace/v1/balancer';
import { Protocol, Scheduler } from '../../gen/retrace/v1/types';
import { intToIp, ipToInt } from '../pcap';
import type { Profile } from '../profile';
import { NET, RetraceRun, type RetraceOptions } from '../retrace';
import { clientFlows, FWD_FLOWS, figure, measure, pcapFor, pct0, shareJudge, tryQuiet, withBaseline, type Ctx, type Figure } from '../harness';
import { newConnsPcap, newConnsRun } from './new-conns';

/** A measured pair: the rates and the worker's CPU share of each run. */
interface Series {
  rates: number[];
  cpu: number[];
}

const series = (): Series => ({ rates: [], cpu: [] });

/** The figure (with its baseline) as measured, and the same per second of worker CPU. */
function pairFigures(id: string, label: string, unit: string, a: Series, b: Series, bLabel: string): Figure[] {
  const perCpu = (x: Series) => x.rates.map((v, i) => v / x.cpu[i]);
  return [
    withBaseline(figure({ id, label, unit, runs: a.rates }), { label: bLabel, runs: b.rates, unit }),
    withBaseline(figure({ id: `${id}-per-cpu`, label: `${label}, per second of worker CPU`, unit: `${unit} per CPU-s`, runs: perCpu(a) }), {
      label: `${bLabel}, per second of worker CPU`,
      runs: perCpu(b),
      unit: `${unit} per CPU-s`,
    }),
  ];
}

/**
 * The heaviest limits: both lists full (DP_MAX_SVC_PREFIXES, 64), scanned to the end for every
 * first packet (the clients' prefix sorts last in allow, nothing matches in deny), max_conns at
 * the table size and a conn_rate no client reaches.
 */
function heavyLimits(tableSize: number): VirtualServiceLimits {
  const allow = Array.from({ length: 63 }, (_, i) => `${intToIp(ipToInt('10.0.0.0') + i * 65536)}/16`);
  allow.push('100.64.0.0/10'); // NET.clientBase
  const deny = Array.from({ length: 64 }, (_, i) => `${intToIp(ipToInt('172.16.0.0') + i * 256)}/24`);
  return { maxConns: tableSize, allow, deny, connRate: 1_000_000, connBurst: 1_000_000 };
}

async function limitsNewConns(ctx: Ctx): Promise<Figure[]> {
  const syn = newConnsPcap(ctx);
  const table = Math.ceil(syn.flows * 1.3); // newConnsRun's max_conns
  const with_ = series();
  const without = series();
  const runs: unknown[] = [];
  for (let r = 0; r < ctx.runs; r++) {
    for (const limited of [false, true]) {
      const at = await tryQuiet(ctx, {
        label: `limits new-conns run ${r + 1} ${limited ? 'with' : 'without'} limits`,
        run: () => newConnsRun(ctx, { syn, limits: limited ? heavyLimits(table) : undefined }),
        judge: (res) => shareJudge(ctx, [res.workerCpuShare], res.foreignCores),
      });
      const res = at.value;
      (limited ? with_ : without).rates.push(res.connsPerS);
      (limited ? with_ : without).cpu.push(res.workerCpuShare);
      runs.push({
        run: r + 1,
        limited,
        connsPerS: res.connsPerS,
        created: res.created,
        drops: res.drops,
        workerCpuShare: res.workerCpuShare,
        attempts: at.attempts,
        discarded: at.discarded,
        noisy: at.noisy,
      });
      ctx.log(
        `  limits new-conns run ${r + 1} ${limited ? 'with' : 'without'} limits: ${(res.connsPerS / 1e6).toFixed(3)} M conns/s (created ${res.created}/${syn.flows}, worker cpu ${pct0(res.workerCpuShare)}); drops ${JSON.stringify(res.drops)}${at.noisy ? ' NOISY' : ''}`,
      );
    }
  }
  const figs = pairFigures(
    'limits-new-conns',
    `New TCP conns per second with max_conns, 64 allow + 64 deny prefixes and conn_rate (${syn.flows} unique SYNs)`,
    'conns/s',
    with_,
    without,
    'the same without limits',
  );
  figs[0].details = { flows: syn.flows, runs };
  return figs;
}

async function limitsFnat(ctx: Ctx): Promise<Figure[]> {
  const flows = FWD_FLOWS(ctx);
  const pcap = pcapFor(ctx, 'fnat-tcp', clientFlows({ kind: 'tcp', flows, packetsPerFlow: 16 }));
  const maxConns = Math.max(16384, flows * 2);
  const with_ = series();
  const without = series();
  const runs: unknown[] = [];
  const one = async (limited: boolean) => {
    const rr = new RetraceRun({ pcap: pcap.file, packets: pcap.packets, maxConns, emptyPcap: ctx.emptyPcap, huge: ctx.huge });
    try {
      await rr.start();
      await rr.setupNetwork();
      await rr.addService('tcp', false);
      if (limited) {
        await rr.api.balancer.updateVirtualService({
          ...UpdateVirtualServiceRequest.create(),
          key: { protocol: Protocol.PROTOCOL_TCP, vip: NET.vip, port: NET.vport },
          scheduler: Scheduler.SCHEDULER_RR,
          seed: 0,
          limits: heavyLimits(maxConns),
        });
      }
      await rr.setReals('tcp');
      await rr.waitConns(flows, 30);
      return await measure(ctx, rr, { out: 'servers' });
    } finally {
      await rr.stop();
    }
  };
  for (let r = 0; r < ctx.runs; r++) {
    for (const limited of [false, true]) {
      const at = await tryQuiet(ctx, {
        label: `limits fnat-tcp run ${r + 1} ${limited ? 'with' : 'without'} limits`,
        run: () => one(limited),
        judge: (m) => shareJudge(ctx, [m.cpuShare], m.foreignCores),
      });
      const m = at.value;
      (limited ? with_ : without).rates.push(m.pps);
      (limited ? with_ : without).cpu.push(m.cpuShare);
      runs.push({
        run: r + 1,
        limited,
        pps: m.pps,
        conns: m.conns,
        drops: m.drops,
        workerCpuShare: m.cpuShare,
        attempts: at.attempts,
        discarded: at.discarded,
        noisy: at.noisy,
      });
      ctx.log(
        `  limits fnat-tcp run ${r + 1} ${limited ? 'with' : 'without'} limits: ${(m.pps / 1e6).toFixed(3)} Mpps (cpu ${pct0(m.cpuShare)}), conns ${m.conns}${at.noisy ? ' NOISY' : ''}`,
      );
    }
  }
  const figs = pairFigures(
    'limits-fnat-tcp',
    `FNAT TCP forwarding with the same limits (${flows} flows, 16 packets each per pass)`,
    'pps',
    with_,
    without,
    'the same without limits',
  );
  figs[0].details = { flows, runs };
  return figs;
}

export async function caseLimits(ctx: Ctx): Promise<Figure[]> {
  return [...(await limitsNewConns(ctx)), ...(await limitsFnat(ctx))];
}

/** The appliance's defaults (src/config/schema.ts), spelled out: the case measures them. */
const DEFAULT_PRESSURE: RetraceOptions['tablePressure'] = { evictEmbryonic: true, connsPercent: 90, portsPercent: 90, minAgeMs: 1000 };

export async function caseTablePressure(ctx: Ctx): Promise<Figure[]> {
  const syn = newConnsPcap(ctx);
  const table = ctx.quick ? 4096 : 65536;
  const evicting = series();
  const evictedPerS: number[] = [];
  let profile: Profile | undefined;
  const fifoOn = series();
  const fifoOff = series();
  const runs: unknown[] = [];
  // Under pressure: after the first pass fills the table, every SYN evicts one conn and makes one;
  // what leaves by the servers port is one SYN per new conn.
  const pressureRun = async (profileTag?: string) => {
    const rr = new RetraceRun({
      pcap: syn.pcap.file,
      packets: syn.pcap.packets,
      maxConns: table,
      lips: 2,
      emptyPcap: ctx.emptyPcap,
      huge: ctx.huge,
      tablePressure: DEFAULT_PRESSURE,
    });
    try {
      await rr.start();
      await rr.setupNetwork();
      await rr.addService('tcp');
      const c0 = await rr.counters();
      const t0 = Date.now();
      const m = await measure(ctx, rr, { out: 'servers', profileTag });
      const c1 = await rr.counters();
      const evicted = Number(c1.connTable!.evictedEmbryonicTable - c0.connTable!.evictedEmbryonicTable);
      return { m, evictedPerS: evicted / ((Date.now() - t0) / 1000), conns: Number(c1.connCount) };
    } finally {
      await rr.stop();
    }
  };
  for (let r = 0; r < ctx.runs; r++) {
    // The same SYNs into a table with room (newConnsRun sizes it 1.3x the flows), FIFO on and off,
    // first in turn: a run right after another measured slower here whatever it was (the previous
    // appliance's memory still being given back), and alternating spreads that over both.
    const roomy = async (on: boolean) => newConnsRun(ctx, { syn, tablePressure: on ? DEFAULT_PRESSURE : { evictEmbryonic: false } });
    const first = await roomy(r % 2 === 0);
    const second = await roomy(r % 2 !== 0);
    const [on, off] = r % 2 === 0 ? [first, second] : [second, first];
    const at = await tryQuiet(ctx, {
      label: `table-pressure run ${r + 1}`,
      run: () => pressureRun(),
      judge: ({ m }) => shareJudge(ctx, [m.cpuShare], m.foreignCores),
    });
    const { m } = at.value;
    evicting.rates.push(m.pps);
    evicting.cpu.push(m.cpuShare);
    evictedPerS.push(at.value.evictedPerS);
    fifoOn.rates.push(on.connsPerS);
    fifoOn.cpu.push(on.workerCpuShare);
    fifoOff.rates.push(off.connsPerS);
    fifoOff.cpu.push(off.workerCpuShare);
    runs.push({
      run: r + 1,
      evictingConnsPerS: m.pps,
      evictedPerS: at.value.evictedPerS,
      connsAtEnd: at.value.conns,
      drops: m.drops,
      workerCpuShare: m.cpuShare,
      attempts: at.attempts,
      discarded: at.discarded,
      noisy: at.noisy,
      roomyFifoOn: { connsPerS: on.connsPerS, created: on.created, workerCpuShare: on.workerCpuShare, drops: on.drops },
      roomyFifoOff: { connsPerS: off.connsPerS, created: off.created, workerCpuShare: off.workerCpuShare, drops: off.drops },
    });
    ctx.log(
      `  table-pressure run ${r + 1}: ${(m.pps / 1e6).toFixed(3)} M conns/s evicting (${(at.value.evictedPerS / 1e6).toFixed(3)} M evictions/s, cpu ${pct0(m.cpuShare)}, table ${at.value.conns}/${table}, drops ${JSON.stringify(m.drops)})${at.noisy ? ' NOISY' : ''}; ` +
        `into room: ${(on.connsPerS / 1e6).toFixed(3)} M conns/s with the FIFO, ${(off.connsPerS / 1e6).toFixed(3)} without`,
    );
  }
  // With --profile, one more run under perf (not counted).
  if (ctx.profile) profile = (await pressureRun('table-pressure')).m.profile;
  const pressure = pairFigures(
    'table-pressure-new-conns',
    `New TCP conns per second, each evicting the oldest embryonic conn (table ${table}, ${syn.flows} unique SYNs)`,
    'conns/s',
    evicting,
    fifoOn,
    'new conns per second into a table with room',
  );
  pressure[0].details = { table, flows: syn.flows, evictedPerS, runs, profile };
  const fifo = pairFigures(
    'table-pressure-fifo',
    `New TCP conns per second with eviction on, no pressure (${syn.flows} unique SYNs)`,
    'conns/s',
    fifoOn,
    fifoOff,
    'the same with dataplane.table_pressure.evict_embryonic false',
  );
  return [...pressure, ...fifo];
}
