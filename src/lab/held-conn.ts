/**
 * Lab client: one TCP connection held open and driven from stdin, for tests that change the path
 * of an established conn between two exchanges (ECMP re-hash, a drained node).
 *
 *   node dist/lab/held-conn.js --host H --port P [--local-address A] [--local-port N]
 *
 * Connects to an echo port, then reads commands from stdin, one per line:
 *   echo B     send B random bytes and wait (as long as it takes) for the same B bytes back
 *   close      end our side and wait for the peer's close
 * and prints one JSON line per event on stdout:
 *   {"event":"connected","localAddress":...,"localPort":...}
 *   {"event":"echoed","round":n,"bytes":B}          byte-exact echo of round n (1-based)
 *   {"event":"mismatch","round":n,"at":i}
 *   {"event":"error","reason":"ECONNRESET"}
 *   {"event":"closed","clean":true|false}
 * Nothing here times out: the kernel's TCP retransmits while a segment is being dropped, and the
 * test decides how long to wait. stdin EOF destroys the socket and exits (a crashed test run
 * cannot leave it behind).
 */
import crypto from 'node:crypto';
import net from 'node:net';
import readline from 'node:readline';
import { parseArgs } from 'node:util';

export type HeldConnEvent =
  | { event: 'connected'; localAddress: string; localPort: number }
  | { event: 'echoed'; round: number; bytes: number }
  | { event: 'mismatch'; round: number; at: number }
  | { event: 'error'; reason: string }
  | { event: 'closed'; clean: boolean };

function emit(ev: HeldConnEvent): void {
  process.stdout.write(`${JSON.stringify(ev)}\n`);
}

function main(): void {
  const { values } = parseArgs({
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      'local-address': { type: 'string' },
      'local-port': { type: 'string' },
    },
    strict: true,
  });
  const port = Number(values.port);
  if (!values.host || !Number.isInteger(port) || port < 1 || port > 65535) {
    process.stderr.write('usage: held-conn.js --host H --port P [--local-address A] [--local-port N]\n');
    process.exit(2);
  }
  const localPort = values['local-port'] === undefined ? undefined : Number(values['local-port']);
  const sock = net.connect({
    host: values.host,
    port,
    ...(values['local-address'] !== undefined ? { localAddress: values['local-address'] } : {}),
    ...(localPort !== undefined ? { localPort } : {}),
  });
  sock.setNoDelay(true);

  let round = 0;
  let expected: Buffer | undefined;
  let got: Buffer[] = [];
  let gotLen = 0;
  let ending = false;

  sock.on('connect', () => emit({ event: 'connected', localAddress: sock.localAddress ?? '', localPort: sock.localPort ?? 0 }));
  sock.on('data', (d: Buffer) => {
    if (expected === undefined) {
      emit({ event: 'mismatch', round, at: -1 });
      return;
    }
    got.push(d);
    gotLen += d.length;
    if (gotLen < expected.length) return;
    const back = Buffer.concat(got);
    if (back.equals(expected)) emit({ event: 'echoed', round, bytes: expected.length });
    else {
      let i = 0;
      while (i < Math.min(back.length, expected.length) && back[i] === expected[i]) i++;
      emit({ event: 'mismatch', round, at: i });
    }
    expected = undefined;
  });
  sock.on('error', (e: NodeJS.ErrnoException) => emit({ event: 'error', reason: e.code ?? e.message }));
  sock.on('close', (hadError) => {
    emit({ event: 'closed', clean: ending && !hadError });
    process.exit(0);
  });

  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'echo') {
      const bytes = Number(arg ?? '64');
      round++;
      expected = crypto.randomBytes(bytes);
      got = [];
      gotLen = 0;
      sock.write(expected);
    } else if (cmd === 'close') {
      ending = true;
      sock.end();
    }
  });
  rl.on('close', () => {
    sock.destroy();
    process.exit(0);
  });
}

main();
