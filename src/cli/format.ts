/** Plain-text rendering for the CLI: aligned tables, diffs, counters. Pure functions. */
import type { ConfigDiff, ResourceChanges } from '../gen/retrace/v1/config';
import type { Conn, WatchConnEventsResponse } from '../gen/retrace/v1/conn';
import { ConnState } from '../gen/retrace/v1/conn';
import type { VirtualService } from '../gen/retrace/v1/balancer';
import type { GetCountersResponse, PathCounters } from '../gen/retrace/v1/path';
import { Protocol, Scheduler } from '../gen/retrace/v1/types';

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

const hostPort = (addr: string, port: number, protocol: Protocol) => (protocol === Protocol.PROTOCOL_ICMP ? addr : `${addr}:${port}`);

/**
 * ipvsadm -Ln style: one line per service, one indented `->` line per real. Then the admission
 * limits of the services that have any, or that refused conns under earlier limits: max_conns
 * against the active conns, how many allow and deny prefixes, conn_rate/conn_burst, and the conns
 * refused by each reason ('-' = no such limit).
 */
export function formatServices(services: VirtualService[]): string {
  if (services.length === 0) return 'no virtual services';
  const rows: (string | bigint | number)[][] = [];
  for (const s of services) {
    rows.push([PROTOCOL_NAME[s.protocol] ?? '?', hostPort(s.vip, s.port, s.protocol), SCHEDULER_NAME[s.scheduler] ?? '?', '', '', s.connsTotal]);
    for (const r of s.reals) rows.push(['  ->', hostPort(r.address, r.port, s.protocol), '', r.weight, r.activeConns, r.connsTotal]);
  }
  const out = [table(['PROTO', 'ADDRESS', 'SCHED', 'WEIGHT', 'ACTIVE', 'CONNS'], rows), ''];
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
