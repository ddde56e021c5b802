/**
 * The baseline: dpdk-testpmd in macswap mode on the same pcap and the same core layout as retrace
 * (main lcore 0, one forwarding lcore on CPU 1; port 0 = net_pcap replaying the file forever,
 * port 1 = net_null that drops what it is given). testpmd prints its port statistics every second
 * (--stats-period=1); we read port 0's Rx-pps (what the forwarding core pulled through the pcap
 * port) and port 1's Tx-pps, skip the warm-up periods and keep the rest. Stopped with SIGINT by PID.
 */
import { spawn } from 'node:child_process';
import { track } from './children';
import { ForeignCpu, threadCpuSeconds } from './machine';
import { workerTid } from './profile';
import { testpmdMemoryMb } from './sizing';
import { now } from './stats';

export interface TestpmdResult {
  /** Port 0 Rx-pps per stats period after warm-up. */
  rxPps: number[];
  /** Port 1 Tx-pps per stats period after warm-up. */
  txPps: number[];
  /** The command line, for the report. */
  argv: string[];
  /** Seconds from spawn to the first non-zero rate (pcap loading included). */
  startupS: number;
  /** Share of one CPU the forwarding lcore thread got during the measured periods (1 = all). */
  cpuShare: number;
  /** Cores' worth of CPU other work used meanwhile (see ForeignCpu). */
  foreignCores: number;
}

/**
 * What port 1 is. `pcap`: net_pcap reading a pcap that holds no packet and, given no tx argument,
 * dropping what it transmits — the sink retrace uses (see retrace.ts). `null`: net_null,no-rx=1.
 */
export type Sink = 'pcap' | 'null';

export interface TestpmdOptions {
  pcap: string;
  packets: number;
  warmupS: number;
  seconds: number;
  /** Unique EAL --file-prefix. */
  prefix: string;
  /** Port 1 (default pcap; emptyPcap is required then). */
  sink?: Sink;
  emptyPcap?: string;
  /** A hugetlbfs mount: EAL takes 2 MiB hugepages from it (--huge-dir) instead of running --no-huge. */
  hugeDir?: string;
  binary?: string;
}

/** mbufs testpmd gets for a pcap of `packets` frames. */
export function testpmdMbufs(packets: number): number {
  // infinite_rx copies the whole pcap into mbufs of the port's pool at queue setup; the pool also
  // needs room for descriptors, the per-lcore caches and bursts in flight.
  return packets + 32768;
}

/** testpmd's argv for a pcap holding `packets` frames. */
export function testpmdArgs(o: Pick<TestpmdOptions, 'pcap' | 'packets' | 'prefix' | 'sink' | 'emptyPcap' | 'hugeDir'>): string[] {
  const mbufs = testpmdMbufs(o.packets);
  const memMb = testpmdMemoryMb(mbufs, o.hugeDir !== undefined);
  return [
    '-l',
    '0,1',
    ...(o.hugeDir !== undefined ? ['--huge-dir', o.hugeDir] : ['--no-huge']),
    '-m',
    String(memMb),
    '--no-pci',
    '--no-shconf',
    '--file-prefix',
    o.prefix,
    '--vdev',
    `net_pcap0,rx_pcap=${o.pcap},infinite_rx=1`,
    '--vdev',
    o.sink === 'null' ? 'net_null0,no-rx=1' : `net_pcap1,rx_pcap=${o.emptyPcap}`,
    '--',
    '--forward-mode=macswap',
    '--auto-start',
    '--stats-period=1',
    '--nb-cores=1',
    `--total-num-mbufs=${mbufs}`,
  ];
}

/** Parses testpmd's periodic statistics: [{port, rxPps, txPps}] in output order. */
export function parseTestpmdStats(text: string): { port: number; rxPps: number; txPps: number }[] {
  const out: { port: number; rxPps: number; txPps: number }[] = [];
  const re = /NIC statistics for port (\d+)[\s\S]*?Rx-pps:\s+(\d+)[\s\S]*?Tx-pps:\s+(\d+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) out.push({ port: Number(m[1]), rxPps: Number(m[2]), txPps: Number(m[3]) });
  return out;
}

export function runTestpmd(o: TestpmdOptions): Promise<TestpmdResult> {
  const argv = testpmdArgs(o);
  const bin = o.binary ?? 'dpdk-testpmd';
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    let out = '';
    let startupS = NaN;
    let stopping = false;
    let cpu0: { t: number; cpu: number; tid: number; foreign: ForeignCpu } | undefined;
    let cpuShare = NaN;
    let foreignCores = NaN;
    let killTimer: NodeJS.Timeout | undefined;
    // Generous: loading a multi-million packet pcap into mbufs takes a while.
    const deadline = setTimeout(
      () => finish(new Error(`testpmd produced no usable statistics in time:\n${tail(out)}`)),
      (o.warmupS + o.seconds) * 1000 + 180000,
    );
    const samples = (): { rx: number[]; tx: number[] } => {
      const st = parseTestpmdStats(out);
      const rx0 = st.filter((s) => s.port === 0).map((s) => s.rxPps);
      const tx1 = st.filter((s) => s.port === 1).map((s) => s.txPps);
      // Periods before traffic (pcap loading, the first "since last show" of 0) do not count.
      const first = rx0.findIndex((x) => x > 0);
      if (first < 0) return { rx: [], tx: [] };
      if (Number.isNaN(startupS)) startupS = (Date.now() - t0) / 1000;
      const rx = rx0.slice(first + o.warmupS);
      if (rx.length > 0 && cpu0 === undefined && child.pid !== undefined) {
        const tid = workerTid(child.pid);
        const pid = child.pid;
        if (tid !== undefined) cpu0 = { t: now(), cpu: threadCpuSeconds(pid, tid), tid, foreign: new ForeignCpu(() => [pid]).start() };
      }
      return { rx, tx: tx1.slice(first + o.warmupS) };
    };
    const finish = (err?: Error): void => {
      clearTimeout(deadline);
      if (cpu0 !== undefined && child.pid !== undefined && Number.isNaN(cpuShare)) {
        cpuShare = (threadCpuSeconds(child.pid, cpu0.tid) - cpu0.cpu) / (now() - cpu0.t);
        foreignCores = cpu0.foreign.stop();
      }
      if (!stopping && child.exitCode === null && child.signalCode === null) {
        stopping = true;
        child.kill('SIGINT');
        killTimer = setTimeout(() => child.kill('SIGKILL'), 15000);
      }
      const done = (): void => {
        if (killTimer) clearTimeout(killTimer);
        if (err) return reject(err);
        const s = samples();
        resolve({ rxPps: s.rx.slice(0, o.seconds), txPps: s.tx.slice(0, o.seconds), argv: [bin, ...argv], startupS, cpuShare, foreignCores });
      };
      if (child.exitCode !== null || child.signalCode !== null) done();
      else child.once('exit', done);
    };
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!stopping && samples().rx.length >= o.seconds) finish();
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', (e) => finish(e));
    child.on('exit', (code, signal) => {
      if (!stopping) finish(new Error(`testpmd exited early (code ${code}, signal ${signal}):\n${tail(out)}`));
    });
  });
}

function tail(s: string): string {
  return s.split('\n').slice(-30).join('\n');
}
