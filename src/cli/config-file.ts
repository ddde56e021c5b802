/**
 * The file `retrace apply -f` reads: a retrace.v1.Config in its proto JSON form, written as YAML
 * (JSON is YAML too). Keys may be lowerCamelCase (as `retrace get-config` prints them) or
 * snake_case (as the proto spells them). protocol, scheduler, syn_proxy and client_address take
 * the enum names (PROTOCOL_TCP, SCHEDULER_WRR, SYN_PROXY_MODE_ON, CLIENT_ADDRESS_MODE_PROXY_V2) or
 * their short forms (tcp, wrr, on, proxy_v2). A document of the form
 * `{config: ..., drained: ...}` (a GetConfig response) is accepted too.
 *
 * Checked strictly before anything is sent: an unknown key or a value of the wrong type is an error
 * naming its path (`virtual_services[0].sched: unknown key`), never silently dropped, which the
 * generated fromJSON would do; so is a number the message cannot carry (a weight of 1.5 or -5: every
 * number field is a uint32). Value ranges beyond that are the server's to check (INVALID_ARGUMENT).
 */
import fs from 'node:fs';
import YAML from 'yaml';
import { LocalAddress, Real, Timeouts, VirtualService } from '../gen/retrace/v1/balancer';
import { Config } from '../gen/retrace/v1/config';
import { HealthCheck, HealthCheckKind } from '../gen/retrace/v1/health_check';
import { Address, Neighbor, Route } from '../gen/retrace/v1/network';
import { SymmetricMode } from '../gen/retrace/v1/path';
import { UsageError } from './client';

type FieldType =
  | 'string'
  | 'strings'
  | 'number'
  | 'boolean'
  | 'u64'
  | 'bytes'
  | 'protocol'
  | 'scheduler'
  | 'healthKind'
  | 'healthState'
  | 'clientAddress'
  | 'synProxyMode'
  | { list: Schema }
  | { message: Schema };
/** Field types by lowerCamelCase name. */
type Schema = Record<string, FieldType>;

/**
 * A message's fields from its generated create(): the zero value's type is the field's type. A
 * repeated field is a list of strings (allow, deny) unless overridden with its message's schema.
 */
function derive(template: object, overrides: Schema = {}): Schema {
  const out: Schema = {};
  for (const [k, v] of Object.entries(template)) {
    out[k] = Array.isArray(v) ? 'strings' : typeof v === 'string' ? 'string' : typeof v === 'boolean' ? 'boolean' : typeof v === 'bigint' ? 'u64' : 'number';
  }
  return { ...out, ...overrides };
}

// Output-only health fields are accepted (a GetConfig result reads back) and ignored by the server.
const REAL = derive(Real.create(), { health: 'healthState', healthChangedAt: 'string' });
// udp_payload and udp_expect are bytes: base64 in proto JSON, as get-config prints them.
const HEALTH_CHECK = derive(HealthCheck.create(), { kind: 'healthKind', udpPayload: 'bytes', udpExpect: 'bytes' });
const SCHEMA: Schema = {
  addresses: { list: derive(Address.create()) },
  routes: { list: derive(Route.create()) },
  neighbors: { list: derive(Neighbor.create()) },
  localAddresses: { list: derive(LocalAddress.create()) },
  virtualServices: {
    list: derive(VirtualService.create(), {
      protocol: 'protocol',
      scheduler: 'scheduler',
      clientAddress: 'clientAddress',
      synProxy: 'synProxyMode',
      reals: { list: REAL },
      healthCheck: { message: HEALTH_CHECK },
    }),
  },
  symmetric: { message: derive(SymmetricMode.create()) },
  timeouts: { message: derive(Timeouts.create()) },
};

const camel = (s: string) => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function enumValue(v: unknown, prefix: string, path: string): unknown {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') throw new Error(`${path}: expected a name like ${prefix}_… or its short form, got ${typeof v}`);
  const upper = v.toUpperCase();
  return upper.startsWith(`${prefix}_`) ? upper : `${prefix}_${upper}`;
}

/** Checks one message against its schema; returns it with camelCase keys and full enum names. */
function check(value: unknown, schema: Schema, path: string): Record<string, unknown> {
  if (!isObject(value)) throw new Error(`${path || '(root)'}: expected a mapping`);
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const name = camel(key);
    const p = path === '' ? snake(name) : `${path}.${snake(name)}`;
    const type = schema[name];
    if (type === undefined) throw new Error(`${p}: unknown key`);
    if (v === null || v === undefined) continue;
    out[name] = field(v, type, p);
  }
  return out;
}

function field(v: unknown, type: FieldType, p: string): unknown {
  const bad = (what: string) =>
    new Error(`${p}: expected ${what}, got ${Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'a mapping' : JSON.stringify(v)}`);
  if (type === 'string') {
    if (typeof v !== 'string') throw bad('a string');
    return v;
  }
  if (type === 'strings') {
    if (!Array.isArray(v)) throw bad('a list of strings');
    return v.map((e, i) => field(e, 'string', `${p}[${i}]`));
  }
  if (type === 'number') {
    // Every number of these messages is a uint32: anything else cannot even be encoded (the
    // server would never see it, the client would fail with INTERNAL: serialization failure).
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw bad('a whole number 0..4294967295');
    return v;
  }
  if (type === 'boolean') {
    if (typeof v !== 'boolean') throw bad('true or false');
    return v;
  }
  if (type === 'u64') {
    if (!(typeof v === 'number' && Number.isInteger(v) && v >= 0) && !(typeof v === 'string' && /^[0-9]+$/.test(v) && BigInt(v) < 2n ** 64n))
      throw bad('a whole number');
    return v;
  }
  if (type === 'bytes') {
    if (typeof v !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v)) throw bad('base64 text');
    return v;
  }
  if (type === 'healthKind') {
    const name = enumValue(v, 'HEALTH_CHECK_KIND', p);
    if (typeof name === 'string' && !(name in HealthCheckKind && name !== 'UNRECOGNIZED')) {
      throw new Error(`${p}: unknown kind ${JSON.stringify(v)} (tcp, http, grpc, udp or icmp)`);
    }
    return name;
  }
  if (type === 'healthState') return enumValue(v, 'HEALTH_STATE', p);
  if (type === 'protocol') return enumValue(v, 'PROTOCOL', p);
  if (type === 'scheduler') return enumValue(v, 'SCHEDULER', p);
  if (type === 'synProxyMode') return enumValue(v, 'SYN_PROXY_MODE', p);
  if (type === 'clientAddress') return enumValue(v, 'CLIENT_ADDRESS_MODE', p);
  if ('list' in type) {
    if (!Array.isArray(v)) throw bad('a list');
    return v.map((e, i) => check(e, type.list, `${p}[${i}]`));
  }
  return check(v, type.message, p);
}

/** Parses and checks a document; `source` names it in errors. Throws UsageError. */
export function parseConfigDocument(text: string, source: string): Config {
  const doc = YAML.parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) throw new UsageError(`${source}: YAML syntax error: ${doc.errors[0].message.split('\n')[0]}`);
  let raw: unknown = doc.toJS({ maxAliasCount: 100 }) ?? {};
  if (isObject(raw) && 'config' in raw && Object.keys(raw).every((k) => k === 'config' || k === 'drained')) raw = raw.config ?? {};
  try {
    return Config.fromJSON(check(raw, SCHEMA, ''));
  } catch (e) {
    throw new UsageError(`${source}: ${(e as Error).message}`);
  }
}

/** Reads FILE, or standard input for "-". */
export function readConfigFile(file: string): Config {
  let text: string;
  try {
    text = fs.readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`${file}: ${code === 'ENOENT' ? 'file not found' : `cannot read: ${code ?? (e as Error).message}`}`);
  }
  return parseConfigDocument(text, file === '-' ? '<stdin>' : file);
}

/** A Config as YAML, in the form parseConfigDocument reads back. */
export function configToYaml(cfg: Config): string {
  return YAML.stringify(Config.toJSON(cfg), { lineWidth: 0 });
}
