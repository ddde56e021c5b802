/**
 * Case (9), `synproxy`: what the SYN proxy costs, measured on the packet path in manual mode by
 * native/bench/synproxy_bench.c (why not against a pcap like the other cases: that file's header).
 * Three figures, each run `ctx.runs` times:
 *   - SYN-cookie answers per second (unique SYNs, nothing kept);
 *   - new conns per second through the proxy (the client's ACK with its cookie and the real's
 *     SYN-ACK), against the same conns without it (SYN, SYN-ACK, ACK);
 *   - established forwarding (data both ways, timestamps on every segment) on proxied conns, as a
 *     ratio to conns without the proxy.
 * Only the dataplane's round is timed (no NIC driver, no testpmd baseline): the ratios are the
 * figures to read; the absolute rates are an upper bound for one core.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { REPO_ROOT } from '../../lab/appliance';
import { figure, withBaseline, type Ctx, type Figure } from '../harness';

interface BenchRun {
  conns: number;
  cookies_per_s: number;
  conns_on_per_s: number;
  conns_off_per_s: number;
  fwd_on_pps: number;
  fwd_off_pps: number;
}

export async function caseSynProxy(ctx: Ctx): Promise<Figure[]> {
  execFileSync('bash', [path.join(REPO_ROOT, 'native', 'bench', 'build.sh')], { cwd: REPO_ROOT, stdio: 'pipe' });
  const conns = ctx.quick ? 5000 : 50000;
  const secs = ctx.quick ? 0.5 : Math.max(1, ctx.measureS / 2);
  const runs: BenchRun[] = [];
  for (let r = 0; r < ctx.runs; r++) {
    const out = execFileSync(path.join(REPO_ROOT, 'build', 'bench', 'synproxy_bench'), [String(conns), String(secs)], { encoding: 'utf8', timeout: 600000 });
    const run = JSON.parse(out.trim().split('\n').pop()!) as BenchRun;
    runs.push(run);
    ctx.log(
      `  synproxy run ${r + 1}: cookies ${(run.cookies_per_s / 1e6).toFixed(2)} M/s; new conns ${(run.conns_on_per_s / 1e6).toFixed(2)} M/s on, ` +
        `${(run.conns_off_per_s / 1e6).toFixed(2)} M/s off; forwarding ${(run.fwd_on_pps / 1e6).toFixed(2)} Mpps on, ${(run.fwd_off_pps / 1e6).toFixed(2)} Mpps off`,
    );
  }
  const note = 'packet path in manual mode (net_null ports, one core), only dp_worker_round timed';
  const cookies = figure({
    id: 'syn-cookies',
    label: 'SYN-cookie answers per second (unique SYNs)',
    unit: 'SYN-ACKs/s',
    runs: runs.map((x) => x.cookies_per_s),
  });
  const newConns = withBaseline(
    figure({
      id: 'synproxy-new-conns',
      label: `New conns per second with the SYN proxy on (${conns} conns)`,
      unit: 'conns/s',
      runs: runs.map((x) => x.conns_on_per_s),
    }),
    { label: 'the same conns with the proxy off', runs: runs.map((x) => x.conns_off_per_s), unit: 'conns/s' },
  );
  const fwd = withBaseline(
    figure({
      id: 'synproxy-forwarding',
      label: `Established forwarding with the SYN proxy on (${conns} conns, data both ways)`,
      unit: 'pps',
      runs: runs.map((x) => x.fwd_on_pps),
    }),
    { label: 'the same traffic on conns without the proxy', runs: runs.map((x) => x.fwd_off_pps), unit: 'pps' },
  );
  for (const f of [cookies, newConns, fwd]) {
    f.details = { conns, secondsPerFigure: secs, runs };
    f.notes.push(note);
  }
  return [cookies, newConns, fwd];
}
