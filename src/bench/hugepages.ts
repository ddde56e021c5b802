/**
 * `--hugepages`: 2 MiB hugepages for both sides of the benchmark (retrace and testpmd), which
 * otherwise run `--no-huge` (4 KiB pages). The machine is shared and starts with no hugepage
 * reserved and no hugetlbfs mounted, so a session here:
 *
 * - mounts hugetlbfs (pagesize=2M, mode 0700) on a directory of its own under the temporary
 *   directory, `<base>/mnt`, and gives it to every EAL process as --huge-dir (retrace through
 *   eal.huge_dir), each with a --file-prefix of its own;
 * - raises /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages by the pages it needs, reads
 *   back what the kernel granted (it grants fewer when free memory is short or fragmented) and
 *   fails naming both numbers when that is too few;
 * - removes a process's hugepage files (`<prefix>map_*`) once it has exited, so that the next
 *   process gets the same pages;
 * - gives everything back in release(): unmount, remove the directory, and lower nr_hugepages by
 *   the pages it added. Lowering by what it added rather than writing the old value back leaves
 *   alone any change someone else made meanwhile; when nobody did, it is the old value.
 *
 * release() is synchronous so that the signal handlers and the process's 'exit' handler can call
 * it. Against SIGKILL, which runs no handler, a detached watchdog shell waits for this process to
 * end and then does the same from the page count kept in `<base>/added`; a normal release removes
 * <base> and stops the watchdog by its PID.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { hugepagesFor } from './sizing';

export const NR_HUGEPAGES_2M = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';

/** `--hugepages` on the bench's command line: a fixed reservation of `pages`, or grown as needed. */
export type HugepageMode = { pages: number } | 'auto';

/**
 * Parses the value after `--hugepages`: a page count, or (when the next argument is absent or is
 * another option) 'auto'. Returns the mode and whether the next argument was consumed.
 */
export function parseHugepagesArg(next: string | undefined): { mode: HugepageMode; consumed: boolean } {
  if (next === undefined || next.startsWith('--')) return { mode: 'auto', consumed: false };
  if (next === 'auto') return { mode: 'auto', consumed: true };
  if (!/^[1-9][0-9]{0,6}$/.test(next)) throw new Error(`--hugepages takes a count of 2 MiB pages (1-9999999) or nothing, not "${next}"`);
  return { mode: { pages: Number(next) }, consumed: true };
}

/**
 * What to write to nr_hugepages to hold `need` pages of our own when we hold `held` and the
 * kernel has `current`: unchanged when enough are held already.
 */
export function growTarget(current: number, held: number, need: number): number {
  return need > held ? current + (need - held) : current;
}

/** What to write to nr_hugepages to give back the `held` pages we added. */
export function shrinkTarget(current: number, held: number): number {
  return Math.max(0, current - held);
}

/** Is `name` a hugepage file of the EAL process with --file-prefix `prefix` (`<prefix>map_<n>`)? */
export function isHugefileOf(name: string, prefix: string): boolean {
  return name.startsWith(`${prefix}map_`) && /^[0-9]+$/.test(name.slice(prefix.length + 4));
}

export interface HugepageState {
  mode: HugepageMode;
  dir: string;
  /** nr_hugepages when the session started. */
  nrBefore: number;
  /** The most this session held at once. */
  peakPages: number;
}

const WATCHDOG = `
while kill -0 "$1" 2>/dev/null; do sleep 1; done
[ -d "$2" ] || exit 0
umount "$2/mnt" 2>/dev/null || umount -l "$2/mnt" 2>/dev/null
n=$(cat "$2/added" 2>/dev/null || echo 0)
cur=$(cat "$3")
t=$((cur - n)); [ "$t" -lt 0 ] && t=0
echo "$t" > "$3"
rm -rf "$2"
`;

export class Hugepages {
  /** The hugetlbfs mount: EAL's --huge-dir. */
  readonly dir: string;
  private readonly base: string;
  private readonly nrBefore: number;
  /** Pages this session added to nr_hugepages and has not given back. */
  private held = 0;
  private peak = 0;
  private mounted = false;
  private released = false;
  private watchdog: number | undefined;

  private constructor(
    readonly mode: HugepageMode,
    private readonly log: (s: string) => void,
    private readonly sysfs: string,
  ) {
    this.nrBefore = readCount(sysfs);
    this.base = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-bench-huge-'));
    this.dir = path.join(this.base, 'mnt');
  }

  /** Mounts the directory and, for a fixed count, reserves the pages. Throws (having released) on failure. */
  static open(mode: HugepageMode, log: (s: string) => void, sysfs = NR_HUGEPAGES_2M): Hugepages {
    if (!fs.existsSync(sysfs)) throw new Error(`--hugepages: ${sysfs} does not exist (no 2 MiB hugepage support in this kernel)`);
    const h = new Hugepages(mode, log, sysfs);
    try {
      fs.writeFileSync(path.join(h.base, 'added'), '0\n');
      fs.mkdirSync(h.dir, { mode: 0o700 });
      execFileSync('mount', ['-t', 'hugetlbfs', '-o', 'pagesize=2M,mode=0700', 'nodev', h.dir], { stdio: ['ignore', 'ignore', 'pipe'] });
      h.mounted = true;
      const wd = spawn('sh', ['-c', WATCHDOG, 'retrace-bench-huge-watchdog', String(process.pid), h.base, sysfs], { detached: true, stdio: 'ignore' });
      wd.unref();
      h.watchdog = wd.pid;
      log(`hugepages: hugetlbfs (2 MiB) mounted on ${h.dir}; nr_hugepages was ${h.nrBefore}`);
      if (mode !== 'auto') h.hold(mode.pages);
    } catch (e) {
      h.release();
      throw e;
    }
    return h;
  }

  state(): HugepageState {
    return { mode: this.mode, dir: this.dir, nrBefore: this.nrBefore, peakPages: this.peak };
  }

  /**
   * Makes sure an EAL process with -m `memoryMb` finds its pages: with a fixed count, checks
   * that it is enough; otherwise grows the reservation to fit (it never shrinks before release,
   * since the processes run one after the other and the next is usually the same size).
   */
  ensure(memoryMb: number, who: string): void {
    const need = hugepagesFor(memoryMb);
    if (this.mode !== 'auto') {
      if (need > this.mode.pages)
        throw new Error(
          `--hugepages ${this.mode.pages}: ${who} with -m ${memoryMb} needs ${need} 2 MiB pages; give --hugepages ${need} or more (or no count, to reserve as needed)`,
        );
      return;
    }
    this.hold(need);
  }

  /**
   * Bytes of the pages this session holds. Between runs they are all free, but free hugepages are
   * not in MemAvailable: a memory check made then counts them back in.
   */
  heldBytes(): number {
    return this.held * 2 * 2 ** 20;
  }

  /** Removes the hugepage files an exited EAL process with --file-prefix `prefix` left behind. */
  cleanPrefix(prefix: string): void {
    if (!this.mounted) return;
    for (const name of fs.readdirSync(this.dir)) if (isHugefileOf(name, prefix)) fs.rmSync(path.join(this.dir, name), { force: true });
  }

  /** Gives everything back; safe to call more than once, and from signal and exit handlers. */
  release(): void {
    if (this.released) return;
    this.released = true;
    const problems: string[] = [];
    if (this.mounted) {
      try {
        execFileSync('umount', [this.dir], { stdio: ['ignore', 'ignore', 'pipe'] });
      } catch (e) {
        // A process still maps pages there (one the bench could not stop): detach the mount now,
        // the kernel frees its pages when the last user goes.
        try {
          execFileSync('umount', ['-l', this.dir], { stdio: ['ignore', 'ignore', 'pipe'] });
          problems.push(`${this.dir} was busy, lazily unmounted (${firstLine(e)})`);
        } catch (e2) {
          problems.push(`could not unmount ${this.dir}: ${firstLine(e2)}`);
        }
      }
      this.mounted = false;
    }
    if (this.held > 0) {
      try {
        const cur = readCount(this.sysfs);
        fs.writeFileSync(this.sysfs, `${shrinkTarget(cur, this.held)}\n`);
        this.held = 0;
      } catch (e) {
        problems.push(`could not lower ${this.sysfs} by ${this.held}: ${firstLine(e)}`);
      }
    }
    if (problems.length === 0 || !problems.some((p) => p.startsWith('could not'))) {
      fs.rmSync(this.base, { recursive: true, force: true });
      if (this.watchdog !== undefined) {
        try {
          process.kill(this.watchdog, 'SIGTERM');
        } catch {
          // already gone
        }
      }
    }
    // Otherwise <base> stays, and the watchdog retries once this process has gone.
    const now = readCount(this.sysfs);
    // Lowering nr_hugepages below what is mapped turns the mapped pages into surplus ones, which the
    // kernel frees as their last user exits: after a signal, the process just SIGKILLed.
    const surplus = now > this.nrBefore ? ` until the processes being stopped have exited` : '';
    this.log(`hugepages: released (nr_hugepages ${now}${surplus}, ${this.nrBefore} before the session)${problems.length ? `; ${problems.join('; ')}` : ''}`);
  }

  /** Raises our share of nr_hugepages to `need` pages (never lowers it). */
  private hold(need: number): void {
    if (this.released) throw new Error('hugepages already released');
    const cur = readCount(this.sysfs);
    const target = growTarget(cur, this.held, need);
    if (target === cur) return;
    fs.writeFileSync(this.sysfs, `${target}\n`);
    const got = readCount(this.sysfs);
    // What the kernel gave us; it may also have given none, or (someone else writing) any number.
    const granted = Math.max(0, Math.min(got - cur, target - cur));
    this.held += granted;
    fs.writeFileSync(path.join(this.base, 'added'), `${this.held}\n`);
    this.peak = Math.max(this.peak, this.held);
    if (this.held < need) {
      const avail = /^MemAvailable:\s+(\d+)/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
      throw new Error(
        `--hugepages: needed ${need} 2 MiB pages (${need * 2} MiB), the kernel granted ${this.held} (nr_hugepages ${cur} -> asked ${target}, got ${got}; ` +
          `MemAvailable ${avail ? `${Math.round(Number(avail[1]) / 1024)} MiB` : 'unknown'}): not enough free or unfragmented memory (what was granted is given back when the bench ends)`,
      );
    }
    this.log(`hugepages: holding ${this.held} pages (${this.held * 2} MiB; nr_hugepages ${got})`);
  }
}

/**
 * MiB of 2 MiB hugepages in use on the machine right now (nr_hugepages - free_hugepages): read
 * while a run holds its memory, it shows that the process took its pages from hugetlbfs.
 */
export function hugepagesInUseMiB(dir = path.dirname(NR_HUGEPAGES_2M)): number {
  try {
    return 2 * (readCount(path.join(dir, 'nr_hugepages')) - readCount(path.join(dir, 'free_hugepages')));
  } catch {
    return NaN;
  }
}

function readCount(file: string): number {
  const n = Number(fs.readFileSync(file, 'utf8').trim());
  if (!Number.isInteger(n) || n < 0) throw new Error(`${file}: not a page count`);
  return n;
}

function firstLine(e: unknown): string {
  const err = e as { stderr?: Buffer; message?: string };
  return (err.stderr?.toString().trim() || err.message || String(e)).split('\n')[0];
}
