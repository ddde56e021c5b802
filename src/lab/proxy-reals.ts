/**
 * Reals that read the client's address from what retrace adds (docs/design.md, "The client's
 * address at the real"), started in the lab's real-server namespaces:
 *
 *   HAProxy (the Debian package) with `bind ... accept-proxy` (PROXY v1 and v2) in TCP mode in
 *   front of the lab's echo server on the same host, logging one line per connection to stdout:
 *   "client <addr>:<port>" with the address and port the PROXY header carried (%ci:%cp).
 *
 *   nginx (the Debian package, nginx-light) with `listen ... proxy_protocol`, answering each HTTP
 *   request with $proxy_protocol_addr:$proxy_protocol_port and logging the same.
 *
 *   src/lab/proxy-udp.ts: a UDP real of our own that parses a PROXY v2 header per datagram and
 *   answers with the source it read.
 *
 * Every process is started through the lab, which stops it by PID in destroy().
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { LabTopology, RealServer, Role } from './topology';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Collects a child's stdout lines. */
function lines(child: ChildProcess): string[] {
  const out: string[] = [];
  let partial = '';
  child.stdout!.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n');
    partial = parts.pop() ?? '';
    out.push(...parts.filter((l) => l.length > 0));
  });
  return out;
}

async function listening(
  lab: LabTopology,
  rs: Role,
  proto: 'tcp' | 'udp',
  port: number,
  child: ChildProcess,
  what: string,
  stderr: () => string,
): Promise<void> {
  const deadline = Date.now() + 10000;
  for (;;) {
    const ss = lab.exec(rs, 'ss', [proto === 'tcp' ? '-Hltn' : '-Hlun', `sport = :${port}`], { allowFail: true });
    if (ss.trim() !== '') return;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} in ${rs} exited: ${stderr()}`);
    if (Date.now() > deadline) throw new Error(`${what} in ${rs} not listening on ${proto}/${port} after 10 s: ${stderr()}`);
    await sleep(50);
  }
}

export class HaproxyReal {
  private constructor(
    readonly rs: RealServer,
    private readonly out: string[],
  ) {}

  /** "addr:port" of every connection HAProxy has logged so far (the PROXY header's source). */
  clients(): string[] {
    return this.out.filter((l) => l.startsWith('client ')).map((l) => l.slice('client '.length).trim());
  }

  /**
   * HAProxy on `port` (accept-proxy) in rs, forwarding to the echo server on 127.0.0.1:echoPort.
   * Resolves once it listens.
   */
  static async start(lab: LabTopology, rs: RealServer, port: number, echoPort: number): Promise<HaproxyReal> {
    const cfg = path.join(lab.dir, `haproxy-${rs}-${port}.cfg`);
    fs.writeFileSync(
      cfg,
      [
        'global',
        '  log stdout format raw local0',
        '  maxconn 512',
        'defaults',
        '  mode tcp',
        '  log global',
        '  timeout connect 5s',
        '  timeout client 60s',
        '  timeout server 60s',
        'frontend fe',
        `  bind 0.0.0.0:${port} accept-proxy`,
        // %ci:%cp: the client as the PROXY header told it (haproxy's "client" is the header's source).
        '  log-format "client %ci:%cp"',
        '  default_backend be',
        'backend be',
        `  server echo 127.0.0.1:${echoPort}`,
        '',
      ].join('\n'),
    );
    // -db: foreground, no daemon (the lab stops it by PID); -W off: no master process.
    const child = lab.spawnIn(`haproxy ${rs}`, rs, 'haproxy', ['-db', '-f', cfg]);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const out = lines(child);
    await listening(lab, rs, 'tcp', port, child, 'haproxy', () => stderr.trim());
    return new HaproxyReal(rs, out);
  }
}

export class NginxReal {
  private constructor(
    readonly rs: RealServer,
    /** The access log (nginx cannot open /dev/stdout when it is a socket, as a spawned child's is). */
    private readonly log: string,
  ) {}

  /** "addr:port" of every request nginx has logged so far ($proxy_protocol_addr:$proxy_protocol_port). */
  clients(): string[] {
    const text = fs.existsSync(this.log) ? fs.readFileSync(this.log, 'utf8') : '';
    return text
      .split('\n')
      .filter((l) => l.startsWith('client '))
      .map((l) => l.slice('client '.length).trim());
  }

  /**
   * nginx (the Debian package) in rs with `listen <port> proxy_protocol`, answering every HTTP
   * request with the client address and port the PROXY header carried, and logging the same.
   * One process (no master, no daemon), so the lab stops it by PID. Resolves once it listens.
   */
  static async start(lab: LabTopology, rs: RealServer, port: number): Promise<NginxReal> {
    const dir = path.join(lab.dir, `nginx-${rs}-${port}`);
    fs.mkdirSync(dir, { recursive: true });
    const cfg = path.join(dir, 'nginx.conf');
    const tmp = (n: string) => `${n}_temp_path ${path.join(dir, n)};`;
    fs.writeFileSync(
      cfg,
      [
        'daemon off;',
        'master_process off;',
        'worker_processes 1;',
        `pid ${path.join(dir, 'nginx.pid')};`,
        `error_log ${path.join(dir, 'error.log')} warn;`,
        'events { worker_connections 256; }',
        'http {',
        `  ${tmp('client_body')} ${tmp('proxy')} ${tmp('fastcgi')} ${tmp('uwsgi')} ${tmp('scgi')}`,
        "  log_format pp 'client $proxy_protocol_addr:$proxy_protocol_port';",
        `  access_log ${path.join(dir, 'access.log')} pp;`,
        '  server {',
        `    listen ${port} proxy_protocol;`,
        '    location / { default_type text/plain; return 200 "$proxy_protocol_addr:$proxy_protocol_port"; }',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    const child = lab.spawnIn(`nginx ${rs}`, rs, 'nginx', ['-c', cfg, '-p', dir]);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    await listening(
      lab,
      rs,
      'tcp',
      port,
      child,
      'nginx',
      () => stderr.trim() + (fs.existsSync(path.join(dir, 'error.log')) ? fs.readFileSync(path.join(dir, 'error.log'), 'utf8') : ''),
    );
    return new NginxReal(rs, path.join(dir, 'access.log'));
  }
}

/** An HTTP GET with curl from `localPort` in role; the body (curl exits non-zero: the reason). */
export async function httpGet(lab: LabTopology, role: Role, host: string, port: number, localPort: number): Promise<string> {
  const r = await lab.execAsync(role, 'curl', ['-sS', '--max-time', '10', '--local-port', String(localPort), `http://${host}:${port}/`], { timeoutMs: 15000 });
  return r.code === 0 ? r.stdout : `curl exit ${r.code}: ${r.stderr.trim()}`;
}

export class UdpProxyReal {
  private constructor(
    readonly rs: RealServer,
    private readonly out: string[],
  ) {}

  /** The answers given so far ("addr:port" or "bad: ..."), one per datagram. */
  answers(): string[] {
    return this.out.map((l) => JSON.parse(l) as { event: string; answer?: string }).flatMap((e) => (e.event === 'datagram' ? [e.answer!] : []));
  }

  static async start(lab: LabTopology, rs: RealServer, port: number): Promise<UdpProxyReal> {
    const child = lab.spawnLabScript(`proxy-udp ${rs}`, rs, 'proxy-udp', ['--serve', String(port)]);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const out = lines(child);
    await listening(lab, rs, 'udp', port, child, 'proxy-udp', () => stderr.trim());
    return new UdpProxyReal(rs, out);
  }
}

/** Sends `count` datagrams from `localPort` in role to host:port; the replies in order ("timeout" for none). */
export async function udpAsk(lab: LabTopology, role: Role, host: string, port: number, localPort: number, count: number): Promise<string[]> {
  const r = await lab.runLabScript(role, 'proxy-udp', ['--ask', `${host}:${port}`, '--local-port', String(localPort), '--count', String(count)], 30000);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return (JSON.parse(line) as { replies: string[] }).replies;
}
