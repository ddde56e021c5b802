/**
 * The control thread's responsiveness while something else loads it, measured from a process of
 * its own (`node dist/bench/responsiveness.js '<json options>'`), so that a busy benchmark process
 * (reading an event stream, say) does not delay the probe's own calls: a unary call (GetTimeouts,
 * 2 s deadline) every `gapMs` after the previous one answered, and beside it a health probe
 * (grpc.health.v1 Check, 1 s deadline, a kubelet probe's default) every 100 ms on its own channel.
 * The child prints one JSON line with the result when it gets SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { LoadBalancerServiceClient } from '../gen/retrace/v1/balancer';
import { track } from './children';
import { now, percentile, sleep } from './stats';

export interface ResponsivenessOptions {
  address: string;
  /** Pause after each unary answer, ms (0: back to back). */
  gapMs: number;
}

export interface ResponsivenessResult {
  calls: number;
  errors: number;
  p50: number;
  p99: number;
  max: number;
  probes: number;
  probesOk: number;
  probeP99: number;
}

/** The probe as a child process; stop() (idempotent) returns what it measured. */
export class ResponsivenessProbe {
  private readonly child: ChildProcess;
  private out = '';
  private readonly ready: Promise<void>;
  private readonly exited: Promise<void>;
  private result: Promise<ResponsivenessResult> | undefined;

  constructor(opts: ResponsivenessOptions) {
    this.child = spawn(process.execPath, [__filename, JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'inherit'] });
    track(this.child);
    this.ready = new Promise((resolve, reject) => {
      this.child.stdout!.on('data', (d: Buffer) => {
        this.out += d.toString();
        if (this.out.startsWith('ready\n')) resolve();
      });
      this.child.once('exit', (code) => reject(new Error(`responsiveness probe exited (${code}) before it was ready`)));
    });
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
  }

  started(): Promise<void> {
    return this.ready;
  }

  stop(): Promise<ResponsivenessResult> {
    this.result ??= (async () => {
      this.child.kill('SIGTERM');
      await this.exited;
      const line = this.out.split('\n').find((l) => l.startsWith('{'));
      if (line === undefined) throw new Error(`responsiveness probe printed no result: ${this.out}`);
      return JSON.parse(line) as ResponsivenessResult;
    })();
    return this.result;
  }
}

function main(): void {
  const o = JSON.parse(process.argv[2]) as ResponsivenessOptions;
  const creds = grpc.credentials.createInsecure();
  const HealthClient = grpc.makeGenericClientConstructor(healthService, 'Health');
  const health = new HealthClient(o.address, creds);
  const lb = new LoadBalancerServiceClient(o.address, creds);
  const unaryMs: number[] = [];
  const probeMs: number[] = [];
  let errors = 0;
  let probes = 0;
  let probesOk = 0;
  let stopped = false;

  const probeLoop = async () => {
    while (!stopped) {
      const t = now();
      await new Promise<void>((resolve) => {
        health.check({ service: '' }, { deadline: Date.now() + 1000 }, (err: grpc.ServiceError | null, res: { status: string | number }) => {
          probes++;
          if (err === null && (res.status === 'SERVING' || res.status === 1)) probesOk++;
          probeMs.push((now() - t) * 1000);
          resolve();
        });
      });
      const wait = t + 0.1 - now();
      if (wait > 0) await sleep(wait * 1000);
    }
  };
  const unaryLoop = async () => {
    while (!stopped) {
      const t = now();
      await new Promise<void>((resolve) => {
        lb.getTimeouts({}, new grpc.Metadata(), { deadline: Date.now() + 2000 }, (err) => {
          if (err !== null) errors++;
          unaryMs.push((now() - t) * 1000);
          resolve();
        });
      });
      if (o.gapMs > 0) await sleep(o.gapMs);
    }
  };
  const loops = Promise.all([probeLoop(), unaryLoop()]);
  process.once('SIGTERM', () => {
    stopped = true;
    void loops.then(() => {
      health.close();
      lb.close();
      const r: ResponsivenessResult = {
        calls: unaryMs.length,
        errors,
        p50: percentile(unaryMs, 50),
        p99: percentile(unaryMs, 99),
        max: Math.max(...unaryMs),
        probes,
        probesOk,
        probeP99: percentile(probeMs, 99),
      };
      process.stdout.write(`${JSON.stringify(r)}\n`, () => process.exit(0));
    });
  });
  process.stdout.write('ready\n');
}

if (require.main === module) main();
