/**
 * Case (5), `conn-scale`: forwarding with 1K to 4M live UDP conns, one datagram per flow per pass
 * and in bursts of 8, each level only if its pcap fits in memory.
 */
import { DeleteConnsRequest } from '../../gen/retrace/v1/conn';
import { memAvailable, rssBytes } from '../machine';
import type { Profile } from '../profile';
import { RetraceRun } from '../retrace';
import { connTableBytes, lipsFor, mbufPoolBytes, mbufsFor, perPageObjBytes, MBUF_OBJ_BYTES, pageBytes } from '../sizing';
import { testpmdMbufs } from '../testpmd';
import { now, sleep } from '../stats';
import { clientFlows, figure, measure, pcapFor, pct0, shareJudge, testpmd, tryQuiet, withBaseline, type Ctx, type Figure } from '../harness';

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

/** Bytes a run of `packets` frames and `maxConns` conns needs, for retrace and for testpmd (in 2 MiB pages with `huge`). */
export function needBytes(packets: number, maxConns: number, huge = false): number {
  const retrace = mbufPoolBytes(mbufsFor(packets), huge) + connTableBytes(maxConns).total + 600 * 2 ** 20;
  const tp = mbufPoolBytes(testpmdMbufs(packets), huge) + 300 * 2 ** 20;
  return Math.max(retrace, tp);
}

/** Every level a conn-scale run may measure, by figure id (the 500K / 250K fallbacks included). */
export const SCALE_LEVEL_IDS = ['random', 'locality'].flatMap((v) => ['1K', '100K', '250K', '500K', '1M', '4M'].map((n) => `scale-${v}-${n}`));

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
    const need = needBytes(packets, maxConns, ctx.huge !== undefined);
    // The hugepages held for earlier levels serve this one too (and are not in MemAvailable).
    const budget = memoryBudget() + (ctx.huge?.heldBytes() ?? 0);
    const id = `scale-${variant}-${lv.name}`;
    if (need > budget) {
      const note = `${id} not run: net_pcap (infinite_rx) holds all ${packets} frames of the pcap as mbufs (${Math.round(perPageObjBytes(MBUF_OBJ_BYTES, pageBytes(ctx.huge !== undefined)))} bytes each with ${ctx.huge !== undefined ? '2 MiB hugepages' : '4 KiB pages'}) and with the conn table that needs ~${(need / 2 ** 30).toFixed(1)} GiB, over the budget of ${(budget / 2 ** 30).toFixed(1)} GiB (MemAvailable minus a 3 GiB margin${ctx.huge ? ', plus the hugepages held' : ''})`;
      ctx.log(`  ${note}`);
      const f = figure({ id, label: `UDP, ${lv.name} live conns, ${variant}`, unit: 'pps', runs: [] });
      f.notes.push(note);
      f.details = { skipped: true, needGiB: need / 2 ** 30, budgetGiB: budget / 2 ** 30, packets };
      out.push(f);
      return false;
    }
    const pcap = pcapFor(ctx, id, clientFlows({ kind: 'udp', flows: lv.flows, packetsPerFlow: ppf, burst: ppf }));
    const base: number[] = [];
    const vals: number[] = [];
    const runs: unknown[] = [];
    let profile: Profile | undefined;
    const retrace = async (profileTag?: string) => {
      const rr = new RetraceRun({ pcap: pcap.file, packets: pcap.packets, maxConns, lips: lipsFor(lv.flows) + 1, emptyPcap: ctx.emptyPcap, huge: ctx.huge });
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
        const m = await measure(ctx, rr, { out: 'servers', profileTag });
        return { m, conns, startS, fillS, scrambleS, scrambleNote, rssIdle, rssLive };
      } finally {
        await rr.stop();
      }
    };
    for (let r = 0; r < ctx.runs; r++) {
      const at = await tryQuiet(ctx, {
        label: `${id} run ${r + 1}`,
        run: async () => ({ tp: await testpmd(ctx, pcap), rt: await retrace() }),
        judge: ({ tp, rt }) => shareJudge(ctx, [tp.cpuShare, rt.m.cpuShare], Math.max(tp.foreignCores, rt.m.foreignCores)),
      });
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
        ...(m.hugeMiB !== undefined ? { hugeMiB: m.hugeMiB, testpmdHugeMiB: tp.hugeMiB } : {}),
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
      figure({
        id,
        label: `UDP, ${lv.name} live conns, ${variant === 'random' ? '1 packet per flow per pass' : 'bursts of 8 packets per flow'}`,
        unit: 'pps',
        runs: vals,
        chart: true,
      }),
      { label: 'testpmd macswap', runs: base },
    );
    f.details = { flows: lv.flows, packets, maxConns, runs, profile };
    byKey.set(`${variant}-${lv.name}`, f);
    out.push(f);
    return true;
  };
  const fallbacks: Level[] = [];
  if (ctx.scaleLevels !== undefined) {
    // --scale-levels: just these, in the usual order; a level that does not fit is recorded as not run.
    const all: Level[] = ['1K', '100K', '250K', '500K', '1M', '4M'].map((name) => ({
      name,
      flows: Number(name.slice(0, -1)) * (name.endsWith('M') ? 1e6 : 1e3),
    }));
    for (const variant of ['random', 'locality'] as const) {
      for (const lv of all) {
        if (!ctx.scaleLevels.includes(`scale-${variant}-${lv.name}`)) continue;
        if ((await runLevel(variant, lv)) && !lvls.some((l) => l.name === lv.name) && !fallbacks.some((l) => l.name === lv.name)) fallbacks.push(lv);
      }
    }
  }
  for (const variant of ctx.scaleLevels === undefined ? (['random', 'locality'] as const) : []) {
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
      out.push(
        figure({ id: `scale-${variant}-${lv.name}-vs-${small}`, label: `${variant}: ${lv.name} conns rate ÷ ${small} conns rate`, unit: 'ratio', runs: rel }),
      );
      // The larger level's pcap is larger too, and the replay's own working set slows testpmd,
      // which keeps no table, by about as much (docs/bench.md): the same ratio over the two
      // ratios to testpmd leaves the cost of the table alone. Reported beside the target's figure.
      if (f.ratio && ref.ratio) {
        const adj = f.ratio.runs.map((v, i) => v / ref.ratio!.runs[i]);
        out.push(
          figure({
            id: `scale-${variant}-${lv.name}-vs-${small}-over-testpmd`,
            label: `${variant}: ${lv.name} conns ÷ ${small} conns, each as a ratio to testpmd on its own pcap (the table's cost without the replay's)`,
            unit: 'ratio',
            runs: adj,
          }),
        );
      }
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
