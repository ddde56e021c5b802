/**
 * A small kustomize for the tests: renders deploy/k8s kustomizations without the kustomize
 * binary, supporting exactly the features deploy/k8s uses (resources, components, strategic
 * merge patches, configMapGenerator with create/merge/replace, namespace). Anything else in a
 * kustomization.yaml is an error, so a new feature there fails loudly instead of being ignored.
 * Generated ConfigMaps keep their plain names (no content hash suffix).
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

export type Obj = Record<string, unknown>;
export interface K8sObject extends Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
}

/** A YAML file's documents (multi-document files allowed), empty documents skipped. */
export function readYamlDocs(file: string): unknown[] {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'), { uniqueKeys: true });
  for (const d of docs) {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0].message}`);
  }
  return docs.map((d) => d.toJS()).filter((d) => d !== null && d !== undefined);
}

export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const clone = <T>(v: T): T => structuredClone(v);

/** List merge keys of the strategic merge patches used here (core/v1 PodSpec, Container). */
export const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  env: 'name',
  ports: 'containerPort',
  imagePullSecrets: 'name',
};

/** Strategic merge of `patch` into `base` (mutates base): null deletes, `$patch: delete` removes a list item. */
export function strategicMerge(base: Obj, patch: Obj): Obj {
  for (const [k, pv] of Object.entries(patch)) {
    if (k === '$patch') continue;
    if (pv === null) {
      delete base[k];
    } else if (Array.isArray(pv) && MERGE_KEYS[k] !== undefined) {
      const mk = MERGE_KEYS[k];
      const list = Array.isArray(base[k]) ? (base[k] as Obj[]) : [];
      for (const item of pv as Obj[]) {
        const idx = list.findIndex((b) => b[mk] === item[mk]);
        if (item.$patch === 'delete') {
          if (idx < 0) throw new Error(`$patch: delete of ${k}[${mk}=${String(item[mk])}], which the base does not have`);
          list.splice(idx, 1);
        } else if (idx >= 0) {
          strategicMerge(list[idx], item);
        } else {
          list.push(strategicMerge({}, item));
        }
      }
      base[k] = list;
    } else if (isObj(pv)) {
      base[k] = strategicMerge(isObj(base[k]) ? (base[k] as Obj) : {}, pv);
    } else {
      base[k] = clone(pv);
    }
  }
  return base;
}

export interface Kustomization {
  dir: string;
  kind: 'Kustomization' | 'Component';
  resources: string[];
  components: string[];
  patches: string[];
  configMapGenerator: { name: string; behavior: 'create' | 'merge' | 'replace'; files: string[] }[];
  namespace?: string;
}

const KNOWN_FIELDS = new Set(['apiVersion', 'kind', 'resources', 'components', 'patches', 'configMapGenerator', 'namespace']);

export function readKustomization(dir: string): Kustomization {
  const file = path.join(dir, 'kustomization.yaml');
  const [k] = readYamlDocs(file) as Obj[];
  for (const key of Object.keys(k)) {
    if (!KNOWN_FIELDS.has(key)) throw new Error(`${file}: field "${key}" is not supported by test/deploy/kustomize.ts`);
  }
  const kind = k.kind as string;
  const apiVersion = k.apiVersion as string;
  if (!(kind === 'Kustomization' && apiVersion === 'kustomize.config.k8s.io/v1beta1') && !(kind === 'Component' && apiVersion === 'kustomize.config.k8s.io/v1alpha1')) {
    throw new Error(`${file}: unexpected apiVersion/kind ${apiVersion}/${kind}`);
  }
  const patches = ((k.patches as Obj[] | undefined) ?? []).map((p, i) => {
    for (const key of Object.keys(p)) if (key !== 'path') throw new Error(`${file}: patches[${i}].${key} is not supported (path only)`);
    return p.path as string;
  });
  const gens = ((k.configMapGenerator as Obj[] | undefined) ?? []).map((g, i) => {
    for (const key of Object.keys(g)) {
      if (!['name', 'behavior', 'files'].includes(key)) throw new Error(`${file}: configMapGenerator[${i}].${key} is not supported`);
    }
    return { name: g.name as string, behavior: ((g.behavior as string | undefined) ?? 'create') as 'create' | 'merge' | 'replace', files: (g.files as string[]) ?? [] };
  });
  return {
    dir,
    kind: kind as Kustomization['kind'],
    resources: (k.resources as string[] | undefined) ?? [],
    components: (k.components as string[] | undefined) ?? [],
    patches,
    configMapGenerator: gens,
    namespace: k.namespace as string | undefined,
  };
}

const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'PriorityClass']);

function objectsOf(file: string): K8sObject[] {
  return readYamlDocs(file).map((d, i) => {
    if (!isObj(d) || typeof d.kind !== 'string' || typeof d.apiVersion !== 'string' || !isObj(d.metadata) || typeof d.metadata.name !== 'string') {
      throw new Error(`${file}: document ${i} is not a Kubernetes object (apiVersion, kind, metadata.name)`);
    }
    return d as K8sObject;
  });
}

/** Applies a kustomization's (or component's) own generators and patches to `objs` (mutated). */
function applyLayer(k: Kustomization, objs: K8sObject[]): void {
  for (const g of k.configMapGenerator) {
    const data: Record<string, string> = {};
    for (const f of g.files) data[path.basename(f)] = fs.readFileSync(path.join(k.dir, f), 'utf8');
    const existing = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === g.name);
    if (g.behavior === 'create') {
      if (existing) throw new Error(`${k.dir}: configMapGenerator ${g.name} already exists (use behavior merge or replace)`);
      objs.push({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: g.name }, data });
    } else {
      if (!existing) throw new Error(`${k.dir}: configMapGenerator ${g.name} has behavior ${g.behavior} but no base generates it`);
      existing.data = g.behavior === 'merge' ? { ...(existing.data as Record<string, string>), ...data } : data;
    }
  }
  for (const p of k.patches) {
    const file = path.join(k.dir, p);
    for (const patch of objectsOf(file)) {
      const target = objs.find((o) => o.kind === patch.kind && o.metadata.name === patch.metadata.name);
      if (!target) throw new Error(`${file}: patch targets ${patch.kind}/${patch.metadata.name}, which is not among the resources`);
      if (target.apiVersion !== patch.apiVersion) throw new Error(`${file}: patch apiVersion ${patch.apiVersion} != ${target.apiVersion}`);
      strategicMerge(target, patch);
    }
  }
}

/** Renders a kustomization directory to its objects. */
export function render(dir: string): K8sObject[] {
  const k = readKustomization(dir);
  if (k.kind !== 'Kustomization') throw new Error(`${dir}: a Component cannot be rendered on its own`);
  const objs: K8sObject[] = [];
  for (const r of k.resources) {
    const p = path.join(dir, r);
    if (fs.statSync(p).isDirectory()) objs.push(...render(p));
    else objs.push(...objectsOf(p));
  }
  for (const c of k.components) {
    const comp = readKustomization(path.join(dir, c));
    if (comp.kind !== 'Component') throw new Error(`${dir}: components entry ${c} is not a Component`);
    for (const r of comp.resources) objs.push(...objectsOf(path.join(comp.dir, r)));
    applyLayer(comp, objs);
  }
  applyLayer(k, objs);
  if (k.namespace !== undefined) {
    for (const o of objs) if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
  }
  return objs;
}
