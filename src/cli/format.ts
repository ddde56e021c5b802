/** Plain-text rendering for the CLI: aligned tables, diffs, counters. Pure functions. */
import type { ConfigDiff, ResourceChanges } from '../gen/retrace/v1/config';
import type { Conn, WatchConnEventsResponse } from '../gen/retrace/v1/conn';
import { ConnState } from '../gen/retrace/v1/conn';
import { HealthCheckKind, HealthState, type HealthCheck } from '../gen/retrace/v1/health_check';
import { ClientAddressMode, type VirtualService } from '../gen/retrace/v1/balancer';
import type { Address } from '../gen/retrace/v1/network';
import type { GetCountersResponse, PathCounters } from '../gen/retrace/v1/path';
import { LinkState, type Port } from '../gen/retrace/v1/port';
import { Protocol, Scheduler, SynProxyMode } from '../gen/retrace/v1/types';

/**
 * Columns separated by two spaces: left-aligned, except columns of numbers (bigint, number, or
 * empty) and the columns listed in `right`, which are right-aligned.
 */
export function table(header: string[], rows: (string | number | bigint)[][], right: number[] = []): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const numeric = header.map((_, i) => right.includes(i) || (rows.length > 0 && rows.every((r) => typeof r[i] !== 'string' || r[i] === '')));
  const width = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (numeric[i] ? c.padStart(width[i]) : c.padEnd(width[i])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export const PROTOCOL_NAME: Record<number, string> = {
  [Protocol.PROTOCOL_TCP]: 'tcp',
  [Protocol.PROTOCOL_UDP]: 'udp',
  [Protocol.PROTOCOL_ICMP]: 'icmp',
};

export const SCHEDULER_NAME: Record<number, string> = {
  [Scheduler.SCHEDULER_RR]: 'rr',
  [Scheduler.SCHEDULER_WRR]: 'wrr',
  [Scheduler.SCHEDULER_WLC]: 'wlc',
  [Scheduler.SCHEDULER_MAGLEV]: 'maglev',
};

const CLIENT_ADDRESS_NAME: Record<number, string> = {
  [ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2]: 'proxy_v2',
  [ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V1]: 'proxy_v1',
  [ClientAddressMode.CLIENT_ADDRESS_MODE_TOA]: 'toa',
};

const hostPort = (addr: string, port: number, protocol: Protocol) => (protocol === Protocol.PROTOCOL_ICMP ? addr : `${addr}:${port}`);

/** A service's SYN proxy: off, on, or auto>=<half-open conns of a worker>. */
export function synProxyText(s: VirtualService): string {
  if (s.synProxy === SynProxyMode.SYN_PROXY_MODE_ON) return 'on';
  if (s.synProxy === SynProxyMode.SYN_PROXY_MODE_AUTO) return `auto>=${s.synProxyThreshold}`;
  return 'off';
}

const HEALTH_KIND_NAME: Record<number, string> = {
  [HealthCheckKind.HEALTH_CHECK_KIND_TCP]: 'tcp',
  [HealthCheckKind.HEALTH_CHECK_KIND_HTTP]: 'http',
  [HealthCheckKind.HEALTH_CHECK_KIND_GRPC]: 'grpc',
  [HealthCheckKind.HEALTH_CHECK_KIND_UDP]: 'udp',
  [HealthCheckKind.HEALTH_CHECK_KIND_ICMP]: 'icmp',
};

export const HEALTH_STATE_NAME: Record<number, string> = {
  [HealthState.HEALTH_STATE_UNSPECIFIED]: '-',
  [HealthState.HEALTH_STATE_UNKNOWN]: 'unknown',
  [HealthState.HEALTH_STATE_UP]: 'up',
  [HealthState.HEALTH_STATE_DOWN]: 'down',
};

/** "http /healthz every 1000ms rise 2 fall 3": a service's check in one cell. */
export function describeHealthCheck(h: HealthCheck): string {
  const what =
    h.kind === HealthCheckKind.HEALTH_CHECK_KIND_HTTP
      ? ` ${h.httpPath}${h.httpStatus ? `=${h.httpStatus}` : ''}`
      : h.kind === HealthCheckKind.HEALTH_CHECK_KIND_GRPC && h.grpcService
        ? ` ${h.grpcService}`
        : '';
  const port = h.port ? ` port ${h.port}` : '';
  return `${HEALTH_KIND_NAME[h.kind] ?? '?'}${what}${port} every ${h.intervalMs}ms rise ${h.rise} fall ${h.fall}${h.closeConns ? ' close-conns' : ''}`;
}

/** "2026-12-06T08:40:01Z": seconds are enough for a state change. */
const isoSeconds = (d: Date | undefined) => (d === undefined ? '' : d.toISOString().replace(/\.\d+Z$/, 'Z'));

/**
 * ipvsadm -Ln style: one line per service, one indented `->` line per real. With a health check
 * on any service, three more columns: the check (service lines), and per real its verdict, when it
 * last changed and the last failed probe's reason. WEIGHT stays the operator's weight. Then the admission
 * limits of the services that have any, or that refused conns under earlier limits: max_conns
 * against the active conns, how many allow and deny prefixes, conn_rate/conn_burst, and the conns
 * refused by each reason ('-' = no such limit).
 */
export function formatServices(services: VirtualService[]): string {
  if (services.length === 0) return 'no virtual services';
  const rows: (string | bigint | number)[][] = [];
  const checked = services.some((s) => s.healthCheck !== undefined);
  for (const s of services) {
    // A client-address mode follows the scheduler ("rr proxy_v2"); none shows nothing.
    const mode = CLIENT_ADDRESS_NAME[s.clientAddress] ?? '';
    const sched = `${SCHEDULER_NAME[s.scheduler] ?? '?'}${mode ? ` ${mode}` : ''}`;
    const row: (string | bigint | number)[] = [
      PROTOCOL_NAME[s.protocol] ?? '?',
      hostPort(s.vip, s.port, s.protocol),
      sched,
      synProxyText(s),
      '',
      '',
      s.connsTotal,
    ];
    if (checked) row.push(s.healthCheck === undefined ? '-' : describeHealthCheck(s.healthCheck), '', '');
    rows.push(row);
    for (const r of s.reals) {
      const rr: (string | bigint | number)[] = ['  ->', hostPort(r.address, r.port, s.protocol), '', '', r.weight, r.activeConns, r.connsTotal];
      if (checked) rr.push(HEALTH_STATE_NAME[r.health] ?? '?', isoSeconds(r.healthChangedAt), r.healthLastError);
      rows.push(rr);
    }
  }
  const header = ['PROTO', 'ADDRESS', 'SCHED', 'SYN-PROXY', 'WEIGHT', 'ACTIVE', 'CONNS'];
  const out = [table(checked ? [...header, 'HEALTH', 'SINCE', 'LAST-ERROR'] : header, rows), ''];
  const limited = services.filter(
    (s) =>
      s.maxConns !== 0 ||
      s.allow.length !== 0 ||
      s.deny.length !== 0 ||
      s.connRate !== 0 ||
      s.refusedMaxConns + s.refusedDenied + s.refusedNotAllowed + s.refusedRateLimited !== 0n,
  );
  if (limited.length === 0) {
    out.push('limits: none');
    return out.join('\n');
  }
  const dash = (n: number): number | string => (n === 0 ? '-' : n);
  const limits = limited.map((s) => [
    PROTOCOL_NAME[s.protocol] ?? '?',
    hostPort(s.vip, s.port, s.protocol),
    dash(s.maxConns),
    s.activeConns,
    s.allow.length,
    s.deny.length,
    s.connRate === 0 ? '-' : `${s.connRate}/${s.connBurst}`,
    s.refusedMaxConns,
    s.refusedDenied,
    s.refusedNotAllowed,
    s.refusedRateLimited,
  ]);
  out.push(
    'limits (refused: new conns since the service was created):',
    table(
      ['PROTO', 'ADDRESS', 'MAX-CONNS', 'ACTIVE', 'ALLOW', 'DENY', 'RATE/BURST', 'REFUSED-MAX-CONNS', 'REFUSED-DENIED', 'REFUSED-NOT-ALLOWED', 'REFUSED-RATE'],
      limits,
      [2, 6],
    ),
  );
  return out.join('\n');
}

/** Column titles of the path counters, in the words an operator reads them in. */
export const PATH_COLUMNS: [keyof PathCounters, string][] = [
  ['rx', 'RX'],
  ['txSymmetric', 'SYMMETRIC'],
  ['txRouted', 'ROUTED'],
  ['routeDivergence', 'TRIANGLES-PREVENTED'],
  ['asymmetric', 'TRIANGLES-HAPPENED'],
  ['pathChanges', 'PATH-CHANGES'],
];

export const PROTOCOL_KEYS = ['tcp', 'udp', 'icmp'] as const;

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Per protocol × port path counters, then the non-zero drops by port and reason. */
export function formatCounters(c: GetCountersResponse): string {
  const rows: (string | bigint)[][] = [];
  for (const p of PROTOCOL_KEYS) {
    for (const port of c[p]?.ports ?? []) rows.push([p, port.port, ...PATH_COLUMNS.map(([k]) => port.counters?.[k] ?? 0n)]);
  }
  const ct = c.connTable;
  const out = [table(['PROTO', 'PORT', ...PATH_COLUMNS.map(([, t]) => t)], rows), '', `conns: ${c.connCount}`];
  if (ct !== undefined) out.push(`embryonic conns evicted (table pressure): ${ct.evictedEmbryonicTable} for the table, ${ct.evictedEmbryonicPorts} for ports`);
  out.push('');
  const drops: (string | bigint)[][] = [];
  for (const d of c.drops) {
    for (const [reason, value] of Object.entries(d.counters ?? {})) if (typeof value === 'bigint' && value !== 0n) drops.push([d.port, snake(reason), value]);
  }
  out.push(drops.length === 0 ? 'drops: none' : `drops:\n${table(['PORT', 'REASON', 'PACKETS'], drops)}`);
  return out.join('\n');
}

const LINK_NAME: Record<number, string> = { [LinkState.LINK_STATE_UP]: 'up', [LinkState.LINK_STATE_DOWN]: 'down' };

/** A port's addresses, "198.18.0.1/24", in the order ListAddresses gives them. */
export function portAddresses(port: string, addresses: Address[]): string[] {
  return addresses.filter((a) => a.port === port).map((a) => `${a.address}/${a.prefixLength}`);
}

/**
 * Three tables, one row per port in each: what the port is (device, driver, MAC, MTU, link, speed,
 * addresses; '-' for a speed or link state the driver does not report), its traffic and the
 * driver's drops and errors, then the kernel interfaces of the ports that have one with their
 * bound and their counters (RATE/BURST '-' = no limit, NETNS '-' = the appliance's own).
 */
export function formatPorts(ports: Port[], addresses: Address[]): string {
  if (ports.length === 0) return 'no ports';
  const zero = 0n;
  const ids = ports.map((p) => [
    p.name,
    p.id,
    p.device,
    p.driver,
    p.mac,
    p.mtu,
    LINK_NAME[p.linkState] ?? '-',
    p.linkSpeedMbps === 0 ? '-' : p.linkSpeedMbps,
    portAddresses(p.name, addresses).join(',') || '-',
  ]);
  const traffic = ports.map((p) => {
    const s = p.stats;
    return [
      p.name,
      s?.rxPackets ?? zero,
      s?.rxBytes ?? zero,
      s?.txPackets ?? zero,
      s?.txBytes ?? zero,
      s?.rxMissed ?? zero,
      s?.rxNombuf ?? zero,
      s?.rxErrors ?? zero,
      s?.txErrors ?? zero,
      s?.txDropped ?? zero,
    ];
  });
  const out = [
    table(['NAME', 'ID', 'DEVICE', 'DRIVER', 'MAC', 'MTU', 'LINK', 'SPEED-MBPS', 'ADDRESSES'], ids, [7]),
    '',
    table(['PORT', 'RX-PKTS', 'RX-BYTES', 'TX-PKTS', 'TX-BYTES', 'RX-MISSED', 'RX-NOMBUF', 'RX-ERRORS', 'TX-ERRORS', 'TX-DROPPED'], traffic),
    '',
  ];
  const kernel = ports.filter((p) => p.kernel !== undefined);
  if (kernel.length === 0) {
    out.push('kernel interfaces: none');
    return out.join('\n');
  }
  const rows = kernel.map((p) => {
    const k = p.kernel!;
    return [
      p.name,
      k.name,
      k.netns || '-',
      k.queue,
      k.rate === 0 ? '-' : `${k.rate}/${k.burst}`,
      p.stats?.toKernel ?? zero,
      p.stats?.fromKernel ?? zero,
      p.stats?.kernelDropped ?? zero,
    ];
  });
  out.push('kernel interfaces:', table(['PORT', 'INTERFACE', 'NETNS', 'QUEUE', 'RATE/BURST', 'TO-KERNEL', 'FROM-KERNEL', 'KERNEL-DROPPED'], rows, [4]));
  return out.join('\n');
}

const KIND_TITLES: [keyof ConfigDiff, string][] = [
  ['addresses', 'addresses'],
  ['routes', 'routes'],
  ['neighbors', 'neighbors'],
  ['localAddresses', 'local_addresses'],
  ['virtualServices', 'virtual_services'],
  ['reals', 'reals'],
  ['symmetric', 'symmetric'],
  ['timeouts', 'timeouts'],
];

/** How many of each; the counts, or the lists' lengths from a server without them. */
function counts(c: ResourceChanges): [number, number, number] {
  return [Math.max(c.createdCount, c.created.length), Math.max(c.updatedCount, c.updated.length), Math.max(c.deletedCount, c.deleted.length)];
}

/**
 * `+ key` created, `~ key` updated, `- key` deleted, grouped by kind; '' for an empty diff. A
 * truncated diff (the trailer of a failed ApplyConfig holds the first keys only) says how many
 * keys of each it left out.
 */
export function formatDiff(d: ConfigDiff): string {
  const lines: string[] = [];
  for (const [k, title] of KIND_TITLES) {
    const c = d[k] as ResourceChanges | undefined;
    if (c === undefined) continue;
    const [nc, nu, nd] = counts(c);
    if (nc + nu + nd === 0) continue;
    lines.push(`${title}:`);
    const list = (sign: string, keys: string[], n: number, what: string) => {
      for (const key of keys) lines.push(`  ${sign} ${key}`);
      if (n > keys.length) lines.push(`  ${sign} ... ${n - keys.length} more ${what} (not listed)`);
    };
    list('+', c.created, nc, 'created');
    list('~', c.updated, nu, 'updated');
    list('-', c.deleted, nd, 'deleted');
  }
  return lines.join('\n');
}

/** Number of entries in a diff. */
export function diffCount(d: ConfigDiff): number {
  return KIND_TITLES.reduce((n, [k]) => {
    const c = d[k] as ResourceChanges | undefined;
    return n + (c ? counts(c).reduce((a, b) => a + b, 0) : 0);
  }, 0);
}

const STATE_NAME: Record<number, string> = {
  [ConnState.CONN_STATE_SYN_SENT]: 'SYN_SENT',
  [ConnState.CONN_STATE_SYN_RECV]: 'SYN_RECV',
  [ConnState.CONN_STATE_ESTABLISHED]: 'ESTABLISHED',
  [ConnState.CONN_STATE_FIN_WAIT]: 'FIN_WAIT',
  [ConnState.CONN_STATE_TIME_WAIT]: 'TIME_WAIT',
  [ConnState.CONN_STATE_CLOSE]: 'CLOSE',
};

/** One line per conn: both halves, where each side's packets arrive, and packet counts. */
export function formatConns(conns: Conn[]): string {
  if (conns.length === 0) return 'no conns';
  const rows = conns.map((c) => [
    PROTOCOL_NAME[c.protocol] ?? '?',
    STATE_NAME[c.state] ?? '?',
    `${c.client}:${c.clientPort}`,
    hostPort(c.vip, c.vipPort, c.protocol),
    c.local ? '(local)' : `${c.localAddress}:${c.localPort}`,
    c.local ? '' : hostPort(c.real, c.realPort, c.protocol),
    c.clientSide?.port ?? '',
    c.serverSide?.port ?? '',
    c.clientSide?.packets ?? 0n,
    c.serverSide?.packets ?? 0n,
    c.worker,
  ]);
  return table(['PROTO', 'STATE', 'CLIENT', 'VIRTUAL', 'LOCAL', 'REAL', 'CLIENT-PORT', 'SERVER-PORT', 'PKTS-IN', 'PKTS-BACK', 'WORKER'], rows);
}

const EVENT_NAME: Record<number, string> = { 1: 'created', 2: 'state', 3: 'path', 4: 'closed' };
const LOST_SOURCE: Record<number, string> = { 1: 'dataplane ring', 2: "this stream's buffer", 3: 'history' };

function connLine(c: Conn): string {
  const proto = PROTOCOL_NAME[c.protocol] ?? '?';
  const via = c.local ? '(local)' : `via ${c.localAddress}:${c.localPort} -> ${hostPort(c.real, c.realPort, c.protocol)}`;
  const sides = `client-side ${c.clientSide?.port || '-'}${c.clientSide?.peerMac ? ` ${c.clientSide.peerMac}` : ''}, server-side ${c.serverSide?.port || '-'}`;
  return `${proto} ${STATE_NAME[c.state] ?? '?'} ${c.client}:${c.clientPort} -> ${hostPort(c.vip, c.vipPort, c.protocol)} ${via} [${sides}]`;
}

/** One line per WatchConnEvents message. */
export function formatEvent(m: WatchConnEventsResponse): string {
  const time = m.time ? m.time.toISOString() : '';
  if (m.event) {
    const e = m.event;
    const extra =
      e.type === 4 && e.conn
        ? ` pkts ${e.conn.clientSide?.packets ?? 0n}/${e.conn.serverSide?.packets ?? 0n}`
        : e.type === 3
          ? ` (${e.changedSide === 1 ? 'client' : 'server'} side moved)`
          : '';
    return `${m.seq} ${time} ${EVENT_NAME[e.type] ?? '?'} ${e.conn ? connLine(e.conn) : ''}${extra}`;
  }
  if (m.lost) {
    const range = m.lost.firstSeq !== 0n ? ` (seq ${m.lost.firstSeq}..${m.lost.lastSeq})` : '';
    return `-- lost ${m.lost.count} events in the ${LOST_SOURCE[m.lost.source] ?? 'unknown stage'}${range}`;
  }
  if (m.snapshot) return `= ${time} conn ${connLine(m.snapshot)}`;
  if (m.snapshotEnd) return `-- end of snapshot: ${m.snapshotEnd.conns} conns, events follow after seq ${m.snapshotEnd.lastSeq}`;
  return '';
}
