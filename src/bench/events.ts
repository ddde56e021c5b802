/**
 * A WatchConnEvents subscriber that only counts: it asks grpc-js for the raw message bytes and
 * walks the top-level protobuf fields itself (which oneof arm a message carries, and the event
 * type inside a ConnEvent), decoding only LostEvents fully. A full decode of every message in this
 * process would measure the benchmark's own protobuf decoder on a CPU it shares with the appliance's
 * control thread, not the appliance.
 */
import * as grpc from '@grpc/grpc-js';
import { LostEvents, LostEventsSource, WatchConnEventBatchesRequest, WatchConnEventsRequest } from '../gen/retrace/v1/conn';
import { now } from './stats';

export interface EventTally {
  /** Messages carrying a ConnEvent. */
  events: number;
  /** ConnEvents by type number (1 created, 2 state, 3 path, 4 closed). */
  byType: Record<number, number>;
  /** LostEvents totals by source name. */
  lost: Record<string, number>;
  lostMessages: number;
  /** Monotonic times of the first and last ConnEvent. */
  firstT: number;
  lastT: number;
  /** Message bytes received. */
  bytes: number;
  /** Earliest and latest event time (the dataplane's clock, seconds) of the CREATED events received. */
  createdMinS: number;
  createdMaxS: number;
  ended: boolean;
  error?: string;
}

function readVarint(b: Buffer, o: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (;;) {
    const x = b[o++];
    v += (x & 0x7f) * mul;
    if ((x & 0x80) === 0) return [v, o];
    mul *= 128;
  }
}

/** Field numbers and (for length-delimited fields) their byte ranges, top level only. */
function fields(b: Buffer, from = 0, to = b.length): { no: number; start: number; end: number; value: number }[] {
  const out: { no: number; start: number; end: number; value: number }[] = [];
  let o = from;
  while (o < to) {
    let tag: number;
    [tag, o] = readVarint(b, o);
    const no = Math.floor(tag / 8);
    const wt = tag & 7;
    if (wt === 0) {
      let v: number;
      [v, o] = readVarint(b, o);
      out.push({ no, start: o, end: o, value: v });
    } else if (wt === 2) {
      let len: number;
      [len, o] = readVarint(b, o);
      out.push({ no, start: o, end: o + len, value: len });
      o += len;
    } else if (wt === 1) {
      o += 8;
    } else if (wt === 5) {
      o += 4;
    } else {
      throw new Error(`unexpected wire type ${wt}`);
    }
  }
  return out;
}

export class EventCounter {
  readonly tally: EventTally = {
    events: 0,
    byType: {},
    lost: {},
    lostMessages: 0,
    firstT: NaN,
    lastT: NaN,
    bytes: 0,
    createdMinS: NaN,
    createdMaxS: NaN,
    ended: false,
  };
  private readonly client: grpc.Client;
  private call: grpc.ClientReadableStream<Buffer> | undefined;
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  /**
   * batch: read WatchConnEventBatches with this max_batch (each stream message is a repeated
   * field 1 of WatchConnEventsResponse messages); unset: WatchConnEvents, one per message.
   */
  constructor(
    address: string,
    private readonly batch?: number,
  ) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 64 << 20,
      // HTTP/2 receive window: the 64 KiB default lets the server send ~400 events per round
      // trip to this process, which shares a CPU with the appliance's control thread.
      'grpc-node.flow_control_window': 16 << 20,
    });
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  /** Opens the stream (follow=true). The server sends nothing before the first event: wait for it
   * in GetEventStatus (subscribers.streams) before relying on it. */
  start(): void {
    const batched = this.batch !== undefined;
    const req = batched
      ? Buffer.from(WatchConnEventBatchesRequest.encode(WatchConnEventBatchesRequest.fromPartial({ follow: true, maxBatch: this.batch })).finish())
      : Buffer.from(WatchConnEventsRequest.encode(WatchConnEventsRequest.fromPartial({ follow: true })).finish());
    const call = this.client.makeServerStreamRequest<Buffer, Buffer>(
      batched ? '/retrace.v1.ConnService/WatchConnEventBatches' : '/retrace.v1.ConnService/WatchConnEvents',
      (r) => r,
      (b) => b,
      req,
      new grpc.Metadata(),
      {},
    );
    this.call = call;
    const t = this.tally;
    call.on('data', (b: Buffer) => {
      t.bytes += b.length;
      if (!batched) return this.message(b);
      for (const m of fields(b)) if (m.no === 1) this.message(b.subarray(m.start, m.end));
    });
    call.on('error', (e: grpc.ServiceError) => {
      if (e.code !== grpc.status.CANCELLED) t.error = `${grpc.status[e.code]}: ${e.details}`;
    });
    call.on('close', () => {
      t.ended = true;
      this.resolveDone();
    });
  }

  /** One WatchConnEventsResponse. */
  private message(b: Buffer): void {
    const t = this.tally;
    {
      const top = fields(b);
      for (const f of top) {
        if (f.no === 3) {
          const tm = now();
          if (t.events === 0) t.firstT = tm;
          t.lastT = tm;
          t.events++;
          const typeField = fields(b, f.start, f.end).find((x) => x.no === 1);
          const type = typeField?.value ?? 0;
          t.byType[type] = (t.byType[type] ?? 0) + 1;
          const time = type === 1 ? top.find((x) => x.no === 2) : undefined;
          if (time) {
            const ts = fields(b, time.start, time.end);
            const sec = (ts.find((x) => x.no === 1)?.value ?? 0) + (ts.find((x) => x.no === 2)?.value ?? 0) / 1e9;
            if (!(sec >= t.createdMinS)) t.createdMinS = sec;
            if (!(sec <= t.createdMaxS)) t.createdMaxS = sec;
          }
        } else if (f.no === 4) {
          const lost = LostEvents.decode(b.subarray(f.start, f.end));
          const name = LostEventsSource[lost.source] ?? String(lost.source);
          t.lost[name] = (t.lost[name] ?? 0) + Number(lost.count);
          t.lostMessages++;
        }
      }
    }
  }

  get lostTotal(): number {
    return Object.values(this.tally.lost).reduce((a, b) => a + b, 0);
  }

  async stop(): Promise<void> {
    this.call?.cancel();
    await Promise.race([this.done, new Promise((r) => setTimeout(r, 2000))]);
    this.client.close();
  }
}
