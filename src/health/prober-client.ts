/**
 * The control plane's side of the prober process (prober-main.ts): spawns it, in a network
 * namespace with `ip netns exec` when one is configured, sends ProbeRequests as JSON lines and
 * matches the answers by id. Every probe() settles: with the prober's answer, or with an error when
 * the prober does not answer in time or exits (it is then started again, a second later).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { Logger } from '../log';
import type { ProbeRequest, ProbeResult } from './probe';

export interface ProberOptions {
  /** Network namespace to run in ("" = this process's own). */
  netns: string;
  /** Probes in flight at most (the caller keeps to it; the prober refuses beyond). */
  maxInFlight: number;
  /** The prober script (default: prober-main.js next to this file in dist/). */
  script?: string;
}

/** Beyond a probe's own timeout, how long the answer may take before the probe counts as failed. */
const ANSWER_GRACE_MS = 2000;
const RESTART_DELAY_MS = 1000;

/** dist/health/prober-main.js, also when this module runs from src/ under ts-jest. */
export function defaultProberScript(): string {
  const here = __filename.endsWith('.ts') ? path.resolve(__dirname, '../../dist/health') : __dirname;
  return path.join(here, 'prober-main.js');
}

interface Pending {
  resolve: (r: ProbeResult) => void;
  timer: NodeJS.Timeout;
}

export class ProberClient {
  private child: ChildProcessWithoutNullStreams | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;
  private restartTimer: NodeJS.Timeout | undefined;
  /** Times the prober was started (1 after the first start). */
  starts = 0;

  constructor(
    private readonly opts: ProberOptions,
    private readonly log: Logger,
  ) {}

  get inFlight(): number {
    return this.pending.size;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  private start(): void {
    const script = this.opts.script ?? defaultProberScript();
    if (!fs.existsSync(script)) throw new Error(`health check prober not found: ${script} (run the TypeScript build)`);
    const args = [script, '--max-in-flight', String(this.opts.maxInFlight)];
    const child =
      this.opts.netns === ''
        ? spawn(process.execPath, args, { stdio: 'pipe' })
        : spawn('ip', ['netns', 'exec', this.opts.netns, process.execPath, ...args], { stdio: 'pipe' });
    this.child = child;
    this.starts++;
    child.stdin.on('error', () => {}); // a dead child: its exit handler fails what is pending
    readline.createInterface({ input: child.stdout, crlfDelay: Infinity }).on('line', (line) => this.onLine(line));
    readline.createInterface({ input: child.stderr, crlfDelay: Infinity }).on('line', (line) => this.log.warn({ prober: line }, 'health check prober'));
    // A spawn that fails (no `ip`, no node) reports 'error' and maybe no 'exit': either ends it.
    let gone = false;
    const onGone = (why: string) => {
      if (gone) return;
      gone = true;
      if (this.child === child) this.child = undefined;
      this.failAll(`prober exited (${why})`);
      if (this.closed) return;
      this.log.warn({ why, netns: this.opts.netns }, 'health check prober exited; starting it again');
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined;
        if (!this.closed) this.start();
      }, RESTART_DELAY_MS);
    };
    child.once('error', (e) => onGone(e.message));
    child.once('exit', (code, signal) => onGone(String(signal ?? code)));
    this.log.info({ pid: child.pid, netns: this.opts.netns || '(own)' }, 'health check prober started');
  }

  private onLine(line: string): void {
    let r: ProbeResult;
    try {
      r = JSON.parse(line) as ProbeResult;
    } catch {
      return;
    }
    const p = this.pending.get(r.id);
    if (p === undefined) return; // already timed out here
    this.pending.delete(r.id);
    clearTimeout(p.timer);
    p.resolve({ id: r.id, ok: r.ok === true, error: String(r.error ?? '') });
  }

  private failAll(error: string): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve({ id, ok: false, error });
    }
    this.pending.clear();
  }

  /** Runs one probe; always settles, never rejects. */
  probe(req: Omit<ProbeRequest, 'id'>): Promise<ProbeResult> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      if (this.closed) return resolve({ id, ok: false, error: 'prober closed' });
      if (this.child === undefined && this.restartTimer === undefined) {
        try {
          this.start();
        } catch (e) {
          return resolve({ id, ok: false, error: (e as Error).message });
        }
      }
      const child = this.child;
      if (child === undefined) return resolve({ id, ok: false, error: 'prober restarting' });
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ id, ok: false, error: `prober did not answer within ${req.timeoutMs + ANSWER_GRACE_MS} ms` });
      }, req.timeoutMs + ANSWER_GRACE_MS);
      this.pending.set(id, { resolve, timer });
      child.stdin.write(`${JSON.stringify({ ...req, id })}\n`);
    });
  }

  /** Stops the prober (by its PID) and fails what is pending. */
  close(): void {
    this.closed = true;
    if (this.restartTimer !== undefined) clearTimeout(this.restartTimer);
    this.failAll('prober closed');
    const c = this.child;
    this.child = undefined;
    if (c !== undefined && c.exitCode === null && c.signalCode === null) {
      c.stdin.end();
      c.kill('SIGTERM');
    }
  }
}
