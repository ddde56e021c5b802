/**
 * Runs `retrace serve` as a child process (one EAL per process) and talks to it over a unix socket.
 * stop() sends SIGTERM to the child's PID and waits; kill() is the afterAll safety net.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

export const ROOT = path.resolve(__dirname, '..', '..');
export const CLI = path.join(ROOT, 'dist', 'cli.js');

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion (for commands that are expected to exit). */
export function runCli(args: string[], timeoutMs = 20000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`retrace ${args.join(' ')} did not exit within ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
}

export class Appliance {
  readonly dir = tmpDir('retrace-e2e');
  readonly socket = path.join(this.dir, 'grpc.sock');
  readonly address = `unix:${this.socket}`;
  child: ChildProcess | undefined;
  stderr = '';
  private exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;

  /** Writes the YAML config (grpc.listen is forced to this appliance's socket) and spawns. */
  start(configYaml: string): void {
    const file = path.join(this.dir, 'retrace.yaml');
    fs.writeFileSync(file, configYaml);
    const child = spawn(process.execPath, [CLI, 'serve', '--config', file, '--listen', this.address], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    this.child = child;
  }

  /** Polls grpc.health.v1 until `want` (default SERVING) or throws after timeoutMs. */
  async waitHealth(want = 'SERVING', timeoutMs = 20000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (this.child?.exitCode !== null) throw new Error(`appliance exited early:\n${this.stderr}`);
      try {
        last = await this.healthCheck();
        if (last === want) return;
      } catch (e) {
        last = (e as Error).message;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`health never became ${want} (last: ${last})\n${this.stderr}`);
  }

  healthCheck(service = ''): Promise<string> {
    const Client = grpc.makeGenericClientConstructor(healthService, 'Health');
    const client = new Client(this.address, grpc.credentials.createInsecure());
    return new Promise((resolve, reject) => {
      client.check({ service }, { deadline: Date.now() + 2000 }, (err: grpc.ServiceError | null, res: { status: string }) => {
        client.close();
        if (err) reject(err);
        else resolve(res.status);
      });
    });
  }

  /** SIGTERM by PID; resolves with the exit code (or throws after timeoutMs). */
  async stop(timeoutMs = 10000): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
    if (!this.child || !this.exited) throw new Error('not started');
    const t0 = Date.now();
    this.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    try {
      const res = await Promise.race([
        this.exited,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no exit within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      return { ...res, ms: Date.now() - t0 };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Safety net for afterAll: SIGKILL if still running, remove the temp dir. */
  async kill(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A unary call on a ts-proto grpc-js client as a promise. */
export function call<Req, Res>(
  client: grpc.Client,
  method: (req: Req, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: (e: grpc.ServiceError | null, r: Res) => void) => grpc.ClientUnaryCall,
  req: Req,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, req, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e, r) => (e ? reject(e) : resolve(r)));
  });
}
