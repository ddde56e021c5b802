/**
 * tcpdump as a lab probe: `tcpdump -i <dev> -nn -e -l -U --immediate-mode -w <file> [filter]`, inside a namespace
 * (`ip netns exec`) or in the root namespace for the appliance-side veth ends. start() resolves once
 * tcpdump says it is listening, so nothing sent afterwards is missed; stop() sends SIGTERM to its
 * PID, waits for the exit, and returns the packets decoded from the file (pcap.ts) together with
 * tcpdump's own one-line rendering of each.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { parsePcap, type CapturedPacket } from './pcap';
import { runAsync } from './sh';

export interface CaptureOptions {
  /** How long to wait for "listening on" (default 10 s). */
  startTimeoutMs?: number;
  /** Snap length in bytes (default: tcpdump's, the whole frame). */
  snaplen?: number;
}

export class Capture {
  readonly pid: number;
  private stderr = '';
  private readonly exited: Promise<void>;
  private result: Promise<CapturedPacket[]> | undefined;

  private constructor(
    private readonly child: ChildProcess,
    /** The pcap file being written. */
    readonly file: string,
    /** `<namespace>/<dev>` or `root/<dev>`, for messages. */
    readonly where: string,
  ) {
    this.pid = child.pid!;
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
  }

  /**
   * Starts tcpdump on `dev` in namespace `ns` (undefined → root namespace) and waits until it is
   * listening. Rejects (and leaves nothing running) if tcpdump exits or does not get there in time.
   */
  static start(ns: string | undefined, dev: string, filter: string, file: string, opts: CaptureOptions = {}): Promise<Capture> {
    // --immediate-mode: without it libpcap hands packets over in TPACKET_V3 blocks that retire
    // only when full or after the ~1 s buffer timeout, and SIGTERM discards the open block, so
    // a short exchange just before stop() would be missing from the file.
    // -Z root: do not drop privileges, the file lives in a root-only directory.
    // -B 32768 (KiB): the kernel's capture buffer. The 2 MiB default overflowed under CI load while
    // tcpdump wrote a TCP echo of megabytes (64 KiB GSO frames on veth), and the kernel then dropped
    // the short exchange that followed (CI: 35 of 42 UDP packets captured on rs2).
    const args = ['-i', dev, '-nn', '-e', '-l', '-U', '--immediate-mode', '-B', '32768', '-Z', 'root', '-w', file];
    if (opts.snaplen) args.push('-s', String(opts.snaplen));
    if (filter.trim()) args.push(filter);
    const argv = ns ? ['ip', 'netns', 'exec', ns, 'tcpdump', ...args] : ['tcpdump', ...args];
    // `ip netns exec` execs tcpdump in place, so the child's PID is tcpdump's own.
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    const cap = new Capture(child, file, `${ns ?? 'root'}/${dev}`);
    return new Promise((resolve, reject) => {
      const timeoutMs = opts.startTimeoutMs ?? 10000;
      let settled = false;
      const onError = (e: Error): void => fail(`could not start (${e.message})`);
      const onExit = (code: number | null, sig: NodeJS.Signals | null): void => fail(`exited (${sig ?? code}) before listening`);
      const settle = (): void => {
        settled = true;
        clearTimeout(timer);
        child.removeListener('error', onError);
        child.removeListener('exit', onExit);
      };
      const fail = (why: string): void => {
        if (settled) return;
        settle();
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        reject(new Error(`tcpdump on ${cap.where} ${why}: ${cap.stderr.trim()}`));
      };
      const timer = setTimeout(() => fail(`not listening after ${timeoutMs} ms`), timeoutMs);
      child.on('error', onError);
      child.on('exit', onExit);
      child.stderr!.on('data', (d: Buffer) => {
        cap.stderr += d.toString();
        if (!settled && /listening on /.test(cap.stderr)) {
          settle();
          resolve(cap);
        }
      });
    });
  }

  /** True until tcpdump has exited. */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Stops tcpdump (after `settleMs`, default 50; SIGTERM by PID, SIGKILL after 5 s) and returns
   * what it captured. Idempotent: later calls return the same packets.
   */
  stop(opts: { settleMs?: number } = {}): Promise<CapturedPacket[]> {
    this.result ??= this.finish(opts.settleMs ?? 50);
    return this.result;
  }

  private async finish(settleMs: number): Promise<CapturedPacket[]> {
    if (this.running) {
      // Let packets already on the wire (a reply in flight, a frame in the ring) reach the file.
      if (settleMs > 0) await new Promise((r) => setTimeout(r, settleMs));
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.exited,
        new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            try {
              process.kill(this.pid, 'SIGKILL');
            } catch {
              /* gone */
            }
            resolve();
          }, 5000);
        }),
      ]);
      clearTimeout(timer);
      await this.exited;
    }
    return readCapture(this.file);
  }

  /** For LabTopology.destroy(): the child handle, so it can be killed synchronously. */
  get process(): ChildProcess {
    return this.child;
  }
}

/** Decodes a pcap file and attaches tcpdump's text line to each packet. Missing file → []. */
export async function readCapture(file: string): Promise<CapturedPacket[]> {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    return [];
  }
  const packets = parsePcap(buf);
  if (packets.length === 0) return [];
  const text = await runAsync('tcpdump', ['-r', file, '-nn', '-e'], { timeoutMs: 30000 });
  const lines = text.stdout.split('\n').filter((l) => l.trim() !== '');
  // tcpdump prints one line per packet without -v; if that ever fails to hold, keep the decoded
  // fields and leave the summaries that cannot be paired reliably empty.
  const paired = lines.length === packets.length;
  return packets.map((p, i) => ({ ...p, summary: paired ? lines[i] : '' }));
}
