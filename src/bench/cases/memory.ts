/**
 * Case (5), `memory`: bytes per conn, measured (RSS difference) and reserved (allocation sizes).
 */
import { rssBytes } from '../machine';
import { RetraceRun } from '../retrace';
import { CONN_RECORD_BYTES, connTableBytes, lipBytes, lipsFor } from '../sizing';
import { sleep, spread } from '../stats';
import { clientFlows, figure, pcapFor, type Ctx, type Figure } from '../harness';

/**
 * Memory per conn, two ways.
 *
 * Measured: the resident memory (RSS) of an appliance with `flows` live UDP conns in a table sized
 * for 1.25 × flows (as conn-scale runs it), minus the RSS of the same appliance (same pcap, same
 * mbufs, same eal.memory_mb) started with max_conns 1024 and no service, divided by the conns.
 * That is what the conns cost in pages actually touched: the record pool (its object headers are
 * written at start, so every page of it is resident), the hash key slots and buckets in use, and
 * the LIP source-port rings and conn slot arrays (written whole when a LIP is added). Untouched zeroed allocations do not count (DPDK does not memset fresh
 * pages from the OS), so it is a floor.
 *
 * Reserved: what the allocations need in EAL memory (eal.memory_mb must hold it), from sizing.ts,
 * per live conn (table sized 1.25 × flows) and per slot.
 */
export async function caseMemory(ctx: Ctx): Promise<Figure[]> {
  // RSS does not count hugetlbfs pages (they show as HugetlbPages in /proc/PID/status), so the
  // measured figure would be the Node heap alone.
  if (ctx.huge !== undefined) throw new Error('the memory case measures RSS, which hugetlbfs pages are not part of: run it without --hugepages');
  const flows = ctx.quick ? 50_000 : 1_000_000;
  const maxConns = Math.ceil(flows * 1.25);
  const lips = lipsFor(flows) + 1;
  const pcap = pcapFor(ctx, ctx.quick ? 'memory-udp' : 'scale-random-1M', clientFlows({ kind: 'udp', flows, packetsPerFlow: 1, burst: 1 }));
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
  const lipsBytes = lipBytes(lips);
  const f = figure({
    id: 'memory-per-conn',
    label: `Resident memory per live conn (${flows} UDP conns, table sized for ${maxConns}; RSS difference)`,
    unit: 'B/conn',
    runs: live,
    higherIsBetter: false,
  });
  f.details = { flows, maxConns, lips, memoryMb, runs, perSlotAtStart: spread(idleSlot) };
  const reservedLive = (est.total + lipsBytes) / flows;
  const f2 = figure({
    id: 'memory-per-conn-reserved',
    label: `Reserved EAL memory per live conn (allocation sizes, table sized for 1.25× the conns, LIP port rings and conn slots included)`,
    unit: 'B/conn',
    runs: [reservedLive],
    higherIsBetter: false,
  });
  f2.details = { ...est, lipBytes: lipsBytes, flows, maxConns };
  const f3 = figure({
    id: 'memory-per-conn-slot',
    label: 'Reserved EAL memory per conn table slot (allocation sizes, no hugepages)',
    unit: 'B/conn',
    runs: [est.perConn],
    higherIsBetter: false,
  });
  f3.details = { ...est, recordBytes: CONN_RECORD_BYTES };
  return [f, f2, f3];
}
