/**
 * The prober process: reads ProbeRequests as JSON lines on stdin, answers ProbeResults as JSON
 * lines on stdout, in completion order. Started by ProberClient, in the appliance's network
 * namespace or (with `ip netns exec`) in the one of its kernel interfaces, so probes leave through
 * the kernel stack there. Bounded: at most --max-in-flight probes at once; a request beyond that is
 * answered at once with an error (the control plane never sends more, so this is a safety net).
 * Ends when stdin closes (the appliance is gone).
 */
import readline from 'node:readline';
import { runProbe, type ProbeRequest, type ProbeResult } from './probe';

const arg = process.argv.indexOf('--max-in-flight');
const maxInFlight = arg > 0 ? Number(process.argv[arg + 1]) : 256;
let inFlight = 0;

function answer(r: ProbeResult): void {
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  let req: ProbeRequest;
  try {
    req = JSON.parse(line) as ProbeRequest;
  } catch {
    return; // Not from ProberClient: nothing to answer to.
  }
  if (inFlight >= maxInFlight) return answer({ id: req.id, ok: false, error: 'prober busy' });
  inFlight++;
  runProbe(req)
    .catch((e: unknown) => ({ id: req.id, ok: false, error: String(e) }))
    .then((res) => {
      inFlight--;
      answer(res);
    });
});
rl.on('close', () => process.exit(0));
// A closed stdout (the appliance died) must not turn into an uncaught EPIPE loop.
process.stdout.on('error', () => process.exit(0));
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);
