/**
 * The benchmark's outputs: the JSON document (every run of every figure), a markdown report with
 * the machine, the targets of the issue next to the measured values, and a table of every figure
 * (absolute, testpmd baseline, ratio), and an SVG bar chart of the forwarding figures — all
 * generated here.
 */
import type { CaseResult, Figure } from './harness';
import type { HugepageState } from './hugepages';
import type { MachineInfo } from './machine';
import { si, type Spread } from './stats';

export interface Suite {
  version: 1;
  date: string;
  startedAt: string;
  finishedAt: string;
  quick: boolean;
  runsPerCase: number;
  warmupS: number;
  measureS: number;
  guard: { attempts: number; minShare: number; maxForeign: number };
  machine: MachineInfo;
  /** 1-minute load average when the suite started, and how long it waited for a quiet machine. */
  quiet: { maxLoad: number; loadAtStart: number[]; waitedS: number; reachedQuiet: boolean; note: string };
  cases: CaseResult[];
  targets?: TargetResult[];
  /** An earlier run (`--before FILE`): its figures beside these, in the chart and the table. */
  before?: BeforeRun;
  /** --hugepages: both sides ran on 2 MiB hugepages (otherwise both run --no-huge). */
  hugepages?: HugepageState;
}

/** The figures of an earlier results file, by id, to show "before" beside "after". */
export interface BeforeRun {
  file: string;
  date: string;
  startedAt: string;
  figures: Record<string, { value: Spread; ratio?: Spread; unit: string }>;
}

/** The figures of a results file that `--before` compares with (those with a value). */
export function beforeRun(file: string, prior: Suite): BeforeRun {
  const figures: BeforeRun['figures'] = {};
  for (const c of prior.cases) for (const f of c.figures) if (f.runs.length > 0) figures[f.id] = { value: f.value, ratio: f.ratio?.value, unit: f.unit };
  return { file, date: prior.date, startedAt: prior.startedAt, figures };
}

/** Nanoseconds per packet of a packets-per-second figure (one worker core). */
function nsPerPacket(pps: number): string {
  return pps > 0 ? `${(1e9 / pps).toFixed(1)} ns` : '';
}

export interface TargetResult {
  target: string;
  figure: string;
  measured: string;
  spread: string;
  met: boolean | null;
  note?: string;
}

interface TargetDef {
  target: string;
  /** Figure ids; the first one found is used. `max:`-prefixed: worst median of several. */
  figures: string[];
  use: 'value' | 'ratio';
  op: '>=' | '<=' | '<';
  limit: number;
  fmt: (x: number) => string;
  combine?: 'max';
  /** Judge the worst run instead of the median. */
  worst?: boolean;
  note?: string;
}

const pct = (x: number): string => `${x.toFixed(2)}×`;

export const TARGETS: TargetDef[] = [
  { target: 'FNAT established TCP ≥ 0.7× testpmd', figures: ['fnat-tcp'], use: 'ratio', op: '>=', limit: 0.7, fmt: pct },
  { target: 'FNAT UDP ≥ 0.7× testpmd', figures: ['fnat-udp'], use: 'ratio', op: '>=', limit: 0.7, fmt: pct },
  { target: 'ICMP local echo ≥ 0.6× testpmd', figures: ['icmp-local'], use: 'ratio', op: '>=', limit: 0.6, fmt: pct },
  { target: '≥ 2M new TCP conns/s', figures: ['new-conns'], use: 'value', op: '>=', limit: 2e6, fmt: (x) => `${si(x)}/s` },
  { target: '1M conns, random: ≥ 0.5× the 1K rate', figures: ['scale-random-1M-vs-1K'], use: 'value', op: '>=', limit: 0.5, fmt: pct },
  {
    target: '1M conns, locality: ≥ 0.8× the 1K rate',
    figures: ['scale-locality-1M-vs-1K', 'scale-locality-500K-vs-1K', 'scale-locality-250K-vs-1K'],
    use: 'value',
    op: '>=',
    limit: 0.8,
    fmt: pct,
  },
  { target: '≤ 160 bytes per conn', figures: ['memory-per-conn'], use: 'value', op: '<=', limit: 160, fmt: (x) => `${x.toFixed(0)} B` },
  { target: '≥ 300k conn events/s to one subscriber', figures: ['conn-events-batches'], use: 'value', op: '>=', limit: 300e3, fmt: (x) => `${si(x)}/s` },
  {
    target: 'zero unreported event loss',
    figures: ['conn-events-batches-unreported'],
    use: 'value',
    op: '<=',
    limit: 0,
    fmt: (x) => `${x}`,
    worst: true,
    note: 'events neither received nor reported as LostEvents; the worst run counts',
  },
  {
    target: 'unary p99 < 2 ms while forwarding',
    figures: ['api-getsysteminfo-p99', 'api-listports-p99'],
    use: 'value',
    op: '<',
    limit: 2,
    fmt: (x) => `${x.toFixed(2)} ms`,
    combine: 'max',
  },
  { target: 'ApplyConfig with 10,000 reals < 1 s', figures: ['apply-config-10k'], use: 'value', op: '<', limit: 1, fmt: (x) => `${x.toFixed(3)} s` },
  {
    target: 'unary p99 < 20 ms under 50 counter streams + 20 scrapes (1500 services × 4 reals)',
    figures: ['control-load-unary-p99'],
    use: 'value',
    op: '<',
    limit: 20,
    fmt: (x) => `${x.toFixed(2)} ms`,
  },
  {
    target: 'health probes 100% under the same load',
    figures: ['control-load-health-ok'],
    use: 'value',
    op: '>=',
    limit: 100,
    fmt: (x) => `${x.toFixed(1)}%`,
    worst: true,
    note: 'the worst run counts',
  },
];

function allFigures(s: Suite): Figure[] {
  return s.cases.flatMap((c) => c.figures);
}

function sp(f: Figure, use: 'value' | 'ratio'): Spread | undefined {
  return use === 'ratio' ? f.ratio?.value : f.value;
}

export function evaluateTargets(s: Suite): TargetResult[] {
  const figs = new Map(allFigures(s).map((f) => [f.id, f]));
  return TARGETS.map((t) => {
    const found = t.figures.map((id) => figs.get(id)).filter((f): f is Figure => f !== undefined && f.runs.length > 0);
    if (found.length === 0) {
      const skipped = t.figures.map((id) => figs.get(id)).find((f) => f?.notes.length);
      return {
        target: t.target,
        figure: t.figures.join(', '),
        measured: 'not measured',
        spread: '',
        met: null,
        note: skipped?.notes.join(' ') ?? 'case not run',
      };
    }
    let f = found[0];
    const fallback =
      t.combine === undefined && f.id !== t.figures[0]
        ? `measured at a smaller level (${f.id}): ${figs.get(t.figures[0].replace('-vs-1K', ''))?.notes.join(' ') ?? t.figures[0] + ' not run'}`
        : undefined;
    if (t.combine === 'max') f = found.reduce((a, b) => ((sp(b, t.use)?.median ?? -Infinity) > (sp(a, t.use)?.median ?? -Infinity) ? b : a));
    const v = sp(f, t.use)!;
    // "zero unreported loss" and "probes 100%" judge the worst run, the others the median.
    const x = t.worst ? (t.op === '>=' ? v.min : v.max) : v.median;
    const met = t.op === '>=' ? x >= t.limit : t.op === '<=' ? x <= t.limit : x < t.limit;
    const note = [t.note, fallback].filter(Boolean).join('; ') || undefined;
    return { target: t.target, figure: f.id, measured: t.fmt(x), spread: `${t.fmt(v.min)} – ${t.fmt(v.max)}`, met: Number.isFinite(x) ? met : null, note };
  });
}

function fmtValue(x: number, unit: string): string {
  if (!Number.isFinite(x)) return 'n/a';
  switch (unit) {
    case 'pps':
      return `${(x / 1e6).toFixed(2)} Mpps`;
    case 'conns/s':
      return `${(x / 1e6).toFixed(2)} M/s`;
    case 'events/s':
      return `${(x / 1e3).toFixed(0)}k/s`;
    case 'ms':
      return `${x.toFixed(2)} ms`;
    case 's':
      return `${x.toFixed(3)} s`;
    case 'B/conn':
      return `${x.toFixed(0)} B`;
    case 'ratio':
      return `${x.toFixed(2)}×`;
    default:
      return `${si(x)} ${unit}`;
  }
}

function fmtSpread(s: Spread, unit: string): string {
  if (s.n === 0) return 'n/a';
  if (s.n === 1) return fmtValue(s.median, unit);
  return `${fmtValue(s.median, unit)} (${fmtValue(s.min, unit)} – ${fmtValue(s.max, unit)})`;
}

/** Horizontal grouped bar chart of the forwarding figures (Mpps), testpmd vs retrace, with min–max whiskers. */
export function forwardingSvg(s: Suite): string {
  const figs = allFigures(s).filter((f) => f.chart && f.runs.length > 0 && f.baseline);
  const before = (id: string): { value: Spread; ratio?: Spread } | undefined => s.before?.figures[id];
  const withBefore = figs.some((f) => before(f.id));
  const rowH = withBefore ? 64 : 46;
  const left = 300;
  const right = 110;
  const width = 1000;
  const top = 56;
  const height = top + figs.length * rowH + 40;
  const maxV = Math.max(1, ...figs.flatMap((f) => [f.value.max, f.baseline!.value.max, before(f.id)?.value.max ?? 0])) / 1e6;
  const scaleMax = Math.ceil(maxV / 2) * 2;
  const x = (v: number): number => left + (v / scaleMax) * (width - left - right);
  const esc = (t: string): string => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
  );
  parts.push(`<rect width="${width}" height="${height}" fill="#fff"/>`);
  parts.push(
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">retrace vs dpdk-testpmd macswap, 64-byte frames, 1 worker core (${esc(s.date)}${s.quick ? ', quick mode' : ''})</text>`,
  );
  parts.push(
    `<rect x="${left}" y="30" width="12" height="12" fill="#9e9e9e"/><text x="${left + 16}" y="40">testpmd (median, whisker = min–max of runs)</text>`,
  );
  parts.push(`<rect x="${left + 300}" y="30" width="12" height="12" fill="#1f77b4"/><text x="${left + 316}" y="40">retrace (label: ratio to testpmd)</text>`);
  if (withBefore)
    parts.push(
      `<rect x="${left + 520}" y="30" width="12" height="12" fill="#aec7e8"/><text x="${left + 536}" y="40">retrace before (${esc(s.before!.date)}, ${esc(s.before!.file)})</text>`,
    );
  for (let t = 0; t <= scaleMax; t += scaleMax <= 10 ? 1 : 2) {
    const xx = x(t);
    parts.push(`<line x1="${xx.toFixed(1)}" y1="${top - 6}" x2="${xx.toFixed(1)}" y2="${height - 34}" stroke="#e0e0e0"/>`);
    parts.push(`<text x="${xx.toFixed(1)}" y="${height - 20}" text-anchor="middle" fill="#555">${t}</text>`);
  }
  parts.push(`<text x="${(left + width - right) / 2}" y="${height - 5}" text-anchor="middle" fill="#555">million packets per second</text>`);
  figs.forEach((f, i) => {
    const y = top + i * rowH;
    const label = f.id;
    parts.push(`<text x="${left - 8}" y="${y + 22}" text-anchor="end">${esc(label)}</text>`);
    const b = before(f.id);
    const bars: [Spread, string, number, Spread | undefined][] = [
      [f.baseline!.value, '#9e9e9e', y + 4, undefined],
      ...(b ? [[b.value, '#aec7e8', y + 22, b.ratio] as [Spread, string, number, Spread | undefined]] : []),
      [f.value, '#1f77b4', y + (b ? 40 : 22), f.ratio?.value],
    ];
    for (const [v, color, by, ratio] of bars) {
      const w = Math.max(1, x(v.median / 1e6) - left);
      parts.push(`<rect x="${left}" y="${by}" width="${w.toFixed(1)}" height="16" fill="${color}"/>`);
      if (v.n > 1) {
        const y0 = by + 8;
        parts.push(`<line x1="${x(v.min / 1e6).toFixed(1)}" y1="${y0}" x2="${x(v.max / 1e6).toFixed(1)}" y2="${y0}" stroke="#000" stroke-width="1.2"/>`);
        parts.push(`<line x1="${x(v.min / 1e6).toFixed(1)}" y1="${y0 - 4}" x2="${x(v.min / 1e6).toFixed(1)}" y2="${y0 + 4}" stroke="#000"/>`);
        parts.push(`<line x1="${x(v.max / 1e6).toFixed(1)}" y1="${y0 - 4}" x2="${x(v.max / 1e6).toFixed(1)}" y2="${y0 + 4}" stroke="#000"/>`);
      }
      parts.push(
        `<text x="${(x(Math.max(v.max, v.median) / 1e6) + 6).toFixed(1)}" y="${by + 12}" fill="#333">${(v.median / 1e6).toFixed(2)}${ratio ? ` (${ratio.median.toFixed(2)}×)` : ''}</text>`,
      );
    }
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

export function markdown(s: Suite, svgName: string): string {
  const m = s.machine;
  const L: string[] = [];
  L.push(`# retrace benchmark — ${s.date}${s.quick ? ' (quick mode: tiny pcaps, 1 run — not a measurement)' : ''}`);
  L.push('');
  L.push(
    'Produced by `npm run bench` (`node dist/bench/run.js`); method and caveats: [docs/bench.md](../../docs/bench.md). Raw data: the JSON file of the same name.',
  );
  L.push('');
  L.push('## Machine');
  L.push('');
  L.push(`- CPU: ${m.cpuModel}, ${m.cores} cores (main lcore / Node control thread on CPU 0, the one worker or testpmd forwarding lcore on CPU 1)`);
  L.push(`- Memory: ${m.memoryGiB} GiB; kernel: ${m.kernel}; ${m.dpdk}; Node ${m.node}`);
  L.push(`- Load: ${s.quiet.note}`);
  L.push(
    s.hugepages
      ? `- Memory pages: **2 MiB hugepages** for retrace and testpmd (\`--hugepages${s.hugepages.mode === 'auto' ? '' : ` ${s.hugepages.mode.pages}`}\`, at most ${s.hugepages.peakPages} pages held; hugetlbfs on ${s.hugepages.dir})`
      : '- Memory pages: 4 KiB (`--no-huge`, both sides)',
  );
  const allRuns = s.cases.flatMap((c) => c.figures.flatMap((f) => (f.details.runs as { attempts?: number; noisy?: boolean }[] | undefined) ?? []));
  const extra = allRuns.reduce((n, r) => n + Math.max(0, (r.attempts ?? 1) - 1), 0);
  const noisy = allRuns.filter((r) => r.noisy).length;
  const g = s.guard;
  L.push(
    `- Noise guard: a run pair in which testpmd's forwarding lcore or the retrace worker got less than ${(g.minShare * 100).toFixed(0)}% of its CPU (control-plane figures: other work took more than ${g.maxForeign} cores) was repeated after waiting for quiet, up to ${g.attempts} attempts. ${extra} attempt(s) were thrown away; ${noisy} run(s) found no quiet attempt and keep the quietest (marked in the per-case notes).`,
  );
  L.push(
    `- ${s.runsPerCase} run(s) per figure, ${s.warmupS} s warm-up, ${s.measureS} one-second samples per run; testpmd and retrace alternate within each run. Started ${s.startedAt}, finished ${s.finishedAt}.`,
  );
  L.push('');
  const targets = s.targets ?? evaluateTargets(s);
  L.push('## Targets of the issue');
  L.push('');
  L.push('| target | measured (median) | runs min – max | met |');
  L.push('|---|---|---|---|');
  for (const t of targets) {
    L.push(`| ${t.target} | ${t.measured} | ${t.spread} | ${t.met === null ? 'not measured' : t.met ? 'met' : '**missed**'}${t.note ? ` — ${t.note}` : ''} |`);
  }
  L.push('');
  L.push(`![forwarding rates](${svgName})`);
  L.push('');
  L.push('## Every figure');
  L.push('');
  L.push('Ratio = retrace ÷ testpmd macswap on the same pcap, computed per run pair; median (min – max).');
  L.push('');
  if (s.before)
    L.push(
      `"Before": the same figure in \`${s.before.file}\` (run of ${s.before.startedAt}), as ratio to testpmd / retrace's rate; "ns/packet": one worker core's time per packet at retrace's median rate.`,
      '',
    );
  L.push(`| figure | ratio to testpmd | retrace | ns/packet | testpmd | CPU share retrace / testpmd |${s.before ? ' before |' : ''}`);
  L.push(`|---|---|---|---|---|---|${s.before ? '---|' : ''}`);
  for (const c of s.cases) {
    for (const f of c.figures) {
      const runs = (f.details.runs as { workerCpuShare?: number; testpmdCpuShare?: number }[] | undefined) ?? [];
      const range = (k: 'workerCpuShare' | 'testpmdCpuShare'): string => {
        const xs = runs.map((r) => r[k]).filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
        return xs.length ? `${(Math.min(...xs) * 100).toFixed(0)}–${(Math.max(...xs) * 100).toFixed(0)}%` : '';
      };
      const share = [range('workerCpuShare'), range('testpmdCpuShare')].filter(Boolean).join(' / ');
      const ratio = f.ratio ? fmtSpread(f.ratio.value, 'ratio') : '—';
      const val = f.runs.length ? fmtSpread(f.value, f.unit) : `skipped${f.notes.length ? `: ${f.notes.join(' ')}` : ''}`;
      const ns = f.unit === 'pps' && f.runs.length ? nsPerPacket(f.value.median) : '';
      const b = s.before?.figures[f.id];
      const bcol = s.before ? ` ${b ? `${b.ratio ? `${fmtValue(b.ratio.median, 'ratio')} / ` : ''}${fmtValue(b.value.median, b.unit)}` : '—'} |` : '';
      L.push(
        `| ${f.label} \`${f.id}\` | ${ratio} | ${val} | ${ns} | ${f.baseline ? fmtSpread(f.baseline.value, f.baseline.unit ?? f.unit) : '—'} | ${share} |${bcol}`,
      );
    }
  }
  L.push('');
  L.push(
    '"CPU share": CPU time the retrace worker thread (and the forwarding lcore of testpmd) got during the measured seconds (1 core = 100%), min–max over the runs; below ~98% something else ran on that core and the figure is low for that reason.',
  );
  L.push('');
  L.push('## Per case');
  for (const c of s.cases) {
    L.push('');
    L.push(`### ${c.title}`);
    L.push('');
    L.push(
      `Took ${c.seconds.toFixed(0)} s; 1-minute load before ${c.loadBefore[0].toFixed(2)}, after ${c.loadAfter[0].toFixed(2)} (the benchmark's own busy-polling core counts ~1).`,
    );
    if (c.error) L.push(`\n**Error:** ${c.error}`);
    for (const n of c.notes) L.push(`\n${n}`);
    for (const f of c.figures) {
      const d = f.details as Record<string, unknown>;
      const lines: string[] = [];
      if (f.notes.length) lines.push(...f.notes);
      const runs = d.runs as Record<string, unknown>[] | undefined;
      if (runs?.length && runs[0].dropsInWindow !== undefined) {
        const drops = runs.map((r) => JSON.stringify(r.dropsInWindow)).join(', ');
        lines.push(`drops during the measured window per run: ${drops}`);
      }
      const repeated = (runs ?? []).filter((r) => Number(r.attempts ?? 1) > 1 || r.noisy);
      if (repeated.length) {
        lines.push(
          `runs repeated because other work took the CPU: ${repeated
            .map(
              (r) =>
                `run ${r.run} (${r.attempts} attempts${r.noisy ? ', none quiet — kept the quietest' : ''}; discarded: ${(r.discarded as string[]).join('; ')})`,
            )
            .join(', ')}`,
        );
      }
      if (runs?.length && runs[0].rssLivePerConn !== undefined) {
        lines.push(
          `RSS growth when the conns went live: ${runs.map((r) => `${Number(r.rssLivePerConn).toFixed(0)} B/conn`).join(', ')} (pages touched beyond what start-up already touched)`,
        );
      }
      if (d.testpmdNullSink) {
        const ns = d.testpmdNullSink as { value: Spread };
        lines.push(`testpmd with \`net_null0,no-rx=1\` as the sink instead of the empty pcap: ${fmtSpread(ns.value, 'pps')}`);
      }
      const prof = d.profile as { top: { pct: number; dso: string; symbol: string; hint?: string }[]; error?: string; samples?: string } | undefined;
      if (prof) {
        if (prof.error) lines.push(`perf: ${prof.error}`);
        else
          lines.push(
            `worker profile (perf, ${prof.samples ?? '?'} samples): ${prof.top
              .slice(0, 10)
              .map((p) => `${p.hint ? `${p.dso.replace(/\.so.*$/, '')} ${p.symbol} [${p.hint}]` : p.symbol} ${p.pct.toFixed(1)}%`)
              .join(', ')}`,
          );
      }
      if (lines.length) {
        L.push('');
        L.push(`- \`${f.id}\`: ${lines.join('; ')}`);
      }
    }
  }
  L.push('');
  return L.join('\n');
}
