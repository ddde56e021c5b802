/**
 * Kubernetes schema checks for the manifests under deploy/k8s, from the kubernetes-models package:
 *  - validate(): the OpenAPI schema of each kind (types, required fields, formats);
 *  - strictFieldErrors(): unknown fields (a typo like `hostNetwok` passes the OpenAPI schema, which
 *    allows extra keys, and the API server would only warn). The objects are type-checked as
 *    TypeScript object literals against the package's interfaces: excess property checks name
 *    every key the API does not have.
 */
import path from 'node:path';
import ts from 'typescript';
import type { K8sObject } from './k8s-yaml';

interface KindInfo {
  module: string;
  iface: string;
  model: string;
}

/** The kinds deploy/k8s may contain. A new kind must be added here (the test says so). */
export const KINDS: Record<string, KindInfo> = {
  'apps/v1/DaemonSet': { module: 'kubernetes-models/apps/v1/DaemonSet', iface: 'IDaemonSet', model: 'DaemonSet' },
  'v1/ConfigMap': { module: 'kubernetes-models/v1/ConfigMap', iface: 'IConfigMap', model: 'ConfigMap' },
  'v1/ServiceAccount': { module: 'kubernetes-models/v1/ServiceAccount', iface: 'IServiceAccount', model: 'ServiceAccount' },
  'v1/Namespace': { module: 'kubernetes-models/v1/Namespace', iface: 'INamespace', model: 'Namespace' },
};

export const kindKey = (o: K8sObject): string => `${o.apiVersion}/${o.kind}`;

/** Throws with the schema errors of `obj` (validate() of its kubernetes-models class). */
export function validateSchema(obj: K8sObject): void {
  const info = KINDS[kindKey(obj)];
  if (!info) throw new Error(`no schema for ${kindKey(obj)}: add it to KINDS in test/deploy/k8s-schema.ts`);
  // The model's module is chosen per kind at run time: a dynamic require, not an import.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Model = require(info.module)[info.model] as new (data: unknown) => { validate(): void };
  new Model(obj).validate();
}

/**
 * Unknown-field errors for each labelled object (empty when all are clean). One TypeScript program
 * for all of them (a few seconds).
 */
export function strictFieldErrors(objects: { label: string; obj: K8sObject }[]): string[] {
  const root = path.resolve(__dirname, '..', '..');
  const file = path.join(root, 'test', 'deploy', '__k8s_strict_check__.ts');
  const imports = new Set<string>();
  const body: string[] = [];
  const starts: { line: number; label: string }[] = []; // 0-based line in body
  objects.forEach(({ label, obj }, i) => {
    const info = KINDS[kindKey(obj)];
    if (!info) throw new Error(`no schema for ${kindKey(obj)} (${label})`);
    imports.add(`import type { ${info.iface} } from '${info.module}';`);
    starts.push({ line: body.length, label });
    body.push(...`export const o${i}: ${info.iface} = ${JSON.stringify(obj, null, 2)};`.split('\n'));
  });
  const header = [...imports];
  const source = [...header, ...body].join('\n');
  const offset = header.length;
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    target: ts.ScriptTarget.ES2022,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (f, lang, ...rest) => (f === file ? ts.createSourceFile(f, source, lang) : getSourceFile(f, lang, ...rest));
  host.fileExists = (f) => f === file || fileExists(f);
  const program = ts.createProgram([file], options, host);
  const src = program.getSourceFile(file);
  const allLines = source.split('\n');
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    if (d.file !== src || d.start === undefined || !src) return msg;
    const { line } = src.getLineAndCharacterOfPosition(d.start);
    const owner = [...starts].reverse().find((s) => s.line + offset <= line);
    return `${owner?.label ?? '?'}: ${msg}\n    at: ${allLines[line].trim()}`;
  });
}
