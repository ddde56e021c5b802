/**
 * ConfigError and the translation of zod issues into `config: <path>: <reason>` lines that name
 * the key the way an operator would look for it in the file.
 */
import { z } from 'zod';

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

export interface ConfigIssue {
  path: string;
  reason: string;
}

/** A configuration problem. `message` is `config: <path>: <reason>` (further issues on later lines). */
export class ConfigError extends Error {
  readonly path: string;
  readonly reason: string;
  /** Every problem found, first one = path/reason. */
  readonly issues: ConfigIssue[];

  constructor(path: string, reason: string, issues?: ConfigIssue[]) {
    const all = issues && issues.length > 0 ? issues : [{ path, reason }];
    super(all.map((i) => `config: ${i.path}: ${i.reason}`).join('\n'));
    this.name = 'ConfigError';
    this.path = path;
    this.reason = reason;
    this.issues = all;
  }
}

/** ['ports', 0, 'device'] → `ports[0].device`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const k of path) {
    if (typeof k === 'number') out += `[${k}]`;
    else if (typeof k === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) out += out === '' ? k : `.${k}`;
    else out += `[${JSON.stringify(String(k))}]`;
  }
  return out === '' ? '(root)' : out;
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  return `${typeof v} ${String(v)}`;
}

const EXPECTED_NAMES: Record<string, string> = {
  int: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
};

export function issuesOf(error: z.ZodError, overridden: Set<string>): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const iss of error.issues) {
    if (iss.code === 'unrecognized_keys') {
      for (const key of iss.keys) out.push({ path: formatPath([...iss.path, key]), reason: 'unknown key' });
      continue;
    }
    const path = formatPath(iss.path);
    let reason: string;
    if (iss.code === 'invalid_type') {
      const expected = EXPECTED_NAMES[iss.expected] ?? iss.expected;
      reason = iss.input === undefined ? 'required' : `expected ${expected}, got ${describeValue(iss.input)}`;
    } else if (iss.code === 'invalid_value') {
      reason = `must be one of ${iss.values.map((v) => String(v)).join(' ')}, got ${describeValue(iss.input)}`;
    } else {
      reason = iss.message;
    }
    if (overridden.has(path)) reason += ' (from command-line override)';
    out.push({ path, reason });
  }
  return out;
}
