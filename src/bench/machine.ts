/** What the benchmark ran on: CPU, cores, memory, kernel, DPDK, and how busy the machine was. */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  dpdk: string;
  node: string;
  hostname: string;
}

export function machineInfo(): MachineInfo {
  let cpuModel = 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1].trim();
  } catch {
    // keep unknown
  }
  let dpdk = 'unknown';
  try {
    dpdk = execFileSync('pkg-config', ['--modversion', 'libdpdk'], { encoding: 'utf8' }).trim();
  } catch {
    // keep unknown
  }
  return {
    cpuModel,
    cores: os.cpus().length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    dpdk: `DPDK ${dpdk}`,
    node: process.version,
    hostname: os.hostname(),
  };
}

/** MemAvailable from /proc/meminfo, in bytes. */
export function memAvailable(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) * 1024 : os.freemem();
}

/** Resident set of a process in bytes (VmRSS), or NaN. */
export function rssBytes(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

export function loadAvg(): [number, number, number] {
  const [a, b, c] = os.loadavg();
  return [a, b, c];
}

/** Aggregate CPU jiffies from /proc/stat: total and idle, per CPU ("cpu0", "cpu1", ...). */
export function cpuTimes(): Record<string, { total: number; idle: number; steal: number }> {
  const out: Record<string, { total: number; idle: number; steal: number }> = {};
  for (const line of fs.readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^(cpu\d*)\s+(.*)$/.exec(line);
    if (!m) continue;
    const v = m[2].trim().split(/\s+/).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    out[m[1]] = { total, idle: v[3] + (v[4] ?? 0), steal: v[7] ?? 0 };
  }
  return out;
}

/** CPU seconds (user + system) a thread has used so far, or NaN. */
export function threadCpuSeconds(pid: number, tid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    // Fields after the parenthesised comm: state is field 3; utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / clockTicks();
  } catch {
    return NaN;
  }
}

let ticks: number | undefined;
function clockTicks(): number {
  if (ticks === undefined) {
    try {
      ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

/** CPU seconds (user + system, all threads) a process has used so far, or NaN. */
export function processCpuSeconds(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / clockTicks();
  } catch {
    return NaN;
  }
}

function busySeconds(): number {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: busy = all but idle and iowait (steal
  // included: time the hypervisor gave to someone else).
  const busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] ?? 0);
  return busy / clockTicks();
}

/**
 * How much CPU other work took while we measured: machine-wide busy time minus the CPU time of
 * our own processes (the benchmark, the appliance or testpmd), in cores.
 */
export class ForeignCpu {
  private t0 = 0;
  private busy0 = 0;
  private own0 = 0;
  constructor(private readonly pids: () => number[]) {}

  private own(): number {
    return [process.pid, ...this.pids()]
      .map(processCpuSeconds)
      .filter(Number.isFinite)
      .reduce((a, b) => a + b, 0);
  }

  start(): this {
    this.t0 = Number(process.hrtime.bigint()) / 1e9;
    this.busy0 = busySeconds();
    this.own0 = this.own();
    return this;
  }

  /** Cores' worth of CPU used by anything but our processes since start(). */
  stop(): number {
    const dt = Number(process.hrtime.bigint()) / 1e9 - this.t0;
    const other = busySeconds() - this.busy0 - (this.own() - this.own0);
    return Math.max(0, other / dt);
  }
}
