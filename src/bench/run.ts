/**
 * `npm run bench` = `node dist/bench/run.js [options]`: retrace's dataplane against dpdk-testpmd
 * on the same pcaps and the same two-core layout. See docs/bench.md.
 *
 *   --quick            tiny pcaps, 1 run, short windows (a smoke test, not a measurement)
 *   --case a[,b]       only these cases (fnat fnat-proxy icmp-local icmp-fnat new-conns conn-scale memory
 *                      conn-events api control-load limits table-pressure synproxy)
 *   --runs N           runs per figure (default 3; quick 1)
 *   --warmup S         warm-up seconds per run (default 3; quick 1)
 *   --seconds S        one-second samples per run (default 5; quick 2)
 *   --profile          one more (uncounted) retrace run per figure under perf record (top symbols)
 *   --out DIR          results directory (default bench/results)
 *   --date YYYY-MM-DD  name of the results (default today)
 *   --merge            with --case: replace those cases in an existing <date>.json
 *   --max-load X       wait until the 1-minute load average is below X before measuring (0.7)
 *   --wait-minutes M   give up waiting after M minutes and run anyway, saying so (30)
 *   --no-wait          do not wait for a quiet machine
 *   --attempts N       a run during which a forwarding core got < --min-share of its CPU (or, for
 *                      the control-plane figures, other work took > --max-foreign cores) is thrown
 *                      away and repeated after waiting for quiet, up to N attempts (3; quick 1)
 *   --min-share X      (0.95)
 *   --max-foreign X    (0.25)
 *   --before FILE      an earlier results JSON: its figures beside these (chart bars and a table column),
 *                      to show a change's before and after from two runs on the same machine
 *   --kernel           every retrace port gets a kernel interface (ports[].kernel) that stays idle:
 *                      the option's cost on the packet path (sets RETRACE_BENCH_KERNEL=1)
 *   --hugepages [N]    both retrace and testpmd on 2 MiB hugepages instead of --no-huge: mounts
 *                      hugetlbfs on a directory of its own, reserves N pages (without N: as many as
 *                      each run needs, grown on demand), gives them back at the end (hugepages.ts);
 *                      results are named <date>[-<cases>]-huge.*
 *   --scale-levels L   conn-scale: only these levels, by figure id (scale-locality-1K,scale-locality-500K)
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../lab/appliance';
import { CASES } from './cases/index';
import { SCALE_LEVEL_IDS } from './cases/conn-scale';
import { Hugepages, parseHugepagesArg, type HugepageMode } from './hugepages';
import type { CaseResult, Ctx } from './harness';
import { killAll } from './children';
import { ForeignCpu, loadAvg, machineInfo } from './machine';
import { pcapFileHeader } from './pcap';
import { beforeRun, evaluateTargets, forwardingSvg, markdown, type Suite } from './report';
import { now, sleep } from './stats';

interface Args {
  quick: boolean;
  cases: string[];
  runs?: number;
  warmup?: number;
  seconds?: number;
  profile: boolean;
  out: string;
  date: string;
  merge: boolean;
  maxLoad: number;
  waitMinutes: number;
  wait: boolean;
  attempts?: number;
  minShare: number;
  maxForeign: number;
  before?: string;
  hugepages?: HugepageMode;
  scaleLevels?: string[];
}

function usage(msg?: string): never {
  if (msg) console.error(`bench: ${msg}`);
  console.error('usage: node dist/bench/run.js [--quick] [--case NAME[,NAME]] [--runs N] [--warmup S] [--seconds S] [--profile]');
  console.error('       [--out DIR] [--date YYYY-MM-DD] [--merge] [--max-load X] [--wait-minutes M] [--no-wait]');
  console.error('       [--attempts N] [--min-share X] [--max-foreign X] [--before FILE] [--kernel] [--hugepages [N]]');
  console.error('       [--scale-levels ID[,ID]]');
  console.error(`cases: ${Object.keys(CASES).join(' ')}`);
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    quick: false,
    cases: [],
    profile: false,
    out: path.join(REPO_ROOT, 'bench', 'results'),
    date: new Date().toISOString().slice(0, 10),
    merge: false,
    maxLoad: 0.7,
    waitMinutes: 30,
    wait: true,
    minShare: 0.95,
    maxForeign: 0.25,
  };
  const num = (v: string | undefined, name: string): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < 0) usage(`${name} needs a number`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = (): string | undefined => argv[++i];
    switch (k) {
      case '--quick':
        a.quick = true;
        break;
      case '--case':
        a.cases.push(...(v() ?? usage('--case needs a name')).split(',').filter(Boolean));
        break;
      case '--runs':
        a.runs = Math.max(1, Math.floor(num(v(), k)));
        break;
      case '--warmup':
        a.warmup = num(v(), k);
        break;
      case '--seconds':
        a.seconds = Math.max(1, Math.floor(num(v(), k)));
        break;
      case '--profile':
        a.profile = true;
        break;
      case '--out':
        a.out = path.resolve(v() ?? usage('--out needs a directory'));
        break;
      case '--date':
        a.date = v() ?? usage('--date needs a value');
        break;
      case '--merge':
        a.merge = true;
        break;
      case '--max-load':
        a.maxLoad = num(v(), k);
        break;
      case '--wait-minutes':
        a.waitMinutes = num(v(), k);
        break;
      case '--no-wait':
        a.wait = false;
        break;
      case '--attempts':
        a.attempts = Math.max(1, Math.floor(num(v(), k)));
        break;
      case '--min-share':
        a.minShare = num(v(), k);
        break;
      case '--max-foreign':
        a.maxForeign = num(v(), k);
        break;
      case '--before':
        a.before = v() ?? usage('--before needs a results JSON file');
        break;
      case '--kernel':
        process.env.RETRACE_BENCH_KERNEL = '1';
        break;
      case '--hugepages': {
        let p: ReturnType<typeof parseHugepagesArg>;
        try {
          p = parseHugepagesArg(argv[i + 1]);
        } catch (e) {
          usage((e as Error).message);
        }
        a.hugepages = p.mode;
        if (p.consumed) i++;
        break;
      }
      case '--scale-levels':
        a.scaleLevels = (v() ?? usage('--scale-levels needs figure ids')).split(',').filter(Boolean);
        for (const l of a.scaleLevels) if (!SCALE_LEVEL_IDS.includes(l)) usage(`--scale-levels: unknown level ${l} (one of ${SCALE_LEVEL_IDS.join(' ')})`);
        break;
      case '-h':
      case '--help':
        usage();
      // falls through (usage exits)
      default:
        usage(`unknown option ${k}`);
    }
  }
  for (const c of a.cases) if (!(c in CASES)) usage(`unknown case ${c}`);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(a.date)) usage('--date must be YYYY-MM-DD');
  if (a.before !== undefined && !fs.existsSync(a.before)) usage(`--before: no such file ${a.before}`);
  return a;
}

async function waitQuiet(a: Args, log: (s: string) => void): Promise<Suite['quiet']> {
  const start = loadAvg();
  const t0 = now();
  if (!a.wait) {
    return {
      maxLoad: a.maxLoad,
      loadAtStart: start,
      waitedS: 0,
      reachedQuiet: start[0] < a.maxLoad,
      note: `1-minute load average ${start[0].toFixed(2)} at start (no waiting asked for)`,
    };
  }
  let l = start;
  let announced = false;
  while (l[0] >= a.maxLoad && now() - t0 < a.waitMinutes * 60) {
    if (!announced) log(`waiting for the 1-minute load average to drop below ${a.maxLoad} (now ${l[0].toFixed(2)}; at most ${a.waitMinutes} min)`);
    announced = true;
    await sleep(10000);
    l = loadAvg();
  }
  const waited = now() - t0;
  const ok = l[0] < a.maxLoad;
  const note = ok
    ? `quiet: 1-minute load average ${l[0].toFixed(2)} (< ${a.maxLoad}) when measuring started${waited > 1 ? `, after waiting ${(waited / 60).toFixed(1)} min` : ''}`
    : `NOT quiet: the 1-minute load average was still ${l[0].toFixed(2)} (≥ ${a.maxLoad}) after waiting ${(waited / 60).toFixed(1)} min; measured anyway — other work shared the CPUs, figures are pessimistic and noisy`;
  log(note);
  return { maxLoad: a.maxLoad, loadAtStart: l, waitedS: waited, reachedQuiet: ok, note };
}

/**
 * Between attempts: until other work takes at most 0.1 cores over two consecutive 5-second
 * windows (the load average lags by a minute and counts our own last run), at most 10 minutes.
 */
async function waitForeignQuiet(log: (s: string) => void): Promise<void> {
  const t0 = now();
  let quiet = 0;
  let last = NaN;
  while (now() - t0 < 600) {
    const m = new ForeignCpu(() => []).start();
    await sleep(5000);
    last = m.stop();
    quiet = last <= 0.1 ? quiet + 1 : 0;
    if (quiet >= 2) return;
  }
  log(`  (still ${last.toFixed(2)} cores of other work after 10 min; going on)`);
}

async function main(): Promise<number> {
  const a = parseArgs(process.argv.slice(2));
  const log = (s: string): void => console.log(s);
  try {
    execFileSync('dpdk-testpmd', ['--version'], { stdio: 'ignore', timeout: 20000 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      console.error('bench: dpdk-testpmd is not on PATH (Debian: apt-get install dpdk-dev)');
      return 1;
    }
  }
  const names = a.cases.length ? a.cases : Object.keys(CASES);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-bench-'));
  const emptyPcap = path.join(dir, 'empty.pcap');
  fs.writeFileSync(emptyPcap, pcapFileHeader());
  const ctx: Ctx = {
    quick: a.quick,
    runs: a.runs ?? (a.quick ? 1 : 3),
    warmupS: a.warmup ?? (a.quick ? 1 : 3),
    measureS: a.seconds ?? (a.quick ? 2 : 5),
    dir,
    profile: a.profile,
    log,
    emptyPcap,
    pcaps: new Map(),
    seq: 0,
    attempts: a.attempts ?? (a.quick ? 1 : 3),
    minShare: a.minShare,
    maxForeign: a.maxForeign,
    waitQuiet: () => waitForeignQuiet(log),
    scaleLevels: a.scaleLevels,
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    console.error(`bench: ${sig}, stopping the processes it started`);
    killAll();
    fs.rmSync(dir, { recursive: true, force: true });
    // The 'exit' handler gives the hugepages back once the children are gone.
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (a.hugepages !== undefined) {
    try {
      ctx.huge = Hugepages.open(a.hugepages, log);
    } catch (e) {
      console.error(`bench: ${(e as Error).message}`);
      fs.rmSync(dir, { recursive: true, force: true });
      return 1;
    }
    const huge = ctx.huge;
    // However the process ends (return, throw, signal): stop what it started, then give back.
    process.on('exit', () => {
      killAll();
      huge.release();
    });
  }

  const machine = machineInfo();
  log(`retrace bench${a.quick ? ' (quick)' : ''}: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.kernel}, ${machine.dpdk}`);
  log(`cases: ${names.join(' ')}; ${ctx.runs} run(s), ${ctx.warmupS} s warm-up, ${ctx.measureS} s measured`);
  const quiet = a.quick
    ? {
        maxLoad: a.maxLoad,
        loadAtStart: loadAvg(),
        waitedS: 0,
        reachedQuiet: loadAvg()[0] < a.maxLoad,
        note: `quick mode, no waiting; 1-minute load average ${loadAvg()[0].toFixed(2)} at start`,
      }
    : await waitQuiet(a, log);
  const startedAt = new Date().toISOString();
  const results: CaseResult[] = [];
  const suffix = (a.quick ? '-quick' : a.cases.length && !a.merge ? `-${a.cases.join('+')}` : '') + (ctx.huge ? '-huge' : '');
  const base = `${a.date}${suffix}`;
  fs.mkdirSync(a.out, { recursive: true });
  const jsonFile = path.join(a.out, `${base}.json`);
  const svgName = `${base}-forwarding.svg`;
  const before = a.before ? beforeRun(path.relative(a.out, path.resolve(a.before)), JSON.parse(fs.readFileSync(a.before, 'utf8')) as Suite) : undefined;
  const prior: Suite | undefined = a.merge && fs.existsSync(jsonFile) ? (JSON.parse(fs.readFileSync(jsonFile, 'utf8')) as Suite) : undefined;
  // Written after every case, so an interrupted run keeps what it measured.
  const save = (): Suite => {
    let cases = results;
    if (prior) {
      const order = Object.keys(CASES);
      const map = new Map(prior.cases.map((c) => [c.name, c]));
      for (const r of results) map.set(r.name, r);
      cases = [...map.values()].sort((x, y) => order.indexOf(x.name) - order.indexOf(y.name));
    }
    const suite: Suite = {
      version: 1,
      date: a.date,
      startedAt: prior?.startedAt ?? startedAt,
      finishedAt: new Date().toISOString(),
      quick: a.quick,
      runsPerCase: ctx.runs,
      warmupS: ctx.warmupS,
      measureS: ctx.measureS,
      guard: { attempts: ctx.attempts, minShare: ctx.minShare, maxForeign: ctx.maxForeign },
      machine,
      quiet: prior ? { ...prior.quiet, note: `${prior.quiet.note}; re-run of ${a.cases.join(', ')}: ${quiet.note}` } : quiet,
      cases,
    };
    if (before) suite.before = before;
    if (ctx.huge) suite.hugepages = ctx.huge.state();
    suite.targets = evaluateTargets(suite);
    fs.writeFileSync(jsonFile, JSON.stringify(suite, (_k, v) => (typeof v === 'bigint' ? Number(v) : v), 2) + '\n');
    fs.writeFileSync(path.join(a.out, svgName), forwardingSvg(suite));
    fs.writeFileSync(path.join(a.out, `${base}.md`), markdown(suite, svgName));
    return suite;
  };
  let failed = 0;
  for (const name of names) {
    const c = CASES[name];
    log(`${c.title} [${name}]`);
    const t0 = now();
    const loadBefore = loadAvg();
    const res: CaseResult = { name, title: c.title, figures: [], notes: [], seconds: 0, loadBefore, loadAfter: [] };
    try {
      res.figures = await c.run(ctx);
    } catch (e) {
      failed++;
      res.error = (e as Error).stack ?? String(e);
      log(`  FAILED: ${(e as Error).message.split('\n').slice(0, 20).join('\n')}`);
    }
    res.seconds = now() - t0;
    res.loadAfter = loadAvg();
    results.push(res);
    save();
  }
  fs.rmSync(dir, { recursive: true, force: true });
  const suite = save();
  ctx.huge?.release();
  log('');
  log('targets:');
  for (const t of suite.targets ?? [])
    log(`  ${t.met === null ? 'n/a   ' : t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.measured}${t.spread ? ` (${t.spread})` : ''}`);
  log(`results: ${path.relative(process.cwd(), jsonFile)}, ${base}.md, ${svgName}`);
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    killAll();
    process.exit(1);
  },
);
