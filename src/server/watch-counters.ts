/**
 * PathService.WatchCounters: counters every interval with per-second rates over that interval.
 * A tick is skipped while the previous message is still waiting in the stream (write() returned
 * false until 'drain'), so a slow reader never builds a backlog.
 *
 * Errors end the stream with a status through the stream's own 'error' path (grpc-js turns it into
 * trailers); destroy() would skip sending the status.
 */
import type { ServerWritableStream } from '@grpc/grpc-js';
import type { Dataplane, PortInfo } from '../dataplane';
import type { PathCounters, ProtocolRates, WatchCountersRequest, WatchCountersResponse } from '../gen/retrace/v1/path';
import type { Logger } from '../log';
import { toStatus, ValidationError } from './errors';
import { toCountersResponse } from './path-service';

const MIN_MS = 100;
const MAX_MS = 3600_000;

export function watchInterval(req: WatchCountersRequest): number {
  if (req.interval === undefined) return 1000;
  const ms = Number(req.interval.seconds) * 1000 + Math.floor(req.interval.nanos / 1e6);
  if (!(ms >= MIN_MS && ms <= MAX_MS)) throw new ValidationError('interval', `must be 100ms..1h, got ${ms}ms`);
  return ms;
}

interface Sample {
  at: number;
  counters: ReturnType<typeof toCountersResponse>;
  ports: PortInfo[];
  connsTotal: bigint;
}

function take(dp: Dataplane): Sample {
  return {
    at: performance.now(),
    counters: toCountersResponse(dp.counters(), dp.connCount()),
    ports: dp.ports(),
    connsTotal: dp.listServices().reduce((a, s) => a + s.connsTotal, 0n),
  };
}

const rate = (a: bigint, b: bigint, sec: number) => (sec > 0 ? Number(b - a) / sec : 0);

function protocolRates(a: PathCounters | undefined, b: PathCounters | undefined, sec: number): ProtocolRates {
  const z = { rx: 0n, txSymmetric: 0n, txRouted: 0n, routeDivergence: 0n, asymmetric: 0n, pathChanges: 0n };
  const x = a ?? z;
  const y = b ?? z;
  return {
    rxPps: rate(x.rx, y.rx, sec),
    txSymmetricPps: rate(x.txSymmetric, y.txSymmetric, sec),
    txRoutedPps: rate(x.txRouted, y.txRouted, sec),
    routeDivergencePps: rate(x.routeDivergence, y.routeDivergence, sec),
    asymmetricPps: rate(x.asymmetric, y.asymmetric, sec),
  };
}

export function rates(prev: Sample, cur: Sample): WatchCountersResponse['rates'] {
  const sec = (cur.at - prev.at) / 1000;
  return {
    seconds: sec,
    connsPerSecond: rate(prev.connsTotal, cur.connsTotal, sec),
    tcp: protocolRates(prev.counters.tcp?.total, cur.counters.tcp?.total, sec),
    udp: protocolRates(prev.counters.udp?.total, cur.counters.udp?.total, sec),
    icmp: protocolRates(prev.counters.icmp?.total, cur.counters.icmp?.total, sec),
    ports: cur.ports.map((p) => {
      const q = prev.ports.find((x) => x.name === p.name) ?? p;
      return {
        port: p.name,
        rxPps: rate(q.stats.rxPackets, p.stats.rxPackets, sec),
        txPps: rate(q.stats.txPackets, p.stats.txPackets, sec),
        rxBps: rate(q.stats.rxBytes, p.stats.rxBytes, sec) * 8,
        txBps: rate(q.stats.txBytes, p.stats.txBytes, sec) * 8,
      };
    }),
  };
}

export function watchCounters(dp: Dataplane, log: Logger) {
  return (call: ServerWritableStream<WatchCountersRequest, WatchCountersResponse>): void => {
    let timer: NodeJS.Timeout | undefined;
    let blocked = false;
    let sent = 0;
    const stop = () => {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
    };
    call.on('cancelled', stop);
    call.on('close', stop);
    call.on('error', stop);
    call.on('drain', () => {
      blocked = false;
    });
    let ms: number;
    let prev: Sample;
    try {
      ms = watchInterval(call.request);
      prev = take(dp);
    } catch (e) {
      call.emit('error', toStatus(e, log, 'WatchCounters'));
      return;
    }
    const limit = call.request.count;
    timer = setInterval(() => {
      if (blocked) return; // the reader has not taken the last message yet
      try {
        const cur = take(dp);
        const { connCount, ...rest } = cur.counters;
        blocked = !call.write({ time: new Date(), counters: { ...rest, connCount }, rates: rates(prev, cur) });
        prev = cur;
        sent++;
        if (limit > 0 && sent >= limit) {
          stop();
          call.end();
        }
      } catch (e) {
        stop();
        call.emit('error', toStatus(e, log, 'WatchCounters'));
      }
    }, ms);
  };
}
