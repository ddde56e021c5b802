/**
 * Field-level checks of the appliance configuration that need more than a zod primitive: listen
 * addresses, DPDK device names, MAC syntax, DPDK `--lcores` values. The schema (schema.ts) uses
 * them; callers outside the config use some directly (eal.ts, the dataplane).
 */
import * as net from 'node:net';
import { z } from 'zod';

// ---------------------------------------------------------------------------------------------
// Field helpers
// ---------------------------------------------------------------------------------------------

/** Integer in [min, max] with an operator-readable range message. */
export function intIn(min: number, max: number) {
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

export const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

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
