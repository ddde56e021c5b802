/**
 * The benchmark report's before/after (`npm run bench -- --before FILE`): an earlier run's figures
 * appear beside the new ones, as a third bar per forwarding figure in the chart and as a column in
 * the table, and every packets-per-second figure shows its time per packet.
 */
import { figure, withBaseline, type CaseResult } from '../../src/bench/harness';
import { beforeRun, forwardingSvg, markdown, type Suite } from '../../src/bench/report';

function suite(date: string, retrace: number[], testpmd: number[]): Suite {
  const fig = withBaseline(figure({ id: 'fnat-tcp', label: 'FNAT TCP', unit: 'pps', runs: retrace, chart: true }), {
    label: 'testpmd macswap',
    runs: testpmd,
  });
  const c: CaseResult = { name: 'fnat', title: '(1) FNAT', figures: [fig], notes: [], seconds: 1, loadBefore: [0, 0, 0], loadAfter: [0, 0, 0] };
  return {
    version: 1,
    date,
    startedAt: `${date}T10:00:00.000Z`,
    finishedAt: `${date}T10:10:00.000Z`,
    quick: false,
    runsPerCase: retrace.length,
    warmupS: 3,
    measureS: 5,
    guard: { attempts: 3, minShare: 0.95, maxForeign: 0.25 },
    machine: { cpuModel: 'test CPU', cores: 2, memoryGiB: 24, kernel: 'k', dpdk: 'DPDK 22.11', node: 'v20', hostname: 'h' },
    quiet: { maxLoad: 0.7, loadAtStart: [0.1, 0.1, 0.1], waitedS: 0, reachedQuiet: true, note: 'quiet' },
    cases: [c],
  };
}

test('before and after: a column in the table, a bar in the chart, ns per packet', () => {
  const old = suite('2026-12-01', [17e6, 18e6, 18.5e6], [34e6, 34e6, 34e6]);
  const now = suite('2026-12-06', [20e6, 21e6, 22e6], [34e6, 35e6, 34e6]);
  now.before = beforeRun('2026-12-01.json', old);

  const md = markdown(now, 'x.svg');
  const row = md.split('\n').find((l) => l.includes('`fnat-tcp`'))!;
  // ratio now 21/35 = 0.60 (median of 0.59, 0.60, 0.65), before 18/34 = 0.53; 1e9 / 21e6 = 47.6 ns.
  expect(row).toContain('47.6 ns');
  expect(row).toContain('0.53× / 18.00 Mpps');
  expect(md).toContain('| before |');

  const svg = forwardingSvg(now);
  expect(svg).toContain('retrace before (2026-12-01, 2026-12-01.json)');
  expect(svg).toContain('#aec7e8');
  expect(svg).toContain('18.00 (0.53×)');

  // Without --before: no column, no third bar.
  const alone = suite('2026-12-06', [20e6], [34e6]);
  expect(markdown(alone, 'x.svg')).not.toContain('| before |');
  expect(forwardingSvg(alone)).not.toContain('#aec7e8');
});
