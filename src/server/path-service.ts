import type { CounterSnapshot, Dataplane } from '../dataplane';
import {
  ConnTableCounters,
  DropCounters,
  PathCounters,
  PathServiceService,
  type GetCountersResponse,
  type PathServiceServer,
  type ProtocolCounters,
} from '../gen/retrace/v1/path';
import type { Logger } from '../log';
import { toStatus } from './errors';
import { unary } from './unary';
import type { CounterSampler } from './watch-counters';
import * as v from './validate';

/** snake_case (the dataplane's counter names) → the camelCase key ts-proto gives the same field. */
function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/**
 * Copies counters named as in native/dp_counters.h into a generated message. The proto fields carry
 * the same names (test/unit/counter-names.test.ts checks it), so every counter has its field.
 */
function fill<T extends object>(empty: T, counters: Record<string, bigint>): T {
  const out = empty as Record<string, bigint>;
  for (const [name, value] of Object.entries(counters)) out[camel(name)] = value;
  return empty;
}

function protocolCounters(byPort: Record<string, Record<string, bigint>>): ProtocolCounters {
  const ports = Object.entries(byPort).map(([port, c]) => ({ port, counters: fill(PathCounters.create(), c) }));
  const sums: Record<string, bigint> = {};
  for (const c of Object.values(byPort)) for (const [name, value] of Object.entries(c)) sums[name] = (sums[name] ?? 0n) + value;
  return { total: fill(PathCounters.create(), sums), ports };
}

export function toCountersResponse(snap: CounterSnapshot, connCount: bigint): GetCountersResponse {
  const none = {};
  return {
    tcp: protocolCounters(snap.path.tcp ?? none),
    udp: protocolCounters(snap.path.udp ?? none),
    icmp: protocolCounters(snap.path.icmp ?? none),
    drops: Object.entries(snap.drops).map(([port, d]) => ({ port, counters: fill(DropCounters.create(), d) })),
    connCount,
    connTable: fill(ConnTableCounters.create(), snap.conn),
  };
}

/** Refuses a malformed interval Duration (nanos >= 1e9, negative) before the stream starts. */
function checkedWatchCounters(inner: PathServiceServer['watchCounters'], log: Logger): PathServiceServer['watchCounters'] {
  return (call) => {
    try {
      v.watchCounters(call.request);
    } catch (e) {
      call.emit('error', toStatus(e, log, 'WatchCounters'));
      return;
    }
    inner(call);
  };
}

/**
 * PathService with WatchCounters taking ready-encoded messages: the sampler encodes one message
 * for all the streams it fans out to (watch-counters.ts).
 */
export const PathServiceDefinition = {
  ...PathServiceService,
  watchCounters: { ...PathServiceService.watchCounters, responseSerialize: (b: Buffer): Buffer => b },
} as const;

export function pathService(dp: Dataplane, log: Logger, counters: CounterSampler): PathServiceServer {
  return {
    getSymmetricMode: unary(log, 'GetSymmetricMode', () => ({ mode: dp.symmetric() })),
    setSymmetricMode: unary(log, 'SetSymmetricMode', (req) => {
      const s = v.setSymmetricMode(req);
      dp.setSymmetric(s.protocol, s.enabled);
      return {};
    }),
    // Two reads, no mutation: the counter snapshot and the conn count.
    getCounters: unary(log, 'GetCounters', () => toCountersResponse(dp.counters(), dp.connCount())),
    watchCounters: checkedWatchCounters(counters.handler(), log),
  };
}
