/**
 * The EAL side of the configuration: the argv for rte_eal_init and the CPU sets behind --lcores
 * (main lcore on every CPU the process may use, workers pinned to the last ones).
 */
import fs from 'node:fs';
import os from 'node:os';
import { deviceKind, parseLcores, type Config } from '../config';

/**
 * CPUs this process may run on (its affinity, which reflects a container's cpuset), read from
 * /proc/self/status; all online CPUs if that cannot be read.
 */
export function allowedCpus(): number[] {
  try {
    const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) {
      const cpus = m[1].split(',').flatMap((part) => {
        const [a, b] = part.split('-').map(Number);
        return Array.from({ length: (b ?? a) - a + 1 }, (_, i) => a + i);
      });
      if (cpus.length > 0 && cpus.every(Number.isInteger)) return cpus;
    }
  } catch {
    // fall through
  }
  return Array.from({ length: Math.max(1, os.cpus().length) }, (_, i) => i);
}

/** A CPU list as DPDK writes sets: 0-3,6. */
function cpuSet(cpus: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length;) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j] + 1) j++;
    parts.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** CPU each worker (0-based index) is pinned to: the last W CPUs; wraps over CPUs 2..N if W > N-1. */
function workerCpus(workers: number, cpus: number[]): number[] {
  const n = cpus.length;
  const out: number[] = [];
  for (let i = 0; i < workers; i++) {
    if (n <= 1) out.push(cpus[0]);
    else if (workers <= n - 1) out.push(cpus[n - workers + i]);
    else out.push(cpus[1 + (i % (n - 1))]);
  }
  return out;
}

/**
 * The --lcores value: eal.lcores verbatim when set, else main lcore 0 allowed on every CPU the
 * process may use (rte_eal_init pins the calling Node thread to this set) and worker lcore i+1
 * pinned to one CPU each, the last ones of the set. `cpus` is a count (CPUs 0..n-1) or a list;
 * it defaults to the process's affinity, so a container's cpuset is honoured.
 */
export function lcoresArg(cfg: Config, cpus: number | number[] = allowedCpus()): string {
  if (cfg.eal.lcores !== '') return cfg.eal.lcores;
  const list = typeof cpus === 'number' ? Array.from({ length: Math.max(1, cpus) }, (_, i) => i) : [...cpus].sort((a, b) => a - b);
  const parts = [list.length === 1 ? `0@${list[0]}` : `0@(${cpuSet(list)})`];
  workerCpus(cfg.dataplane.workers, list).forEach((cpu, i) => parts.push(`${i + 1}@${cpu}`));
  return parts.join(',');
}

/** Lcore ids of the workers, in worker order (worker i → lcore i+1 unless eal.lcores says otherwise). */
export function workerLcores(cfg: Config): number[] {
  if (cfg.eal.lcores !== '') return parseLcores(cfg.eal.lcores).filter((id) => id !== 0);
  return Array.from({ length: cfg.dataplane.workers }, (_, i) => i + 1);
}

/** EAL file prefix actually used. */
export function filePrefix(cfg: Config, pid: number): string {
  return cfg.eal.file_prefix !== '' ? cfg.eal.file_prefix : `retrace-${pid}`;
}

/** The ethdev name of port i's kernel interface: a net_tap of its own, apart from any port's. */
export function kernelDevname(portIndex: number): string {
  return `net_tap_kni${portIndex}`;
}

/** argv for rte_eal_init (argv[0] = "retrace"). `cpus` as for lcoresArg. */
export function buildEalArgs(cfg: Config, pid: number, cpus: number | number[] = allowedCpus()): string[] {
  const args = ['retrace', '-m', String(cfg.eal.memory_mb)];
  if (!cfg.eal.hugepages) args.push('--no-huge');
  else if (cfg.eal.huge_dir !== '') args.push('--huge-dir', cfg.eal.huge_dir);
  args.push('--no-shconf', '--file-prefix', filePrefix(cfg, pid));
  args.push('--lcores', lcoresArg(cfg, cpus), '--main-lcore', '0');
  args.push('--log-level', cfg.eal.log_level);
  if (!cfg.eal.telemetry) args.push('--no-telemetry');
  const pci = cfg.ports.filter((p) => deviceKind(p.device) === 'pci');
  const vdevs = cfg.ports.filter((p) => deviceKind(p.device) === 'vdev');
  if (pci.length === 0) args.push('--no-pci');
  for (const p of pci) args.push('-a', p.device);
  for (const p of vdevs) args.push('--vdev', p.device);
  cfg.ports.forEach((p, i) => {
    if (p.kernel !== undefined) args.push('--vdev', `${kernelDevname(i)},iface=${p.kernel.name}`);
  });
  args.push(...cfg.eal.extra_args);
  return args;
}
