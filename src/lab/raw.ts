/**
 * Traffic no socket API builds, sent from a lab namespace with python3: raw Ethernet frames out of
 * an AF_PACKET socket (malformed or forged packets, bulk replays) and long-held UDP flows.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { NetnsLab } from './netns';

export interface UdpHoldOptions {
  flows: number;
  intervalMs?: number;
  durationMs: number;
  bytes?: number;
}

/**
 * Sends raw Ethernet frames out of `dev` in a namespace through an AF_PACKET socket (python3),
 * past the kernel's IP stack: for frames no socket API would build (malformed ICMP, forged
 * errors). Each frame goes out as given, in order; throws if python3 fails.
 */
export function injectFrames<R extends string>(lab: NetnsLab<R>, role: R, dev: string, frames: readonly Buffer[]): void {
  const script = [
    'import socket, sys',
    's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
    's.bind((sys.argv[1], 0))',
    'for h in sys.argv[2:]:',
    '    s.send(bytes.fromhex(h))',
  ].join('\n');
  lab.exec(role, 'python3', ['-c', script, dev, ...frames.map((f) => f.toString('hex'))]);
}

/**
 * Like injectFrames() for thousands of frames (no argv limit): writes them to a file in the lab's
 * scratch directory and sends them in order from one AF_PACKET socket, pausing `pauseMs` after
 * every `burst` frames so the receiver's ring (net_af_packet: 512 frames by default) and the
 * veth backlog are not overrun. A frame the kernel refuses (e.g. longer than the device MTU) is
 * counted by errno name, not fatal. Resolves with what was sent.
 */
export async function injectFrameBatch<R extends string>(
  lab: NetnsLab<R>,
  role: R,
  dev: string,
  frames: readonly Buffer[],
  opts: { burst?: number; pauseMs?: number } = {},
): Promise<{ sent: number; refused: Record<string, number> }> {
  const file = path.join(lab.dir, `frames-${crypto.randomBytes(4).toString('hex')}-${role}-${dev}.bin`);
  const parts: Buffer[] = [];
  for (const f of frames) {
    if (f.length > 0xffff) throw new RangeError(`frame of ${f.length} bytes cannot be injected`);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(f.length);
    parts.push(len, f);
  }
  fs.writeFileSync(file, Buffer.concat(parts));
  const script = [
    'import errno, json, socket, struct, sys, time',
    'dev, file, burst, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) / 1000.0',
    's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
    's.bind((dev, 0))',
    'data = open(file, "rb").read()',
    'off, n, sent, refused = 0, 0, 0, {}',
    'while off + 2 <= len(data):',
    '    (l,) = struct.unpack_from("!H", data, off)',
    '    frame = data[off + 2:off + 2 + l]',
    '    off += 2 + l',
    '    try:',
    '        s.send(frame)',
    '        sent += 1',
    '    except OSError as e:',
    '        k = errno.errorcode.get(e.errno, str(e.errno))',
    '        refused[k] = refused.get(k, 0) + 1',
    '    n += 1',
    '    if burst > 0 and n % burst == 0 and pause > 0:',
    '        time.sleep(pause)',
    'print(json.dumps({"sent": sent, "refused": refused}))',
  ].join('\n');
  const burst = opts.burst ?? 16;
  const pauseMs = opts.pauseMs ?? 2;
  const limit = 30000 + Math.ceil(frames.length / Math.max(burst, 1)) * (pauseMs + 5);
  try {
    const res = await lab.execAsync(role, 'python3', ['-c', script, dev, file, String(burst), String(pauseMs)], { timeoutMs: limit });
    const line = res.stdout.trim().split('\n').pop() ?? '';
    if (res.code !== 0 || !line.startsWith('{')) {
      throw new Error(`injecting ${frames.length} frames from ${lab.ns(role)}/${dev} failed (exit ${res.signal ?? res.code}): ${res.stderr.trim()}`);
    }
    return JSON.parse(line) as { sent: number; refused: Record<string, number> };
  } finally {
    fs.rmSync(file, { force: true });
  }
}

export interface SynFloodOptions {
  /** Destination MAC: the appliance port the frames enter. */
  dstMac: string;
  /** Source MAC: the sending device's own, so the appliance records a real peer. */
  srcMac: string;
  vip: string;
  vport: number;
  /** SYNs per second at most (the sender's own speed caps it too). */
  rate: number;
  durationMs: number;
}

/**
 * A spoofed SYN flood (as `hping3 --flood --rand-source` sends it): TCP SYNs to vip:vport from
 * random sources in 10.0.0.0/8 with random source ports and sequence numbers, correct IP and TCP
 * checksums, out of `dev` in a namespace through an AF_PACKET socket, paced to `rate` per second
 * for `durationMs`. No source answers: every SYN opens an embryonic conn that nothing completes.
 * Resolves with the frames sent and the rate achieved.
 */
export async function synFlood<R extends string>(
  lab: NetnsLab<R>,
  role: R,
  dev: string,
  opts: SynFloodOptions,
): Promise<{ sent: number; seconds: number; pps: number }> {
  const script = [
    'import json, random, socket, struct, sys, time',
    'dev, dmac, smac, vip, vport, rate, dur = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]) / 1000.0',
    's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
    's.bind((dev, 0))',
    'eth = bytes.fromhex(dmac.replace(":", "")) + bytes.fromhex(smac.replace(":", "")) + b"\\x08\\x00"',
    'dst = socket.inet_aton(vip)',
    'def fold(x):',
    '    while x >> 16:',
    '        x = (x & 0xFFFF) + (x >> 16)',
    '    return (~x) & 0xFFFF',
    'rnd = random.Random()',
    'sent, start = 0, time.monotonic()',
    'while True:',
    '    now = time.monotonic() - start',
    '    if now >= dur:',
    '        break',
    '    if sent >= rate * now:',
    '        time.sleep(0.0005)',
    '        continue',
    '    for _ in range(32):',
    '        src = struct.pack("!I", (10 << 24) | rnd.getrandbits(24))',
    '        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, rnd.getrandbits(16), 0x4000, 64, 6, 0, src, dst)',
    '        ip = ip[:10] + struct.pack("!H", fold(sum(struct.unpack("!10H", ip)))) + ip[12:]',
    '        tcp = struct.pack("!HHIIBBHHH", 1024 + rnd.getrandbits(15), vport, rnd.getrandbits(32), 0, 0x50, 0x02, 64240, 0, 0)',
    '        ph = src + dst + struct.pack("!BBH", 0, 6, 20)',
    '        ck = fold(sum(struct.unpack("!6H", ph)) + sum(struct.unpack("!10H", tcp)))',
    '        tcp = tcp[:16] + struct.pack("!H", ck) + tcp[18:]',
    '        try:',
    '            s.send(eth + ip + tcp)',
    '            sent += 1',
    '        except OSError:',
    '            pass',
    'secs = time.monotonic() - start',
    'print(json.dumps({"sent": sent, "seconds": secs, "pps": sent / secs}))',
  ].join('\n');
  const args = ['-c', script, dev, opts.dstMac, opts.srcMac, opts.vip, String(opts.vport), String(opts.rate), String(opts.durationMs)];
  const res = await lab.execAsync(role, 'python3', args, { timeoutMs: opts.durationMs + 30000 });
  const line = res.stdout.trim().split('\n').pop() ?? '';
  if (res.code !== 0 || !line.startsWith('{')) {
    throw new Error(`SYN flood from ${lab.ns(role)}/${dev} failed (exit ${res.signal ?? res.code}): ${res.stderr.trim()}`);
  }
  return JSON.parse(line) as { sent: number; seconds: number; pps: number };
}

/**
 * Holds `flows` UDP flows open from a namespace for `durationMs`: one socket per flow (its own
 * source port), each sending a small datagram to host:port every `intervalMs` whether or not
 * replies come, so every flow that got a conn keeps it (unlike udpEcho, whose sockets stop at
 * their first unanswered datagram). Replies are read and counted per flow. Resolves at the end
 * with, per flow, the datagrams sent and the replies received.
 */
export async function udpHold<R extends string>(
  lab: NetnsLab<R>,
  role: R,
  host: string,
  port: number,
  opts: UdpHoldOptions,
): Promise<{ flows: number; sent: number[]; replies: number[] }> {
  const script = [
    'import json, selectors, socket, sys, time',
    'host, port, n, interval, duration, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) / 1000.0, float(sys.argv[5]) / 1000.0, int(sys.argv[6])',
    'sel = selectors.DefaultSelector()',
    'socks = []',
    'for i in range(n):',
    '    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
    '    s.setblocking(False)',
    '    s.bind(("", 0))',
    '    sel.register(s, selectors.EVENT_READ, i)',
    '    socks.append(s)',
    'sent, replies = [0] * n, [0] * n',
    'payload = b"h" * size',
    'def drain(until):',
    '    while True:',
    '        left = until - time.monotonic()',
    '        if left <= 0:',
    '            return',
    '        for key, _ in sel.select(left):',
    '            while True:',
    '                try:',
    '                    key.fileobj.recv(65536)',
    '                except OSError:',
    '                    break',
    '                replies[key.data] += 1',
    '# Each round is spread over the interval in chunks of 32 flows: a steady rate, not a burst.',
    'chunks = [socks[i:i + 32] for i in range(0, n, 32)]',
    'start = time.monotonic()',
    'rnd = 0',
    'while rnd * interval < duration:',
    '    t0 = start + rnd * interval',
    '    for k, chunk in enumerate(chunks):',
    '        for j, s in enumerate(chunk):',
    '            idx = k * 32 + j',
    '            try:',
    '                s.sendto(payload, (host, port))',
    '                sent[idx] += 1',
    '            except OSError:',
    '                pass',
    '        drain(t0 + (k + 1) * interval / len(chunks))',
    '    rnd += 1',
    'drain(time.monotonic() + interval)',
    'print(json.dumps({"flows": n, "sent": sent, "replies": replies}))',
  ].join('\n');
  const intervalMs = opts.intervalMs ?? 500;
  const args = ['-c', script, host, String(port), String(opts.flows), String(intervalMs), String(opts.durationMs), String(opts.bytes ?? 32)];
  const res = await lab.execAsync(role, 'python3', args, { timeoutMs: opts.durationMs + intervalMs + 30000 });
  const line = res.stdout.trim().split('\n').pop() ?? '';
  if (res.code !== 0 || !line.startsWith('{')) {
    throw new Error(`udpHold from ${lab.ns(role)} failed (exit ${res.signal ?? res.code}): ${res.stderr.trim()}`);
  }
  return JSON.parse(line) as { flows: number; sent: number[]; replies: number[] };
}
