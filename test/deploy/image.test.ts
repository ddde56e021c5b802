/**
 * The image, built and run for real: `deploy/image.sh` builds it with podman (cached: seconds when
 * nothing changed), and the af-packet overlay's pod, exactly as `kubectl kustomize` renders it,
 * runs under `podman kube play` on the lab's veths (src/lab/topology.ts).
 *
 * What an operator changes to run the overlay here, and nothing more:
 *  - ConfigMap `retrace.yaml`: the three af_packet ports' `iface=eth1|eth2|eth3` become the lab's
 *    root-namespace veth ends (uplink-a -> rt<tag>ua, uplink-b -> rt<tag>ub, servers -> rt<tag>sv),
 *    and the health and metrics listeners move to free ports (the pod uses the host's network, and
 *    other jobs on this machine may hold 50052 or 9542); the probes follow the health port.
 *  - ConfigMap key `services-<node>.yaml` (the per-node file the postStart hook prefers): the lab's
 *    port addresses, the default route via router-a, the LIPs, and a TCP and an ICMP service on
 *    the lab's VIP toward rs1..rs3.
 *  - env RETRACE_DRAIN_SECONDS: 2 instead of 60, so the preStop hook ends quickly.
 *
 * What podman needs besides (it is no kubelet):
 *  - the DaemonSet's pod template wrapped in a Pod; NODE_NAME's `fieldRef: spec.nodeName` replaced
 *    by the value the downward API would give (podman has no node); no `ports:` (podman rejects
 *    port mappings with the host's network; they are declarations only under hostNetwork anyway).
 *  - Podman does not run lifecycle hooks: the test runs postStart and preStop with `podman exec`,
 *    exactly the commands the rendered manifest states, where a kubelet would run them.
 *  - podman's settings from `deploy/image.sh env` (runc, ulimits this host allows, storage).
 *
 * Needs root, podman (with catatonit for the pod's infra container), kubectl, mmdebstrap when no
 * base image is available: deploy/bootstrap.sh installs them. Without podman or kubectl the suite
 * is skipped, except under CI=true, where it fails and names the missing tool.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { LAB, LabTopology, REAL_SERVERS, ROOT_PORTS } from '../../src/lab/topology';
import { connect } from '../../src/api/client';
import { debianTool, describeWith } from '../helpers/tools';

const ROOT = path.resolve(__dirname, '..', '..');
const OVERLAY = path.join(ROOT, 'deploy', 'k8s', 'overlays', 'af-packet');
const PODMAN = debianTool('podman', 'podman');
const KUBECTL = debianTool('kubectl', 'kubernetes-client');

// Rendered Kubernetes objects are edited field by field as an operator would; typing them all
// buys nothing here.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;

interface Done {
  code: number | null;
  stdout: string;
  /** stdout and stderr */
  out: string;
}

/** Runs a command to completion; never throws (the caller asserts the code, with the output). */
function runCmd(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 120000): Done {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, timeout: timeoutMs, maxBuffer: 64 << 20 });
  return { code: r.status, stdout: r.stdout ?? '', out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '0.0.0.0', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function healthCheck(address: string): Promise<string> {
  const client = connect(address);
  try {
    return await client.health();
  } finally {
    client.close();
  }
}

/** `retrace services` real rows (`  ->   ADDRESS  WEIGHT  ACTIVE  CONNS`): address -> weight. */
function realWeights(out: string): Record<string, number> {
  const rows = [...out.matchAll(/^ +-> +(\S+) +(\d+) +\d+ +\d+$/gm)];
  return Object.fromEntries(rows.map((m) => [m[1], Number(m[2])]));
}

describeWith(PODMAN, KUBECTL)('the image and the af-packet pod under podman', () => {
  let lab: LabTopology | undefined;
  let env: NodeJS.ProcessEnv = process.env;
  let podName = '';
  let ctr = '';
  let image = '';
  let healthPort = 0;
  let podFile = '';
  let hooks: { postStart: string[]; preStop: string[] } = { postStart: [], preStop: [] };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-image-'));

  const podman = (args: string[], timeoutMs?: number): Done => runCmd('podman', args, env, timeoutMs);
  const logs = (): string => (ctr ? podman(['logs', '--tail', '60', ctr]).out : '');
  /** The container's processes and their threads' states, for a stop that does not end. */
  const threads = (): string => {
    const pid = podman(['inspect', '--format', '{{.State.Pid}}', ctr]).out.trim();
    return runCmd('sh', [
      '-c',
      `for t in /proc/${pid}/task/*; do echo "$t $(cat $t/comm) $(grep -E '^(State|SigBlk|SigPnd)' $t/status | tr '\\n' ' ')"; done; cat /proc/${pid}/status`,
    ]).out;
  };
  /** podman exec; fails the test with the container's log when the command does not exit 0. */
  const exec = (cmd: string[], timeoutMs?: number): string => {
    const r = podman(['exec', ctr, ...cmd], timeoutMs);
    if (r.code !== 0) throw new Error(`podman exec ${cmd.join(' ')}: exit ${r.code}\n${r.out}\n--- container log ---\n${logs()}`);
    return r.out;
  };

  beforeAll(async () => {
    // The build: cached layers make this a few seconds when nothing changed, minutes when cold.
    const build = runCmd('bash', [path.join(ROOT, 'deploy', 'image.sh')], process.env, 20 * 60000);
    if (build.code !== 0) throw new Error(`deploy/image.sh failed (exit ${build.code}):\n${build.out.slice(-4000)}`);
    image = build.stdout.trim();
    // podman's settings for this host (CONTAINERS_CONF, and CONTAINERS_STORAGE_CONF where needed).
    const settings = runCmd('bash', [path.join(ROOT, 'deploy', 'image.sh'), 'env'])
      .stdout.trim()
      .split('\n');
    env = { ...process.env, ...Object.fromEntries(settings.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)])) };

    lab = LabTopology.create();
    await lab.startEchoServers();
    const node = `lab-${lab.tag}`;
    podName = `retrace-${lab.tag}`;
    ctr = `${podName}-retrace`;
    healthPort = await freePort();
    const metricsPort = await freePort();

    const docs = YAML.parseAllDocuments(execFileSync('kubectl', ['kustomize', OVERLAY], { encoding: 'utf8' })).map((d) => d.toJS() as Obj);
    const cm = docs.find((d) => d.kind === 'ConfigMap')!;
    const ds = docs.find((d) => d.kind === 'DaemonSet')!;

    // The operator's edits (see the header).
    const cfg = YAML.parse(cm.data['retrace.yaml']) as Obj;
    const iface: Record<string, string> = Object.fromEntries(ROOT_PORTS.map((p) => [p, lab!.rootDev(p)]));
    for (const p of cfg.ports as { name: string; device: string }[]) {
      expect(p.device).toMatch(/,iface=eth\d$/);
      p.device = p.device.replace(/iface=eth\d$/, `iface=${iface[p.name]}`);
    }
    cfg.health.listen = `0.0.0.0:${healthPort}`;
    cfg.metrics.listen = `0.0.0.0:${metricsPort}`;
    const services = {
      addresses: ROOT_PORTS.map((p) => ({ address: LAB.ports[p].addr, prefix_length: LAB.ports[p].prefixLen, port: p })),
      routes: [{ prefix: '0.0.0.0', prefix_length: 0, port: 'uplink-a', gateway: LAB.routerAUplink }],
      local_addresses: LAB.lips.map((address) => ({ address, port: 'servers' })),
      virtual_services: [
        { protocol: 'tcp', vip: LAB.vip, port: 80, scheduler: 'rr', reals: REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: LAB.echoPort, weight: 1 })) },
        { protocol: 'icmp', vip: LAB.vip, port: 0, scheduler: 'rr', reals: REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: 0, weight: 1 })) },
      ],
    };
    cm.data['retrace.yaml'] = YAML.stringify(cfg);
    cm.data[`services-${node}.yaml`] = YAML.stringify(services);

    // The pod a kubelet would run from the DaemonSet on node `node`, in podman's terms.
    const spec = structuredClone(ds.spec.template.spec) as Obj;
    const c = spec.containers.find((x: Obj) => x.name === 'retrace') as Obj;
    expect(spec.containers).toHaveLength(1);
    expect(spec.hostNetwork).toBe(true);
    hooks = { postStart: c.lifecycle.postStart.exec.command, preStop: c.lifecycle.preStop.exec.command };
    for (const e of c.env as Obj[]) {
      if (e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName') {
        delete e.valueFrom;
        e.value = node;
      }
      if (e.name === 'RETRACE_DRAIN_SECONDS') e.value = '2';
    }
    expect(c.ports.map((p: Obj) => p.containerPort)).toEqual([50052, 9542]);
    delete c.ports;
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const pr = c[probe] as Obj;
      (pr.grpc ?? pr.tcpSocket).port = healthPort;
    }
    expect(c.image).toBe('retrace:0.1.0');
    c.image = image;
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: podName, labels: ds.spec.template.metadata.labels, annotations: ds.spec.template.metadata.annotations },
      spec,
    };
    podFile = path.join(tmp, 'pod.yaml');
    fs.writeFileSync(podFile, YAML.stringify(pod) + '---\n' + YAML.stringify(cm));

    const play = podman(['kube', 'play', podFile]);
    if (play.code !== 0) throw new Error(`podman kube play failed:\n${play.out}\n${logs()}`);
    // podman exec must land in the container's filesystem. It does not when this process runs in
    // a chroot whose mount namespace's root is another system's (a chroot-based sandbox): the exec
    // then runs in that system's files. Say so instead of failing on a missing /app.
    const probe = podman(['exec', ctr, 'test', '-f', '/app/dist/cli.js']);
    if (probe.code !== 0) {
      throw new Error(
        `podman exec does not enter the container's filesystem here (exit ${probe.code}: ${probe.out.trim()}); ` +
          'a chroot-based sandbox does this: run the test on a machine, a VM or a sandbox that pivot_roots into its root',
      );
    }
  }, 25 * 60000);

  afterAll(() => {
    if (podName) podman(['pod', 'rm', '-f', '-t', '0', podName]);
    lab?.destroy();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('the postStart hook applies the services file (the per-node one) and marks it applied', () => {
    expect(hooks.postStart.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    exec(hooks.postStart, 180000);
    exec(['test', '-f', '/run/retrace/applied']);
  });

  it('serves grpc.health.v1 SERVING on the health port', async () => {
    // As the startup probe would: poll until SERVING (the dataplane may still be starting).
    const address = `127.0.0.1:${healthPort}`;
    const deadline = Date.now() + 60000;
    let last = '';
    while (Date.now() < deadline) {
      last = await healthCheck(address).catch((e: Error) => e.message);
      if (last === 'SERVING') break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(last).toBe('SERVING');
  });

  it('a lab client gets TCP and ping replies through the VIP', async () => {
    const tcp = await lab!.tcpEcho('client-a', LAB.vip, 80, { conns: 6, bytes: 2000 });
    expect(tcp.ok).toBe(6);
    const ping = await lab!.ping('client-b', LAB.vip, { count: 3, deadline: 20 });
    expect(ping.received).toBeGreaterThanOrEqual(3);
  });

  it('retrace services works through podman exec (RETRACE_SERVER from the pod env)', () => {
    const out = exec(['node', '/app/dist/cli.js', 'services']);
    expect(out).toMatch(new RegExp(`^tcp +${LAB.vip.replace(/\./g, '\\.')}:80 +rr`, 'm'));
    expect(realWeights(out)).toEqual({
      ...Object.fromEntries(REAL_SERVERS.map((rs) => [`${LAB.rs[rs]}:${LAB.echoPort}`, 1])),
      ...Object.fromEntries(REAL_SERVERS.map((rs) => [LAB.rs[rs], 1])),
    });
  });

  it('the preStop hook drains: health NOT_SERVING, every real at weight 0', async () => {
    expect(hooks.preStop.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    exec(hooks.preStop, 60000);
    expect(await healthCheck(`127.0.0.1:${healthPort}`)).toBe('NOT_SERVING');
    const weights = realWeights(exec(['node', '/app/dist/cli.js', 'services']));
    expect(Object.keys(weights)).toHaveLength(2 * REAL_SERVERS.length);
    expect(Object.values(weights).every((w) => w === 0)).toBe(true);
  });

  it('SIGTERM ends the appliance with exit code 0', async () => {
    // What the kubelet does after preStop: SIGTERM (podman stop sends the image's stop signal,
    // SIGTERM), SIGKILL only after the grace period (30 s here).
    const t0 = Date.now();
    const stopper = spawn('podman', ['stop', '-t', '30', ctr], { env, stdio: 'ignore' });
    const stopped = new Promise<number | null>((resolve) => stopper.on('exit', resolve));
    let state = '';
    let diag = '';
    while (Date.now() - t0 < 35000) {
      // RestartCount: the pod's restartPolicy (Always) would hide an exit that came too early.
      state = podman(['inspect', '--format', '{{.State.Status}} {{.State.ExitCode}} restarts={{.RestartCount}}', ctr]).out.trim();
      if (state.startsWith('exited')) break;
      if (!diag && Date.now() - t0 > 10000) diag = threads();
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(await stopped).toBe(0);
    const want = 'exited 0 restarts=0';
    expect(`${state}\n${state === want ? '' : `${diag}\n--- container log ---\n${logs()}`}`).toBe(`${want}\n`);
  });
});
