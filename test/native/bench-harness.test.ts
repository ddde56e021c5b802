/**
 * The native benchmarks build and run (native/bench/): path_bench gives a cost per packet for every
 * figure and synproxy_bench its rates. A smoke test with tiny sizes, not a measurement: timing has
 * no place in tests (docs/bench.md). It keeps the harness from rotting between benchmark runs, and
 * path_bench checks on its own that every frame was forwarded as a figure expects.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = path.join(ROOT, 'build', 'bench');

beforeAll(() => {
  execFileSync('bash', [path.join(ROOT, 'native', 'bench', 'build.sh')], { cwd: ROOT, stdio: 'pipe' });
}, 300000);

test('path_bench: every figure, cycles per packet', () => {
  const out = execFileSync(path.join(BIN, 'path_bench'), ['all', '256', '-b', '20'], { encoding: 'utf8', timeout: 120000 });
  const r = JSON.parse(out.trim()) as { figures: Record<string, { cycles_per_pkt: number; pps: number }> };
  expect(Object.keys(r.figures).sort()).toEqual(['icmp-fnat', 'icmp-local', 'new-conns', 'tcp', 'tcp-reply', 'udp']);
  for (const f of Object.values(r.figures)) {
    expect(f.cycles_per_pkt).toBeGreaterThan(0);
    expect(Number.isFinite(f.pps)).toBe(true);
  }
}, 120000);

test('synproxy_bench: every rate', () => {
  const out = execFileSync(path.join(BIN, 'synproxy_bench'), ['2000', '0.05'], { encoding: 'utf8', timeout: 120000 });
  const r = JSON.parse(out.trim().split('\n').pop()!) as Record<string, number>;
  for (const k of ['cookies_per_s', 'conns_on_per_s', 'conns_off_per_s', 'fwd_on_pps', 'fwd_off_pps']) expect(r[k]).toBeGreaterThan(0);
}, 120000);
