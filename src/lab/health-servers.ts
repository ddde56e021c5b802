/**
 * Real servers that health-check tests stop and start one at a time, in the lab's real-server
 * namespaces: the lab's kernel-socket echo server (TCP/UDP, plus its identity port), Python's
 * http.server, and a grpc.health.v1 server (grpc-health-server.ts). Each is a child process of its
 * own, so a test can kill one real's server (SIGKILL: a crash, no goodbye) and start it again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { onJsonLines } from './netns';
import { killSync } from './sh';
import type { LabTopology, RealServer } from './topology';

export type ServerKind = 'echo' | 'http' | 'grpc';

const DIST_LAB = path.resolve(__dirname, '..', '..', 'dist', 'lab');

export class HealthServer {
  private child: ChildProcess | undefined;
  private dir: string | undefined;

  constructor(
    private readonly ns: string,
    readonly rs: RealServer,
    readonly kind: ServerKind,
    readonly port: number,
  ) {}

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  private command(): string[] {
    switch (this.kind) {
      case 'echo':
        // TCP and UDP echo on port, identity (the server's name) on port + 1.
        return [
          process.execPath,
          path.join(DIST_LAB, 'echo-server.js'),
          '--name',
          this.rs,
          '--tcp',
          String(this.port),
          '--udp',
          String(this.port),
          '--who',
          String(this.port + 1),
          '--exit-on-stdin-eof',
        ];
      case 'grpc':
        return [process.execPath, path.join(DIST_LAB, 'grpc-health-server.js'), '--port', String(this.port)];
      case 'http':
        // -u: the "Serving HTTP" line is the readiness signal, unbuffered.
        // An empty directory: GET / answers 200 with an empty listing.
        this.dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-http-'));
        return ['python3', '-u', '-m', 'http.server', String(this.port), '--bind', '0.0.0.0', '--directory', this.dir];
    }
  }

  /** Starts the server; resolves once it listens. */
  start(timeoutMs = 15000): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', this.ns, ...this.command()], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    child.stdin.on('error', () => undefined);
    return new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`${this.kind} server on ${this.rs}:${this.port} not ready after ${timeoutMs} ms: ${out}`)), timeoutMs);
      const ready = () => {
        clearTimeout(timer);
        resolve();
      };
      if (this.kind === 'http') {
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('Serving HTTP')) ready();
        });
      } else {
        onJsonLines<{ event: string }>(child, (ev) => {
          if (ev.event === 'ready') ready();
        });
      }
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.once('exit', (code, sig) => {
        clearTimeout(timer);
        reject(new Error(`${this.kind} server on ${this.rs}:${this.port} exited (${sig ?? code}): ${out}`));
      });
    });
  }

  /** Kills the server by its PID, as a crash would (SIGKILL), and waits until it is gone. */
  async kill(): Promise<void> {
    const c = this.child;
    this.child = undefined;
    if (c?.pid !== undefined && c.exitCode === null && c.signalCode === null) {
      const gone = new Promise((r) => c.once('exit', r));
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      await gone;
    }
    c?.stdin?.destroy();
  }

  /** Kills the server and removes its scratch directory. */
  dispose(): void {
    const c = this.child;
    this.child = undefined;
    if (c?.pid !== undefined && c.exitCode === null && c.signalCode === null) killSync(c.pid, 0);
    if (this.dir !== undefined) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Servers started per (real server, kind, port); stop() kills them all. */
export class HealthServers {
  private readonly servers: HealthServer[] = [];

  constructor(private readonly lab: LabTopology) {}

  async start(rs: RealServer, kind: ServerKind, port: number): Promise<HealthServer> {
    const s = new HealthServer(this.lab.ns(rs), rs, kind, port);
    this.servers.push(s);
    await s.start();
    return s;
  }

  /** Kills every server by PID. Never throws. */
  stop(): void {
    for (const s of this.servers.splice(0)) s.dispose();
  }
}
