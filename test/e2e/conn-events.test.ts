/**
 * ConnService end to end in the namespace lab: real kernel TCP/UDP clients in client-a/client-b
 * make conns through the appliance (a `retrace serve` child), and a gRPC client lists, deletes and
 * watches them. No mocks: events come from the worker lcores' rings through the EventHub.
 *
 * One lab for the file. The first block runs the appliance with the default stream buffer (4096);
 * the last one restarts it with grpc.subscriber_buffer: 16 to make a slow stream lose events.
 * Each block uses its own VIPs.
 *
 * One file (over 500 lines): one namespace lab and one appliance for ListConns, DeleteConns and
 * the event streams; splitting would build the lab once per file.
 */
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import {
  ConnEventType,
  ConnServiceClient,
  ConnState,
  DeleteConnsRequest,
  ListConnsRequest,
  LostEventsSource,
  WatchConnEventBatchesRequest,
  WatchConnEventBatchesResponse,
  WatchConnEventsRequest,
  type Conn,
  type DeepPartial,
  type GetEventStatusResponse,
  type WatchConnEventsResponse,
} from '../../src/gen/retrace/v1/conn';
import { Protocol } from '../../src/gen/retrace/v1/types';
import { promised, type Promised } from '../../src/api/client';
import { LabScenario } from '../../src/lab/scenario';
import { LAB, labVip, REAL_SERVERS, type EchoUdpOptions, type Role } from '../../src/lab/topology';
import { sleep, until, fails } from '../helpers/wait';

const TIMEOUTS = 'timeouts: {tcp_close: 2, udp: 120}';
const ECHO = LAB.echoPort;
const reals = REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: ECHO }));

/** A WatchConnEvents stream, read in flowing mode unless paused; collects messages and the final status. */
class Watch {
  readonly msgs: WatchConnEventsResponse[] = [];
  readonly call: grpc.ClientReadableStream<WatchConnEventsResponse>;
  readonly status: Promise<grpc.StatusObject>;

  /** batched: read WatchConnEventBatches (req.maxBatch) and keep the messages of every batch. */
  readonly batches: number[] = [];

  constructor(client: ConnServiceClient, req: DeepPartial<WatchConnEventBatchesRequest>, batched = false) {
    if (batched) {
      const call = client.watchConnEventBatches(WatchConnEventBatchesRequest.fromPartial(req));
      call.on('data', (b: WatchConnEventBatchesResponse) => {
        this.batches.push(b.messages.length);
        this.msgs.push(...b.messages);
      });
      this.call = call as unknown as grpc.ClientReadableStream<WatchConnEventsResponse>;
    } else {
      this.call = client.watchConnEvents(WatchConnEventsRequest.fromPartial(req));
      this.call.on('data', (m: WatchConnEventsResponse) => this.msgs.push(m));
    }
    this.status = new Promise((resolve) => {
      this.call.on('status', resolve);
      this.call.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details, metadata: e.metadata }));
    });
  }

  get events(): WatchConnEventsResponse[] {
    return this.msgs.filter((m) => m.event !== undefined);
  }

  lost(source: LostEventsSource) {
    return this.msgs.filter((m) => m.lost?.source === source).map((m) => m.lost!);
  }

  /** A short account of what arrived (for timeouts). */
  summary(): string {
    const ev = this.events;
    const lost = this.msgs.filter((m) => m.lost).map((m) => `${m.lost!.source}:${m.lost!.count}`);
    return `${this.msgs.length} messages, ${ev.length} events (seq ${ev[0]?.seq}..${ev.at(-1)?.seq}), lost [${lost.join(' ')}]`;
  }

  async wait(what: string, ok: (w: this) => boolean, timeoutMs = 20000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ok(this)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${this.summary()}`);
      await sleep(100);
    }
  }

  async cancel(): Promise<void> {
    this.call.cancel();
    await this.status;
  }
}

const key = (c: Conn | undefined): string => `${c?.client}:${c?.clientPort}`;

describe('ConnService in the lab', () => {
  let sc: LabScenario;
  let client: ConnServiceClient;
  let api: Promised<ConnServiceClient>;
  const watches: Watch[] = [];

  const connect = () => {
    client?.close();
    client = new ConnServiceClient(sc.app.address, grpc.credentials.createInsecure());
    api = promised(client);
  };
  const watch = (req: DeepPartial<WatchConnEventBatchesRequest>, via = client, batched = false): Watch => {
    const w = new Watch(via, req, batched);
    watches.push(w);
    return w;
  };
  const list = (req: DeepPartial<ListConnsRequest>) => api.listConns(ListConnsRequest.fromPartial(req));
  const status = (): Promise<GetEventStatusResponse> => api.getEventStatus({});
  /** Every page of a listing. */
  const listAll = async (req: DeepPartial<ListConnsRequest>): Promise<{ conns: Conn[]; pages: number }> => {
    const conns: Conn[] = [];
    let pageToken = '';
    let pages = 0;
    do {
      const res = await list({ ...req, pageToken });
      expect(res.conns.length).toBeLessThanOrEqual(req.pageSize || 100);
      conns.push(...res.conns);
      pageToken = res.nextPageToken;
      pages++;
    } while (pageToken !== '' && pages < 1000);
    return { conns, pages };
  };
  /**
   * UDP flows on source ports no earlier flow of this suite used (below the ephemeral range). The
   * cases count created events exactly, and a kernel-chosen port can repeat the tuple of a conn
   * that is still alive (udp timeout 120 s): that flow then makes no new conn and no event.
   */
  let nextLocalPort = 20000;
  const udpEcho = (role: Role, host: string, port: number, opts: EchoUdpOptions & { count: number }) => {
    const localPortBase = nextLocalPort;
    nextLocalPort += opts.count;
    return sc.lab.udpEcho(role, host, port, { ...opts, localPortBase });
  };
  /** Streams opened by a case are cancelled after it, and the hub forgets them. */
  afterEach(async () => {
    for (const w of watches.splice(0)) await w.cancel();
    if (sc?.app.running) await until('no streams', status, (s) => s.subscribers?.streams.length === 0, 5000);
  });

  beforeAll(async () => {
    sc = await LabScenario.start({ extraYaml: TIMEOUTS });
    connect();
  }, 180000);

  afterAll(async () => {
    client?.close();
    await sc?.destroy();
  }, 60000);

  // -------------------------------------------------------------------------------------------
  describe('ListConns', () => {
    const vip = labVip(60);

    beforeAll(async () => {
      await sc.addService('udp', vip, 80, 'rr', reals);
      const b = await udpEcho('client-b', vip, 80, { count: 30, concurrency: 10 });
      const a = await udpEcho('client-a', vip, 80, { count: 20, concurrency: 10 });
      expect([a.ok, b.ok]).toEqual([20, 30]);
    }, 60000);

    it('lists the conns with both sides, state and counters', async () => {
      const res = await list({ filter: { vips: [vip] } });
      expect(res.conns.length).toBe(50);
      expect(res.nextPageToken).toBe('');
      const c = res.conns.find((x) => x.client === LAB.clientB)!;
      expect(c).toMatchObject({
        protocol: Protocol.PROTOCOL_UDP,
        state: ConnState.CONN_STATE_ESTABLISHED,
        local: false,
        vip,
        vipPort: 80,
        realPort: ECHO,
        clientSide: expect.objectContaining({ port: 'uplink-b', packets: 1n }),
        serverSide: expect.objectContaining({ port: 'servers', packets: 1n }),
      });
      expect(LAB.lips).toContain(c.localAddress);
      expect(Object.values(LAB.rs)).toContain(c.real);
      expect(c.createdAt!.getTime()).toBeGreaterThan(Date.now() - 120000);
      expect(c.lastPacketAt!.getTime()).toBeGreaterThanOrEqual(c.createdAt!.getTime());
    });

    it('filters: OR within a list, AND across fields', async () => {
      expect((await list({ filter: { vips: [vip], clients: [LAB.clientA] } })).conns.length).toBe(20);
      expect((await list({ filter: { vips: [vip], clients: [LAB.clientA, LAB.clientB] } })).conns.length).toBe(50);
      expect((await list({ filter: { vips: [vip], protocols: [Protocol.PROTOCOL_TCP] } })).conns.length).toBe(0);
      expect((await list({ filter: { vips: [vip], protocols: [Protocol.PROTOCOL_TCP, Protocol.PROTOCOL_UDP] } })).conns.length).toBe(50);
      expect((await list({ filter: { vips: [vip], reals: [LAB.rs.rs1] } })).conns.every((c) => c.real === LAB.rs.rs1)).toBe(true);
      expect((await list({ filter: { vips: [vip], states: [ConnState.CONN_STATE_SYN_SENT] } })).conns.length).toBe(0);
    });

    it('walks every conn exactly once with small pages', async () => {
      for (const pageSize of [1, 7]) {
        const { conns, pages } = await listAll({ filter: { vips: [vip] }, pageSize });
        expect(new Set(conns.map(key)).size).toBe(50);
        expect(conns.length).toBe(50);
        expect(pages).toBeGreaterThanOrEqual(Math.ceil(50 / pageSize));
      }
      // A filter that skips most conns still pages exactly.
      const { conns } = await listAll({ filter: { vips: [vip], clients: [LAB.clientA] }, pageSize: 3 });
      expect(conns.length).toBe(20);
      expect(new Set(conns.map(key)).size).toBe(20);
    });

    it('rejects a bad page_token and a token of another filter as INVALID_ARGUMENT naming page_token', async () => {
      await fails(list({ pageToken: 'garbage' }), grpc.status.INVALID_ARGUMENT, 'page_token');
      const first = await list({ filter: { vips: [vip] }, pageSize: 5 });
      expect(first.nextPageToken).not.toBe('');
      await fails(list({ filter: { vips: [vip], clients: [LAB.clientA] }, pageToken: first.nextPageToken }), grpc.status.INVALID_ARGUMENT, 'page_token');
      await fails(list({ filter: { vips: ['198.19.0.256'] } }), grpc.status.INVALID_ARGUMENT, 'filter.vips[0]');
      await fails(list({ filter: { protocols: [Protocol.PROTOCOL_UNSPECIFIED] } }), grpc.status.INVALID_ARGUMENT, 'filter.protocols[0]');
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('DeleteConns', () => {
    const vip = labVip(61);

    beforeAll(async () => {
      await sc.addService('udp', vip, 80, 'rr', reals);
      await udpEcho('client-b', vip, 80, { count: 12, concurrency: 12 });
      await udpEcho('client-a', vip, 80, { count: 8, concurrency: 8 });
    }, 60000);

    it('refuses an empty filter without all, and all with a filter', async () => {
      await fails(api.deleteConns(DeleteConnsRequest.fromPartial({})), grpc.status.INVALID_ARGUMENT, /^all: the filter is empty/);
      await fails(api.deleteConns(DeleteConnsRequest.fromPartial({ all: true, vip })), grpc.status.INVALID_ARGUMENT, 'all');
      await fails(api.deleteConns(DeleteConnsRequest.fromPartial({ protocol: Protocol.PROTOCOL_ICMP, vipPort: 80 })), grpc.status.INVALID_ARGUMENT, 'vip_port');
      await fails(api.deleteConns(DeleteConnsRequest.fromPartial({ client: 'x' })), grpc.status.INVALID_ARGUMENT, 'client');
      expect((await list({ filter: { vips: [vip] } })).conns.length).toBe(20);
    });

    it('deletes just the matching conns, each with a closed event', async () => {
      const w = watch({ follow: true, filter: { vips: [vip] }, types: [ConnEventType.CONN_EVENT_TYPE_CLOSED] });
      await until('stream attached', status, (s) => s.producing);
      const res = await api.deleteConns(DeleteConnsRequest.fromPartial({ protocol: Protocol.PROTOCOL_UDP, vip, client: LAB.clientA }));
      expect(res.deleted).toBe(8n);
      await w.wait('8 closed events', (x) => x.events.length >= 8);
      await sleep(200);
      expect(w.events.length).toBe(8);
      for (const m of w.events) {
        expect(m.event).toMatchObject({ type: ConnEventType.CONN_EVENT_TYPE_CLOSED, conn: expect.objectContaining({ client: LAB.clientA, vip }) });
        expect(m.event!.duration!.seconds).toBeGreaterThanOrEqual(0n);
      }
      const left = (await list({ filter: { vips: [vip] } })).conns;
      expect(left.length).toBe(12);
      expect(left.every((c) => c.client === LAB.clientB)).toBe(true);
      expect((await api.deleteConns(DeleteConnsRequest.fromPartial({ vip }))).deleted).toBe(12n);
      expect((await list({ filter: { vips: [vip] } })).conns).toEqual([]);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('WatchConnEvents', () => {
    const tcpVip = labVip(62);
    const udpVip = labVip(63);

    beforeAll(async () => {
      await sc.addService('tcp', tcpVip, 80, 'rr', reals);
      await sc.addService('udp', udpVip, 80, 'rr', reals);
    }, 30000);

    it('rejects incompatible or empty requests before sending anything', async () => {
      const cases: [DeepPartial<WatchConnEventsRequest>, grpc.status, string][] = [
        [{}, grpc.status.INVALID_ARGUMENT, 'follow: nothing to send'],
        [{ follow: true, initialState: true, sinceSeq: 0n }, grpc.status.INVALID_ARGUMENT, 'initial_state'],
        [{ follow: true, types: [ConnEventType.CONN_EVENT_TYPE_UNSPECIFIED] }, grpc.status.INVALID_ARGUMENT, 'types[0]'],
        [{ follow: true, filter: { clients: ['nope'] } }, grpc.status.INVALID_ARGUMENT, 'filter.clients[0]'],
        [{ sinceSeq: 1n << 60n }, grpc.status.OUT_OF_RANGE, 'since_seq'],
      ];
      for (const [req, code, details] of cases) {
        const w = watch(req);
        const st = await w.status;
        expect({ code: st.code, details: st.details }).toEqual({ code, details: expect.stringContaining(details) });
        expect(w.msgs).toEqual([]);
      }
    });

    it('gives a fast stream every event of 200 TCP conns, in strictly increasing seq with no gap', async () => {
      const w = watch({ follow: true });
      await until('producing', status, (s) => s.producing);
      const r = await sc.lab.tcpEcho('client-b', tcpVip, 80, { conns: 200, bytes: 2000, concurrency: 20 });
      expect(r.ok).toBe(200);
      const closedOf = (x: Watch) => x.events.filter((m) => m.event?.type === ConnEventType.CONN_EVENT_TYPE_CLOSED && m.event.conn?.vip === tcpVip);
      await w.wait('200 closed events', (x) => closedOf(x).length >= 200, 30000);

      expect(w.msgs.filter((m) => m.lost)).toEqual([]);
      const seqs = w.events.map((m) => m.seq);
      for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBe(seqs[i - 1] + 1n);
      // Per conn: created first, closed last, states in TCP order in between.
      const byConn = new Map<string, WatchConnEventsResponse[]>();
      for (const m of w.events.filter((x) => x.event?.conn?.vip === tcpVip)) {
        const k = key(m.event!.conn);
        byConn.set(k, [...(byConn.get(k) ?? []), m]);
      }
      expect(byConn.size).toBe(200);
      for (const [k, evs] of byConn) {
        const types = evs.map((m) => m.event!.type);
        expect(`${k} ${types[0]}`).toBe(`${k} ${ConnEventType.CONN_EVENT_TYPE_CREATED}`);
        expect(`${k} ${types.at(-1)}`).toBe(`${k} ${ConnEventType.CONN_EVENT_TYPE_CLOSED}`);
        const states = evs.filter((m) => m.event!.type === ConnEventType.CONN_EVENT_TYPE_STATE_CHANGED).map((m) => m.event!.conn!.state);
        expect(states).toEqual([...states].sort((a, b) => a - b));
        expect(states).toContain(ConnState.CONN_STATE_ESTABLISHED);
        const closed = evs.at(-1)!.event!;
        expect(closed.conn!.clientSide!.bytes).toBeGreaterThan(2000n);
        expect(closed.duration).toBeDefined();
        expect(evs[0].time!.getTime()).toBeLessThanOrEqual(evs.at(-1)!.time!.getTime());
      }
      const st = await status();
      expect(st.subscribers?.streams[0]).toMatchObject({ follow: true, lost: 0n });
      expect(st.dataplane?.lost).toBe(0n);
      expect(st.seen).toBeGreaterThanOrEqual(seqs.at(-1)!);
    }, 120000);

    it('WatchConnEventBatches carries exactly the messages of WatchConnEvents, filter included, in batches', async () => {
      const filter = { protocols: [Protocol.PROTOCOL_TCP], vips: [tcpVip] };
      const single = watch({ follow: true, filter });
      const batched = watch({ follow: true, filter, maxBatch: 7 }, client, true);
      await until('two streams', status, (s) => s.subscribers?.streams.length === 2);
      const r = await sc.lab.tcpEcho('client-b', tcpVip, 80, { conns: 40, bytes: 500, concurrency: 20 });
      expect(r.ok).toBe(40);
      const closed = (x: Watch) => x.events.filter((m) => m.event?.type === ConnEventType.CONN_EVENT_TYPE_CLOSED).length;
      for (const w of [single, batched]) await w.wait('40 closed events', (x) => closed(x) >= 40, 30000);
      await sleep(200);
      expect(batched.msgs.length).toBe(single.msgs.length);
      expect(batched.msgs).toEqual(single.msgs);
      expect(batched.msgs.every((m) => m.event?.conn?.vip === tcpVip)).toBe(true);
      expect(Math.max(...batched.batches)).toBeLessThanOrEqual(7);
      expect(batched.batches.length).toBeLessThan(batched.msgs.length);
    }, 120000);

    it('WatchConnEventBatches rejects max_batch over 8192 as INVALID_ARGUMENT naming it', async () => {
      const w = watch({ follow: true, maxBatch: 8193 }, client, true);
      const st = await w.status;
      expect(st.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(st.details).toMatch(/^max_batch: /);
    });

    it('sends a snapshot of current conns, then snapshot_end, then live events', async () => {
      await udpEcho('client-b', udpVip, 80, { count: 15, concurrency: 15 });
      const before = (await list({ filter: { vips: [udpVip] } })).conns;
      expect(before.length).toBe(15);
      const w = watch({ follow: true, initialState: true, filter: { vips: [udpVip] } });
      await w.wait('snapshot_end', (x) => x.msgs.some((m) => m.snapshotEnd));
      const end = w.msgs.findIndex((m) => m.snapshotEnd);
      expect(w.msgs.slice(0, end).every((m) => m.snapshot !== undefined && m.seq === 0n)).toBe(true);
      expect(new Set(w.msgs.slice(0, end).map((m) => key(m.snapshot)))).toEqual(new Set(before.map(key)));
      expect(w.msgs[end].snapshotEnd!.conns).toBe(15n);
      const lastSeq = w.msgs[end].snapshotEnd!.lastSeq;

      await udpEcho('client-a', udpVip, 80, { count: 5, concurrency: 5 });
      await w.wait('5 created events', (x) => x.events.filter((m) => m.event?.type === ConnEventType.CONN_EVENT_TYPE_CREATED).length >= 5);
      const live = w.msgs.slice(end + 1);
      expect(live.every((m) => m.event !== undefined && m.seq > lastSeq && m.event.conn?.vip === udpVip)).toBe(true);
      expect(live.filter((m) => m.event?.type === ConnEventType.CONN_EVENT_TYPE_CREATED).map((m) => m.event!.conn!.client)).toEqual(Array(5).fill(LAB.clientA));
    }, 60000);

    it('initial_state without follow ends with OK after snapshot_end', async () => {
      const w = watch({ initialState: true, filter: { vips: [udpVip], clients: [LAB.clientA] } });
      const st = await w.status;
      expect(st.code).toBe(grpc.status.OK);
      expect(w.msgs.length).toBe(6);
      expect(w.msgs.at(-1)!.snapshotEnd!.conns).toBe(5n);
    });

    it('replays the events after since_seq, then ends (no follow) or continues live (follow)', async () => {
      const feed = watch({ follow: true, filter: { vips: [udpVip] } });
      await until('producing', status, (s) => s.producing);
      const from = (await status()).seen;
      await udpEcho('client-b', udpVip, 80, { count: 6, concurrency: 6 });
      await feed.wait('6 events', (x) => x.events.length >= 6);
      const expected = feed.events.filter((m) => m.seq > from).map((m) => m.seq);

      const replay = watch({ sinceSeq: from, filter: { vips: [udpVip] } });
      expect((await replay.status).code).toBe(grpc.status.OK);
      expect(replay.events.map((m) => m.seq)).toEqual(expected);
      expect(replay.msgs.filter((m) => m.lost)).toEqual([]);

      const mid = expected[2];
      const resumed = watch({ follow: true, sinceSeq: mid, filter: { vips: [udpVip] } });
      await resumed.wait('replayed', (x) => x.events.length >= expected.length - 3);
      await udpEcho('client-b', udpVip, 80, { count: 2, concurrency: 2 });
      await resumed.wait('live after replay', (x) => x.events.length >= expected.length - 3 + 2);
      const got = resumed.events.map((m) => m.seq);
      expect(got.slice(0, expected.length - 3)).toEqual(expected.slice(3));
      for (let i = 1; i < got.length; i++) expect(got[i]).toBeGreaterThan(got[i - 1]);
    }, 60000);

    it('forgets a cancelled stream and stops production when the last one leaves', async () => {
      const a = watch({ follow: true });
      const b = watch({ follow: true, filter: { protocols: [Protocol.PROTOCOL_TCP] } });
      let st = await until('two streams', status, (s) => s.subscribers?.streams.length === 2);
      expect(st.producing).toBe(true);
      expect(st.uptime).toBeDefined();
      await a.cancel();
      st = await until('one stream', status, (s) => s.subscribers?.streams.length === 1);
      expect(st.producing).toBe(true);
      await b.cancel();
      st = await until('no stream', status, (s) => s.subscribers?.streams.length === 0);
      expect(st.producing).toBe(false);
      expect(st.uptime).toEqual({ seconds: 0n, nanos: 0 });
      expect(st.history).toMatchObject({ capacity: 65536 });
      expect(st.subscribers?.bufferCapacity).toBe(4096);
      // Events are not produced while nobody follows.
      const seen = st.seen;
      await udpEcho('client-b', udpVip, 80, { count: 3, concurrency: 3 });
      await sleep(300);
      expect((await status()).seen).toBe(seen);
    }, 60000);
  });

  // -------------------------------------------------------------------------------------------
  describe('a slow stream (grpc.subscriber_buffer: 16)', () => {
    const vip = labVip(64);
    let slowClient: ConnServiceClient | undefined;
    const rssKb = (): number => {
      const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${sc.app.child!.pid}/status`, 'utf8'));
      return Number(m![1]);
    };

    beforeAll(async () => {
      client.close();
      await sc.stopAppliance();
      await sc.startAppliance(`${TIMEOUTS}\ngrpc:\n  subscriber_buffer: 16`);
      connect();
      await sc.addService('tcp', vip, 80, 'rr', reals);
    }, 60000);

    /** Waits until no new event has been numbered for `quietMs`; returns the last seq. */
    const settled = async (quietMs = 1000): Promise<bigint> => {
      let last = (await status()).seen;
      let since = Date.now();
      while (Date.now() - since < quietMs) {
        await sleep(100);
        const now = (await status()).seen;
        if (now !== last) [last, since] = [now, Date.now()];
      }
      return last;
    };

    /**
     * Walks a stream as a client would: every gap between consecutive events is covered exactly
     * by the SUBSCRIBER_BUFFER notices in between (no filter: every event was due). Returns the
     * total the notices reported.
     */
    const checkLossAccounting = (w: Watch): bigint => {
      let prev = 0n;
      let noted = 0n;
      let lost = 0n;
      for (const m of w.msgs) {
        if (m.lost) {
          expect(m.lost.source).toBe(LostEventsSource.LOST_EVENTS_SOURCE_SUBSCRIBER_BUFFER);
          if (prev !== 0n) expect(m.lost.firstSeq).toBe(prev + noted + 1n);
          expect(m.lost.count).toBe(m.lost.lastSeq - m.lost.firstSeq + 1n);
          noted += m.lost.count;
          lost += m.lost.count;
        } else if (m.event) {
          if (prev !== 0n) expect(m.seq).toBe(prev + noted + 1n);
          prev = m.seq;
          noted = 0n;
        }
      }
      return lost;
    };

    it('drops what its queue cannot hold and reports exactly that, gap by gap', async () => {
      // Its own HTTP/2 connection: a paused stream holds back its connection's shared window.
      slowClient = new ConnServiceClient(sc.app.address, grpc.credentials.createInsecure(), { 'retrace.test.connection': 'slow' });
      const idsBefore = new Set((await status()).subscribers!.streams.map((s) => s.id));
      const slow = watch({ follow: true }, slowClient);
      slow.call.pause();
      // The slow stream's id: the one stream that is new now.
      const withSlow = await until('the slow stream', status, (s) => s.subscribers!.streams.some((x) => !idsBefore.has(x.id)));
      const slowId = withSlow.subscribers!.streams.find((x) => !idsBefore.has(x.id))!.id;
      // A second stream, read as fast as it comes (16 is small for bursts: it may lose some too).
      const other = watch({ follow: true });
      await until('two streams', status, (s) => s.subscribers?.streams.length === idsBefore.size + 2);
      const rss0 = rssKb();

      const r = await sc.lab.tcpEcho('client-b', vip, 80, { conns: 400, bytes: 100, concurrency: 40 });
      expect(r.ok).toBe(400);
      const seenPaused = await settled();
      expect(seenPaused).toBeGreaterThanOrEqual(400n * 5n);
      const paused = await status();
      // How much the transport
      // took before pushing back (HTTP/2 windows, socket buffers) depends on the host's load, so
      // neither `blocked` at this instant nor the share lost is fixed; what is: the queue never
      // held more than 16, it lost events, and every event is sent, queued or counted lost.
      const slowSt = paused.subscribers!.streams.find((x) => x.id === slowId)!;
      expect(slowSt).toBeDefined();
      expect(slowSt.queueLength).toBeLessThanOrEqual(16);
      expect(slowSt.queuePeak).toBeLessThanOrEqual(16);
      expect(slowSt.lost).toBeGreaterThan(0n);
      expect(slowSt.sent + slowSt.lost + BigInt(slowSt.queueLength)).toBeGreaterThanOrEqual(seenPaused);
      expect(paused.subscribers!.bufferCapacity).toBe(16);
      expect(rssKb() - rss0).toBeLessThan(64 * 1024);
      expect(slow.msgs).toEqual([]);

      slow.call.resume();
      await sleep(3000); // the 400 conns close (tcp_close: 2)
      await settled();
      // One more conn once both clients have caught up: any loss still pending is reported before it.
      await sc.lab.tcpEcho('client-b', vip, 80, { conns: 1, bytes: 10 });
      await sleep(2500);
      const last = await settled();
      for (const w of [slow, other]) await w.wait('the last event', (x) => x.events.at(-1)?.seq === last, 10000);

      const lost = { slow: checkLossAccounting(slow), other: checkLossAccounting(other) };
      expect(lost.slow).toBeGreaterThan(0n);
      const after = await status();
      const byId = (id: bigint) => after.subscribers!.streams.find((s) => s.id === id)!;
      expect(byId(slowSt.id).lost).toBe(lost.slow);
      expect(byId(slowSt.id).queuePeak).toBeLessThanOrEqual(16);
      expect(after.subscribers!.lost).toBe(lost.slow + lost.other);
      expect(after.dataplane!.lost).toBe(0n);
      // Events received + events reported lost = every event numbered while the streams were open.
      for (const w of [slow, other]) expect(BigInt(w.events.length) + (w === slow ? lost.slow : lost.other)).toBe(last - w.events[0].seq + 1n);
    }, 120000);

    it('ends open streams with UNAVAILABLE at once on shutdown, without waiting out the grace period', async () => {
      const w = watch({ follow: true });
      await until('producing', status, (s) => s.producing);
      watches.splice(watches.indexOf(w), 1);
      const t0 = Date.now();
      const stopped = sc.stopAppliance();
      const st = await w.status;
      expect(Date.now() - t0).toBeLessThan(1000);
      expect({ code: st.code, details: st.details }).toEqual({ code: grpc.status.UNAVAILABLE, details: expect.stringContaining('shutting down') });
      expect(await stopped).toBe(0);
      client.close();
      slowClient?.close();
    }, 30000);
  });
});
