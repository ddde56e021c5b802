/**
 * The health probes against real servers on loopback (a TCP listener, an HTTP server, a grpc-js
 * server with grpc-health-check, a UDP echo socket, ping), and the prober process through
 * ProberClient: answers matched by id, bounded concurrency, a killed prober restarted.
 */
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import pino from 'pino';
import { runProbe, type ProbeRequest } from '../../src/health/probe';
import { ProberClient, defaultProberScript } from '../../src/health/prober-client';

const log = pino({ level: 'silent' });
const b64 = (s: string) => Buffer.from(s).toString('base64');

let tcpServer: net.Server;
let httpServer: http.Server;
let udpEcho: dgram.Socket;
let grpcServer: grpc.Server;
let health: HealthImplementation;
let ports: { tcp: number; http: number; udp: number; grpc: number };

/** A port with nothing listening (bound, then closed). */
async function closedTcpPort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => s.once('listening', r));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return p;
}

beforeAll(async () => {
  tcpServer = net.createServer((s) => s.end()).listen(0, '127.0.0.1');
  httpServer = http.createServer((q, s) => {
    s.statusCode = q.url === '/healthz' ? 200 : q.url === '/teapot' ? 418 : 503;
    s.end('x');
  });
  httpServer.listen(0, '127.0.0.1');
  udpEcho = dgram.createSocket('udp4');
  udpEcho.on('message', (m, ri) => udpEcho.send(Buffer.concat([Buffer.from('pong:'), m]), ri.port, ri.address));
  await Promise.all([
    new Promise((r) => tcpServer.once('listening', r)),
    new Promise((r) => httpServer.once('listening', r)),
    new Promise<void>((r) => udpEcho.bind(0, '127.0.0.1', r)),
  ]);
  grpcServer = new grpc.Server();
  health = new HealthImplementation({ '': 'SERVING', backend: 'NOT_SERVING' });
  health.addToServer(grpcServer);
  const gp = await new Promise<number>((res, rej) =>
    grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  ports = {
    tcp: (tcpServer.address() as net.AddressInfo).port,
    http: (httpServer.address() as net.AddressInfo).port,
    udp: udpEcho.address().port,
    grpc: gp,
  };
});

afterAll(async () => {
  tcpServer.close();
  httpServer.close();
  udpEcho.close();
  grpcServer.forceShutdown();
});

const probe = (r: Partial<ProbeRequest> & Pick<ProbeRequest, 'kind' | 'port'>) => runProbe({ id: 1, address: '127.0.0.1', source: '', timeoutMs: 500, ...r });

describe('probes', () => {
  it('TCP: connect succeeds on a listener, ECONNREFUSED on a closed port', async () => {
    expect(await probe({ kind: 'tcp', port: ports.tcp })).toEqual({ id: 1, ok: true, error: '' });
    expect(await probe({ kind: 'tcp', port: await closedTcpPort() })).toEqual({ id: 1, ok: false, error: 'connect ECONNREFUSED' });
  });

  it('TCP: binds the source address it is given', async () => {
    const seen = new Promise<string>((resolve) => tcpServer.once('connection', (s) => resolve(s.remoteAddress ?? '')));
    expect((await probe({ kind: 'tcp', port: ports.tcp, source: '127.0.0.2' })).ok).toBe(true);
    expect(await seen).toBe('127.0.0.2');
  });

  it('HTTP: the expected status is success, another is a failure naming both', async () => {
    expect((await probe({ kind: 'http', port: ports.http, httpPath: '/healthz' })).ok).toBe(true);
    expect(await probe({ kind: 'http', port: ports.http, httpPath: '/down' })).toMatchObject({ ok: false, error: 'HTTP status 503, expected 200' });
    expect((await probe({ kind: 'http', port: ports.http, httpPath: '/teapot', httpStatus: 418 })).ok).toBe(true);
  });

  it('gRPC: SERVING is success; NOT_SERVING, an unknown service and a refused connect fail', async () => {
    expect((await probe({ kind: 'grpc', port: ports.grpc })).ok).toBe(true);
    expect(await probe({ kind: 'grpc', port: ports.grpc, grpcService: 'backend' })).toMatchObject({ ok: false, error: 'gRPC health NOT_SERVING' });
    expect((await probe({ kind: 'grpc', port: ports.grpc, grpcService: 'nope' })).error).toMatch(/^gRPC status 5/);
    expect(await probe({ kind: 'grpc', port: await closedTcpPort() })).toMatchObject({ ok: false, error: 'connect ECONNREFUSED' });
    health.setStatus('backend', 'SERVING');
    expect((await probe({ kind: 'grpc', port: ports.grpc, grpcService: 'backend' })).ok).toBe(true);
  });

  it('UDP: an expected reply, a wrong one (timeout), silence and ICMP port unreachable', async () => {
    expect((await probe({ kind: 'udp', port: ports.udp, udpPayload: b64('ping'), udpExpect: b64('pong:ping') })).ok).toBe(true);
    expect(await probe({ kind: 'udp', port: ports.udp, udpPayload: b64('ping'), udpExpect: b64('other'), timeoutMs: 200 })).toMatchObject({
      ok: false,
      error: 'timeout after 200 ms',
    });
    expect((await probe({ kind: 'udp', port: ports.udp, udpPayload: b64('ping'), udpExpect: '' })).ok).toBe(true);
    const closed = dgram.createSocket('udp4');
    await new Promise<void>((r) => closed.bind(0, '127.0.0.1', r));
    const p = closed.address().port;
    closed.close();
    expect(await probe({ kind: 'udp', port: p, udpPayload: b64('ping'), udpExpect: '' })).toMatchObject({ ok: false, error: 'ICMP port unreachable' });
  });

  it('ICMP: ping answers on loopback', async () => {
    expect(await probe({ kind: 'icmp', port: 0 })).toMatchObject({ ok: true });
  });

  it('a peer that never answers fails by the timeout', async () => {
    // A listener that accepts but never answers HTTP.
    const mute = net.createServer(() => {}).listen(0, '127.0.0.1');
    await new Promise((r) => mute.once('listening', r));
    const t0 = Date.now();
    const r = await probe({ kind: 'http', port: (mute.address() as net.AddressInfo).port, httpPath: '/', timeoutMs: 300 });
    expect(r).toMatchObject({ ok: false, error: 'timeout after 300 ms' });
    expect(Date.now() - t0).toBeLessThan(3000);
    mute.close();
  });
});

describe('ProberClient', () => {
  it('runs probes in the prober process and matches answers to requests', async () => {
    const c = new ProberClient({ netns: '', maxInFlight: 8, script: defaultProberScript() }, log);
    try {
      const [a, b] = await Promise.all([
        c.probe({ kind: 'tcp', address: '127.0.0.1', port: ports.tcp, source: '', timeoutMs: 500 }),
        c.probe({ kind: 'http', address: '127.0.0.1', port: ports.http, source: '', timeoutMs: 500, httpPath: '/down' }),
      ]);
      expect(a.ok).toBe(true);
      expect(b).toMatchObject({ ok: false, error: 'HTTP status 503, expected 200' });
      expect(c.inFlight).toBe(0);
    } finally {
      c.close();
    }
  });

  it('refuses beyond max in flight inside the prober', async () => {
    const mute = net.createServer(() => {}).listen(0, '127.0.0.1');
    await new Promise((r) => mute.once('listening', r));
    const port = (mute.address() as net.AddressInfo).port;
    const c = new ProberClient({ netns: '', maxInFlight: 2, script: defaultProberScript() }, log);
    try {
      const rs = await Promise.all([1, 2, 3].map(() => c.probe({ kind: 'http', address: '127.0.0.1', port, source: '', timeoutMs: 300, httpPath: '/' })));
      expect(rs.map((r) => r.error).sort()).toEqual(['prober busy', 'timeout after 300 ms', 'timeout after 300 ms']);
    } finally {
      c.close();
      mute.close();
    }
  });

  it('a prober that cannot start (no such namespace) fails its probes, it does not hang them', async () => {
    const c = new ProberClient({ netns: `rt-no-such-ns-${process.pid}`, maxInFlight: 2, script: defaultProberScript() }, log);
    try {
      const r = await c.probe({ kind: 'tcp', address: '127.0.0.1', port: ports.tcp, source: '', timeoutMs: 5000 });
      expect(r).toMatchObject({ ok: false, error: expect.stringMatching(/^prober exited/) });
    } finally {
      c.close();
    }
  });

  it('fails pending probes when the prober dies and starts it again', async () => {
    const mute = net.createServer(() => {}).listen(0, '127.0.0.1');
    await new Promise((r) => mute.once('listening', r));
    const port = (mute.address() as net.AddressInfo).port;
    const c = new ProberClient({ netns: '', maxInFlight: 4, script: defaultProberScript() }, log);
    try {
      const pending = c.probe({ kind: 'http', address: '127.0.0.1', port, source: '', timeoutMs: 5000, httpPath: '/' });
      await new Promise((r) => setTimeout(r, 300));
      const pid = c.pid!;
      process.kill(pid, 'SIGKILL');
      expect((await pending).error).toMatch(/^prober exited/);
      await new Promise((r) => setTimeout(r, 1500));
      const again = await c.probe({ kind: 'tcp', address: '127.0.0.1', port: ports.tcp, source: '', timeoutMs: 500 });
      expect(again.ok).toBe(true);
      expect(c.pid).not.toBe(pid);
      expect(c.starts).toBe(2);
    } finally {
      c.close();
      mute.close();
    }
  });
});
