/**
 * deploy/k8s: every manifest parses and matches the Kubernetes schemas (kubernetes-models), the
 * kustomizations render with `kubectl kustomize`, and the rendered DaemonSets keep the
 * invariants deploy/README.md explains. The sample configs pass the appliance's own validators
 * (src/config parseConfig, the `retrace apply` parser).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { parseConfigDocument } from '../../src/cli/config-file';
import { parseConfig, type Config } from '../../src/config';
import { findObject, isObj, kustomize, readKustomization, readYamlDocs, type K8sObject, type Obj } from './k8s-yaml';
import { KINDS, kindKey, strictFieldErrors, validateSchema } from './k8s-schema';

const ROOT = path.resolve(__dirname, '..', '..');
const K8S = path.join(ROOT, 'deploy', 'k8s');
const LCORES_SH = path.join(K8S, 'entrypoint-lcores.sh');

/** The deployable variants: kustomization directories. */
const VARIANTS = ['base', 'overlays/af-packet', 'overlays/pci', 'overlays/bgp', 'overlays/bgp-direct'];

/** Every *.yaml under deploy/k8s, relative. */
function yamlFiles(dir = K8S): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...yamlFiles(p));
    else if (/\.ya?ml$/.test(e.name)) out.push(path.relative(K8S, p));
  }
  return out.sort();
}

/** Files that are inputs of configMapGenerators (not Kubernetes objects). */
function generatorFiles(): Set<string> {
  const out = new Set<string>();
  for (const f of yamlFiles()) {
    if (path.basename(f) !== 'kustomization.yaml') continue;
    const k = readKustomization(path.join(K8S, path.dirname(f)));
    for (const file of k.generatorFiles) out.add(path.relative(K8S, path.join(k.dir, file)));
  }
  return out;
}

const rendered = new Map(VARIANTS.map((v) => [v, kustomize(path.join(K8S, v))]));

const find = findObject;
type Container = Obj & { name: string; resources?: { requests?: Obj; limits?: Obj }; securityContext?: Obj; env?: { name: string; value?: string }[] };

function daemonSet(variant: string) {
  const ds = find(rendered.get(variant)!, 'DaemonSet', 'retrace');
  if (!ds) throw new Error(`${variant}: no DaemonSet retrace`);
  const pod = ((ds.spec as Obj).template as Obj).spec as Obj & {
    containers: Container[];
    initContainers?: Container[];
    volumes: (Obj & { name: string })[];
  };
  const retrace = pod.containers.find((c) => c.name === 'retrace');
  if (!retrace) throw new Error(`${variant}: no container retrace`);
  return { ds, pod, retrace };
}

/** The appliance config of a variant, from its rendered ConfigMap. */
function sample(variant: string): { text: string; cfg: Config; services: string; raw: Obj } {
  const cm = find(rendered.get(variant)!, 'ConfigMap', 'retrace-config');
  if (!cm) throw new Error(`${variant}: no ConfigMap retrace-config`);
  const data = cm.data as Record<string, string>;
  const text = data['retrace.yaml'];
  return { text, cfg: parseConfig(text, `${variant}: retrace.yaml`), services: data['services.yaml'], raw: YAML.parse(text) as Obj };
}

/** Kubernetes quantity → bytes (binary and decimal suffixes) or cores for cpu. */
function quantity(q: unknown): number {
  const m = /^([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T|m)?$/.exec(String(q));
  if (!m) throw new Error(`unparsable quantity ${String(q)}`);
  const mult: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12, m: 1e-3 };
  return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}
const MiB = 2 ** 20;

const envOf = (c: Container, name: string) => c.env?.find((e) => e.name === name)?.value;
const portOf = (listen: string) => Number(/:([0-9]+)$/.exec(listen)?.[1]);

/** Worker lcores the entrypoint gives a container with `cpus` exclusive CPUs (entrypoint-lcores.sh). */
function entrypointLcores(cpus: number, workers?: number): { lcores: string; workers: number } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-cpuset-'));
  try {
    const f = path.join(dir, 'cpuset');
    fs.writeFileSync(f, cpus === 1 ? '2\n' : `2-${1 + cpus}\n`);
    const w = workers === undefined ? [] : ['-w', String(workers)];
    const lcores = execFileSync('sh', [LCORES_SH, ...w, f], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const count = Number(execFileSync('sh', [LCORES_SH, ...w, '--count', f], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    return { lcores, workers: count };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('deploy/k8s files', () => {
  it('every YAML file parses; every non-generator, non-kustomization file holds only schema-valid Kubernetes objects', () => {
    const gen = generatorFiles();
    const files = yamlFiles();
    expect(files.length).toBeGreaterThan(8);
    for (const f of files) {
      const docs = readYamlDocs(path.join(K8S, f));
      expect(docs.length).toBeGreaterThan(0);
      if (gen.has(f) || path.basename(f) === 'kustomization.yaml') continue;
      for (const d of docs) {
        expect(isObj(d)).toBe(true);
        const o = d as K8sObject;
        expect(KINDS[kindKey(o)]).toBeDefined();
        // Patch files are partial objects: only the complete ones (no patch directives) are
        // validated here; the rendered overlays below validate every patch's result.
        if (!/patch/.test(f)) validateSchema(o);
      }
    }
  });

  it('every kustomization references files that exist; patches target resources of their base', () => {
    for (const f of yamlFiles().filter((x) => path.basename(x) === 'kustomization.yaml')) {
      const k = readKustomization(path.join(K8S, path.dirname(f)));
      for (const r of [...k.bases, ...k.patches, ...k.generatorFiles]) {
        expect([r, fs.existsSync(path.join(k.dir, r))]).toEqual([r, true]);
      }
    }
    // kubectl kustomize refuses a patch whose kind/name matches nothing in its base.
    for (const v of VARIANTS) expect(rendered.get(v)!.length).toBeGreaterThanOrEqual(4);
  });

  it.each(VARIANTS)('%s renders to schema-valid objects', (v) => {
    for (const o of rendered.get(v)!) {
      try {
        validateSchema(o);
      } catch (e) {
        throw new Error(`${v}: ${o.kind}/${o.metadata.name}: ${(e as Error).message}`, { cause: e });
      }
    }
    const kinds = rendered
      .get(v)!
      .map((o) => `${o.kind}/${o.metadata.name}`)
      .sort();
    expect(kinds).toEqual(expect.arrayContaining(['DaemonSet/retrace', 'Namespace/retrace-system', 'ServiceAccount/retrace']));
    expect(find(rendered.get(v)!, 'ConfigMap', 'retrace-config')).toBeDefined();
    for (const o of rendered.get(v)!) if (o.kind !== 'Namespace') expect(o.metadata.namespace).toBe('retrace-system');
  });

  it('no rendered object has a field the Kubernetes API does not know (strict field validation)', () => {
    const objects = VARIANTS.flatMap((v) => rendered.get(v)!.map((obj) => ({ label: `${v}: ${obj.kind}/${obj.metadata.name}`, obj })));
    expect(strictFieldErrors(objects)).toEqual([]);
    // The check itself catches a typo.
    const bad = structuredClone(find(rendered.get('base')!, 'DaemonSet', 'retrace')!);
    ((bad.spec as Obj).template as Obj & { spec: Obj }).spec.hostNetwok = true;
    const errors = strictFieldErrors([{ label: 'typo', obj: bad }]);
    expect(errors.join('\n')).toMatch(/hostNetwok/);
  }, 60000);
});

describe.each(VARIANTS)('DaemonSet invariants: %s', (v) => {
  const { pod, retrace } = daemonSet(v);
  const { cfg, raw } = sample(v);
  const all = [...pod.containers, ...(pod.initContainers ?? [])];

  it('runs on the uplink nodes in the host network namespace', () => {
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(pod.nodeSelector).toEqual({ 'retrace.io/uplinks': 'true' });
    expect(pod.serviceAccountName).toBe('retrace');
  });

  it('is Guaranteed QoS: every container has cpu and memory, requests == limits; the appliance has whole CPUs', () => {
    for (const c of all) {
      const { requests, limits } = c.resources ?? {};
      expect({ container: c.name, resources: requests }).toEqual({ container: c.name, resources: limits });
      expect(Object.keys(limits ?? {})).toEqual(expect.arrayContaining(['cpu', 'memory']));
    }
    const cpu = quantity(retrace.resources!.limits!.cpu);
    expect(Number.isInteger(cpu) && cpu >= 2).toBe(true); // static CPU manager: exclusive CPUs
  });

  it('hugepages: the resource, the HugePages volume and eal.hugepages agree; sizes cover eal.memory_mb', () => {
    const limits = retrace.resources!.limits!;
    const hugeVolumes = pod.volumes.filter((vol) => isObj(vol.emptyDir) && /^HugePages/.test(String((vol.emptyDir as Obj).medium)));
    const mounts = (retrace.volumeMounts as { name: string; mountPath: string }[]) ?? [];
    if (cfg.eal.hugepages) {
      expect(quantity(limits['hugepages-2Mi'])).toBeGreaterThanOrEqual(cfg.eal.memory_mb * MiB);
      expect(hugeVolumes.map((h) => (h.emptyDir as Obj).medium)).toEqual(['HugePages-2Mi']);
      expect(mounts.some((m) => m.name === hugeVolumes[0].name && m.mountPath === '/dev/hugepages')).toBe(true);
    } else {
      expect(Object.keys(limits).filter((k) => k.startsWith('hugepages-'))).toEqual([]);
      expect(hugeVolumes).toEqual([]);
      // --no-huge: EAL's memory_mb is ordinary memory, next to Node.js (~256 MiB).
      expect(quantity(limits.memory)).toBeGreaterThanOrEqual((cfg.eal.memory_mb + 256) * MiB);
    }
  });

  it('every volume mount names a volume; the config volume is the generated ConfigMap', () => {
    const names = new Set(pod.volumes.map((vol) => vol.name));
    for (const c of all) for (const m of (c.volumeMounts as { name: string }[]) ?? []) expect(names).toContain(m.name);
    const configVol = pod.volumes.find((vol) => vol.name === 'config')!;
    expect((configVol.configMap as Obj).name).toBe(find(rendered.get(v)!, 'ConfigMap', 'retrace-config')!.metadata.name);
    for (const vol of pod.volumes) {
      if (isObj(vol.configMap)) expect(find(rendered.get(v)!, 'ConfigMap', String(vol.configMap.name))).toBeDefined();
    }
  });

  it('security: capabilities instead of privileged (except the vfio PCI overlay), root filesystem read-only', () => {
    const sc = retrace.securityContext as Obj & { capabilities: { drop: string[]; add: string[] } };
    expect(sc.capabilities.drop).toEqual(['ALL']);
    for (const cap of sc.capabilities.add) expect(['NET_ADMIN', 'NET_RAW', 'IPC_LOCK', 'SYS_NICE', 'SYS_RAWIO']).toContain(cap);
    expect(sc.readOnlyRootFilesystem).toBe(true);
    const vfio = pod.volumes.some((vol) => isObj(vol.hostPath) && vol.hostPath.path === '/dev/vfio');
    if (v === 'base' || v === 'overlays/af-packet') expect(sc.privileged).toBe(false);
    if (sc.privileged === true) {
      expect(vfio).toBe(true); // the only reason to be privileged: device cgroup access to /dev/vfio
      expect(sc.allowPrivilegeEscalation).not.toBe(false); // the API rejects that combination
    }
    if (cfg.ports.some((p) => /^([0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\./i.test(p.device))) expect(vfio).toBe(true);
    for (const c of all) {
      expect({ c: c.name, ape: (c.securityContext ?? {}).allowPrivilegeEscalation }).toEqual({
        c: c.name,
        ape: c === retrace && sc.privileged ? undefined : false,
      });
    }
  });

  it('probes: gRPC health on health.listen for startup and readiness; liveness does not depend on drain', () => {
    const healthPort = 50052;
    expect(cfg.health.listen).toBe('0.0.0.0:50052');
    expect(portOf(cfg.health.listen)).toBe(healthPort);
    expect(retrace.startupProbe).toMatchObject({ grpc: { port: healthPort } });
    expect(retrace.readinessProbe).toMatchObject({ grpc: { port: healthPort } });
    expect(retrace.livenessProbe).toMatchObject({ tcpSocket: { port: healthPort } });
    const ports = (retrace.ports as { name: string; containerPort: number }[]).map((p) => [p.name, p.containerPort]);
    expect(ports).toEqual(
      expect.arrayContaining([
        ['health', healthPort],
        ['metrics', portOf(cfg.metrics.listen)],
      ]),
    );
  });

  it('preStop drains through grpc.listen; the grace period covers drain time + shutdown', () => {
    const preStop = (((retrace.lifecycle as Obj).preStop as Obj).exec as { command: string[] }).command.join(' ');
    expect(preStop).toContain(`node /app/dist/cli.js drain --server ${cfg.grpc.listen}`);
    expect(envOf(retrace, 'RETRACE_SERVER')).toBe(cfg.grpc.listen);
    const drainCmdTimeout = Number(/timeout ([0-9]+) node/.exec(preStop)?.[1]);
    const drainSeconds = Number(envOf(retrace, 'RETRACE_DRAIN_SECONDS'));
    expect(drainSeconds).toBeGreaterThan(0);
    expect(preStop).toContain('sleep "${RETRACE_DRAIN_SECONDS');
    // preStop (drain command + sleep), then SIGTERM and the appliance's own bounded shutdown.
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(drainCmdTimeout + drainSeconds + 10);
  });

  it('the entrypoint derives lcores from the cpuset and serves the derived config', () => {
    const cmd = [...(retrace.command as string[]), ...(retrace.args as string[])];
    expect(cmd.slice(0, 2)).toEqual(['/app/deploy/k8s/entrypoint-lcores.sh', '--exec']);
    const out = cmd[cmd.indexOf('--out') + 1];
    expect(cmd[cmd.indexOf('--config') + 1]).toBe('/etc/retrace/retrace.yaml');
    expect(cmd.slice(cmd.indexOf('--') + 1)).toEqual(['node', '/app/dist/cli.js', 'serve', '--config', out]);
    const mounts = retrace.volumeMounts as { name: string; mountPath: string }[];
    expect(mounts.find((m) => m.name === 'config')!.mountPath).toBe('/etc/retrace');
    expect(mounts.some((m) => out.startsWith(`${m.mountPath}/`) && m.name !== 'config')).toBe(true);
    // The marker removed at start is the one postStart writes.
    const marker = cmd[cmd.indexOf('--rm') + 1];
    const postStart = (((retrace.lifecycle as Obj).postStart as Obj).exec as { command: string[] }).command.join(' ');
    expect(postStart).toContain(`touch ${marker}`);
    expect(postStart).toContain(`apply -f "$f" --server ${cfg.grpc.listen}`);
  });

  it('retrace.yaml passes the config schema with the lcores the entrypoint computes for the CPU limit', () => {
    const cpus = quantity(retrace.resources!.limits!.cpu);
    const explicit = (raw.dataplane as Obj | undefined)?.workers as number | undefined;
    const { lcores, workers } = entrypointLcores(cpus, explicit);
    expect(workers).toBe(explicit ?? cpus - 1);
    expect(cfg.eal.lcores).toBe(''); // the entrypoint only fills it in when empty
    const derived = YAML.parse(sample(v).text) as Obj & { eal: Obj; dataplane?: Obj };
    derived.eal.lcores = lcores;
    derived.dataplane = { ...(derived.dataplane ?? {}), workers };
    const full = parseConfig(YAML.stringify(derived), `${v}: derived retrace.yaml`);
    expect(full.dataplane.workers).toBe(workers);
    // af_packet with several workers needs one queue pair per worker.
    for (const p of full.ports) {
      if (p.device.startsWith('net_af_packet') && workers > 1) expect(p.device).toContain(`qpairs=${workers}`);
    }
    // mbufs: every rx and tx ring full, the per-lcore caches, the redirect rings and bursts in flight.
    const { mbufs, mbuf_cache: cache, burst } = full.dataplane;
    const needed = full.ports.reduce((n, p) => n + workers * (p.rx_desc + p.tx_desc), 0) + (workers + 1) * cache + workers * (1024 + 2 * burst);
    expect(mbufs).toBeGreaterThanOrEqual(needed);
    // DPDK memory (deploy/README.md): 64 MiB + 2.5 KiB per mbuf + per worker 0.35 KiB per conn and 0.1 KiB per event slot.
    const estimate = 64 + (mbufs * 2.5) / 1024 + (workers * (full.dataplane.max_conns * 0.35 + full.dataplane.event_ring * 0.1)) / 1024;
    expect(estimate).toBeLessThanOrEqual(full.eal.memory_mb);
  });

  it('services.yaml passes the `retrace apply` parser and names only configured ports', () => {
    const { services } = sample(v);
    const doc = parseConfigDocument(services, `${v}: services.yaml`);
    const portNames = new Set(cfg.ports.map((p) => p.name));
    for (const x of [...doc.addresses, ...doc.routes, ...doc.localAddresses]) expect(portNames).toContain(x.port);
    expect(doc.virtualServices.length).toBeGreaterThan(0);
  });
});

describe('BGP sidecar (overlays/bgp)', () => {
  const { pod, retrace } = daemonSet('overlays/bgp');
  const c = (name: string) => [...pod.containers, ...(pod.initContainers ?? [])].find((x) => x.name === name)!;
  const bgpCm = find(rendered.get('overlays/bgp')!, 'ConfigMap', 'retrace-bgp')!;

  it('adds bgp-render, gobgpd and the announcer; the ConfigMap carries the repository files', () => {
    expect(pod.initContainers!.map((x) => x.name)).toEqual(['bgp-render']);
    expect(pod.containers.map((x) => x.name).sort()).toEqual(['bgp-announcer', 'gobgpd', 'retrace']);
    for (const f of ['gobgpd.toml', 'announce.sh', 'bgp-render.js']) {
      expect((bgpCm.data as Record<string, string>)[f]).toBe(fs.readFileSync(path.join(K8S, 'overlays', 'bgp', f), 'utf8'));
    }
  });

  it('gobgpd: API on a unix socket only, config rendered by the init container, preStop keeps the session for the withdrawal', () => {
    const cmd = c('gobgpd').command as string[];
    expect(cmd).toContain('--api-hosts=unix:///run/gobgp/gobgp.sock');
    expect(cmd).toContain('--config-file=/run/bgp/gobgpd.toml');
    expect(envOf(c('bgp-render'), 'OUT_DIR')).toBe('/run/bgp');
    expect((c('gobgpd').lifecycle as Obj).preStop).toBeDefined();
    expect(fs.readFileSync(path.join(K8S, 'overlays', 'bgp', 'gobgpd.toml'), 'utf8')).toMatch(/^\s*port = -1$/m);
  });

  it('the announcer polls the appliance health port and waits for the services marker', () => {
    const a = c('bgp-announcer');
    expect(envOf(a, 'HEALTH_ADDR')).toBe('127.0.0.1:50052');
    expect(envOf(a, 'GOBGP_TARGET')).toBe('unix:///run/gobgp/gobgp.sock');
    const retraceCmd = retrace.command as string[];
    expect(envOf(a, 'APPLIED_MARKER')).toBe(retraceCmd[retraceCmd.indexOf('--rm') + 1]);
    const runMount = (a.volumeMounts as { name: string; mountPath: string }[]).find((m) => m.name === 'run')!;
    expect(envOf(a, 'APPLIED_MARKER')!.startsWith(`${runMount.mountPath}/`)).toBe(true);
  });
});

describe('directly connected BGP (overlays/bgp-direct)', () => {
  const { pod } = daemonSet('overlays/bgp-direct');
  const bgpCm = find(rendered.get('overlays/bgp-direct')!, 'ConfigMap', 'retrace-bgp')!;

  it("gives each uplink a kernel interface in the node's namespace, the servers port none", () => {
    const { cfg } = sample('overlays/bgp-direct');
    expect(cfg.ports.map((p) => [p.name, p.kernel?.name, p.kernel?.netns])).toEqual([
      ['uplink-a', 'rt-up-a', ''],
      ['uplink-b', 'rt-up-b', ''],
      ['servers', undefined, undefined],
    ]);
    expect(pod.hostNetwork).toBe(true);
  });

  it("is overlays/bgp's pod with the direct gobgpd.toml; announce.sh and bgp-render.js stay the repository's", () => {
    expect(pod.containers.map((x) => x.name).sort()).toEqual(['bgp-announcer', 'gobgpd', 'retrace']);
    const data = bgpCm.data as Record<string, string>;
    expect(data['gobgpd.toml']).toBe(fs.readFileSync(path.join(K8S, 'overlays', 'bgp-direct', 'gobgpd.toml'), 'utf8'));
    for (const f of ['announce.sh', 'bgp-render.js']) expect(data[f]).toBe(fs.readFileSync(path.join(K8S, 'overlays', 'bgp', f), 'utf8'));
  });
});
