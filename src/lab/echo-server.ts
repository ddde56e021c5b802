/**
 * Lab real server: byte-exact TCP and UDP echo, plus an identity port that names the server.
 *
 *   node dist/lab/echo-server.js --name rs1 [--tcp 8080] [--udp 8080] [--who 8081] [--host 0.0.0.0]
 *                                [--log-peers] [--exit-on-stdin-eof]
 *
 *   TCP --tcp   echoes every byte back until the client closes (half-close honoured).
 *   UDP --udp   answers every datagram with the same payload, to the sender's address and port.
 *   TCP --who   writes "<name>\n" and closes.  UDP --who answers any datagram with "<name>".
 *   Port 0 disables a service.
 *
 * stdout is JSON lines (EchoServerEvent in results.ts): `{"event":"ready",...}` once every socket
 * listens, and with --log-peers one `{"event":"conn",...}` per TCP connection and UDP datagram, so a
 * test can see which source address (a LIP under FNAT) reached the server. SIGTERM/SIGINT exit 0.
 * With --exit-on-stdin-eof the server also exits when its parent goes away (stdin closes), so a
 * crashed test run cannot leave it behind in a namespace.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { parseArgs } from 'node:util';
import type { EchoServerEvent } from './results';

function emit(ev: EchoServerEvent): void {
  process.stdout.write(`${JSON.stringify(ev)}\n`);
}

function portArg(v: string | undefined, def: number, flag: string): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    process.stderr.write(`echo-server: ${flag} must be a port number in 0..65535, got "${v}"\n`);
    process.exit(2);
  }
  return n;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      name: { type: 'string' },
      host: { type: 'string', default: '0.0.0.0' },
      tcp: { type: 'string' },
      udp: { type: 'string' },
      who: { type: 'string' },
      'log-peers': { type: 'boolean', default: false },
      'exit-on-stdin-eof': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const name = values.name ?? 'echo';
  const host = values.host ?? '0.0.0.0';
  const tcpPort = portArg(values.tcp, 8080, '--tcp');
  const udpPort = portArg(values.udp, 8080, '--udp');
  const whoPort = portArg(values.who, 8081, '--who');
  const logPeers = values['log-peers'] ?? false;

  const conn = (proto: 'tcp' | 'udp', service: 'echo' | 'who', port: number, peer: string | undefined, peerPort: number | undefined): void => {
    if (logPeers) emit({ event: 'conn', name, proto, service, port, peer: peer ?? '', peerPort: peerPort ?? 0, t: Date.now() });
  };

  const closers: (() => void)[] = [];
  const pending: Promise<void>[] = [];

  const listenTcp = (port: number, onConn: (s: net.Socket) => void): void => {
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => s.destroy());
      onConn(s);
    });
    closers.push(() => server.close());
    pending.push(
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen({ port, host, backlog: 1024 }, () => resolve());
      }),
    );
  };

  const listenUdp = (port: number, onMsg: (sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo) => void): void => {
    const sock = dgram.createSocket({ type: 'udp4' });
    sock.on('message', (msg, rinfo) => onMsg(sock, msg, rinfo));
    closers.push(() => sock.close());
    pending.push(
      new Promise((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(port, host, () => {
          sock.removeListener('error', reject);
          sock.on('error', () => undefined); // e.g. ICMP errors on send: keep serving
          resolve();
        });
      }),
    );
  };

  if (tcpPort) {
    listenTcp(tcpPort, (s) => {
      conn('tcp', 'echo', tcpPort, s.remoteAddress, s.remotePort);
      // pipe() ends our side once the client's FIN has arrived and every byte went back.
      s.pipe(s);
    });
  }
  if (whoPort) {
    listenTcp(whoPort, (s) => {
      conn('tcp', 'who', whoPort, s.remoteAddress, s.remotePort);
      s.on('data', () => undefined); // drain anything the client sends
      s.end(`${name}\n`);
    });
  }
  if (udpPort) {
    listenUdp(udpPort, (sock, msg, rinfo) => {
      conn('udp', 'echo', udpPort, rinfo.address, rinfo.port);
      sock.send(msg, rinfo.port, rinfo.address);
    });
  }
  if (whoPort) {
    listenUdp(whoPort, (sock, _msg, rinfo) => {
      conn('udp', 'who', whoPort, rinfo.address, rinfo.port);
      sock.send(Buffer.from(name), rinfo.port, rinfo.address);
    });
  }

  const stop = (): void => {
    for (const c of closers) {
      try {
        c();
      } catch {
        /* already closed */
      }
    }
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (values['exit-on-stdin-eof']) {
    process.stdin.on('end', stop);
    process.stdin.on('error', stop);
    process.stdin.resume();
  }

  Promise.all(pending).then(
    () => emit({ event: 'ready', name, host, tcp: tcpPort, udp: udpPort, who: whoPort }),
    (e: Error) => {
      process.stderr.write(`echo-server ${name}: ${e.message}\n`);
      process.exit(1);
    },
  );
}

main();
