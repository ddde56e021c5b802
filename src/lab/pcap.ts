/**
 * Reads the classic pcap files tcpdump writes (-w) and decodes what the lab's assertions need:
 * Ethernet addresses, ARP, IPv4 addresses, TCP/UDP ports and flags, ICMP type/code/id (and the
 * quoted packet of an ICMP error), plus whether the IPv4 header and L4 checksums are correct —
 * the property a FNAT rewrite must preserve and the thing veth TX offload breaks (see
 * docs/design.md, "The lab"). tcpdump's own one-line rendering is attached as `summary`.
 */

export type CapturedProto = 'tcp' | 'udp' | 'icmp' | 'arp' | 'ipv4' | 'ipv6' | 'other';

/** The transport header quoted inside an ICMP error. */
export interface QuotedPacket {
  src: string;
  dst: string;
  proto: CapturedProto;
  sport?: number;
  dport?: number;
  /** Echo id when the quoted packet is ICMP echo. */
  icmpId?: number;
}

export interface CapturedPacket {
  /** Capture time, seconds since the epoch (fractional). */
  time: number;
  /** Length on the wire. */
  length: number;
  srcMac: string;
  dstMac: string;
  ethertype: number;
  /** IPv4 source (for ARP: sender protocol address). */
  src?: string;
  /** IPv4 destination (for ARP: target protocol address). */
  dst?: string;
  proto: CapturedProto;
  ttl?: number;
  ipId?: number;
  /** Don't-fragment bit. */
  df?: boolean;
  sport?: number;
  dport?: number;
  /** tcpdump's spelling: S, S., P., F., R, R. ... */
  tcpFlags?: string;
  tcpSeq?: number;
  tcpAck?: number;
  /** L4 payload length in bytes (TCP/UDP). */
  payloadLength?: number;
  /** TCP option bytes as they lie in the header (empty without options). */
  tcpOptions?: Buffer;
  /** The first bytes of the L4 payload (TCP/UDP), up to 64, as captured. */
  payloadHead?: Buffer;
  icmp?: { type: number; code: number; id?: number; seq?: number; mtu?: number; quoted?: QuotedPacket };
  arp?: { op: 'request' | 'reply' | number; senderMac: string; senderIp: string; targetMac: string; targetIp: string };
  /** IPv4 header checksum verifies. */
  ipChecksumOk?: boolean;
  /** TCP/UDP/ICMP checksum verifies (undefined when the frame was truncated by the snap length). */
  l4ChecksumOk?: boolean;
  /** The line `tcpdump -r <file> -nn -e` printed for this packet. */
  summary: string;
}

const mac = (b: Buffer, o: number): string => Array.from(b.subarray(o, o + 6), (x) => x.toString(16).padStart(2, '0')).join(':');
const ip4 = (b: Buffer, o: number): string => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

/** Ones'-complement sum of `b[from, to)`, not yet folded or inverted. */
function sum16(b: Buffer, from: number, to: number, acc = 0): number {
  let i = from;
  for (; i + 1 < to; i += 2) acc += (b[i] << 8) | b[i + 1];
  if (i < to) acc += b[i] << 8;
  return acc;
}
function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 0x10000);
  return acc;
}

const TCP_FLAGS: [number, string][] = [
  [0x01, 'F'],
  [0x02, 'S'],
  [0x04, 'R'],
  [0x08, 'P'],
  [0x20, 'U'],
  [0x40, 'E'],
  [0x80, 'W'],
  [0x10, '.'],
];
export function tcpFlagString(flags: number): string {
  return (
    TCP_FLAGS.filter(([bit]) => flags & bit)
      .map(([, c]) => c)
      .join('') || 'none'
  );
}

const PROTOS: Record<number, CapturedProto> = { 1: 'icmp', 6: 'tcp', 17: 'udp' };

/** Decodes the IPv4 packet at `o` (headers may be cut off by the snap length). */
function decodeIpv4(b: Buffer, o: number, caplenEnd: number, p: CapturedPacket): void {
  if (o + 20 > caplenEnd) return;
  const ihl = (b[o] & 0x0f) * 4;
  const totalLen = b.readUInt16BE(o + 2);
  const end = Math.min(caplenEnd, o + totalLen);
  p.src = ip4(b, o + 12);
  p.dst = ip4(b, o + 16);
  p.ttl = b[o + 8];
  p.ipId = b.readUInt16BE(o + 4);
  p.df = (b[o + 6] & 0x40) !== 0;
  p.proto = PROTOS[b[o + 9]] ?? 'ipv4';
  if (o + ihl <= caplenEnd) p.ipChecksumOk = fold(sum16(b, o, o + ihl)) === 0xffff;
  const fragOffset = b.readUInt16BE(o + 6) & 0x1fff;
  if (fragOffset !== 0) return; // a non-first fragment carries no L4 header
  const l4 = o + ihl;
  const whole = o + totalLen <= caplenEnd && (b.readUInt16BE(o + 6) & 0x2000) === 0;
  const l4Len = totalLen - ihl;
  const pseudo = (): number => sum16(b, o + 12, o + 20) + b[o + 9] + l4Len;
  if (p.proto === 'tcp' && l4 + 20 <= end) {
    p.sport = b.readUInt16BE(l4);
    p.dport = b.readUInt16BE(l4 + 2);
    p.tcpSeq = b.readUInt32BE(l4 + 4);
    p.tcpAck = b.readUInt32BE(l4 + 8);
    p.tcpFlags = tcpFlagString(b[l4 + 13]);
    p.payloadLength = l4Len - (b[l4 + 12] >> 4) * 4;
    const doff = (b[l4 + 12] >> 4) * 4;
    p.tcpOptions = Buffer.from(b.subarray(l4 + 20, Math.min(l4 + Math.max(doff, 20), end)));
    p.payloadHead = Buffer.from(b.subarray(Math.min(l4 + doff, end), Math.min(l4 + doff + 64, end, o + totalLen)));
    if (whole) p.l4ChecksumOk = fold(sum16(b, l4, o + totalLen, pseudo())) === 0xffff;
  } else if (p.proto === 'udp' && l4 + 8 <= end) {
    p.sport = b.readUInt16BE(l4);
    p.dport = b.readUInt16BE(l4 + 2);
    p.payloadLength = b.readUInt16BE(l4 + 4) - 8;
    p.payloadHead = Buffer.from(b.subarray(l4 + 8, Math.min(l4 + 8 + 64, end, o + totalLen)));
    if (whole) p.l4ChecksumOk = b.readUInt16BE(l4 + 6) === 0 || fold(sum16(b, l4, o + totalLen, pseudo())) === 0xffff;
  } else if (p.proto === 'icmp' && l4 + 8 <= end) {
    const type = b[l4];
    const code = b[l4 + 1];
    p.icmp = { type, code };
    if (type === 0 || type === 8 || type === 13 || type === 14) {
      p.icmp.id = b.readUInt16BE(l4 + 4);
      p.icmp.seq = b.readUInt16BE(l4 + 6);
    }
    if (type === 3 && code === 4) p.icmp.mtu = b.readUInt16BE(l4 + 6);
    if ((type === 3 || type === 11 || type === 12 || type === 5) && l4 + 8 + 20 <= end) {
      const q = l4 + 8;
      const qihl = (b[q] & 0x0f) * 4;
      const quoted: QuotedPacket = { src: ip4(b, q + 12), dst: ip4(b, q + 16), proto: PROTOS[b[q + 9]] ?? 'ipv4' };
      const ql4 = q + qihl;
      if ((quoted.proto === 'tcp' || quoted.proto === 'udp') && ql4 + 4 <= end) {
        quoted.sport = b.readUInt16BE(ql4);
        quoted.dport = b.readUInt16BE(ql4 + 2);
      } else if (quoted.proto === 'icmp' && ql4 + 8 <= end && (b[ql4] === 8 || b[ql4] === 0)) {
        quoted.icmpId = b.readUInt16BE(ql4 + 4);
      }
      p.icmp.quoted = quoted;
    }
    if (whole) p.l4ChecksumOk = fold(sum16(b, l4, o + totalLen)) === 0xffff;
  }
}

/** Parses a classic pcap file (any byte order, µs or ns timestamps) with Ethernet link type. */
export function parsePcap(buf: Buffer): Omit<CapturedPacket, 'summary'>[] {
  if (buf.length < 24) return [];
  const magicLE = buf.readUInt32LE(0);
  let le: boolean;
  let nano: boolean;
  if (magicLE === 0xa1b2c3d4 || magicLE === 0xa1b23c4d) {
    le = true;
    nano = magicLE === 0xa1b23c4d;
  } else {
    const magicBE = buf.readUInt32BE(0);
    if (magicBE !== 0xa1b2c3d4 && magicBE !== 0xa1b23c4d) throw new Error('not a classic pcap file (pcapng is not supported)');
    le = false;
    nano = magicBE === 0xa1b23c4d;
  }
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const linktype = u32(20) & 0x0fffffff;
  const out: Omit<CapturedPacket, 'summary'>[] = [];
  let o = 24;
  while (o + 16 <= buf.length) {
    const sec = u32(o);
    const frac = u32(o + 4);
    const caplen = u32(o + 8);
    const length = u32(o + 12);
    const start = o + 16;
    const end = Math.min(buf.length, start + caplen);
    o = start + caplen;
    const p: Omit<CapturedPacket, 'summary'> = {
      time: sec + frac / (nano ? 1e9 : 1e6),
      length,
      srcMac: '',
      dstMac: '',
      ethertype: 0,
      proto: 'other',
    };
    out.push(p);
    if (linktype !== 1 || end - start < 14) continue;
    p.dstMac = mac(buf, start);
    p.srcMac = mac(buf, start + 6);
    let et = buf.readUInt16BE(start + 12);
    let l3 = start + 14;
    while ((et === 0x8100 || et === 0x88a8) && l3 + 4 <= end) {
      et = buf.readUInt16BE(l3 + 2);
      l3 += 4;
    }
    p.ethertype = et;
    if (et === 0x0800) {
      decodeIpv4(buf, l3, end, p as CapturedPacket);
    } else if (et === 0x86dd) {
      p.proto = 'ipv6';
    } else if (et === 0x0806 && l3 + 28 <= end) {
      p.proto = 'arp';
      const op = buf.readUInt16BE(l3 + 6);
      p.arp = {
        op: op === 1 ? 'request' : op === 2 ? 'reply' : op,
        senderMac: mac(buf, l3 + 8),
        senderIp: ip4(buf, l3 + 14),
        targetMac: mac(buf, l3 + 18),
        targetIp: ip4(buf, l3 + 24),
      };
      p.src = p.arp.senderIp;
      p.dst = p.arp.targetIp;
    }
  }
  return out;
}
