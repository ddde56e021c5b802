/**
 * The bench's --hugepages: the arithmetic (objects per 2 MiB page, pages per run), the argument
 * parsing and reservation steps, the argv both sides get, and eal.huge_dir's checks. No timing.
 * The one test that mounts hugetlbfs reserves no page (a mount alone takes none) and needs root.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApplianceProcess } from '../../src/lab/appliance';
import { hugeDirProblem, parseConfig } from '../../src/config';
import { buildEalArgs } from '../../src/dataplane/eal';
import { growTarget, Hugepages, isHugefileOf, parseHugepagesArg, shrinkTarget } from '../../src/bench/hugepages';
import { RetraceRun } from '../../src/bench/retrace';
import {
  CONN_RECORD_BYTES,
  HUGE_PAGE,
  HUGEPAGE_MARGIN,
  MBUF_OBJ_BYTES,
  connTableBytes,
  hugepagesFor,
  mbufPoolBytes,
  perPageObjBytes,
  retraceMemoryMb,
  testpmdMemoryMb,
} from '../../src/bench/sizing';
import { needBytes } from '../../src/bench/cases/conn-scale';
import { testpmdArgs } from '../../src/bench/testpmd';

describe('sizing with 2 MiB pages', () => {
  it('packs 885 mbufs per page instead of 1 per 4 KiB page', () => {
    expect(perPageObjBytes(MBUF_OBJ_BYTES)).toBe(4096);
    expect(HUGE_PAGE / perPageObjBytes(MBUF_OBJ_BYTES, HUGE_PAGE)).toBeCloseTo(885, 9);
  });

  it('an mbuf pool needs less with hugepages; the conn table (one block, 128 B a conn) does not change', () => {
    const n = 1_000_000;
    expect(mbufPoolBytes(n) - mbufPoolBytes(n, true)).toBeCloseTo(n * (4096 - HUGE_PAGE / 885), 0);
    expect(connTableBytes(n).records).toBe(n * CONN_RECORD_BYTES);
  });

  it('memory_mb and -m follow the page size; pages cover -m plus the margin', () => {
    const huge = retraceMemoryMb({ mbufs: 65535, maxConns: 16384, lips: 1, huge: true });
    const small = retraceMemoryMb({ mbufs: 65535, maxConns: 16384, lips: 1 });
    expect(huge).toBeLessThan(small);
    expect(testpmdMemoryMb(49152, true)).toBe(Math.ceil(mbufPoolBytes(49152, true) / 2 ** 20) + 256);
    expect(hugepagesFor(449)).toBe(225 + HUGEPAGE_MARGIN);
    expect(hugepagesFor(450)).toBe(225 + HUGEPAGE_MARGIN);
  });

  it("conn-scale's memory check: the 500K locality level needs ~17 GiB on 4 KiB pages, ~10 GiB on 2 MiB", () => {
    const packets = 500_000 * 8;
    const maxConns = Math.ceil(500_000 * 1.25);
    expect(needBytes(packets, maxConns) / 2 ** 30).toBeGreaterThan(15.5);
    expect(needBytes(packets, maxConns, true) / 2 ** 30).toBeLessThan(10.5);
  });
});

describe('--hugepages arguments and reservation steps', () => {
  it('takes a count, "auto" or nothing', () => {
    expect(parseHugepagesArg('512')).toEqual({ mode: { pages: 512 }, consumed: true });
    expect(parseHugepagesArg('auto')).toEqual({ mode: 'auto', consumed: true });
    expect(parseHugepagesArg(undefined)).toEqual({ mode: 'auto', consumed: false });
    expect(parseHugepagesArg('--case')).toEqual({ mode: 'auto', consumed: false });
    expect(() => parseHugepagesArg('0')).toThrow(/count of 2 MiB pages/);
    expect(() => parseHugepagesArg('2M')).toThrow(/not "2M"/);
  });

  it('grows by what is missing, never shrinks while running, gives back what it added', () => {
    expect(growTarget(0, 0, 300)).toBe(300);
    expect(growTarget(300, 300, 200)).toBe(300);
    expect(growTarget(310, 300, 400)).toBe(410); // 10 pages someone else added stay theirs
    expect(shrinkTarget(410, 400)).toBe(10);
    expect(shrinkTarget(100, 400)).toBe(0);
  });

  it("removes one process's files only", () => {
    expect(isHugefileOf('rtbench-1-1map_0', 'rtbench-1-1')).toBe(true);
    expect(isHugefileOf('rtbench-1-1map_17', 'rtbench-1-1')).toBe(true);
    expect(isHugefileOf('rtbench-1-10map_0', 'rtbench-1-1')).toBe(false);
    expect(isHugefileOf('rtbench-1-1map_x', 'rtbench-1-1')).toBe(false);
  });

  it('testpmd gets --huge-dir instead of --no-huge, and a -m sized for 2 MiB pages', () => {
    const o = { pcap: '/p.pcap', packets: 16384, prefix: 'rtbench-1-0', emptyPcap: '/e.pcap' };
    const plain = testpmdArgs(o);
    const huge = testpmdArgs({ ...o, hugeDir: '/tmp/h/mnt' });
    expect(plain).toContain('--no-huge');
    expect(huge).not.toContain('--no-huge');
    expect(huge.slice(2, 4)).toEqual(['--huge-dir', '/tmp/h/mnt']);
    const mb = (a: string[]) => Number(a[a.indexOf('-m') + 1]);
    expect(mb(plain)).toBe(testpmdMemoryMb(16384 + 32768));
    expect(mb(huge)).toBe(testpmdMemoryMb(16384 + 32768, true));
    expect(huge.slice(huge.indexOf('--file-prefix'), huge.indexOf('--file-prefix') + 2)).toEqual(['--file-prefix', 'rtbench-1-0']);
  });

  it("retrace's config without --hugepages is what it was: no hugepages, no huge dir, no prefix", () => {
    const rr = new RetraceRun({ pcap: '/p.pcap', packets: 16384, maxConns: 16384, emptyPcap: '/e.pcap' });
    const cfg = parseConfig(rr.configYaml());
    expect(cfg.eal).toMatchObject({ hugepages: false, huge_dir: '', file_prefix: '', memory_mb: rr.memoryMb });
    expect(buildEalArgs(cfg, 1, 2)).toContain('--no-huge');
  });
});

describe('eal.huge_dir', () => {
  const yaml = (eal: string) => `eal: ${eal}\nports: [{name: a, device: net_ring0}]\n`;
  const err = (text: string) => {
    try {
      parseConfig(text);
    } catch (e) {
      return (e as Error).message.split('\n')[0];
    }
    return 'no error';
  };

  it('is passed as --huge-dir with hugepages, and absent by default', () => {
    const args = buildEalArgs(parseConfig(yaml('{hugepages: true, huge_dir: /mnt/huge}')), 1, 2);
    expect(args.slice(args.indexOf('--huge-dir'), args.indexOf('--huge-dir') + 2)).toEqual(['--huge-dir', '/mnt/huge']);
    expect(buildEalArgs(parseConfig(yaml('{hugepages: true}')), 1, 2)).not.toContain('--huge-dir');
  });

  it('is refused without hugepages, or when not an absolute path, naming the key', () => {
    expect(err(yaml('{huge_dir: /mnt/huge}'))).toBe(
      'config: eal.huge_dir: needs eal.hugepages: true (without hugepages EAL runs --no-huge and has no huge dir)',
    );
    expect(err(yaml('{hugepages: true, huge_dir: mnt/huge}'))).toMatch(/^config: eal\.huge_dir: must be "" or an absolute path/);
    expect(err(yaml('{hugepages: true, huge_dir: "/mnt/a b"}'))).toMatch(/^config: eal\.huge_dir: /);
  });

  it('must be a hugetlbfs mount (hugeDirProblem, checked at start)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-hugedir-'));
    try {
      expect(hugeDirProblem(path.join(dir, 'nope'))).toBe(`${path.join(dir, 'nope')} does not exist (mount hugetlbfs there first)`);
      expect(hugeDirProblem(dir, `proc /proc proc rw 0 0\n`)).toBe(`${dir} is not a mount point (mount -t hugetlbfs nodev ${dir})`);
      expect(hugeDirProblem(dir, `tmpfs ${dir} tmpfs rw 0 0\n`)).toBe(`${dir} is a tmpfs mount, not hugetlbfs`);
      expect(hugeDirProblem(dir, `tmpfs ${dir} tmpfs rw 0 0\nnodev ${dir} hugetlbfs rw,pagesize=2M 0 0\n`)).toBeUndefined();
      expect(hugeDirProblem('/proc')).toBe('/proc is a proc mount, not hugetlbfs');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('retrace serve exits 2 naming eal.huge_dir when it is not a hugetlbfs mount', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-hugedir-'));
    const app = new ApplianceProcess();
    try {
      app.start(yaml(`{hugepages: true, huge_dir: ${dir}}`));
      expect(await app.exitCode()).toBe(2);
      expect(app.output).toContain(`retrace: config: eal.huge_dir: ${dir} is not a mount point`);
    } finally {
      await app.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 30000);
});

const root = process.getuid?.() === 0;
(root ? describe : describe.skip)('a real hugetlbfs mount (root; reserves no page)', () => {
  it('is what retrace gets as eal.huge_dir, with a prefix of its own; release unmounts and removes it', () => {
    const logs: string[] = [];
    const h = Hugepages.open('auto', (s) => logs.push(s));
    const dir = h.dir;
    try {
      expect(hugeDirProblem(h.dir)).toBeUndefined();
      const rr = new RetraceRun({ pcap: '/p.pcap', packets: 16384, maxConns: 16384, emptyPcap: '/e.pcap', huge: h });
      const cfg = parseConfig(rr.configYaml());
      expect(cfg.eal).toMatchObject({ hugepages: true, huge_dir: h.dir, file_prefix: rr.filePrefix });
      expect(rr.memoryMb).toBe(retraceMemoryMb({ mbufs: rr.mbufs, maxConns: 16384, lips: rr.lips, huge: true }));
      const args = buildEalArgs(cfg, 1, 2);
      expect(args).not.toContain('--no-huge');
      expect(args).toEqual(expect.arrayContaining(['--huge-dir', h.dir, '--file-prefix', rr.filePrefix]));
      expect(h.state()).toMatchObject({ mode: 'auto', dir: h.dir, peakPages: 0 });
    } finally {
      h.release();
    }
    expect(fs.existsSync(dir)).toBe(false);
    expect(fs.readFileSync('/proc/mounts', 'utf8')).not.toContain(dir);
    expect(logs.at(-1)).toMatch(/^hugepages: released/);
  });

  // The page count goes to a file of the test's own standing in for nr_hugepages (the kernel's
  // would reserve real memory on a shared machine); the mount is real.
  const fakeNr = (n: number) => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-nr-')), 'nr_hugepages');
    fs.writeFileSync(file, `${n}\n`);
    return file;
  };
  const read = (f: string) => Number(fs.readFileSync(f, 'utf8'));

  it('grows by what each run needs and gives back exactly what it added', () => {
    const nr = fakeNr(10);
    const h = Hugepages.open('auto', () => undefined, nr);
    try {
      h.ensure(449, 'testpmd');
      expect(read(nr)).toBe(10 + hugepagesFor(449));
      h.ensure(300, 'retrace'); // fits in what is held
      expect(read(nr)).toBe(10 + hugepagesFor(449));
      fs.writeFileSync(nr, `${read(nr) + 5}\n`); // someone else adds 5 meanwhile
      h.ensure(1000, 'retrace');
      expect(read(nr)).toBe(15 + hugepagesFor(1000));
      expect(h.state().peakPages).toBe(hugepagesFor(1000));
      expect(h.heldBytes()).toBe(hugepagesFor(1000) * 2 ** 21);
    } finally {
      h.release();
    }
    expect(read(nr)).toBe(15);
    fs.rmSync(path.dirname(nr), { recursive: true, force: true });
  });

  it('a fixed count refuses a run that needs more, naming both numbers', () => {
    const nr = fakeNr(0);
    const h = Hugepages.open({ pages: 100 }, () => undefined, nr);
    try {
      expect(read(nr)).toBe(100);
      expect(() => h.ensure(150, 'testpmd')).not.toThrow();
      expect(() => h.ensure(449, 'testpmd')).toThrow(`--hugepages 100: testpmd with -m 449 needs ${hugepagesFor(449)} 2 MiB pages`);
    } finally {
      h.release();
    }
    expect(read(nr)).toBe(0);
    fs.rmSync(path.dirname(nr), { recursive: true, force: true });
  });
});
