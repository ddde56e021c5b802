/**
 * `retrace top`: a live view of the symmetric-path counters per protocol, with rates per second
 * over the refresh interval, redrawn in place (ANSI home + clear). Quits on q or Ctrl-C; with
 * --iterations it quits by itself after that many frames (scripts, tests).
 */
import type { GetCountersResponse } from '../gen/retrace/v1/path';
import type { Api } from './client';
import { PATH_COLUMNS, PROTOCOL_KEYS, table } from './format';

const CLEAR = '\x1b[H\x1b[2J';
const HIDE_CURSOR = '\x1b[?25l';
const SHOW_CURSOR = '\x1b[?25h';

const ROW_TITLES: Record<string, string> = {
  rx: 'rx',
  txSymmetric: 'symmetric',
  txRouted: 'routed',
  routeDivergence: 'triangles prevented',
  asymmetric: 'triangles happened',
  pathChanges: 'path changes',
};

export interface Sample {
  at: number;
  counters: GetCountersResponse;
}

function dropTotal(c: GetCountersResponse): bigint {
  let n = 0n;
  for (const d of c.drops) for (const v of Object.values(d.counters ?? {})) if (typeof v === 'bigint') n += v;
  return n;
}

/** "12.5" per second, or "-" on the first frame. */
function rate(cur: bigint, prev: bigint | undefined, seconds: number): string {
  if (prev === undefined || seconds <= 0) return '-';
  const r = Number(cur - prev) / seconds;
  return r >= 100 || r === 0 ? r.toFixed(0) : r.toFixed(1);
}

/** One frame: counters as rows, each protocol's total and rate as columns. Pure. */
export function renderTop(server: string, intervalS: number, cur: Sample, prev: Sample | undefined): string {
  const dt = prev === undefined ? 0 : (cur.at - prev.at) / 1000;
  const rows = PATH_COLUMNS.map(([k]) => [
    ROW_TITLES[k],
    ...PROTOCOL_KEYS.flatMap((p) => {
      const v = cur.counters[p]?.total?.[k] ?? 0n;
      return [v, rate(v, prev === undefined ? undefined : (prev.counters[p]?.total?.[k] ?? 0n), dt)];
    }),
  ]);
  const drops = dropTotal(cur.counters);
  return [
    `retrace top  ${server}  every ${intervalS}s  (q or Ctrl-C quits)  ${new Date(cur.at).toISOString()}`,
    '',
    table(
      ['', ...PROTOCOL_KEYS.flatMap((p) => [p.toUpperCase(), '/s'])],
      rows,
      PROTOCOL_KEYS.flatMap((_, i) => [1 + 2 * i, 2 + 2 * i]),
    ),
    '',
    `conns: ${cur.counters.connCount}   drops: ${drops} (${rate(drops, prev === undefined ? undefined : dropTotal(prev.counters), dt)}/s)`,
    '',
  ].join('\n');
}

export interface TopOptions {
  server: string;
  intervalMs: number;
  /** Frames before quitting by itself; undefined = until q or Ctrl-C. */
  iterations?: number;
  out: NodeJS.WriteStream;
  input: NodeJS.ReadStream;
}

/** Runs until q, Ctrl-C or the last iteration; rejects with the gRPC error if a read fails. */
export async function runTop(api: Api, opts: TopOptions): Promise<void> {
  const { out, input } = opts;
  let quit: () => void = () => {};
  const quitting = new Promise<void>((resolve) => (quit = resolve));
  const onKey = (d: Buffer) => {
    if (d.includes(0x71) || d.includes(0x51) || d.includes(0x03)) quit(); // q, Q, Ctrl-C (raw mode)
  };
  const onSigint = () => quit();
  const raw = input.isTTY === true;
  if (raw) input.setRawMode(true);
  input.on('data', onKey);
  input.resume();
  process.on('SIGINT', onSigint);
  out.write(HIDE_CURSOR);
  try {
    let prev: Sample | undefined;
    let stop = false;
    void quitting.then(() => (stop = true));
    for (let frame = 1; !stop; frame++) {
      const cur = { at: Date.now(), counters: await api.path.getCounters({}) };
      if (stop) break;
      out.write(CLEAR + renderTop(opts.server, opts.intervalMs / 1000, cur, prev));
      prev = cur;
      if (opts.iterations !== undefined && frame >= opts.iterations) break;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([quitting, new Promise((r) => (timer = setTimeout(r, opts.intervalMs)))]);
      clearTimeout(timer);
    }
  } finally {
    process.off('SIGINT', onSigint);
    input.off('data', onKey);
    if (raw) input.setRawMode(false);
    input.pause();
    out.write(SHOW_CURSOR);
  }
}
