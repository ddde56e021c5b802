/**
 * Lab UDP real that reads PROXY protocol v2 (one header per datagram, as retrace sends it for a UDP
 * service with client_address PROXY_V2), and the client that asks it.
 *
 *   node dist/lab/proxy-udp.js --serve PORT        answer each datagram with "<src>:<sport>" read
 *                                                  from its header ("bad: <why>" when it has none)
 *   node dist/lab/proxy-udp.js --ask HOST:PORT --local-port P [--count N] [--timeout-ms T]
 *                                                  send N datagrams from port P, print the replies
 *
 * The parser follows haproxy's proxy-protocol.txt (section 2.2) by itself: the 12-byte signature,
 * version 2 with the PROXY command, AF_INET over DGRAM, the address block's length, then source
 * and destination addresses and ports. The server prints `{"event":"ready"}` once it listens and
 * one `{"event":"datagram",...}` per datagram; the client prints one JSON line with the replies.
 * Both exit on SIGTERM (and the server when stdin closes, as the echo server does).
 */
import dgram from 'node:dgram';
import { parseArgs } from 'node:util';

const SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

export interface ProxyV2Header {
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /** Bytes of header: the payload follows. */
  length: number;
}

/** Parses a PROXY v2 header for UDP over IPv4 at the start of b; a string says what is wrong. */
export function parseProxyV2(b: Buffer): ProxyV2Header | string {
  if (b.length < 16 || !b.subarray(0, 12).equals(SIG)) return 'no PROXY v2 signature';
  if (b[12] !== 0x21) return `version/command 0x${b[12].toString(16)}, not v2 PROXY`;
  if (b[13] !== 0x12) return `family/transport 0x${b[13].toString(16)}, not UDP over IPv4`;
  const len = b.readUInt16BE(14);
  if (len < 12 || b.length < 16 + len) return `address block of ${len} bytes in a ${b.length}-byte datagram`;
  const ip = (o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
  return { src: ip(16), dst: ip(20), sport: b.readUInt16BE(24), dport: b.readUInt16BE(26), length: 16 + len };
}

function serve(port: number): void {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    const h = parseProxyV2(msg);
    const answer = typeof h === 'string' ? `bad: ${h}` : `${h.src}:${h.sport}`;
    process.stdout.write(
      `${JSON.stringify({ event: 'datagram', from: `${rinfo.address}:${rinfo.port}`, answer, payload: typeof h === 'string' ? '' : msg.subarray(h.length).toString() })}\n`,
    );
    sock.send(answer, rinfo.port, rinfo.address);
  });
  sock.bind(port, '0.0.0.0', () => process.stdout.write(`${JSON.stringify({ event: 'ready', port })}\n`));
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

async function ask(host: string, port: number, localPort: number, count: number, timeoutMs: number): Promise<void> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => sock.bind(localPort, resolve));
  const replies: string[] = [];
  for (let i = 0; i < count; i++) {
    const reply = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), timeoutMs);
      sock.once('message', (m) => {
        clearTimeout(timer);
        resolve(m.toString());
      });
      sock.send(`datagram ${i}`, port, host);
    });
    replies.push(reply);
  }
  sock.close();
  process.stdout.write(`${JSON.stringify({ localPort, replies })}\n`);
}

function main(): void {
  const { values } = parseArgs({
    options: {
      serve: { type: 'string' },
      ask: { type: 'string' },
      'local-port': { type: 'string' },
      count: { type: 'string', default: '1' },
      'timeout-ms': { type: 'string', default: '2000' },
    },
  });
  process.on('SIGTERM', () => process.exit(0));
  if (values.serve !== undefined) return serve(Number(values.serve));
  if (values.ask !== undefined) {
    const [host, port] = values.ask.split(':');
    void ask(host, Number(port), Number(values['local-port']), Number(values.count), Number(values['timeout-ms']));
    return;
  }
  process.stderr.write('proxy-udp: --serve PORT or --ask HOST:PORT --local-port P\n');
  process.exit(2);
}

if (require.main === module) main();
