/**
 * PathService.WatchCounters: counters every interval with per-second rates over that interval.
 *
 * Cost: streams never read the dataplane themselves. One CounterSampler per server holds a group
 * per distinct interval; each group reads the dataplane once per tick (counters, ports and the
 * services' conns total, all O(ports) or one native pass: no per-service, per-real reads) and
 * fans that one sample out to its streams. Streams that are up to date get the same encoded
 * message, encoded once. So N streams at one interval cost one read and one encode per tick
 * plus N writes, whatever N is; a tick with no stream able to take a message reads nothing.
 * A new stream starts its rates from its group's last sample (or the sampler's latest one, if
 * recent), so opening many streams at once does not mean a read each.
 *
 * Backpressure: a stream whose last message is still waiting (write() returned false, no 'drain'
 * yet) skips ticks, so a slow reader never builds a backlog; its next message has rates over the
 * whole time since its previous one.
 *
 * Shutdown: close() ends every stream with UNAVAILABLE at once (open streams would otherwise
 * hold the server's graceful shutdown for its whole grace period) and refuses new ones.
 *
 * Errors end the stream with a status through the stream's own 'error' path (grpc-js turns it into
 * trailers); destroy() would skip sending the status.
 */
import { status, type ServerWritableStream } from '@grpc/grpc-js';
import { DataplaneError, type Dataplane, type PortInfo } from '../dataplane';
import { PathCounters, WatchCountersResponse, type ProtocolRates, type WatchCountersRequest } from '../gen/retrace/v1/path';
import type { Logger } from '../log';
import { serviceError, toStatus, ValidationError } from './errors';
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
    // One pass over the service table in native code; reading every service's reals to sum
    // their conns made a tick cost 10-18 ms at 1500 services of 4 reals.
    connsTotal: dp.servicesConnsTotal(),
  };
}

const rate = (a: bigint, b: bigint, sec: number) => (sec > 0 ? Number(b - a) / sec : 0);

function protocolRates(a: PathCounters | undefined, b: PathCounters | undefined, sec: number): ProtocolRates {
  const z = PathCounters.create();
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

type CountersCall = ServerWritableStream<WatchCountersRequest, WatchCountersResponse>;

interface Watcher {
  call: CountersCall;
  group: Group;
  /** The sample this stream's next rates start from. */
  prev: Sample;
  /** The last message has not left yet (write() returned false, no 'drain' since). */
  blocked: boolean;
  sent: number;
  /** Messages to send before ending; 0: until cancelled. */
  limit: number;
}

interface Group {
  ms: number;
  timer: NodeJS.Timeout;
  watchers: Set<Watcher>;
  /** The group's last sample (a new stream's rates start from it). */
  last: Sample | undefined;
}

export interface CounterSamplerStatus {
  /** WatchCounters streams open. */
  streams: number;
  /** Dataplane reads the sampler made (ticks that had a stream to write to, plus starts). */
  samples: bigint;
  /** Messages written, and ticks a stream skipped because its previous message had not left. */
  sent: bigint;
  skipped: bigint;
}

export class CounterSampler {
  private readonly groups = new Map<number, Group>();
  private latest: Sample | undefined;
  private closed = false;
  private samples = 0n;
  private sent = 0n;
  private skipped = 0n;

  constructor(
    private readonly dp: Dataplane,
    private readonly log: Logger,
  ) {}

  status(): CounterSamplerStatus {
    let streams = 0;
    for (const g of this.groups.values()) streams += g.watchers.size;
    return { streams, samples: this.samples, sent: this.sent, skipped: this.skipped };
  }

  private read(): Sample {
    this.samples++;
    const s = take(this.dp);
    this.latest = s;
    return s;
  }

  /** The grpc-js handler. */
  handler(): (call: CountersCall) => void {
    return (call) => this.watch(call);
  }

  private watch(call: CountersCall): void {
    let ms: number;
    let prev: Sample;
    try {
      if (this.closed) throw new DataplaneError('EUNAVAILABLE', 'the server is shutting down');
      ms = watchInterval(call.request);
      const g = this.groups.get(ms);
      prev = g?.last ?? (this.latest !== undefined && performance.now() - this.latest.at < ms ? this.latest : this.read());
    } catch (e) {
      call.emit('error', toStatus(e, this.log, 'WatchCounters'));
      return;
    }
    let g = this.groups.get(ms);
    if (g === undefined) {
      const group: Group = { ms, watchers: new Set(), last: undefined, timer: setInterval(() => this.tick(group), ms) };
      this.groups.set(ms, group);
      g = group;
    }
    const w: Watcher = { call, group: g, prev, blocked: false, sent: 0, limit: call.request.count };
    g.watchers.add(w);
    const leave = () => this.remove(w);
    call.on('cancelled', leave);
    call.on('close', leave);
    call.on('error', leave);
    call.on('finish', leave);
    call.on('drain', () => {
      w.blocked = false;
    });
  }

  private remove(w: Watcher): void {
    const g = w.group;
    if (!g.watchers.delete(w)) return;
    if (g.watchers.size === 0) {
      clearInterval(g.timer);
      if (this.groups.get(g.ms) === g) this.groups.delete(g.ms);
    }
  }

  private tick(g: Group): void {
    let ready = 0;
    for (const w of g.watchers) if (!w.blocked) ready++;
    this.skipped += BigInt(g.watchers.size - ready);
    if (ready === 0) return; // nobody can take a message: read nothing
    let cur: Sample;
    try {
      cur = this.read();
    } catch (e) {
      const err = toStatus(e, this.log, 'WatchCounters');
      for (const w of [...g.watchers]) {
        this.remove(w);
        w.call.emit('error', err);
      }
      return;
    }
    g.last = cur;
    const time = new Date();
    // Streams whose rates start from the same sample get the same bytes: encode once per start.
    const encoded = new Map<Sample, Buffer>();
    for (const w of [...g.watchers]) {
      if (w.blocked) continue;
      let buf = encoded.get(w.prev);
      if (buf === undefined) {
        const { connCount, ...rest } = cur.counters;
        const bytes = WatchCountersResponse.encode({ time, counters: { ...rest, connCount }, rates: rates(w.prev, cur) }).finish();
        buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        encoded.set(w.prev, buf);
      }
      // The handler's service definition passes Buffers through (PathServiceDefinition).
      w.blocked = !w.call.write(buf as unknown as WatchCountersResponse);
      w.prev = cur;
      w.sent++;
      this.sent++;
      if (w.limit > 0 && w.sent >= w.limit) {
        this.remove(w);
        w.call.end();
      }
    }
  }

  /** Ends every stream with UNAVAILABLE and refuses new ones (server shutdown). */
  close(): void {
    this.closed = true;
    const err = serviceError(status.UNAVAILABLE, 'the server is shutting down');
    for (const g of [...this.groups.values()]) {
      for (const w of [...g.watchers]) {
        this.remove(w);
        w.call.emit('error', err);
      }
    }
  }
}
