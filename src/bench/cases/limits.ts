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
 */
import type { VirtualServiceLimits } from '../../gen/retrace/v1/balancer';
import { Protocol, Scheduler } from '../../gen/retrace/v1/types';
import { intToIp, ipToInt } from '../pcap';
import { NET, RetraceRun, type RetraceOptions } from '../retrace';
import { clientFlows, FWD_FLOWS, figure, measure, pcapFor, pct0, shareJudge, tryQuiet, withBaseline, type Ctx, type Figure } from '../harness';
import { newConnsPcap, newConnsRun } from './new-conns';

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

async function limitsNewConns(ctx: Ctx): Promise<Figure> {
  const syn = newConnsPcap(ctx);
  const table = Math.ceil(syn.flows * 1.3); // newConnsRun's max_conns
  const with_: number[] = [];
  const without: number[] = [];
  const runs: unknown[] = [];
  for (let r = 0; r < ctx.runs; r++) {
    for (const limited of [false, true]) {
      const at = await tryQuiet(ctx, {
        label: `limits new-conns run ${r + 1} ${limited ? 'with' : 'without'} limits`,
        run: () => newConnsRun(ctx, { syn, limits: limited ? heavyLimits(table) : undefined }),
        judge: (res) => shareJudge(ctx, [res.workerCpuShare], res.foreignCores),
      });
      const res = at.value;
      (limited ? with_ : without).push(res.connsPerS);
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
  const fig = withBaseline(
    figure({
      id: 'limits-new-conns',
      label: `New TCP conns per second with max_conns, 64 allow + 64 deny prefixes and conn_rate (${syn.flows} unique SYNs)`,
      unit: 'conns/s',
      runs: with_,
    }),
    { label: 'the same without limits', runs: without, unit: 'conns/s' },
  );
  fig.details = { flows: syn.flows, runs };
  return fig;
}

async function limitsFnat(ctx: Ctx): Promise<Figure> {
  const flows = FWD_FLOWS(ctx);
  const pcap = pcapFor(ctx, 'fnat-tcp', clientFlows({ kind: 'tcp', flows, packetsPerFlow: 16 }));
  const maxConns = Math.max(16384, flows * 2);
  const with_: number[] = [];
  const without: number[] = [];
  const runs: unknown[] = [];
  const one = async (limited: boolean) => {
    const rr = new RetraceRun({ pcap: pcap.file, packets: pcap.packets, maxConns, emptyPcap: ctx.emptyPcap });
    try {
      await rr.start();
      await rr.setupNetwork();
      await rr.addService('tcp', false);
      if (limited) {
        await rr.api.balancer.updateVirtualService({
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
      (limited ? with_ : without).push(m.pps);
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
  const fig = withBaseline(
    figure({ id: 'limits-fnat-tcp', label: `FNAT TCP forwarding with the same limits (${flows} flows, 16 packets each per pass)`, unit: 'pps', runs: with_ }),
    { label: 'the same without limits', runs: without, unit: 'pps' },
  );
  fig.details = { flows, runs };
  return fig;
}

export async function caseLimits(ctx: Ctx): Promise<Figure[]> {
  return [await limitsNewConns(ctx), await limitsFnat(ctx)];
}

/** The appliance's defaults (src/config/schema.ts), spelled out: the case measures them. */
const DEFAULT_PRESSURE: RetraceOptions['tablePressure'] = { evictEmbryonic: true, connsPercent: 90, portsPercent: 90, minAgeMs: 1000 };

export async function caseTablePressure(ctx: Ctx): Promise<Figure[]> {
  const syn = newConnsPcap(ctx);
  const table = ctx.quick ? 4096 : 65536;
  const evicting: number[] = [];
  const evictedPerS: number[] = [];
  const roomy: number[] = [];
  const fifoOn: number[] = [];
  const fifoOff: number[] = [];
  const runs: unknown[] = [];
  for (let r = 0; r < ctx.runs; r++) {
    // Under pressure: after the first pass fills the table, every SYN evicts one conn and makes
    // one; what leaves by the servers port is one SYN per new conn.
    const at = await tryQuiet(ctx, {
      label: `table-pressure run ${r + 1}`,
      run: async () => {
        const rr = new RetraceRun({
          pcap: syn.pcap.file,
          packets: syn.pcap.packets,
          maxConns: table,
          lips: 2,
          emptyPcap: ctx.emptyPcap,
          tablePressure: DEFAULT_PRESSURE,
        });
        try {
          await rr.start();
          await rr.setupNetwork();
          await rr.addService('tcp');
          const c0 = await rr.counters();
          const t0 = Date.now();
          const m = await measure(ctx, rr, { out: 'servers' });
          const c1 = await rr.counters();
          const evicted = Number(c1.connTable!.evictedEmbryonicTable - c0.connTable!.evictedEmbryonicTable);
          return { m, evictedPerS: evicted / ((Date.now() - t0) / 1000), conns: Number(c1.connCount) };
        } finally {
          await rr.stop();
        }
      },
      judge: ({ m }) => shareJudge(ctx, [m.cpuShare], m.foreignCores),
    });
    const { m } = at.value;
    evicting.push(m.pps);
    evictedPerS.push(at.value.evictedPerS);
    // The same SYNs into a table with room (newConnsRun sizes it 1.3x the flows), FIFO on and off.
    const on = await newConnsRun(ctx, { syn, tablePressure: DEFAULT_PRESSURE });
    const off = await newConnsRun(ctx, { syn, tablePressure: { evictEmbryonic: false } });
    roomy.push(on.connsPerS);
    fifoOn.push(on.connsPerS);
    fifoOff.push(off.connsPerS);
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
  const pressure = withBaseline(
    figure({
      id: 'table-pressure-new-conns',
      label: `New TCP conns per second, each evicting the oldest embryonic conn (table ${table}, ${syn.flows} unique SYNs)`,
      unit: 'conns/s',
      runs: evicting,
    }),
    { label: 'new conns per second into a table with room', runs: roomy, unit: 'conns/s' },
  );
  pressure.details = { table, flows: syn.flows, evictedPerS, runs };
  const fifo = withBaseline(
    figure({
      id: 'table-pressure-fifo',
      label: `New TCP conns per second with eviction on, no pressure (${syn.flows} unique SYNs)`,
      unit: 'conns/s',
      runs: fifoOn,
    }),
    { label: 'the same with dataplane.table_pressure.evict_embryonic false', runs: fifoOff, unit: 'conns/s' },
  );
  return [pressure, fifo];
}
