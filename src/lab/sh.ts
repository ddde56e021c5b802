/**
 * Small process helpers for the namespace lab: run a command synchronously or asynchronously,
 * always with an argument vector (never a shell), a timeout, and an error that carries the
 * command line and its stderr. Also the synchronous kill-and-wait used by LabTopology.destroy().
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';

/** A command that exited non-zero, was killed, or could not be started. */
export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly code: number | null,
    readonly stderr: string,
    readonly stdout: string,
    reason: string,
  ) {
    super(`\`${argv.join(' ')}\` ${reason}${stderr.trim() ? `: ${stderr.trim()}` : ''}`);
    this.name = 'CommandError';
  }
}

export interface RunOptions {
  /** Kill the command after this long (default 20 s). */
  timeoutMs?: number;
  /** Return '' instead of throwing when the command fails. */
  allowFail?: boolean;
  /** Bytes for stdin. */
  input?: string;
}

/** Runs `cmd args...` to completion and returns its stdout. Throws CommandError on failure. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): string {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      input: opts.input,
      timeout: opts.timeoutMs ?? 20000,
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (e) {
    if (opts.allowFail) return '';
    const err = e as { status?: number | null; signal?: string | null; stderr?: string; stdout?: string; message: string; code?: string };
    const reason = err.code === 'ENOENT' ? 'could not be started (not installed?)' : err.signal ? `was killed by ${err.signal}` : `exited with ${err.status}`;
    throw new CommandError([cmd, ...args], err.status ?? null, String(err.stderr ?? err.message), String(err.stdout ?? ''), reason);
  }
}

export interface AsyncResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `cmd args...` without blocking the event loop. Never rejects on a non-zero exit. */
export function runAsync(cmd: string, args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<AsyncResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8', timeout: opts.timeoutMs ?? 60000, killSignal: 'SIGKILL', maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new CommandError([cmd, ...args], null, stderr, stdout, 'could not be started (not installed?)'));
        return;
      }
      const e = err as (Error & { code?: number | string; signal?: NodeJS.Signals | null }) | null;
      resolve({
        code: e ? (typeof e.code === 'number' ? e.code : null) : 0,
        signal: e?.signal ?? null,
        stdout,
        stderr,
      });
    });
  });
}

/** Blocks the thread for `ms` milliseconds (used only on the synchronous teardown path). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * True while `pid` is a live process. A zombie (exited, not yet reaped by Node's event loop)
 * counts as gone: its PID cannot be reused until it is reaped, so checking it is safe.
 */
export function pidAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state letter follows the parenthesised command name, which may itself contain spaces.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/**
 * SIGTERM to `pid`, wait up to `graceMs` for it to go, then SIGKILL. Synchronous so it can run from
 * destroy() and process 'exit' handlers. Never throws.
 */
export function killSync(pid: number, graceMs = 2000): void {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!pidAlive(pid)) return;
    sleepSync(10);
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
  const hard = Date.now() + 1000;
  while (Date.now() < hard && pidAlive(pid)) sleepSync(10);
}
