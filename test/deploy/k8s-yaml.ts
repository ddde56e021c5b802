/**
 * deploy/k8s as the tests read it: YAML files, kustomization file references, and the objects
 * `kubectl kustomize` renders (the real renderer; deploy/bootstrap.sh installs kubectl).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

export type Obj = Record<string, unknown>;
export interface K8sObject extends Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
}

export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A YAML file's documents (multi-document files allowed), empty documents skipped. */
export function readYamlDocs(file: string): unknown[] {
  return parseYamlDocs(fs.readFileSync(file, 'utf8'), file);
}

function parseYamlDocs(text: string, source: string): unknown[] {
  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true });
  for (const d of docs) {
    if (d.errors.length > 0) throw new Error(`${source}: ${d.errors[0].message}`);
  }
  return docs.map((d) => d.toJS()).filter((d) => d !== null && d !== undefined);
}

/** The files a kustomization.yaml names (bases are directories), relative to its directory. */
export interface KustomizationRefs {
  dir: string;
  bases: string[];
  patches: string[];
  generatorFiles: string[];
}

export function readKustomization(dir: string): KustomizationRefs {
  const [k] = readYamlDocs(path.join(dir, 'kustomization.yaml')) as Obj[];
  const list = (key: string) => ((k[key] as string[] | undefined) ?? []).map(String);
  const gens = (k.configMapGenerator as { files?: string[] }[] | undefined) ?? [];
  return {
    dir,
    bases: [...list('bases'), ...list('resources').filter((r) => fs.statSync(path.join(dir, r)).isDirectory())],
    patches: list('patchesStrategicMerge'),
    generatorFiles: gens.flatMap((g) => g.files ?? []),
  };
}

/** `kubectl kustomize DIR`, parsed. Deprecation warnings (on stderr) are not errors. */
export function kustomize(dir: string): K8sObject[] {
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
  return parseYamlDocs(out, `kubectl kustomize ${dir}`) as K8sObject[];
}

/**
 * An object by kind and name; a generated ConfigMap matches by its name before kustomize's
 * content-hash suffix (`retrace-config-<10 chars>`).
 */
export function findObject(objs: K8sObject[], kind: string, name: string): K8sObject | undefined {
  const generated = new RegExp(`^${name}-[a-z0-9]{10}$`);
  return objs.find((o) => o.kind === kind && (o.metadata.name === name || (kind === 'ConfigMap' && generated.test(o.metadata.name))));
}
