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
