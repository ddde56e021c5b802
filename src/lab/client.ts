/**
 * Lab client: real kernel TCP/UDP sockets, run inside a client namespace with `ip netns exec`.
 *
 *   node dist/lab/client.js tcp --host H --port P [--conns N] [--bytes B] [--concurrency C]
 *                               [--rounds R] [--interval-ms I] [--timeout-ms T]
 *       N connections; on each, R rounds of "send B random bytes, wait until the same B bytes came
 *       back" (I ms apart), then close. Byte-exact or it is a failure.
 *   node dist/lab/client.js udp --host H --port P [--count N] [--bytes B] [--concurrency C]
 *                               [--local-port-base B]
 *                               [--rounds R] [--interval-ms I] [--timeout-ms T] [--connected]
 *       N sockets, each with its own source port (all stay open until the end, so no port repeats);
 *       each sends R datagrams of B random bytes and waits for a byte-exact reply from H:P.
 *       --connected connects the socket, so an ICMP port-unreachable shows up as ECONNREFUSED;
 *       otherwise a reply from any other address is reported as such.
 *   node dist/lab/client.js who --proto tcp|udp --host H [--port 8081] [--count N] [--concurrency C]
 *                               [--local-port-base B]
 *       asks an identity port N times, each on a new connection / new socket. With
 *       --local-port-base, item i binds source port B+i (a fixed client tuple, e.g. to check that
 *       a hashing scheduler maps it to the same real every time); otherwise the kernel picks.
 *
 *   Every mode also takes --local-address A: sockets bind source address A (one of the
 *   namespace's addresses) instead of letting the route choose, e.g. to spread flows over an ECMP
 *   route that hashes source addresses.
 *
 * Prints exactly one JSON line on stdout (TcpEchoReport, UdpEchoReport or WhoReport from
 * results.ts) and exits 0, whatever happened to the individual items: ECONNREFUSED, resets and
 * timeouts are per-item failures. Bad arguments print {"error": "..."} and exit 2.
 */
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { ItemResult, TcpEchoReport, TcpItemResult, UdpEchoReport, UdpItemResult, WhoItemResult, WhoReport } from './results';

class UsageError extends Error {}

function int(v: string | undefined, def: number, flag: string, min: number, max: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag} must be an integer in ${min}..${max}, got "${v}"`);
  return n;
}

function errReason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return err.code ?? err.message ?? String(e);
}

function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

const round3 = (ms: number): number => Math.round(ms * 1000) / 1000;

/** Runs `fn(0..n-1)` with at most `concurrency` in flight; results in index order. */
async function pool<T>(n: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, n)) }, worker));
  return out;
}

function report<T extends ItemResult>(results: T[], t0: number) {
  const failures = results.filter((r) => !r.ok);
  return { ok: results.length - failures.length, failed: failures.length, durationMs: round3(performance.now() - t0), results, failures };
}

// ---------------------------------------------------------------------------------------------
// TCP echo
// ---------------------------------------------------------------------------------------------

interface TcpOpts {
  host: string;
  port: number;
  localAddress?: string;
  bytes: number;
  rounds: number;
  intervalMs: number;
  timeoutMs: number;
}

function tcpOne(index: number, o: TcpOpts): Promise<TcpItemResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const res: TcpItemResult = { index, ok: false, ms: 0, rounds: 0, echoed: 0, closed: false };
    let phase = 'connect';
    let expected = Buffer.alloc(0);
    let got: Buffer[] = [];
    let gotLen = 0;
    let settled = false;
    let succeeded = false;
    let roundTimer: NodeJS.Timeout | undefined;
    const sock = net.connect({ host: o.host, port: o.port, ...(o.localAddress !== undefined ? { localAddress: o.localAddress } : {}) });

    const finish = (reason?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(roundTimer);
      res.ms = round3(performance.now() - t0);
      res.ok = reason === undefined;
      if (reason !== undefined) res.reason = reason;
      if (!res.ok || !res.closed) sock.destroy();
      resolve(res);
    };
    const timer = setTimeout(() => {
      if (succeeded) {
        // Every byte came back; only the close handshake is missing. Report it, not a failure.
        finish();
        return;
      }
      const detail = phase === 'echo' ? `echo: ${gotLen}/${o.bytes} bytes, round ${res.rounds + 1}/${o.rounds}` : phase;
      finish(`timeout after ${o.timeoutMs} ms (${detail})`);
    }, o.timeoutMs);

    const sendRound = (): void => {
      phase = 'echo';
      expected = crypto.randomBytes(o.bytes);
      got = [];
      gotLen = 0;
      sock.write(expected);
    };
    const roundDone = (): void => {
      res.rounds++;
      if (res.rounds < o.rounds) {
        phase = 'interval';
        roundTimer = setTimeout(sendRound, o.intervalMs);
      } else {
        succeeded = true;
        phase = 'close';
        sock.end();
      }
    };

    sock.on('connect', () => {
      res.localPort = sock.localPort;
      res.connectMs = round3(performance.now() - t0);
      if (o.bytes === 0) {
        res.rounds = o.rounds;
        succeeded = true;
        phase = 'close';
        sock.end();
        return;
      }
      sendRound();
    });
    sock.on('data', (d: Buffer) => {
      if (phase !== 'echo') {
        finish(`unexpected ${d.length} bytes while ${phase === 'close' ? 'closing' : 'idle'}`);
        return;
      }
      got.push(d);
      gotLen += d.length;
      res.echoed += d.length;
      if (gotLen > o.bytes) {
        finish(`echo longer than sent (${gotLen} > ${o.bytes} bytes)`);
      } else if (gotLen === o.bytes) {
        const back = Buffer.concat(got);
        if (!back.equals(expected)) finish(`mismatch at byte ${firstDiff(back, expected)} of round ${res.rounds + 1}`);
        else roundDone();
      }
    });
    sock.on('end', () => {
      if (!succeeded) finish(`closed by peer (${phase}: ${gotLen}/${o.bytes} bytes, round ${res.rounds + 1}/${o.rounds})`);
    });
    sock.on('error', (e) => finish(errReason(e)));
    sock.on('close', () => {
      if (succeeded) {
        res.closed = true;
        finish();
      } else finish(`closed (${phase})`);
    });
  });
}

async function tcpMain(v: Record<string, string | boolean | undefined>): Promise<TcpEchoReport> {
  const host = str(v.host, '--host');
  const port = int(v.port as string | undefined, NaN, '--port', 1, 65535);
  const conns = int(v.conns as string | undefined, 1, '--conns', 0, 1_000_000);
  const o: TcpOpts = {
    host,
    port,
    bytes: int(v.bytes as string | undefined, 1024, '--bytes', 0, 1 << 30),
    rounds: int(v.rounds as string | undefined, 1, '--rounds', 1, 1_000_000),
    intervalMs: int(v['interval-ms'] as string | undefined, 0, '--interval-ms', 0, 3_600_000),
    timeoutMs: int(v['timeout-ms'] as string | undefined, 5000, '--timeout-ms', 1, 3_600_000),
    localAddress: localAddr(v),
  };
  const concurrency = int(v.concurrency as string | undefined, 32, '--concurrency', 1, 100_000);
  const t0 = performance.now();
  const results = await pool(conns, concurrency, (i) => tcpOne(i, o));
  return { mode: 'tcp', host, port, bytes: o.bytes, rounds: o.rounds, ...report(results, t0) };
}

// ---------------------------------------------------------------------------------------------
// UDP echo (and the UDP identity query, which is a one-round exchange with a fixed payload)
// ---------------------------------------------------------------------------------------------

interface UdpOpts {
  host: string;
  port: number;
  rounds: number;
  intervalMs: number;
  timeoutMs: number;
  connected: boolean;
  /** Source address to bind (undefined: the route's choice). */
  localAddress?: string;
  /** Source port for item i (undefined: the kernel's choice). */
  localPort?: (index: number) => number;
  /** Payload for round r; check(reply) returns a failure reason or undefined. */
  payload: () => Buffer;
  check: (sent: Buffer, reply: Buffer) => string | undefined;
}

/** Sockets stay open until the whole run is over, so every item has its own source port. */
const openSockets: dgram.Socket[] = [];

function bindSocket(o: UdpOpts, index: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    openSockets.push(sock);
    sock.once('error', reject);
    sock.bind(o.localPort?.(index) ?? 0, o.localAddress, () => {
      sock.removeListener('error', reject);
      if (!o.connected) return resolve(sock);
      sock.connect(o.port, o.host, () => resolve(sock));
    });
  });
}

async function udpOne(index: number, o: UdpOpts): Promise<UdpItemResult & { reply?: Buffer }> {
  const t0 = performance.now();
  const res: UdpItemResult & { reply?: Buffer } = { index, ok: false, ms: 0, rounds: 0 };
  const fail = (reason: string) => {
    res.reason = reason;
    res.ms = round3(performance.now() - t0);
    return res;
  };
  let sock: dgram.Socket;
  try {
    sock = await bindSocket(o, index);
  } catch (e) {
    return fail(errReason(e));
  }
  res.localPort = sock.address().port;
  const want = `${o.host}:${o.port}`;
  for (let r = 0; r < o.rounds; r++) {
    if (r > 0 && o.intervalMs > 0) await new Promise((ok) => setTimeout(ok, o.intervalMs));
    const sent = o.payload();
    const outcome = await new Promise<{ reply?: Buffer; from?: string; reason?: string }>((resolve) => {
      const onMsg = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
        done({ reply: msg, from: `${rinfo.address}:${rinfo.port}` });
      };
      const onErr = (e: Error): void => done({ reason: errReason(e) });
      const timer = setTimeout(() => done({ reason: `timeout after ${o.timeoutMs} ms (round ${r + 1}/${o.rounds})` }), o.timeoutMs);
      const done = (x: { reply?: Buffer; from?: string; reason?: string }): void => {
        clearTimeout(timer);
        sock.removeListener('message', onMsg);
        sock.removeListener('error', onErr);
        resolve(x);
      };
      sock.on('message', onMsg);
      sock.on('error', onErr);
      const cb = (e: Error | null): void => {
        if (e) done({ reason: errReason(e) });
      };
      if (o.connected) sock.send(sent, cb);
      else sock.send(sent, o.port, o.host, cb);
    });
    if (outcome.from) res.from = outcome.from;
    if (outcome.reason) return fail(outcome.reason);
    if (outcome.from !== want) return fail(`reply from ${outcome.from}, expected ${want}`);
    const bad = o.check(sent, outcome.reply!);
    if (bad) return fail(bad);
    res.reply = outcome.reply;
    res.rounds++;
  }
  res.ok = true;
  res.ms = round3(performance.now() - t0);
  return res;
}

function closeSockets(): void {
  for (const s of openSockets.splice(0)) {
    try {
      s.close();
    } catch {
      /* already closed */
    }
  }
}

/** --local-port-base B: item i binds source port B+i (a client tuple no earlier run used). */
function localPortBase(v: Record<string, string | boolean | undefined>, count: number): ((i: number) => number) | undefined {
  if (v['local-port-base'] === undefined) return undefined;
  const base = int(v['local-port-base'] as string, 0, '--local-port-base', 1, 65535);
  if (base + count - 1 > 65535) throw new UsageError(`--local-port-base ${base} + --count ${count} runs past port 65535`);
  return (i: number) => base + i;
}

async function udpMain(v: Record<string, string | boolean | undefined>): Promise<UdpEchoReport> {
  const host = str(v.host, '--host');
  const port = int(v.port as string | undefined, NaN, '--port', 1, 65535);
  const count = int(v.count as string | undefined, 1, '--count', 0, 60000);
  const bytes = int(v.bytes as string | undefined, 64, '--bytes', 1, 65507);
  const o: UdpOpts = {
    host,
    port,
    rounds: int(v.rounds as string | undefined, 1, '--rounds', 1, 1_000_000),
    intervalMs: int(v['interval-ms'] as string | undefined, 0, '--interval-ms', 0, 3_600_000),
    timeoutMs: int(v['timeout-ms'] as string | undefined, 2000, '--timeout-ms', 1, 3_600_000),
    connected: v.connected === true,
    localAddress: localAddr(v),
    localPort: localPortBase(v, count),
    payload: () => crypto.randomBytes(bytes),
    check: (sent, reply) =>
      reply.equals(sent)
        ? undefined
        : reply.length !== sent.length
          ? `reply is ${reply.length} bytes, sent ${sent.length}`
          : `mismatch at byte ${firstDiff(reply, sent)}`,
  };
  const concurrency = int(v.concurrency as string | undefined, 32, '--concurrency', 1, 100_000);
  const t0 = performance.now();
  const raw = await pool(count, concurrency, (i) => udpOne(i, o));
  closeSockets();
  const results = raw.map(({ reply: _reply, ...r }) => r);
  return { mode: 'udp', host, port, bytes, rounds: o.rounds, ...report(results, t0) };
}

// ---------------------------------------------------------------------------------------------
// Identity ("who")
// ---------------------------------------------------------------------------------------------

function whoTcpOne(index: number, host: string, port: number, timeoutMs: number, localPort?: number, localAddress?: string): Promise<WhoItemResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const res: WhoItemResult = { index, ok: false, ms: 0 };
    const chunks: Buffer[] = [];
    let settled = false;
    const sock = net.connect({
      host,
      port,
      ...(localPort !== undefined ? { localPort } : {}),
      ...(localAddress !== undefined ? { localAddress } : {}),
    });
    const finish = (reason?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      res.ms = round3(performance.now() - t0);
      if (reason === undefined) {
        const name = Buffer.concat(chunks).toString('utf8').trim();
        if (name) {
          res.ok = true;
          res.name = name;
        } else res.reason = 'empty answer';
      } else res.reason = reason;
      if (!res.ok) sock.destroy();
      resolve(res);
    };
    const timer = setTimeout(() => finish(`timeout after ${timeoutMs} ms`), timeoutMs);
    sock.on('connect', () => {
      res.localPort = sock.localPort;
    });
    sock.on('data', (d: Buffer) => chunks.push(d));
    // The server writes its name and closes; our side ends automatically (allowHalfOpen false).
    sock.on('error', (e) => finish(errReason(e)));
    sock.on('close', () => finish(chunks.length ? undefined : 'closed without an answer'));
  });
}

async function whoMain(v: Record<string, string | boolean | undefined>): Promise<WhoReport> {
  const host = str(v.host, '--host');
  const proto = (v.proto ?? 'tcp') as string;
  if (proto !== 'tcp' && proto !== 'udp') throw new UsageError(`--proto must be tcp or udp, got "${proto}"`);
  const port = int(v.port as string | undefined, 8081, '--port', 1, 65535);
  const count = int(v.count as string | undefined, 1, '--count', 0, 60000);
  const timeoutMs = int(v['timeout-ms'] as string | undefined, 2000, '--timeout-ms', 1, 3_600_000);
  const concurrency = int(v.concurrency as string | undefined, 1, '--concurrency', 1, 100_000);
  const localPort = localPortBase(v, count);
  const localAddress = localAddr(v);
  const t0 = performance.now();
  let results: WhoItemResult[];
  if (proto === 'tcp') {
    results = await pool(count, concurrency, (i) => whoTcpOne(i, host, port, timeoutMs, localPort?.(i), localAddress));
  } else {
    const o: UdpOpts = {
      host,
      port,
      rounds: 1,
      intervalMs: 0,
      timeoutMs,
      connected: v.connected === true,
      localAddress,
      localPort,
      payload: () => Buffer.from('who'),
      check: (_sent, reply) => (reply.toString('utf8').trim() ? undefined : 'empty answer'),
    };
    const raw = await pool(count, concurrency, (i) => udpOne(i, o));
    closeSockets();
    results = raw.map(({ reply, rounds: _rounds, from: _from, ...r }) => (r.ok ? { ...r, name: reply!.toString('utf8').trim() } : r));
  }
  const names = results.filter((r) => r.ok).map((r) => r.name!);
  const counts: Record<string, number> = {};
  for (const n of names) counts[n] = (counts[n] ?? 0) + 1;
  return { mode: 'who', proto, host, port, names, counts, ...report(results, t0) };
}

// ---------------------------------------------------------------------------------------------

/** --local-address: a dotted quad, or undefined when not given. */
function localAddr(v: Record<string, string | boolean | undefined>): string | undefined {
  const a = v['local-address'];
  if (a === undefined) return undefined;
  if (typeof a !== 'string' || net.isIPv4(a) === false) throw new UsageError(`--local-address must be an IPv4 address, got "${String(a)}"`);
  return a;
}

function str(v: string | boolean | undefined, flag: string): string {
  if (typeof v !== 'string' || v === '') throw new UsageError(`${flag} is required`);
  return v;
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      conns: { type: 'string' },
      count: { type: 'string' },
      bytes: { type: 'string' },
      concurrency: { type: 'string' },
      rounds: { type: 'string' },
      'interval-ms': { type: 'string' },
      'timeout-ms': { type: 'string' },
      proto: { type: 'string' },
      connected: { type: 'boolean' },
      'local-port-base': { type: 'string' },
      'local-address': { type: 'string' },
    },
    strict: true,
  });
  let out: unknown;
  if (mode === 'tcp') out = await tcpMain(values);
  else if (mode === 'udp') out = await udpMain(values);
  else if (mode === 'who') out = await whoMain(values);
  else throw new UsageError(`usage: client.js tcp|udp|who --host H --port P ... (got "${mode ?? ''}")`);
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(0));
}

main().catch((e: unknown) => {
  const usage = e instanceof UsageError || (e as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS');
  process.stdout.write(`${JSON.stringify({ error: (e as Error).message })}\n`, () => process.exit(usage ? 2 : 1));
});
