/**
 * ConnService.GetConn and the per-service traffic totals end to end in the namespace lab: kernel
 * TCP and UDP sockets and kernel ping in client-a/client-b make conns through the appliance (a
 * `retrace serve` child). GetConn must answer each conn (TCP, UDP, ICMP through an ICMP service,
 * and a local echo to a port address) exactly as ListConns lists it, NOT_FOUND for a tuple no
 * worker holds, INVALID_ARGUMENT naming the field; `retrace conns get` prints it like the list;
 * and each service's packet and byte totals are the sums over its reals, in GetVirtualService and
 * in /metrics. No mocks: conns and counters come from the worker lcores.
 */
import { execFile } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { ConnState, DeleteConnsRequest, GetConnRequest, ListConnsRequest, type Conn, type DeepPartial } from '../../src/gen/retrace/v1/conn';
import type { VirtualService } from '../../src/gen/retrace/v1/balancer';
import { Protocol } from '../../src/gen/retrace/v1/types';
import { CLI_PATH } from '../../src/lab/appliance';
import { LabScenario } from '../../src/lab/scenario';
import { LAB, labVip, REAL_SERVERS } from '../../src/lab/topology';
import { sleep, until, fails } from '../helpers/wait';

const TCP_VIP = labVip(70);
const UDP_VIP = labVip(71);
const ICMP_VIP = labVip(72);
/** A port address of the appliance: a ping to it is a local echo conn. */
const LOCAL = LAB.ports['uplink-b'].addr;
const ECHO = LAB.echoPort;
const ECHO_ID = 4242;
const LOCAL_ECHO_ID = 4343;
/** Long UDP and ICMP timeouts: the conns must outlive the file. The metrics listener is for the totals. */
const EXTRA_YAML = 'timeouts: {udp: 600, icmp: 600}\nmetrics:\n  listen: "127.0.0.1:0"';

/** The GetConn request naming a listed conn. */
const tupleOf = (c: Conn): GetConnRequest => ({ protocol: c.protocol, client: c.client, clientPort: c.clientPort, vip: c.vip, vipPort: c.vipPort });

/** `retrace ...` as a child process. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI_PATH, ...args], { timeout: 20000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** The data row of a CLI conn table whose CLIENT column is `client`, as whitespace-separated cells. */
const rowOf = (table: string, client: string): string[] | undefined =>
  table
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((cells) => cells[2] === client);

describe('GetConn and service totals in the lab', () => {
  let sc: LabScenario;
  const api = () => sc.app.api.conns;
  const list = async (req: DeepPartial<ListConnsRequest>): Promise<Conn[]> =>
    (await api().listConns(ListConnsRequest.fromPartial({ pageSize: 1000, ...req }))).conns;
  const get = (req: DeepPartial<GetConnRequest>) => api().getConn(GetConnRequest.fromPartial(req));
  const service = async (protocol: Protocol, vip: string, port: number): Promise<VirtualService> =>
    (await sc.app.api.balancer.getVirtualService({ key: { protocol, vip, port } })).virtualService!;

  beforeAll(async () => {
    sc = await LabScenario.start({ extraYaml: EXTRA_YAML });
    await sc.addService(
      'tcp',
      TCP_VIP,
      80,
      'rr',
      REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: ECHO })),
    );
    await sc.addService(
      'udp',
      UDP_VIP,
      80,
      'rr',
      REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: ECHO })),
    );
    await sc.addService(
      'icmp',
      ICMP_VIP,
      0,
      'rr',
      REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port: 0 })),
    );
  }, 180000);

  afterAll(async () => {
    await sc?.destroy();
  }, 60000);

  // -------------------------------------------------------------------------------------------
  describe('happy path: the conn as ListConns lists it', () => {
    it('TCP: an established conn, read while it is idle between two echo rounds', async () => {
      // One conn: an echo round, 8 s of silence, a second round.
      const talk = sc.lab.tcpEcho('client-b', TCP_VIP, 80, { conns: 1, bytes: 1000, rounds: 2, intervalMs: 8000, timeoutMs: 20000 });
      try {
        await until(
          'the first round echoed',
          () => list({ filter: { vips: [TCP_VIP] } }),
          (cs) => cs.length === 1 && cs[0].state === ConnState.CONN_STATE_ESTABLISHED && (cs[0].serverSide?.bytes ?? 0n) > 1000n,
        );
        let before: Conn | undefined;
        let got: Conn | undefined;
        let after: Conn | undefined;
        // Listing, GetConn, listing again: when both listings agree, no packet came in between.
        for (let i = 0; i < 10; i++) {
          before = (await list({ filter: { vips: [TCP_VIP] } }))[0];
          got = (await api().getConn(tupleOf(before))).conn;
          after = (await list({ filter: { vips: [TCP_VIP] } }))[0];
          if (
            JSON.stringify(before, (_k, x) => (typeof x === 'bigint' ? String(x) : x)) ===
            JSON.stringify(after, (_k, x) => (typeof x === 'bigint' ? String(x) : x))
          )
            break;
          await sleep(300);
        }
        expect(after).toEqual(before);
        expect(got).toEqual(before);
        expect(got).toMatchObject({
          protocol: Protocol.PROTOCOL_TCP,
          state: ConnState.CONN_STATE_ESTABLISHED,
          local: false,
          client: LAB.clientB,
          vip: TCP_VIP,
          vipPort: 80,
          realPort: ECHO,
          clientSide: expect.objectContaining({ port: 'uplink-b' }),
          serverSide: expect.objectContaining({ port: 'servers' }),
        });
        expect(LAB.lips).toContain(got!.localAddress);
        expect(Object.values(LAB.rs)).toContain(got!.real);
        const r = await talk;
        expect(r.ok).toBe(1);
        expect(r.results[0].localPort).toBe(got!.clientPort);
      } finally {
        await talk.catch(() => undefined);
      }
    }, 60000);

    it('UDP: each of three conns, by the source ports the client used', async () => {
      const r = await sc.lab.udpEcho('client-a', UDP_VIP, 80, { count: 3, concurrency: 3 });
      expect(r.ok).toBe(3);
      const listed = await list({ filter: { vips: [UDP_VIP] } });
      const byNumber = (a: number, b: number) => a - b;
      expect(listed.map((c) => c.clientPort).sort(byNumber)).toEqual(r.results.map((x) => x.localPort!).sort(byNumber));
      for (const x of r.results) {
        const res = await get({ protocol: Protocol.PROTOCOL_UDP, client: LAB.clientA, clientPort: x.localPort!, vip: UDP_VIP, vipPort: 80 });
        expect(res.conn).toEqual(listed.find((c) => c.clientPort === x.localPort));
        expect(res.conn).toMatchObject({
          protocol: Protocol.PROTOCOL_UDP,
          state: ConnState.CONN_STATE_ESTABLISHED,
          local: false,
          realPort: ECHO,
          clientSide: expect.objectContaining({ port: 'uplink-a', packets: 1n }),
          serverSide: expect.objectContaining({ port: 'servers', packets: 1n }),
        });
      }
    }, 60000);

    it('ICMP through an ICMP service: client_port is the echo id, vip_port 0', async () => {
      const p = await sc.lab.ping('client-b', ICMP_VIP, { count: 2, id: ECHO_ID });
      expect(p.received).toBe(2);
      const listed = await list({ filter: { vips: [ICMP_VIP] } });
      expect(listed).toHaveLength(1);
      expect(listed[0]).toMatchObject({ clientPort: ECHO_ID, vipPort: 0 });
      const res = await get({ protocol: Protocol.PROTOCOL_ICMP, client: LAB.clientB, clientPort: ECHO_ID, vip: ICMP_VIP, vipPort: 0 });
      expect(res.conn).toEqual(listed[0]);
      expect(res.conn).toMatchObject({
        protocol: Protocol.PROTOCOL_ICMP,
        local: false,
        client: LAB.clientB,
        vip: ICMP_VIP,
        realPort: 0,
        clientSide: expect.objectContaining({ port: 'uplink-b', packets: 2n }),
        serverSide: expect.objectContaining({ port: 'servers', packets: 2n }),
      });
      expect(Object.values(LAB.rs)).toContain(res.conn!.real);
    }, 60000);

    it('ICMP local echo to a port address: a local conn with no server half', async () => {
      const p = await sc.lab.ping('client-b', LOCAL, { count: 2, id: LOCAL_ECHO_ID });
      expect(p.received).toBe(2);
      const listed = await list({ filter: { vips: [LOCAL] } });
      expect(listed).toHaveLength(1);
      const res = await get({ protocol: Protocol.PROTOCOL_ICMP, client: LAB.clientB, clientPort: LOCAL_ECHO_ID, vip: LOCAL, vipPort: 0 });
      expect(res.conn).toEqual(listed[0]);
      expect(res.conn).toMatchObject({
        protocol: Protocol.PROTOCOL_ICMP,
        local: true,
        client: LAB.clientB,
        clientPort: LOCAL_ECHO_ID,
        vip: LOCAL,
        vipPort: 0,
        localAddress: '',
        real: '',
        clientSide: expect.objectContaining({ port: 'uplink-b', packets: 2n }),
      });
    }, 60000);
  });

  // -------------------------------------------------------------------------------------------
  describe('service packet and byte totals', () => {
    const FIELDS = [
      ['packetsToReals', 'packetsToReal', 'packets_to_reals'],
      ['packetsFromReals', 'packetsFromReal', 'packets_from_reals'],
      ['bytesToReals', 'bytesToReal', 'bytes_to_reals'],
      ['bytesFromReals', 'bytesFromReal', 'bytes_from_reals'],
    ] as const;

    it('equal the sums over the reals, are > 0 after traffic, and match /metrics', async () => {
      const listening = sc.app.output
        .split('\n')
        .filter((l) => l.includes('metrics listening'))
        .pop();
      expect(listening).toBeDefined();
      const metrics = await (await fetch(`http://${JSON.parse(listening!).listen as string}/metrics`)).text();
      const metric = (name: string, labels: Record<string, string>): number | undefined => {
        const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
        const line = metrics.split('\n').find((l) => l.startsWith(`${name}{`) && want.every((w) => l.includes(w)));
        return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
      };
      for (const [proto, protocol, vip, port] of [
        ['tcp', Protocol.PROTOCOL_TCP, TCP_VIP, 80],
        ['udp', Protocol.PROTOCOL_UDP, UDP_VIP, 80],
        ['icmp', Protocol.PROTOCOL_ICMP, ICMP_VIP, 0],
      ] as const) {
        const s = await service(protocol, vip, port);
        for (const [total, perReal, metricName] of FIELDS) {
          const sum = s.reals.reduce((a, r) => a + r[perReal], 0n);
          expect([proto, total, s[total]]).toEqual([proto, total, sum]);
          expect([proto, total, s[total] > 0n]).toEqual([proto, total, true]);
          const labels = { protocol: proto, vip, vport: String(port) };
          expect([proto, metricName, metric(`retrace_service_${metricName}_total`, labels)]).toEqual([proto, metricName, Number(s[total])]);
        }
      }
      // UDP and ICMP conns are all still there: the totals are exactly what their conns counted.
      for (const [protocol, vip, port] of [
        [Protocol.PROTOCOL_UDP, UDP_VIP, 80],
        [Protocol.PROTOCOL_ICMP, ICMP_VIP, 0],
      ] as const) {
        const s = await service(protocol, vip, port);
        const conns = await list({ filter: { vips: [vip] } });
        const sum = (f: (c: Conn) => bigint) => conns.reduce((a, c) => a + f(c), 0n);
        expect({
          packetsToReals: s.packetsToReals,
          packetsFromReals: s.packetsFromReals,
          bytesToReals: s.bytesToReals,
          bytesFromReals: s.bytesFromReals,
        }).toEqual({
          packetsToReals: sum((c) => c.clientSide!.packets),
          packetsFromReals: sum((c) => c.serverSide!.packets),
          bytesToReals: sum((c) => c.clientSide!.bytes),
          bytesFromReals: sum((c) => c.serverSide!.bytes),
        });
      }
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('retrace conns get', () => {
    it('prints the conn as `retrace conns` lists it', async () => {
      const [udp] = await list({ filter: { vips: [UDP_VIP] } });
      const server = ['--server', sc.app.address];
      const got = await cli(['conns', 'get', 'udp', `${udp.client}:${udp.clientPort}`, `${UDP_VIP}:80`, ...server]);
      expect([got.code, got.stderr]).toEqual([0, '']);
      const listed = await cli(['conns', '--vip', UDP_VIP, ...server]);
      expect(listed.code).toBe(0);
      const row = rowOf(got.stdout, `${udp.client}:${udp.clientPort}`);
      expect(row).toEqual([
        'udp',
        'ESTABLISHED',
        `${udp.client}:${udp.clientPort}`,
        `${UDP_VIP}:80`,
        `${udp.localAddress}:${udp.localPort}`,
        `${udp.real}:${ECHO}`,
        'uplink-a',
        'servers',
        '1',
        '1',
        String(udp.worker),
      ]);
      expect(row).toEqual(rowOf(listed.stdout, `${udp.client}:${udp.clientPort}`));
      expect(got.stdout.split('\n')[0]).toMatch(/^PROTO\s+STATE\s+CLIENT/);

      const icmp = await cli(['conns', 'get', 'icmp', `${LAB.clientB}:${ECHO_ID}`, ICMP_VIP, ...server, '--json']);
      expect([icmp.code, icmp.stderr]).toEqual([0, '']);
      expect(JSON.parse(icmp.stdout)).toMatchObject({ client: LAB.clientB, clientPort: ECHO_ID, vip: ICMP_VIP, vipPort: 0, local: false });
    });

    it('exits 1 with the gRPC error on NOT_FOUND, 2 on bad usage', async () => {
      const server = ['--server', sc.app.address];
      const missing = await cli(['conns', 'get', 'udp', `${LAB.clientA}:9`, `${UDP_VIP}:80`, ...server]);
      expect(missing).toEqual({ code: 1, stdout: '', stderr: `retrace: NOT_FOUND: no udp conn ${LAB.clientA}:9 -> ${UDP_VIP}:80\n` });
      const bad = await cli(['conns', 'get', 'icmp', `${LAB.clientB}:${ECHO_ID}`, `${ICMP_VIP}:80`, ...server]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/^retrace: bad vip/);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('errors', () => {
    it('NOT_FOUND names the tuple: another port, protocol or echo id, and a deleted conn', async () => {
      const [udp] = await list({ filter: { vips: [UDP_VIP] } });
      const t = tupleOf(udp);
      await fails(api().getConn({ ...t, vipPort: 81 }), grpc.status.NOT_FOUND, `no udp conn ${udp.client}:${udp.clientPort} -> ${UDP_VIP}:81`);
      await fails(api().getConn({ ...t, clientPort: udp.clientPort === 65535 ? 1 : udp.clientPort + 1 }), grpc.status.NOT_FOUND, /^no udp conn /);
      await fails(
        api().getConn({ ...t, protocol: Protocol.PROTOCOL_TCP }),
        grpc.status.NOT_FOUND,
        `no tcp conn ${udp.client}:${udp.clientPort} -> ${UDP_VIP}:80`,
      );
      await fails(
        get({ protocol: Protocol.PROTOCOL_ICMP, client: LAB.clientB, clientPort: ECHO_ID + 1, vip: ICMP_VIP }),
        grpc.status.NOT_FOUND,
        `no icmp conn ${LAB.clientB} echo id ${ECHO_ID + 1} -> ${ICMP_VIP}`,
      );
      // The same tuple is found, then deleted, then not found.
      expect((await api().getConn(t)).conn).toMatchObject({ clientPort: udp.clientPort });
      const del = await api().deleteConns(
        DeleteConnsRequest.fromPartial({ protocol: Protocol.PROTOCOL_UDP, client: udp.client, clientPort: udp.clientPort, vip: UDP_VIP }),
      );
      expect(del.deleted).toBe(1n);
      await fails(api().getConn(t), grpc.status.NOT_FOUND, `no udp conn ${udp.client}:${udp.clientPort} -> ${UDP_VIP}:80`);
      // The service's other conns are still found.
      const rest = await list({ filter: { vips: [UDP_VIP] } });
      expect(rest).toHaveLength(2);
      for (const c of rest) expect((await api().getConn(tupleOf(c))).conn).toEqual(c);
    });

    it('INVALID_ARGUMENT names the field', async () => {
      const tcp = { protocol: Protocol.PROTOCOL_TCP, client: LAB.clientB, clientPort: 40000, vip: TCP_VIP, vipPort: 80 };
      const icmp = { protocol: Protocol.PROTOCOL_ICMP, client: LAB.clientB, clientPort: ECHO_ID, vip: ICMP_VIP, vipPort: 0 };
      const cases: [DeepPartial<GetConnRequest>, RegExp][] = [
        [{ ...tcp, protocol: Protocol.PROTOCOL_UNSPECIFIED }, /^protocol: required/],
        [{ ...tcp, client: '198.18.2.256' }, /^client: "198\.18\.2\.256" is not a dotted-quad IPv4 address/],
        [{ ...tcp, client: '' }, /^client: required/],
        [{ ...tcp, clientPort: 0 }, /^client_port: must be 1\.\.65535, got 0/],
        [{ ...tcp, clientPort: 65536 }, /^client_port: must be 1\.\.65535, got 65536/],
        [{ ...tcp, vip: '' }, /^vip: required/],
        [{ ...tcp, vipPort: 0 }, /^vip_port: must be 1\.\.65535, got 0/],
        [{ ...icmp, vipPort: 80 }, /^vip_port: must be 0 for ICMP, got 80/],
      ];
      for (const [req, details] of cases) await fails(get(req), grpc.status.INVALID_ARGUMENT, details);
    });
  });
});
