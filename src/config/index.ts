/**
 * Appliance configuration: one YAML file, validated with zod (strict objects: an unknown key is an
 * error, so a typo never silently falls back to a default), plus command-line overrides, plus the
 * EAL argv derived from it.
 *
 * Every error is a ConfigError whose message reads `config: <path>: <reason>`, where <path> names
 * the offending key the way an operator would look for it in the file (`ports[0].device`,
 * `dataplane.idle.sleep_us`). Errors about the file itself (missing, YAML syntax) use the file's path.
 *
 * Here: loading, command-line overrides and the state-file check. The schema is in schema.ts,
 * field checks in fields.ts, error formatting in errors.ts; everything public is re-exported.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { ConfigError, issuesOf } from './errors';
import { DEFAULT_CONFIG_YAML, configSchema, type Config } from './schema';

export { EAL_LOG_LEVELS, LOG_LEVELS, deviceKind, deviceName, listenAddressProblem, parseLcores } from './fields';
export { DEFAULT_CONFIG_YAML, configSchema, type Config, type PortConfig } from './schema';
export { ConfigError, formatPath, type ConfigIssue } from './errors';

/**
 * Why a state file could not be saved, or undefined. Checked by `retrace serve` before anything
 * starts (not by loadConfig: a client reading grpc.listen from the same file need not be able to
 * write there): an appliance that accepted changes it cannot save would lose them on the next
 * restart. Saving writes a temporary file in the same directory and renames it over the state
 * file, so the directory must exist and be writable, and the path must not be a directory.
 */
export function stateFileProblem(file: string): string | undefined {
  const dir = path.dirname(path.resolve(file));
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT'
      ? `directory ${dir} does not exist (create it, or choose another path)`
      : `cannot use directory ${dir}: ${code ?? (e as Error).message}`;
  }
  if (!st.isDirectory()) return `${dir} is not a directory`;
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    return `directory ${dir} is not writable (saving writes a temporary file there and renames it)`;
  }
  try {
    if (fs.statSync(file).isDirectory()) return `${file} is a directory; give the path of a file in it (e.g. ${path.join(file, 'state.json')})`;
  } catch {
    // Not there yet: the first change creates it.
  }
  return undefined;
}

/**
 * Why eal.huge_dir cannot be used, or undefined. Checked by `retrace serve` before EAL starts:
 * EAL given a directory that is not a hugetlbfs mount fails deep in rte_eal_init ("No available
 * 2048 kB hugepages reported" or a mmap error), which names neither the key nor the cause.
 * `mounts` is /proc/mounts' text (a parameter so that tests can give their own).
 */
export function hugeDirProblem(dir: string, mounts?: string): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? `${dir} does not exist (mount hugetlbfs there first)` : `cannot use ${dir}: ${code ?? (e as Error).message}`;
  }
  if (!st.isDirectory()) return `${dir} is not a directory`;
  let text = mounts;
  if (text === undefined) {
    try {
      text = fs.readFileSync('/proc/mounts', 'utf8');
    } catch (e) {
      return `cannot read /proc/mounts to check ${dir}: ${(e as Error).message}`;
    }
  }
  const real = fs.realpathSync(dir);
  // /proc/mounts escapes space, tab, newline and backslash in paths as octal.
  const unescape = (p: string) => p.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  const types = text
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f.length >= 3 && unescape(f[1]) === real)
    .map((f) => f[2]);
  if (types.length === 0) return `${dir} is not a mount point (mount -t hugetlbfs nodev ${dir})`;
  // The last mount on a path is the one visible there.
  const fstype = types[types.length - 1];
  if (fstype !== 'hugetlbfs') return `${dir} is a ${fstype} mount, not hugetlbfs`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/** Settings the command line may override; numbers may be given as decimal strings. */
export interface Overrides {
  /** grpc.listen */
  listen: string;
  /** dataplane.workers */
  workers: number | string;
  /** eal.memory_mb */
  memoryMb: number | string;
  /** eal.file_prefix */
  filePrefix: string;
  /** log.level */
  logLevel: string;
}

const OVERRIDE_KEYS: Record<keyof Overrides, [string, string]> = {
  listen: ['grpc', 'listen'],
  workers: ['dataplane', 'workers'],
  memoryMb: ['eal', 'memory_mb'],
  filePrefix: ['eal', 'file_prefix'],
  logLevel: ['log', 'level'],
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Writes overrides into the raw (unvalidated) document; returns the config paths touched. */
function applyOverrides(raw: unknown, overrides: Partial<Overrides>): Set<string> {
  const touched = new Set<string>();
  if (!isPlainObject(raw)) return touched;
  for (const key of Object.keys(OVERRIDE_KEYS) as (keyof Overrides)[]) {
    let value: unknown = overrides[key];
    if (value === undefined) continue;
    const [section, field] = OVERRIDE_KEYS[key];
    if ((key === 'workers' || key === 'memoryMb') && typeof value === 'string' && /^\s*[0-9]+\s*$/.test(value)) {
      value = Number(value);
    }
    if (raw[section] === undefined || raw[section] === null) raw[section] = {};
    const sec = raw[section];
    if (!isPlainObject(sec)) continue; // the section itself is invalid; validation reports it
    sec[field] = value;
    touched.add(`${section}.${field}`);
  }
  return touched;
}

/**
 * Parses and validates YAML text. `source` names the text in syntax errors (a file path, or
 * "<default>" for the built-in config).
 */
export function parseConfig(text: string, source = '<config>', overrides: Partial<Overrides> = {}): Config {
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const issues = doc.errors.map((e) => ({ path: source, reason: `YAML syntax error: ${e.message.split('\n')[0].replace(/:$/, '')}` }));
    throw new ConfigError(issues[0].path, issues[0].reason, issues);
  }
  // An empty document is an empty mapping (all defaults; `ports` is still required).
  const raw: unknown = doc.toJS({ maxAliasCount: 100 }) ?? {};
  const overridden = applyOverrides(raw, overrides);
  const result = configSchema.safeParse(raw, { reportInput: true });
  if (!result.success) {
    const issues = issuesOf(result.error, overridden);
    throw new ConfigError(issues[0].path, issues[0].reason, issues);
  }
  return result.data;
}

/**
 * Reads the config file (or the built-in default when no file is given), applies command-line
 * overrides, validates, and returns the config with all defaults applied. Throws ConfigError.
 */
export function loadConfig(opts: { file?: string; overrides?: Partial<Overrides> } = {}): Config {
  let text = DEFAULT_CONFIG_YAML;
  let source = '<default>';
  if (opts.file !== undefined) {
    source = opts.file;
    try {
      text = fs.readFileSync(opts.file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new ConfigError(opts.file, 'file not found');
      throw new ConfigError(opts.file, `cannot read file: ${code ?? (e as Error).message}`);
    }
  }
  return parseConfig(text, source, opts.overrides ?? {});
}
