/**
 * Static checks of deploy/Dockerfile (test/deploy/image.test.ts builds and runs it): base images
 * pinned to a major version, stages and COPY sources exist, the build context filter lets in
 * exactly what is copied, the runtime stage installs a Debian package for every DPDK library the
 * addon links, and the entrypoint is the CLI. Also the BGP sidecar image's Dockerfile.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { readYamlDocs, type Obj } from './k8s-yaml';

const ROOT = path.resolve(__dirname, '..', '..');

interface Instr {
  op: string;
  args: string;
  line: number;
}

/** Instructions of a Dockerfile: comments dropped, continuation lines joined. */
function parseDockerfile(file: string): Instr[] {
  const out: Instr[] = [];
  let cur: Instr | undefined;
  fs.readFileSync(file, 'utf8')
    .split('\n')
    .forEach((raw, i) => {
      if (/^\s*#/.test(raw)) return; // comment (or parser directive)
      const line = raw.replace(/\s+$/, '');
      if (cur) {
        cur.args += ` ${line.replace(/\\$/, '').trim()}`;
        if (!line.endsWith('\\')) cur = undefined;
        return;
      }
      if (line.trim() === '') return;
      const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
      if (!m) throw new Error(`${file}:${i + 1}: cannot parse "${line}"`);
      const ins = { op: m[1].toUpperCase(), args: m[2].replace(/\\$/, '').trim(), line: i + 1 };
      out.push(ins);
      if (line.endsWith('\\')) cur = ins;
    });
  return out;
}

/** Splits flags (--x=y) from the operands of COPY/ADD. */
function copyArgs(args: string): { flags: Record<string, string>; srcs: string[]; dest: string } {
  const words = args.split(/\s+/);
  const flags: Record<string, string> = {};
  while (words[0]?.startsWith('--')) {
    const [k, v] = words.shift()!.slice(2).split('=');
    flags[k] = v ?? '';
  }
  return { flags, srcs: words.slice(0, -1), dest: words[words.length - 1] };
}

/** ARG defaults declared before the first FROM, substituted into FROM lines. */
function resolveFrom(instrs: Instr[]): { image: string; stage?: string }[] {
  const globals: Record<string, string> = {};
  const froms: { image: string; stage?: string }[] = [];
  for (const i of instrs) {
    if (i.op === 'ARG' && froms.length === 0) {
      const [k, v] = i.args.split('=');
      globals[k] = v ?? '';
    }
    if (i.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args);
      if (!m) throw new Error(`bad FROM ${i.args}`);
      froms.push({ image: m[1].replace(/\$\{?([A-Za-z_]+)\}?/g, (_, k: string) => globals[k] ?? ''), stage: m[2] });
    }
  }
  return froms;
}

/** Docker's .dockerignore matching (patterns as used here: *, **, trailing-name, ! exceptions). */
function dockerIgnored(patterns: string[], p: string): boolean {
  const toRe = (pat: string) =>
    new RegExp(
      `^${pat
        .replace(/\/+$/, '')
        .split('/')
        .map((seg) =>
          seg === '**'
            ? '(?:.*)'
            : seg
                .replace(/[.+^${}()|[\]\\]/g, '\\$&')
                .replace(/\*/g, '[^/]*')
                .replace(/\?/g, '[^/]'),
        )
        .join('/')
        .replace(/\(\?:\.\*\)\//g, '(?:.*/)?')}$`,
    );
  let ignored = false;
  const parts = p.split('/');
  for (const raw of patterns) {
    const neg = raw.startsWith('!');
    const re = toRe(neg ? raw.slice(1) : raw);
    // A pattern matches the path or one of its parent directories.
    const hit = parts.some((_, i) => re.test(parts.slice(0, i + 1).join('/')));
    if (hit) ignored = !neg;
  }
  return ignored;
}

describe('deploy/Dockerfile', () => {
  const file = path.join(ROOT, 'deploy', 'Dockerfile');
  const instrs = parseDockerfile(file);
  const froms = resolveFrom(instrs);
  const stages = froms.map((f) => f.stage).filter(Boolean) as string[];

  it('is multi-stage, every base image pinned to a major version (node 20 on Debian 12)', () => {
    expect(stages).toEqual(['build', 'prod-deps', 'runtime']);
    for (const f of froms) {
      expect(f.image).toMatch(/^[a-z0-9./-]+:[0-9]+[^:]*$/); // a tag that starts with a version number
      expect(f.image).not.toMatch(/:latest$/);
    }
    expect(new Set(froms.map((f) => f.image))).toEqual(new Set(['node:20-bookworm-slim']));
  });

  it('the runtime entrypoint is the CLI serving /etc/retrace/retrace.yaml', () => {
    const last = (op: string) => [...instrs].reverse().find((i) => i.op === op)!;
    expect(JSON.parse(last('ENTRYPOINT').args)).toEqual(['node', '/app/dist/cli.js']);
    expect(JSON.parse(last('CMD').args)).toEqual(['serve', '--config', '/etc/retrace/retrace.yaml']);
    expect(fs.existsSync(path.join(ROOT, 'src', 'cli.ts'))).toBe(true);
  });

  it('COPY sources exist in the repository and pass the build context filter; --from names an earlier stage', () => {
    const ignore = fs
      .readFileSync(path.join(ROOT, 'deploy', 'Dockerfile.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    let seen = 0;
    let stageIndex = -1;
    for (const i of instrs) {
      if (i.op === 'FROM') stageIndex++;
      if (i.op !== 'COPY' && i.op !== 'ADD') continue;
      const { flags, srcs } = copyArgs(i.args);
      if (flags.from !== undefined) {
        expect(stages.slice(0, stageIndex)).toContain(flags.from);
        continue;
      }
      expect(i.op).toBe('COPY'); // ADD only for remote files with --checksum
      for (const s of srcs) {
        const rel = s.replace(/\/$/, '');
        expect({ src: rel, exists: fs.existsSync(path.join(ROOT, rel)) }).toEqual({ src: rel, exists: true });
        expect({ src: rel, ignored: dockerIgnored(ignore, rel) }).toEqual({ src: rel, ignored: false });
        seen++;
      }
    }
    expect(seen).toBeGreaterThanOrEqual(10);
    for (const p of [
      'node_modules',
      'node_modules/x/y.js',
      'build/Release/retrace.node',
      'dist/cli.js',
      '.git/config',
      'test/deploy/x.ts',
      'src/node_modules/x',
      'deploy/bootstrap.sh',
    ]) {
      expect({ p, ignored: dockerIgnored(ignore, p) }).toEqual({ p, ignored: true });
    }
    expect(dockerIgnored(ignore, 'src/gen/retrace/v1/types.ts')).toBe(false);
  });

  it('builds with the checks deploy/bootstrap.sh runs: npm ci, node-gyp, gen-proto --check, tsc', () => {
    const runs = instrs
      .filter((i) => i.op === 'RUN')
      .map((i) => i.args)
      .join('\n');
    expect(runs).toMatch(/npm ci --ignore-scripts/);
    expect(runs).toMatch(/node-gyp configure --nodedir=\/usr\/local/);
    expect(runs).toMatch(/bash scripts\/gen-proto\.sh --check/);
    expect(runs).toMatch(/tsc -p tsconfig\.json/);
    expect(runs).toMatch(/npm ci --omit=dev/);
    expect(runs).toMatch(/libdpdk-dev/);
    expect(runs).toMatch(/protobuf-compiler/);
    expect(runs).toMatch(/libprotobuf-dev/); // google/protobuf/*.proto for gen-proto.sh
  });

  it('the runtime stage installs a package for every DPDK library the built addon links', () => {
    const runtime = instrs.slice(instrs.findIndex((i) => i.op === 'FROM' && /AS runtime/i.test(i.args)));
    const apt = runtime
      .filter((i) => i.op === 'RUN' && /apt-get install/.test(i.args))
      .map((i) => i.args)
      .join(' ');
    expect(apt).not.toMatch(/libdpdk-dev|build-essential/);
    for (const p of ['librte-mempool-ring23', 'librte-bus-vdev23', 'librte-bus-pci23', 'librte-net-af-packet23']) expect(apt).toContain(p);
    const addon = path.join(ROOT, 'build', 'Release', 'retrace.node');
    const readelf = fs.existsSync(addon) ? spawnSync('readelf', ['-d', addon], { encoding: 'utf8' }) : undefined;
    if (!readelf || readelf.status !== 0) return; // no built addon here: the image build itself checks with ldd
    const needed = [...readelf.stdout.matchAll(/\[librte_([a-z0-9_]+)\.so\.([0-9]+)\]/g)].map((m) => `librte-${m[1].replace(/_/g, '-')}${m[2]}`);
    expect(needed.length).toBeGreaterThan(0);
    for (const pkg of needed) expect({ pkg, installed: apt.includes(pkg) }).toEqual({ pkg, installed: true });
  });

  it('ships the Kubernetes entrypoint the DaemonSet runs', () => {
    const ds = readYamlDocs(path.join(ROOT, 'deploy', 'k8s', 'base', 'daemonset.yaml'))[0] as Obj;
    const c = (((ds.spec as Obj).template as Obj).spec as { containers: { command: string[] }[] }).containers[0];
    const copies = instrs.filter((i) => i.op === 'COPY').map((i) => copyArgs(i.args));
    const entry = copies.find((c2) => c2.srcs.includes('deploy/k8s/entrypoint-lcores.sh'))!;
    expect(path.posix.join('/app', entry.dest)).toBe(c.command[0]);
    expect(entry.flags.chmod).toBe('755');
  });
});

describe('deploy/k8s/overlays/bgp/Dockerfile (sidecar image)', () => {
  const instrs = parseDockerfile(path.join(ROOT, 'deploy', 'k8s', 'overlays', 'bgp', 'Dockerfile'));
  it('pins its base, verifies the downloaded probe and installs gobgpd from Debian', () => {
    expect(resolveFrom(instrs).map((f) => f.image)).toEqual(['debian:12-slim']);
    const add = instrs.find((i) => i.op === 'ADD')!;
    expect(copyArgs(add.args).flags.checksum).toMatch(/^sha256:\$\{GRPC_HEALTH_PROBE_SHA256\}$/);
    expect(instrs.find((i) => i.op === 'ARG' && i.args.startsWith('GRPC_HEALTH_PROBE_SHA256='))!.args).toMatch(/=[0-9a-f]{64}$/);
    expect(
      instrs
        .filter((i) => i.op === 'RUN')
        .map((i) => i.args)
        .join(' '),
    ).toMatch(/apt-get install .*gobgpd/);
    for (const c of instrs.filter((i) => i.op === 'COPY')) {
      for (const s of copyArgs(c.args).srcs) expect(fs.existsSync(path.join(ROOT, 'deploy', 'k8s', 'overlays', 'bgp', s))).toBe(true);
    }
  });
});
