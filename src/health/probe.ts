/**
 * One health probe of one real with kernel sockets: TCP connect, HTTP GET, grpc.health.v1 Check,
 * UDP, ICMP echo. Runs in the prober process (prober-main.ts), which may live in another network
 * namespace than the appliance (the kernel interfaces' one): nothing here touches the dataplane.
 *
 * Every probe settles exactly once, and always by `timeoutMs`: one timer per probe that destroys
 * whatever socket or child is still open, whatever the peer does.
 */
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';

export type ProbeKind = 'tcp' | 'http' | 'grpc' | 'udp' | 'icmp';

/** What the control plane asks the prober (one JSON line). */
export interface ProbeRequest {
  id: number;
  kind: ProbeKind;
  address: string;
  /** 0 for ICMP. */
  port: number;
  /** Source address to bind; "" = the kernel's choice. */
  source: string;
  timeoutMs: number;
  httpPath?: string;
  /** Expected status (200 when 0 or unset). */
  httpStatus?: number;
  grpcService?: string;
  /** base64 */
  udpPayload?: string;
  /** base64; "" = no reply needed, only no ICMP port unreachable. */
  udpExpect?: string;
}

export interface ProbeResult {
  id: number;
  ok: boolean;
  /** Why it failed; "" when ok. */
  error: string;
}

/** A settle-once wrapper with the probe's deadline: `cleanup` runs once, on every outcome. */
function deadline(timeoutMs: number, run: (done: (error: string) => void) => () => void): Promise<string> {
  return new Promise((resolve) => {
    let settled = false;
    let cleanup: () => void = () => {};
    const done = (error: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        cleanup();
      } catch {
        // A socket already gone: nothing left to release.
      }
      resolve(error);
    };
    const timer = setTimeout(() => done(`timeout after ${timeoutMs} ms`), timeoutMs);
    try {
      cleanup = run(done);
    } catch (e) {
      done(errText(e));
    }
    // A probe that failed synchronously inside run() must still release what it opened.
    if (settled) {
      try {
        cleanup();
      } catch {
        // already released
      }
    }
  });
}

function errText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err.code && err.syscall) return `${err.syscall} ${err.code}`;
  return err.code ?? err.message ?? String(e);
}

function tcp(r: ProbeRequest): Promise<string> {
  return deadline(r.timeoutMs, (done) => {
    const s = net.connect({ host: r.address, port: r.port, ...(r.source ? { localAddress: r.source } : {}) });
    s.once('connect', () => done(''));
    s.once('error', (e) => done(errText(e)));
    return () => s.destroy();
  });
}

function httpGet(r: ProbeRequest): Promise<string> {
  const want = r.httpStatus || 200;
  return deadline(r.timeoutMs, (done) => {
    const req = http.request({
      host: r.address,
      port: r.port,
      path: r.httpPath ?? '/',
      method: 'GET',
      agent: false,
      ...(r.source ? { localAddress: r.source } : {}),
      headers: { Host: `${r.address}:${r.port}`, 'User-Agent': 'retrace-health-check', Connection: 'close' },
    });
    req.once('response', (res) => {
      res.resume();
      done(res.statusCode === want ? '' : `HTTP status ${res.statusCode}, expected ${want}`);
    });
    req.once('error', (e) => done(errText(e)));
    req.end();
    return () => req.destroy();
  });
}

/**
 * grpc.health.v1.Health/Check over a fresh HTTP/2 connection per probe, framed by hand (a 5-byte
 * gRPC message prefix around a one-field message). Not @grpc/grpc-js: its channels cannot bind a
 * source address, and a channel kept between probes reconnects with exponential backoff (up to
 * two minutes), which would hold a restarted real down far longer than rise x interval.
 */
function grpcHealth(r: ProbeRequest): Promise<string> {
  return deadline(r.timeoutMs, (done) => {
    const session = http2.connect(`http://${r.address}:${r.port}`, {
      createConnection: () => net.connect({ host: r.address, port: r.port, ...(r.source ? { localAddress: r.source } : {}) }),
    });
    session.once('error', (e) => done(errText(e)));
    const msg = new BinaryWriter();
    if (r.grpcService) msg.uint32(10).string(r.grpcService);
    const body = msg.finish();
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    Buffer.from(body).copy(frame, 5);
    const st = session.request({
      ':method': 'POST',
      ':path': '/grpc.health.v1.Health/Check',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    const chunks: Buffer[] = [];
    let grpcStatus: string | undefined;
    let grpcMessage = '';
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']);
      if (h['grpc-message'] !== undefined) grpcMessage = decodeURIComponent(String(h['grpc-message']));
    };
    st.on('response', (h) => {
      if (h[':status'] !== 200) return done(`HTTP/2 status ${h[':status']}`);
      take(h); // a trailers-only answer carries grpc-status here
    });
    st.on('trailers', take);
    st.on('data', (c: Buffer) => chunks.push(c));
    // A refused connect fails the stream first (ERR_HTTP2_STREAM_CANCEL); the session's error,
    // which says why, comes in the same turn: let it win.
    st.once('error', (e) => setImmediate(() => done(errText(e))));
    st.once('close', () => {
      if (grpcStatus === undefined) return void setImmediate(() => done('gRPC stream closed without a status'));
      if (grpcStatus !== '0') return done(`gRPC status ${grpcStatus}${grpcMessage ? `: ${grpcMessage}` : ''}`);
      const data = Buffer.concat(chunks);
      if (data.length < 5) return done('gRPC answer without a message');
      const reader = new BinaryReader(data.subarray(5, 5 + data.readUInt32BE(1)));
      let status = 0;
      while (reader.pos < reader.len) {
        const [field, wt] = reader.tag();
        if (field === 1 && wt === 0) status = reader.int32();
        else reader.skip(wt);
      }
      const names = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];
      done(status === 1 ? '' : `gRPC health ${names[status] ?? status}`);
    });
    st.end(frame);
    return () => {
      st.destroy();
      session.destroy();
    };
  });
}

/**
 * UDP from a connected socket, so an ICMP port unreachable comes back as ECONNREFUSED on it. With
 * an expected reply: the first datagram that starts with it is success. Without: silence until the
 * deadline is success (as keepalived's UDP_CHECK without require_reply), the refusal is failure.
 */
function udp(r: ProbeRequest): Promise<string> {
  const payload = Buffer.from(r.udpPayload ?? '', 'base64');
  const expect = Buffer.from(r.udpExpect ?? '', 'base64');
  if (expect.length === 0) {
    // Silence means up: the deadline is the verdict, so it comes a little before the timeout.
    return deadline(r.timeoutMs + 1000, (done) => {
      const s = dgram.createSocket('udp4');
      const quiet = setTimeout(() => done(''), r.timeoutMs);
      s.once('error', (e) => done((e as NodeJS.ErrnoException).code === 'ECONNREFUSED' ? 'ICMP port unreachable' : errText(e)));
      s.on('message', () => done(''));
      s.bind({ address: r.source || undefined, port: 0 }, () =>
        s.connect(r.port, r.address, () => {
          s.send(payload, (e2) => {
            if (e2) done(errText(e2));
          });
        }),
      );
      return () => {
        clearTimeout(quiet);
        s.close();
      };
    });
  }
  return deadline(r.timeoutMs, (done) => {
    const s = dgram.createSocket('udp4');
    s.once('error', (e) => done((e as NodeJS.ErrnoException).code === 'ECONNREFUSED' ? 'ICMP port unreachable' : errText(e)));
    s.on('message', (m) => {
      if (m.subarray(0, expect.length).equals(expect)) done('');
    });
    s.bind({ address: r.source || undefined, port: 0 }, () =>
      s.connect(r.port, r.address, () => {
        s.send(payload, (e2) => {
          if (e2) done(errText(e2));
        });
      }),
    );
    return () => s.close();
  });
}

/**
 * ICMP echo through the system's `ping` (iputils): Node has no raw or ICMP sockets, and a native
 * helper would need CAP_NET_RAW handling of its own; ping already has it, matches replies to its
 * id and sequence, and binds the source with -I. One short-lived process per probe, bounded by
 * the prober's concurrency limit; killed at the deadline.
 */
function icmp(r: ProbeRequest): Promise<string> {
  return deadline(r.timeoutMs, (done) => {
    const waitS = Math.max(0.001, r.timeoutMs / 1000).toFixed(3);
    const args = ['-n', '-q', '-c', '1', '-W', waitS, ...(r.source ? ['-I', r.source] : []), r.address];
    const child = spawn('ping', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      if (stderr.length < 256) stderr += c.toString();
    });
    child.once('error', (e) => done(`ping: ${errText(e)}`));
    child.once('exit', (code) => done(code === 0 ? '' : code === 1 ? 'no echo reply' : `ping exited ${code}: ${stderr.trim().split('\n')[0] ?? ''}`));
    return () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
  });
}

const PROBES: Record<ProbeKind, (r: ProbeRequest) => Promise<string>> = { tcp, http: httpGet, grpc: grpcHealth, udp, icmp };

export async function runProbe(r: ProbeRequest): Promise<ProbeResult> {
  const fn = PROBES[r.kind];
  if (fn === undefined) return { id: r.id, ok: false, error: `unknown probe kind ${JSON.stringify(r.kind)}` };
  const error = await fn(r);
  return { id: r.id, ok: error === '', error };
}
