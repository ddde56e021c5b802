/**
 * A `retrace serve` child process and the API client (src/api/client.ts) for it. One EAL per process:
 * the lab demo and the e2e tests run the appliance this way. stop() sends SIGTERM to its PID and
 * waits; kill() is the safety net.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, type ApiClient } from '../api/client';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const CLI_PATH = path.join(REPO_ROOT, 'dist', 'cli.js');

/** What ApplianceProcess.api returns: the shared API client (src/api/client.ts). */
export type ApplianceApi = ApiClient;

const FANOUT_COLLISION = /could not set PACKET_FANOUT on AF_PACKET socket for \S+:\s*Invalid argument/;

export class ApplianceProcess {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-app-'));
  readonly socket = path.join(this.dir, 'grpc.sock');
  readonly address = `unix:${this.socket}`;
  child: ChildProcess | undefined;
  /** Everything the child wrote (JSON log lines on stderr). */
  output = '';
  private exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  private apiValue: ApplianceApi | undefined;
  private configYaml: string | undefined;
  /** Starts repeated because of a PACKET_FANOUT group id collision (see waitServing). */
  fanoutRestarts = 0;
  /** Where the current child's output starts in `output`. */
  private outputMark = 0;

  /** Writes the YAML config and spawns `retrace serve` on this object's unix socket. */
  start(configYaml: string): void {
    this.configYaml = configYaml;
    this.fanoutRestarts = 0;
    this.spawnChild();
  }

  private spawnChild(): void {
    const configYaml = this.configYaml!;
    this.closeClients();
    const file = path.join(this.dir, 'retrace.yaml');
    fs.writeFileSync(file, configYaml);
    // RETRACE_APPLIANCE_NODE_ARGS: node options for the appliance only (e.g. "--cpu-prof
    // --cpu-prof-dir=/tmp/prof", which NODE_OPTIONS refuses), to profile it under a benchmark.
    const nodeArgs = (process.env.RETRACE_APPLIANCE_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const child = spawn(process.execPath, [...nodeArgs, CLI_PATH, 'serve', '--config', file, '--listen', this.address], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    // 'close' comes after the last stdout/stderr data, so output is whole once it resolves.
    this.exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
    this.outputMark = this.output.length;
    this.child = child;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** grpc.health.v1 Check on this appliance's socket, with a client of its own. */
  async healthCheck(service = ''): Promise<string> {
    const client = connect(this.address);
    try {
      return await client.health(service);
    } finally {
      client.close();
    }
  }

  /** Polls grpc.health.v1 until SERVING; throws with the child's output otherwise. */
  async waitServing(timeoutMs = 30000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (!this.running) {
        // DPDK 22.11's af_packet PMD names its PACKET_FANOUT group (pid ^ ifindex) & 0xffff, and
        // group ids are per network namespace: another af_packet process here (the other node of
        // the ECMP lab, a testpmd) whose pid ^ ifindex is equal makes the probe fail with EINVAL.
        // The pid is all that differs on a new start, so start again, a bounded number of times.
        await this.exited;
        if (FANOUT_COLLISION.test(this.output.slice(this.outputMark)) && this.fanoutRestarts < 3) {
          this.fanoutRestarts++;
          this.output += `\n[lab] PACKET_FANOUT group id collision: starting again (${this.fanoutRestarts}/3)\n`;
          this.spawnChild();
          continue;
        }
        throw new Error(`appliance exited early:\n${this.output}`);
      }
      try {
        last = await this.healthCheck();
        if (last === 'SERVING') return;
      } catch (e) {
        last = (e as Error).message;
      }
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new Error(`appliance never became SERVING (last: ${last})\n${this.output}`);
  }

  /** Clients of every service on this appliance's socket, made on first use. */
  get api(): ApplianceApi {
    this.apiValue ??= connect(this.address);
    return this.apiValue;
  }

  private closeClients(): void {
    this.apiValue?.close();
    this.apiValue = undefined;
  }

  /** SIGKILL by PID (a crash) and wait for the exit. */
  async crash(): Promise<void> {
    this.closeClients();
    if (this.running && this.child) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Resolves with the exit code once the child exits by itself. */
  async exitCode(): Promise<number | null> {
    if (!this.exited) throw new Error('appliance not started');
    return (await this.exited).code;
  }

  /** SIGTERM by PID and wait for the exit (SIGKILL after timeoutMs). */
  async stop(timeoutMs = 10000): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
    this.closeClients();
    if (!this.child || !this.exited) throw new Error('appliance not started');
    const t0 = Date.now();
    if (this.running) this.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const res = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (res === 'timeout') {
      this.child.kill('SIGKILL');
      const r = await this.exited;
      return { ...r, ms: Date.now() - t0 };
    }
    return { ...res, ms: Date.now() - t0 };
  }

  /** Safety net: SIGKILL if still running, remove the temp dir. Never throws. */
  async kill(): Promise<void> {
    this.closeClients();
    if (this.running && this.child) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
