/**
 * The shell and node scripts of deploy/k8s: entrypoint-lcores.sh (cpuset -> EAL --lcores, and the
 * container entrypoint mode), the BGP announcer (with fake gobgp and grpc_health_probe) and
 * bgp-render.js; plus a syntax check of every script and of the DaemonSet's hook commands.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { parseConfig } from '../../src/config';
import { readYamlDocs, type Obj } from './k8s-yaml';

const ROOT = path.resolve(__dirname, '..', '..');
const K8S = path.join(ROOT, 'deploy', 'k8s');
const LCORES = path.join(K8S, 'entrypoint-lcores.sh');
const BGP = path.join(K8S, 'overlays', 'bgp');

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-deploy-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function cpusetFile(content: string): string {
  const f = path.join(tmp, 'cpuset.cpus.effective');
  fs.writeFileSync(f, content);
  return f;
}

describe('entrypoint-lcores.sh', () => {
  it.each([
    ['2-5\n', [], '0@(2-5),1@3,2@4,3@5', 3],
    ['2-5', ['-w', '2'], '0@(2-5),1@4,2@5', 2],
    ['0-1', [], '0@(0-1),1@1', 1],
    ['0-3,8-11', [], '0@(0-3,8-11),1@1,2@2,3@3,4@8,5@9,6@10,7@11', 7],
    ['1,3,5', [], '0@(1,3,5),1@3,2@5', 2],
    ['6', [], '0@6,1@6', 1],
  ])('cpuset %j %j -> %s (%d workers)', (cpuset, extra, lcores, workers) => {
    const f = cpusetFile(cpuset);
    const r = run('sh', [LCORES, ...extra, f]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(lcores);
    expect(run('sh', [LCORES, ...extra, '--count', f]).stdout.trim()).toBe(String(workers));
    // What it prints is what the appliance's config accepts for that many workers.
    const cfg = parseConfig(`eal: {lcores: "${lcores}"}\ndataplane: {workers: ${workers}}\nports: [{name: p, device: net_ring0}]\n`);
    expect(cfg.eal.lcores).toBe(lcores);
  });

  it('warns when one CPU has to hold the main lcore and the worker', () => {
    expect(run('sh', [LCORES, cpusetFile('3')]).stderr).toMatch(/1 CPU/);
  });

  it.each([
    ['x', [], /bad cpuset element/],
    ['5-2', [], /bad cpuset range/],
    ['', [], /empty cpuset/],
    ['2-5', ['-w', '4'], /at most 3 workers/],
    ['3', ['-w', '2'], /1 CPU/],
    ['2-5', ['-w', 'two'], /workers must be a number/],
    ['2-5', ['--bogus'], /unknown option/],
  ])('rejects cpuset %j %j with exit 2', (cpuset, extra, message) => {
    const r = run('sh', [LCORES, ...extra, cpusetFile(cpuset)]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });

  it("reads the cgroup v2 file, else this process's allowed CPUs, when given no file", () => {
    const r = run('sh', [LCORES]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^0@/);
  });

  describe('--exec (container entrypoint)', () => {
    const argsCmd = ['node', '-e', 'process.stdout.write(JSON.stringify(process.argv.slice(1)))'];

    it('writes eal.lcores and dataplane.workers into the copy, keeps comments, removes --rm files, execs the command', () => {
      const cfgIn = path.join(tmp, 'in.yaml');
      fs.writeFileSync(cfgIn, '# operator comment\neal:\n  lcores: ""  # filled in\n  memory_mb: 256\nports:\n  - {name: p, device: net_ring0}\n');
      const out = path.join(tmp, 'run', 'retrace.yaml');
      const marker = path.join(tmp, 'applied');
      fs.writeFileSync(marker, '');
      const r = run(
        'sh',
        [LCORES, '--exec', '--config', cfgIn, '--out', out, '--rm', marker, '--cpuset-file', cpusetFile('4-7'), '--', ...argsCmd, 'serve', '--config', out],
        {
          RETRACE_HOME: ROOT,
        },
      );
      expect(r.stderr).toMatch(/eal.lcores "0@\(4-7\),1@5,2@6,3@7", dataplane.workers 3/);
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual(['serve', '--config', out]);
      expect(fs.existsSync(marker)).toBe(false);
      const text = fs.readFileSync(out, 'utf8');
      expect(text).toContain('# operator comment');
      const cfg = parseConfig(text);
      expect(cfg.eal.lcores).toBe('0@(4-7),1@5,2@6,3@7');
      expect(cfg.dataplane.workers).toBe(3);
      expect(cfg.eal.memory_mb).toBe(256);
    });

    it('keeps dataplane.workers from the config and pins them to the last CPUs', () => {
      const cfgIn = path.join(tmp, 'in.yaml');
      fs.writeFileSync(cfgIn, 'dataplane: {workers: 1}\nports: [{name: p, device: net_ring0}]\n');
      const out = path.join(tmp, 'out.yaml');
      const r = run('sh', [LCORES, '--exec', '--config', cfgIn, '--out', out, '--cpuset-file', cpusetFile('2-5'), '--', 'true'], { RETRACE_HOME: ROOT });
      expect(r.code).toBe(0);
      const cfg = parseConfig(fs.readFileSync(out, 'utf8'));
      expect([cfg.eal.lcores, cfg.dataplane.workers]).toEqual(['0@(2-5),1@5', 1]);
    });

    it('leaves a config that sets eal.lcores untouched', () => {
      const cfgIn = path.join(tmp, 'in.yaml');
      const text = 'eal: {lcores: "0@0,1@1"}\nports: [{name: p, device: net_ring0}]\n';
      fs.writeFileSync(cfgIn, text);
      const out = path.join(tmp, 'out.yaml');
      const r = run('sh', [LCORES, '--exec', '--config', cfgIn, '--out', out, '--cpuset-file', cpusetFile('2-5'), '--', 'true'], { RETRACE_HOME: ROOT });
      expect(r.code).toBe(0);
      expect(fs.readFileSync(out, 'utf8')).toBe(text);
    });

    it('as PID 1, exits on a SIGTERM that arrives before the exec (instead of ignoring it)', async () => {
      // PID 1 of a PID namespace ignores signals it has no handler for: without the trap, a stop
      // during start-up is lost and the command is exec'd anyway. The config is a FIFO, so the
      // script waits in its YAML step until the test has sent SIGTERM.
      const cfgIn = path.join(tmp, 'in.fifo');
      spawnSync('mkfifo', [cfgIn]);
      const child = spawn(
        'unshare',
        [
          '--pid',
          '--fork',
          'sh',
          LCORES,
          '--exec',
          '--config',
          cfgIn,
          '--out',
          path.join(tmp, 'o.yaml'),
          '--cpuset-file',
          cpusetFile('2-3'),
          '--',
          'echo',
          'ran',
        ],
        {
          env: { ...process.env, RETRACE_HOME: ROOT },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      // The shell: unshare's child, PID 1 in the new namespace.
      let shPid = 0;
      for (let i = 0; i < 100 && shPid === 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
        const kids = fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim();
        shPid = Number(kids.split(' ')[0] || 0);
      }
      expect(shPid).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, 300)); // past the trap, into the YAML step
      process.kill(shPid, 'SIGTERM');
      // Lets the YAML step finish (asynchronously: opening a FIFO blocks until its reader opens it).
      void fs.promises.writeFile(cfgIn, 'ports: [{name: p, device: net_ring0}]\n').catch(() => undefined);
      const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 10000).unref());
      const code = await Promise.race([exited, timeout]);
      if (code === 'timeout') child.kill('SIGKILL');
      expect(code).toBe(143);
      expect(stdout).not.toContain('ran');
    });

    it('fails before exec when the cpuset cannot hold the configured workers', () => {
      const cfgIn = path.join(tmp, 'in.yaml');
      fs.writeFileSync(cfgIn, 'dataplane: {workers: 4}\nports: [{name: p, device: net_ring0}]\n');
      const r = run('sh', [LCORES, '--exec', '--config', cfgIn, '--out', path.join(tmp, 'o.yaml'), '--cpuset-file', cpusetFile('2-3'), '--', 'echo', 'ran'], {
        RETRACE_HOME: ROOT,
      });
      expect(r.code).toBe(2);
      expect(r.stdout).not.toContain('ran');
      expect(r.stderr).toMatch(/at most 1 workers/);
    });
  });
});

describe('shell syntax', () => {
  it('every script and the DaemonSet hook commands parse with sh -n', () => {
    for (const f of [LCORES, path.join(BGP, 'announce.sh')]) expect(run('sh', ['-n', f]).stderr).toBe('');
    const commands: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) {
        if (v.length >= 3 && v[0] === '/bin/sh' && v[1] === '-c') commands.push(String(v[2]));
        v.forEach(walk);
      } else if (v && typeof v === 'object') Object.values(v).forEach(walk);
    };
    for (const f of ['base/daemonset.yaml', 'overlays/bgp/daemonset-patch.yaml']) readYamlDocs(path.join(K8S, f)).forEach(walk);
    expect(commands.length).toBeGreaterThanOrEqual(2);
    for (const c of commands) expect({ c, err: run('sh', ['-n', '-c', c]).stderr }).toEqual({ c, err: '' });
  });

  it('bgp-render.js is valid JavaScript', () => {
    expect(run('node', ['--check', path.join(BGP, 'bgp-render.js')]).code).toBe(0);
  });
});

describe('bgp-render.js', () => {
  const renderEnv = (extra: NodeJS.ProcessEnv = {}) => ({
    RETRACE_HOME: ROOT,
    RETRACE_CONFIG_DIR: path.join(K8S, 'base'),
    TEMPLATE: path.join(BGP, 'gobgpd.toml'),
    OUT_DIR: path.join(tmp, 'bgp'),
    NODE_NAME: 'node-1',
    NODE_IP: '10.0.0.5',
    ...extra,
  });

  it('writes the VIPs and a gobgpd.toml with the router id, per-carrier next hops and VIP prefixes', () => {
    const r = run('node', [path.join(BGP, 'bgp-render.js')], renderEnv());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const services = YAML.parse(fs.readFileSync(path.join(K8S, 'base', 'services.yaml'), 'utf8')) as { virtual_services: { vip: string }[] };
    const vips = [...new Set(services.virtual_services.map((s) => s.vip))].sort();
    expect(fs.readFileSync(path.join(tmp, 'bgp', 'vips'), 'utf8')).toBe(vips.map((v) => `${v}\n`).join(''));
    const toml = fs.readFileSync(path.join(tmp, 'bgp', 'gobgpd.toml'), 'utf8');
    const live = toml
      .split('\n')
      .filter((l) => !/^\s*#/.test(l))
      .join('\n');
    expect(live).not.toMatch(/@[A-Z_]+/);
    expect(live).toContain('router-id = "10.0.0.5"');
    expect(live).toContain('set-next-hop = "198.51.100.10"'); // services.yaml: uplink-a
    expect(live).toContain('set-next-hop = "203.0.113.10"'); // uplink-b
    for (const v of vips) expect(live).toContain(`ip-prefix = "${v}/32"`);
    // gobgpd itself (Debian package gobgpd, installed by deploy/bootstrap.sh) checks the file.
    const d = run('gobgpd', ['--dry-run', '-f', path.join(tmp, 'bgp', 'gobgpd.toml')]);
    expect({ code: d.code, out: d.stdout + d.stderr }).toMatchObject({ code: 0 });
  });

  it("renders overlays/bgp-direct's template: sessions from each uplink's address to a router on that uplink, no multihop", () => {
    const r = run('node', [path.join(BGP, 'bgp-render.js')], renderEnv({ TEMPLATE: path.join(K8S, 'overlays', 'bgp-direct', 'gobgpd.toml') }));
    expect({ code: r.code, err: r.stderr }).toEqual({ code: 0, err: '' });
    const file = path.join(tmp, 'bgp', 'gobgpd.toml');
    const live = fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => !/^\s*#/.test(l))
      .join('\n');
    expect(live).not.toMatch(/@[A-Z_]+/);
    expect(live).not.toMatch(/multihop|set-next-hop/);
    // services.yaml: uplink-a 198.51.100.10/24, uplink-b 203.0.113.10/24; each neighbor on its uplink's subnet.
    const sessions = [...live.matchAll(/neighbor-address = "([0-9.]+)"[\s\S]*?local-address = "([0-9.]+)"/g)].map((m) => [m[1], m[2]]);
    expect(sessions).toEqual([
      ['198.51.100.1', '198.51.100.10'],
      ['203.0.113.1', '203.0.113.10'],
    ]);
    const d = run('gobgpd', ['--dry-run', '-f', file]);
    expect({ code: d.code, out: d.stdout + d.stderr }).toMatchObject({ code: 0 });
  });

  it('prefers services-<node>.yaml and names a port the template needs but the file lacks', () => {
    const dir = path.join(tmp, 'etc');
    fs.mkdirSync(dir);
    fs.writeFileSync(
      path.join(dir, 'services.yaml'),
      'virtual_services: [{vip: 192.0.2.1}]\naddresses: [{address: 1.1.1.1, port: uplink-a}, {address: 2.2.2.2, port: uplink-b}]\n',
    );
    fs.writeFileSync(path.join(dir, 'services-node-1.yaml'), 'virtualServices: [{vip: 192.0.2.7}]\naddresses: [{address: 198.51.100.11, port: uplink-a}]\n');
    const r = run('node', [path.join(BGP, 'bgp-render.js')], renderEnv({ RETRACE_CONFIG_DIR: dir }));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/port "uplink-b".*services-node-1\.yaml/);
    const other = run('node', [path.join(BGP, 'bgp-render.js')], renderEnv({ RETRACE_CONFIG_DIR: dir, NODE_NAME: 'node-2' }));
    expect(other.code).toBe(0);
    expect(fs.readFileSync(path.join(tmp, 'bgp', 'vips'), 'utf8')).toBe('192.0.2.1\n');
  });

  it('refuses a missing NODE_IP', () => {
    const r = run('node', [path.join(BGP, 'bgp-render.js')], renderEnv({ NODE_IP: '' }));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/NODE_IP/);
  });
});

describe('announce.sh', () => {
  /**
   * Fakes on PATH: grpc_health_probe exits with the next code of $FAKE/health (one per line; the
   * last one repeats), gobgp appends its arguments to $FAKE/gobgp.log.
   */
  function fakes(healthCodes: number[]): NodeJS.ProcessEnv {
    const bin = path.join(tmp, 'bin');
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(tmp, 'health'), healthCodes.join('\n') + '\n');
    fs.writeFileSync(
      path.join(bin, 'grpc_health_probe'),
      `#!/bin/sh\nf=${tmp}/health\ncode=$(head -n 1 "$f")\n[ "$(wc -l < "$f")" -gt 1 ] && sed -i 1d "$f"\necho "$*" >> ${tmp}/probe.log\nexit "$code"\n`,
      { mode: 0o755 },
    );
    fs.writeFileSync(path.join(bin, 'gobgp'), `#!/bin/sh\necho "$*" >> ${tmp}/gobgp.log\n`, { mode: 0o755 });
    fs.writeFileSync(path.join(tmp, 'vips'), '192.0.2.10\n192.0.2.11\n');
    fs.writeFileSync(path.join(tmp, 'applied'), '');
    return {
      PATH: `${bin}:${process.env.PATH}`,
      VIPS_FILE: path.join(tmp, 'vips'),
      APPLIED_MARKER: path.join(tmp, 'applied'),
      GOBGP_TARGET: 'unix:///x/gobgp.sock',
      INTERVAL: '0.01',
      RISE: '2',
      FALL: '1',
    };
  }
  const gobgpLog = () => (fs.existsSync(path.join(tmp, 'gobgp.log')) ? fs.readFileSync(path.join(tmp, 'gobgp.log'), 'utf8').trim().split('\n') : []);
  const calls = (op: string) => [
    `--target unix:///x/gobgp.sock global rib ${op} -a ipv4 192.0.2.10/32`,
    `--target unix:///x/gobgp.sock global rib ${op} -a ipv4 192.0.2.11/32`,
  ];

  it('announces after RISE SERVING polls, withdraws on NOT_SERVING or unreachable, and on exit', () => {
    // polls: unreachable, SERVING x3 (announce at the 2nd), NOT_SERVING (withdraw), SERVING x2 (announce), end (withdraw)
    const env = { ...fakes([2, 0, 0, 0, 4, 0, 0]), ITERATIONS: '7', HEALTH_ADDR: '127.0.0.1:50052' };
    const r = run('sh', [path.join(BGP, 'announce.sh')], env);
    expect(r.code).toBe(0);
    expect(gobgpLog()).toEqual([...calls('add'), ...calls('del'), ...calls('add'), ...calls('del')]);
    expect(r.stdout).toMatch(/unreachable[\s\S]*SERVING[\s\S]*NOT_SERVING/);
    expect(fs.readFileSync(path.join(tmp, 'probe.log'), 'utf8')).toContain('-addr=127.0.0.1:50052');
  });

  it('probes with HEALTH_PROBE instead of grpc_health_probe when set (the lab runs `retrace health`)', () => {
    // The probe: a script of its own that exits 4 (NOT_SERVING) once, then 0.
    const env = { ...fakes([0]), ITERATIONS: '3', RISE: '1' };
    const probe = path.join(tmp, 'probe.sh');
    fs.writeFileSync(probe, `#!/bin/sh\necho "$*" >> ${tmp}/own-probe.log\n[ -e ${tmp}/probed ] && exit 0\ntouch ${tmp}/probed\nexit 4\n`, { mode: 0o755 });
    const r = run('sh', [path.join(BGP, 'announce.sh')], { ...env, HEALTH_PROBE: `${probe} --server x:1` });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/NOT_SERVING[\s\S]*SERVING/);
    expect(fs.readFileSync(path.join(tmp, 'own-probe.log'), 'utf8').trim().split('\n')).toEqual(['--server x:1', '--server x:1', '--server x:1']);
    expect(fs.existsSync(path.join(tmp, 'probe.log'))).toBe(false); // grpc_health_probe never ran
    expect(gobgpLog()).toEqual([...calls('add'), ...calls('del')]);
  });

  it('does not announce before the services are applied (marker missing)', () => {
    const env: NodeJS.ProcessEnv = { ...fakes([0]), ITERATIONS: '5' };
    fs.rmSync(path.join(tmp, 'applied'));
    const r = run('sh', [path.join(BGP, 'announce.sh')], env);
    expect(r.code).toBe(0);
    expect(gobgpLog()).toEqual([]);
    expect(r.stdout).toMatch(/services not applied/);
  });

  it('re-adds the VIPs every RESYNC polls while announced', () => {
    const env = { ...fakes([0]), ITERATIONS: '6', RISE: '1', RESYNC: '2' };
    run('sh', [path.join(BGP, 'announce.sh')], env);
    // poll 1 add, polls 2-3 resync add, polls 4-5 resync add, poll 6, exit del
    expect(gobgpLog()).toEqual([...calls('add'), ...calls('add'), ...calls('add'), ...calls('del')]);
  });

  it('withdraws at once on SIGTERM', async () => {
    const env = { ...process.env, ...fakes([0]), RISE: '1', INTERVAL: '30' };
    const child = spawn('sh', [path.join(BGP, 'announce.sh')], { env, stdio: 'ignore' });
    const deadline = Date.now() + 10000;
    while (gobgpLog().length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(gobgpLog()).toEqual(calls('add'));
    const t0 = Date.now();
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5000); // not after the 30 s sleep
    expect(gobgpLog()).toEqual([...calls('add'), ...calls('del')]);
  });
});

describe('DaemonSet hook commands', () => {
  it('postStart picks services-<node>.yaml when present', () => {
    const ds = readYamlDocs(path.join(K8S, 'base', 'daemonset.yaml'))[0] as Obj;
    const c = (((ds.spec as Obj).template as Obj).spec as { containers: Obj[] }).containers[0];
    const cmd = String((((c.lifecycle as Obj).postStart as Obj).exec as { command: string[] }).command[2]);
    // Run the selection part with a fake `node` that records the file and succeeds.
    const bin = path.join(tmp, 'bin');
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, 'node'), `#!/bin/sh\necho "$4" > ${tmp}/applied-file\n`, { mode: 0o755 });
    const etc = path.join(tmp, 'etc');
    fs.mkdirSync(etc);
    fs.writeFileSync(path.join(etc, 'services.yaml'), '');
    fs.writeFileSync(path.join(etc, 'services-n1.yaml'), '');
    const local = cmd.replaceAll('/etc/retrace', etc).replaceAll('/run/retrace', tmp);
    for (const [nodeName, expected] of [
      ['n1', 'services-n1.yaml'],
      ['n2', 'services.yaml'],
    ]) {
      const r = run('sh', ['-c', local], { PATH: `${bin}:${process.env.PATH}`, NODE_NAME: nodeName });
      expect(r.code).toBe(0);
      expect(fs.readFileSync(path.join(tmp, 'applied-file'), 'utf8').trim()).toBe(path.join(etc, expected));
      expect(fs.existsSync(path.join(tmp, 'applied'))).toBe(true);
    }
  });
});
