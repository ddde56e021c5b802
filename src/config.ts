/**
 * Appliance configuration: one YAML file, validated with zod (strict objects: an unknown key is an
 * error, so a typo never silently falls back to a default), plus command-line overrides, plus the
 * EAL argv derived from it.
 *
 * Every error is a ConfigError whose message reads `config: <path>: <reason>`, where <path> names
 * the offending key the way an operator would look for it in the file (`ports[0].device`,
 * `dataplane.idle.sleep_us`). Errors about the file itself (missing, YAML syntax) use the file's path.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';

// ---------------------------------------------------------------------------------------------
// Field helpers
// ---------------------------------------------------------------------------------------------

/** Integer in [min, max] with an operator-readable range message. */
function intIn(min: number, max: number) {
  const error = `must be an integer in ${min}..${max}`;
  return z.int().min(min, { error, abort: true }).max(max, { error, abort: true });
}

/** pino log levels. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * EAL log levels. DPDK 22.11 matches level names by prefix (`emerg` → emergency, `crit` → critical),
 * so these spellings are what `--log-level` receives verbatim.
 */
export const EAL_LOG_LEVELS = ['emerg', 'alert', 'crit', 'error', 'warning', 'notice', 'info', 'debug'] as const;

/** Longest unix socket path the kernel accepts (sizeof(sun_path) - 1). */
const UNIX_PATH_MAX = 107;

const HOSTNAME_RE = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * Checks a gRPC listen address. Returns undefined when valid, else the reason.
 * Accepted: `host:port` (IPv4 or DNS name), `[v6]:port`, `unix:/abs/path`, `unix:rel/path`,
 * `unix:///abs/path`. Port 0 asks the kernel for a free port.
 */
export function listenAddressProblem(listen: string): string | undefined {
  if (listen.startsWith('unix:')) {
    let p = listen.slice('unix:'.length);
    if (p.startsWith('//')) {
      // unix://<authority>/path: gRPC only allows an empty authority, i.e. unix:///abs/path.
      if (!p.startsWith('///')) return 'unix:// must be followed by an absolute path (unix:///path/to.sock)';
      p = p.slice(2);
    }
    if (p.length === 0) return 'unix socket path is empty';
    if (p.includes('\0')) return 'unix socket path contains a NUL byte';
    if (Buffer.byteLength(p) > UNIX_PATH_MAX) return `unix socket path is longer than ${UNIX_PATH_MAX} bytes`;
    return undefined;
  }
  let host: string;
  let port: string;
  const v6 = /^\[([^\]]*)\]:([^:]*)$/.exec(listen);
  if (v6) {
    host = v6[1];
    port = v6[2];
    if (!net.isIPv6(host)) return `"${host}" is not an IPv6 address`;
  } else {
    const m = /^([^:[\]]+):([^:]*)$/.exec(listen);
    if (!m) return 'expected host:port, [ipv6]:port or unix:/path/to.sock';
    host = m[1];
    port = m[2];
    if (!net.isIPv4(host) && (/^[0-9.]+$/.test(host) || !HOSTNAME_RE.test(host))) {
      return `"${host}" is not an IPv4 address or host name`;
    }
  }
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) return `port "${port}" is not in 0..65535`;
  return undefined;
}

const VDEV_RE = /^net_[a-z_]+[0-9]+(,[a-z_]+=[^,]+)*$/;
const PCI_RE = /^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7](,[a-z_]+=[^,]+)*$/;

/** `pci` for a PCI address (with optional devargs), `vdev` for a virtual device, undefined otherwise. */
export function deviceKind(device: string): 'pci' | 'vdev' | undefined {
  if (VDEV_RE.test(device)) return 'vdev';
  if (PCI_RE.test(device)) return 'pci';
  return undefined;
}

/**
 * The DPDK ethdev name of a port's device (the name rte_eth_dev_get_port_by_name expects): the part
 * before the first comma; a PCI address gets the default domain `0000:` when it has none and is
 * lower-cased (DPDK prints PCI names as `%04x:%02x:%02x.%x`).
 */
export function deviceName(device: string): string {
  const name = device.split(',', 1)[0];
  if (deviceKind(device) === 'pci') {
    return (/^[0-9a-fA-F]{4}:/.test(name) ? name : `0000:${name}`).toLowerCase();
  }
  return name;
}

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

// ---------------------------------------------------------------------------------------------
// --lcores parsing (only needed when the operator supplies eal.lcores verbatim)
// ---------------------------------------------------------------------------------------------

/** Parses `n`, `a-b` or `(n,a-b,...)`; returns the ids or throws on bad syntax. */
function parseIdSet(s: string): number[] {
  const inner = s.startsWith('(') && s.endsWith(')') ? s.slice(1, -1) : s;
  if (inner !== s && inner.length === 0) throw new Error(`empty set "${s}"`);
  const parts = inner === s ? [s] : inner.split(',');
  const ids: number[] = [];
  for (const part of parts) {
    const m = /^([0-9]+)(?:-([0-9]+))?$/.exec(part);
    if (!m) throw new Error(`bad element "${part}"`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new Error(`bad range "${part}"`);
    if (b >= 1024) throw new Error(`id ${b} out of range`);
    for (let i = a; i <= b; i++) ids.push(i);
  }
  return ids;
}

/**
 * Lcore ids named by a DPDK `--lcores` value (`lcores[@cpus]` elements separated by commas, where
 * each side is `n`, `a-b` or a parenthesised list), sorted and unique. Throws on bad syntax.
 */
export function parseLcores(spec: string): number[] {
  const elements: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of spec) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (depth < 0 || depth > 1) throw new Error('unbalanced parentheses');
    if (ch === ',' && depth === 0) {
      elements.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (depth !== 0) throw new Error('unbalanced parentheses');
  elements.push(cur);
  const lcores = new Set<number>();
  for (const el of elements) {
    const [ls, cpus, extra] = el.split('@');
    if (extra !== undefined || ls === '' || cpus === '') throw new Error(`bad element "${el}"`);
    for (const id of parseIdSet(ls)) lcores.add(id);
    if (cpus !== undefined) parseIdSet(cpus);
  }
  return [...lcores].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

const portSchema = z.strictObject({
  /** Logical port name used by the API, logs and counters: ^[a-z][a-z0-9-]{0,30}$. */
  name: z.string().regex(/^[a-z][a-z0-9-]{0,30}$/, {
    error: 'must match ^[a-z][a-z0-9-]{0,30}$ (lower-case letter, then letters, digits, "-"; at most 31 chars)',
  }),
  /**
   * The DPDK device: a vdev (`net_<driver><n>[,key=value...]`, e.g. `net_af_packet0,iface=veth0`,
   * `net_ring0`, `net_tap1,iface=rtr1`, `net_pcap0,rx_pcap=/x.pcap`) passed with --vdev, or a PCI
   * address (`[dddd:]bb:dd.f[,key=value...]`) passed with -a.
   */
  device: z.string().refine((d) => deviceKind(d) !== undefined, {
    error: 'not a vdev (net_<driver><n>[,key=value...], e.g. net_af_packet0,iface=veth0) ' + 'or PCI address ([dddd:]bb:dd.f[,key=value...])',
  }),
  /** Port MAC to set (unicast, non-zero); omitted → keep the device's own MAC. Normalised to lower case. */
  mac: z
    .string()
    .regex(MAC_RE, { error: 'must be a MAC address like 02:00:00:00:00:01', abort: true })
    .refine((m) => (parseInt(m.slice(0, 2), 16) & 1) === 0, { error: 'must be a unicast MAC (multicast bit set)', abort: true })
    .refine((m) => !/^(00:){5}00$/.test(m), { error: 'must not be the zero MAC' })
    .transform((m) => m.toLowerCase())
    .optional(),
  /** L3 MTU in bytes. */
  mtu: intIn(68, 9600).default(1500),
  /** RX descriptors per queue; power of two. */
  rx_desc: intIn(64, 16384)
    .refine((n) => (n & (n - 1)) === 0, { error: 'must be a power of two' })
    .default(1024),
  /** TX descriptors per queue; power of two. */
  tx_desc: intIn(64, 16384)
    .refine((n) => (n & (n - 1)) === 0, { error: 'must be a power of two' })
    .default(1024),
  /** Receive frames not addressed to the port's MAC. */
  promiscuous: z.boolean().default(false),
});

const baseSchema = z.strictObject({
  /** Control API. */
  grpc: z
    .strictObject({
      /** host:port, [v6]:port, unix:/path/to.sock or unix:///abs/path. Port 0 = any free port. */
      listen: z
        .string()
        .superRefine((s, ctx) => {
          const problem = listenAddressProblem(s);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        })
        .default('127.0.0.1:50051'),
      /** Conn events kept in memory for WatchConnEvents since_seq replays. */
      event_history: intIn(0, 16777216).default(65536),
      /** Events buffered per WatchConnEvents stream before it is told it lost some. */
      subscriber_buffer: intIn(16, 1048576).default(4096),
      /**
       * TLS for the control API (the health-only listener stays plaintext for probes). All ""
       * = plaintext. cert_file + key_file = TLS; client_ca_file too = mutual TLS (clients must
       * present a certificate signed by that CA).
       */
      tls: z
        .strictObject({
          /** PEM certificate chain of the server. */
          cert_file: z.string().default(''),
          /** PEM private key of the server. */
          key_file: z.string().default(''),
          /** PEM CA bundle that client certificates must chain to; "" = no client certificates. */
          client_ca_file: z.string().default(''),
        })
        .superRefine((t, ctx) => {
          if ((t.cert_file === '') !== (t.key_file === '')) {
            ctx.addIssue({ code: 'custom', path: [t.cert_file === '' ? 'cert_file' : 'key_file'], message: 'cert_file and key_file go together' });
          }
          if (t.client_ca_file !== '' && t.cert_file === '') {
            ctx.addIssue({ code: 'custom', path: ['client_ca_file'], message: 'mutual TLS needs cert_file and key_file too' });
          }
          for (const k of ['cert_file', 'key_file', 'client_ca_file'] as const) {
            if (t[k] !== '' && !fs.existsSync(t[k])) ctx.addIssue({ code: 'custom', path: [k], message: `file not found: ${t[k]}` });
          }
        })
        .prefault({}),
    })
    .prefault({}),
  /**
   * A second, plaintext gRPC listener that serves only grpc.health.v1 (for Kubernetes probes).
   * Service "" is readiness (NOT_SERVING while starting, drained or stopping); service "liveness"
   * stays SERVING while the dataplane runs, drained or not.
   */
  health: z
    .strictObject({
      /** host:port or unix:/path; "" = off (health is still served on grpc.listen). */
      listen: z
        .string()
        .superRefine((s, ctx) => {
          if (s === '') return;
          const problem = listenAddressProblem(s);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        })
        .default(''),
    })
    .prefault({}),
  /** Persistence of the configuration applied over the API. */
  state: z
    .strictObject({
      /**
       * File holding the applied configuration (GetConfig's document, plus the drain flag),
       * rewritten atomically after every change and applied at start. "" = not persisted.
       */
      file: z.string().default(''),
    })
    .prefault({}),
  /** Prometheus metrics over plain HTTP (GET /metrics). */
  metrics: z
    .strictObject({
      /** host:port to serve /metrics on; "" = off. */
      listen: z
        .string()
        .superRefine((s, ctx) => {
          if (s === '') return;
          const problem = s.startsWith('unix:') ? 'must be host:port' : listenAddressProblem(s);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        })
        .default(''),
    })
    .prefault({}),
  /** Node-side logging (pino). */
  log: z
    .strictObject({
      /** pino level: fatal error warn info debug trace silent. */
      level: z.enum(LOG_LEVELS).default('info'),
    })
    .prefault({}),
  /** DPDK EAL (rte_eal_init) settings. */
  eal: z
    .strictObject({
      /** Memory for DPDK in MB (-m). */
      memory_mb: intIn(64, 65536).default(256),
      /** Use hugepages; false → --no-huge (anonymous memory, no setup needed, no PCI DMA). */
      hugepages: z.boolean().default(false),
      /** --file-prefix; "" → "retrace-<pid>" so that several instances never collide. */
      file_prefix: z
        .string()
        .regex(/^([A-Za-z0-9_-]{1,32})?$/, { error: 'must be "" or match [A-Za-z0-9_-]{1,32}' })
        .default(''),
      /** Raw --lcores value; "" → computed from dataplane.workers (main lcore 0, workers 1..N). */
      lcores: z.string().default(''),
      /** EAL --log-level: emerg alert crit error warning notice info debug. */
      log_level: z.enum(EAL_LOG_LEVELS).default('notice'),
      /** Enable DPDK telemetry socket; false → --no-telemetry. */
      telemetry: z.boolean().default(false),
      /** Extra EAL arguments, appended verbatim after the generated ones. */
      extra_args: z.array(z.string()).default([]),
    })
    .prefault({}),
  /** Packet path. */
  dataplane: z
    .strictObject({
      /** Worker lcores (lcore ids 1..workers). */
      workers: intIn(1, 64).default(1),
      /** mbuf pool size (2^q - 1 is optimal for the mempool). */
      mbufs: intIn(1023, 16777215).default(16383),
      /** Per-lcore mempool cache. */
      mbuf_cache: intIn(0, 512).default(256),
      /** RX/TX burst size. */
      burst: intIn(1, 256).default(32),
      /** Conns each worker can hold (its conn table and record pool are sized by this). */
      max_conns: intIn(1024, 67108864).default(131072),
      /** ICMP the appliance originates (echo replies, errors), per port per second; 0 = unlimited. */
      icmp_rate: intIn(0, 100000000).default(1000),
      /** Burst allowance for icmp_rate, in messages. */
      icmp_burst: intIn(1, 100000000).default(100),
      /** Conn events each worker can queue for the control plane before dropping (power of two). */
      event_ring: intIn(64, 16777216)
        .refine((v) => (v & (v - 1)) === 0, { error: 'must be a power of two' })
        .default(65536),
      /** Idle back-off of a worker that finds nothing to do. */
      idle: z
        .strictObject({
          /** Empty polls before rte_pause() between polls; 0 = never pause. */
          pause_after: z.int().min(0, { error: 'must be an integer >= 0' }).default(64),
          /** Empty polls before sleeping; 0 = never sleep (busy-poll, for benchmarks). */
          sleep_after: z.int().min(0, { error: 'must be an integer >= 0' }).default(1024),
          /** Sleep length in microseconds once sleeping. */
          sleep_us: intIn(1, 100000).default(100),
        })
        .prefault({}),
    })
    .prefault({}),
  /** DPDK ports, in port-id order of declaration. Names and devices are unique. */
  ports: z.array(portSchema).min(1, { error: 'must list at least one port' }).max(32, { error: 'at most 32 ports' }),
  /** Idle timeouts of conns, in seconds, by protocol and TCP state. */
  timeouts: z
    .strictObject({
      /** TCP while the handshake is in progress (SYN sent, SYN-ACK sent). */
      tcp_syn: intIn(1, 604800).default(30),
      /** TCP once established. */
      tcp_established: intIn(1, 604800).default(900),
      /** TCP after the first FIN. */
      tcp_fin: intIn(1, 604800).default(60),
      /** TCP after both FINs or an RST (TIME_WAIT, CLOSE). */
      tcp_close: intIn(1, 604800).default(10),
      /** UDP since the last datagram either way. */
      udp: intIn(1, 604800).default(300),
      /** ICMP echo conns since the last echo request or reply. */
      icmp: intIn(1, 604800).default(60),
    })
    .prefault({}),
  /** Source-in, source-out per protocol: replies leave by the port/MAC the peer's packets came from. */
  symmetric: z
    .strictObject({
      /** TCP conns reply via the recorded port/MAC; false → route lookup (counted as routed). */
      tcp: z.boolean().default(true),
      /** UDP conns, same rule. */
      udp: z.boolean().default(true),
      /** ICMP echo (local and FNAT) and ICMP errors, same rule. */
      icmp: z.boolean().default(true),
    })
    .prefault({}),
});

type BaseConfig = z.output<typeof baseSchema>;

/** Checks that span several fields; run only once every field is individually valid. */
function crossCheck(cfg: BaseConfig, ctx: z.RefinementCtx): void {
  const names = new Map<string, number>();
  const devices = new Map<string, number>();
  cfg.ports.forEach((p, i) => {
    const prevName = names.get(p.name);
    if (prevName !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['ports', i, 'name'], message: `duplicate port name "${p.name}" (also ports[${prevName}].name)` });
    } else {
      names.set(p.name, i);
    }
    const dev = deviceName(p.device);
    const prevDev = devices.get(dev);
    if (prevDev !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['ports', i, 'device'], message: `duplicate device "${dev}" (also ports[${prevDev}].device)` });
    } else {
      devices.set(dev, i);
    }
  });
  if (!cfg.eal.hugepages) {
    cfg.eal.extra_args.forEach((a, i) => {
      if (a === '--in-memory') {
        ctx.addIssue({
          code: 'custom',
          path: ['eal', 'extra_args', i],
          message: 'DPDK rejects --in-memory together with --no-huge (eal.hugepages is false); --no-shconf is already passed',
        });
      }
    });
  }
  if (cfg.eal.lcores !== '') {
    let ids: number[];
    try {
      ids = parseLcores(cfg.eal.lcores);
    } catch (e) {
      ctx.addIssue({ code: 'custom', path: ['eal', 'lcores'], message: `not a valid --lcores value: ${(e as Error).message}` });
      return;
    }
    const workers = ids.filter((id) => id !== 0);
    if (!ids.includes(0)) {
      ctx.addIssue({ code: 'custom', path: ['eal', 'lcores'], message: 'must include lcore 0 (the main lcore, --main-lcore 0)' });
    } else if (workers.length !== cfg.dataplane.workers) {
      ctx.addIssue({
        code: 'custom',
        path: ['eal', 'lcores'],
        message: `names ${workers.length} worker lcore(s) besides main lcore 0, but dataplane.workers is ${cfg.dataplane.workers}`,
      });
    }
  }
}

/** The full configuration schema (per-field validation, defaults, then cross-field checks). */
export const configSchema = baseSchema.superRefine(crossCheck, { when: (payload) => payload.issues.length === 0 });

/** A validated configuration with every default applied. */
export type Config = z.output<typeof configSchema>;
export type PortConfig = Config['ports'][number];

// ---------------------------------------------------------------------------------------------
// Default config
// ---------------------------------------------------------------------------------------------

/** Built-in configuration: runs anywhere (no NIC, no hugepages) with one ring-backed port. */
export const DEFAULT_CONFIG_YAML = `# retrace default configuration: runs without a NIC or hugepages.
grpc:
  listen: "127.0.0.1:50051"   # host:port, [v6]:port, unix:/path/to.sock or unix:///abs/path
log:
  level: info                 # fatal error warn info debug trace silent
eal:
  memory_mb: 256              # -m
  hugepages: false            # false -> --no-huge
  file_prefix: ""             # "" -> retrace-<pid>
  lcores: ""                  # "" -> main lcore 0 on all CPUs, workers pinned to the last CPUs
  log_level: notice           # emerg alert crit error warning notice info debug
  telemetry: false            # false -> --no-telemetry
  extra_args: []
dataplane:
  workers: 1
  mbufs: 16383
  mbuf_cache: 256
  burst: 32
  idle:
    pause_after: 64           # empty polls before rte_pause() between polls; 0 = never
    sleep_after: 1024         # empty polls before sleeping; 0 = never (benchmarks)
    sleep_us: 100
ports:
  - name: virt0
    device: net_ring0
symmetric:
  tcp: true
  udp: true
  icmp: true
`;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

export interface ConfigIssue {
  path: string;
  reason: string;
}

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

function issuesOf(error: z.ZodError, overridden: Set<string>): ConfigIssue[] {
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
