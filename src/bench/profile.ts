/**
 * Where the worker's cycles go: `perf record` on the worker lcore thread (rte-worker-1) for a few
 * seconds of a measured run, summarised by `perf report` into the top symbols. Optional
 * (`--profile`); perf may be missing or refused (perf_event_paranoid, containers), in which case
 * the error is recorded instead.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface ProfileEntry {
  pct: number;
  dso: string;
  symbol: string;
  /** What an unresolved address (a static function of a stripped DPDK library) is. */
  hint?: string;
}

/** Static functions of Debian's DPDK 22.11 libraries have no symbol; say what they are. */
function hintFor(dso: string, symbol: string): string | undefined {
  if (!/^0x[0-9a-f]+$/.test(symbol)) return undefined;
  if (dso.includes('net_pcap')) return 'net_pcap infinite-rx: dequeue + copy of the stored frame (the replay)';
  if (dso.includes('rte_hash')) return 'rte_hash internals: bucket signature/key compare of a lookup or insert';
  if (dso.includes('rte_mempool') || dso.includes('mempool_ring')) return 'mempool internals';
  return undefined;
}

export interface Profile {
  seconds: number;
  /** perf's sample count as it prints it (e.g. "5K"). */
  samples?: string;
  top: ProfileEntry[];
  error?: string;
}

/** The thread id of the first worker lcore of process `pid` (thread name rte-worker-1). */
export function workerTid(pid: number): number | undefined {
  try {
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      const comm = fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim();
      if (/^(rte-worker|lcore-worker)-1$/.test(comm)) return Number(t);
    }
  } catch {
    // gone
  }
  return undefined;
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 32 << 20 }, (e, out, err) => {
      const code = e === null ? 0 : typeof e.code === 'number' ? e.code : 1;
      resolve({ code, out: String(out), err: String(err) });
    });
  });
}

export interface ProfileOptions {
  seconds: number;
  /** Where perf writes its data file (removed once reported). */
  dir: string;
  /** Names the data file. */
  tag: string;
}

export async function profileWorker(pid: number, { seconds, dir, tag }: ProfileOptions): Promise<Profile> {
  const tid = workerTid(pid);
  if (tid === undefined) return { seconds, top: [], error: 'worker thread not found' };
  const data = path.join(dir, `perf-${tag}.data`);
  const rec = await run(
    'perf',
    ['record', '-q', '-F', process.env.RETRACE_BENCH_PERF_KEEP ? '9999' : '999', '-t', String(tid), '-o', data, '--', 'sleep', String(seconds)],
    (seconds + 30) * 1000,
  );
  if (rec.code !== 0 || !fs.existsSync(data))
    return { seconds, top: [], error: `perf record failed: ${(rec.err || rec.out).trim().split('\n').slice(-2).join(' ')}` };
  const rep = await run('perf', ['report', '-i', data, '--no-children', '--stdio', '--sort', 'dso,sym', '--percent-limit', '0.8'], 60000);
  // RETRACE_BENCH_PERF_KEEP=DIR keeps the data file there for `perf annotate`.
  const keep = process.env.RETRACE_BENCH_PERF_KEEP;
  if (keep) {
    fs.mkdirSync(keep, { recursive: true });
    fs.copyFileSync(data, path.join(keep, path.basename(data)));
  }
  fs.rmSync(data, { force: true });
  if (rep.code !== 0) return { seconds, top: [], error: `perf report failed: ${rep.err.trim().split('\n').slice(-1)[0]}` };
  const top: ProfileEntry[] = [];
  let samples: string | undefined;
  for (const line of rep.out.split('\n')) {
    const s = /^# Samples: (\S+)/.exec(line);
    if (s) samples = s[1];
    const m = /^\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$/.exec(line);
    if (m) top.push({ pct: Number(m[1]), dso: m[2], symbol: m[3], hint: hintFor(m[2], m[3]) });
  }
  return { seconds, samples, top: top.slice(0, 20) };
}
