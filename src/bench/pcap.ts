/**
 * Benchmark traffic as classic pcap files (the format tcpdump -w writes: 24-byte file header,
 * 16-byte record headers, link type Ethernet), written by our own code so that `npm run bench`
 * needs no traffic generator. Replayed by `net_pcap,rx_pcap=<file>,infinite_rx=1` into both
 * dpdk-testpmd (the baseline) and retrace.
 *
 * Every frame is `frameLen` bytes (default 64) as stored in the file: Ethernet header + IPv4
 * (no options, DF set, TTL 64, correct header checksum — the dataplane verifies it) + the L4
 * header + a payload that fills the frame exactly (so there is no Ethernet padding to trim).
 * TCP, UDP and ICMP checksums are correct too. Kinds:
 *
 *   tcp   client:cport → vip:vport; the flow's packet 0 is a SYN, the others ACK|PSH with data
 *   udp   client:cport → vip:vport
 *   icmp  echo request client → dst, the echo id stands for the flow, seq = packet number
 *
 * Flow i has the client address `clientBase + (i >> 4)` and the port `10000 + (i & 15)` (ICMP:
 * the id `(1 + i) & 0xffff`, with the address of flow i as for TCP) — distinct for every flow up
 * to 2^24 flows, so each flow is its own conn.
 *
 * Order (one "pass" = the whole file; infinite_rx replays it forever): each flow has
 * `packetsPerFlow` packets, emitted in rounds of `burst` consecutive packets per flow, the flows
 * taken in order within a round. burst = 1 spreads traffic uniformly over all flows (a flow's
 * packets are a whole pass apart, the cache-hostile case); burst = 8 gives each flow 8 back-to-back
 * packets (locality). With TCP the SYNs of every flow come first when burst = 1.
 */
import fs from 'node:fs';

export type PacketKind = 'tcp' | 'udp' | 'icmp';

export interface FlowSpec {
  kind: PacketKind;
  /** Number of distinct flows. */
  flows: number;
  /** Packets per flow in one pass (>= 1). */
  packetsPerFlow: number;
  /** Consecutive packets of one flow (1 = round-robin over flows). Divides packetsPerFlow ideally. */
  burst?: number;
  /** Destination MAC (the appliance port's MAC). */
  dstMac: string;
  /** Source MAC (the client's router). */
  srcMac?: string;
  /** First client address; flow i uses clientBase + (i >> 4). */
  clientBase?: string;
  /** Destination address (a VIP, or a local address for ICMP echo). */
  dst: string;
  /** Destination port (tcp/udp). */
  dport?: number;
  /** Frame length in bytes as stored in the pcap (>= 60; 64 by default). */
  frameLen?: number;
}

export const PCAP_FILE_HEADER_LEN = 24;
export const PCAP_RECORD_HEADER_LEN = 16;
const ETH_LEN = 14;
const IP_LEN = 20;

export function parseMac(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) throw new Error(`bad MAC ${mac}`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`bad IPv4 address ${ip}`);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

export function intToIp(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** Ones'-complement checksum of b[from, to) (the value to store, i.e. inverted). */
export function inetChecksum(b: Buffer, from: number, to: number, initial = 0): number {
  let acc = initial;
  let i = from;
  for (; i + 1 < to; i += 2) acc += (b[i] << 8) | b[i + 1];
  if (i < to) acc += b[i] << 8;
  while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 0x10000);
  return ~acc & 0xffff;
}

/** Client address and port (or ICMP id) of flow i. */
export function flowEndpoint(spec: Pick<FlowSpec, 'clientBase'>, i: number): { addr: number; port: number } {
  const base = ipToInt(spec.clientBase ?? '100.64.0.0');
  return { addr: (base + (i >>> 4)) >>> 0, port: 10000 + (i & 15) };
}

/** The classic pcap file header (µs timestamps, little-endian, snaplen 65535, Ethernet). */
export function pcapFileHeader(): Buffer {
  const h = Buffer.alloc(PCAP_FILE_HEADER_LEN);
  h.writeUInt32LE(0xa1b2c3d4, 0);
  h.writeUInt16LE(2, 4);
  h.writeUInt16LE(4, 6);
  h.writeInt32LE(0, 8); // thiszone
  h.writeUInt32LE(0, 12); // sigfigs
  h.writeUInt32LE(65535, 16); // snaplen
  h.writeUInt32LE(1, 20); // LINKTYPE_ETHERNET
  return h;
}

/** A whole classic pcap file holding `frames` (timestamps 1 µs apart), for tests and labs that
 * replay a few frames through net_pcap. */
export function pcapOf(frames: Buffer[]): Buffer {
  const recs = frames.map((f, i) => {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(1700000000, 0);
    h.writeUInt32LE(i, 4);
    h.writeUInt32LE(f.length, 8);
    h.writeUInt32LE(f.length, 12);
    return Buffer.concat([h, f]);
  });
  return Buffer.concat([pcapFileHeader(), ...recs]);
}

export interface FrameRef {
  spec: FlowSpec;
  flow: number;
  /** Packet number within the flow. */
  n: number;
  /** spec's MACs, parsed once by the caller. */
  macs?: { dst: Buffer; src: Buffer };
}

/**
 * Writes one frame of `spec`'s flow `flow`, packet number `n` (within the flow) at `out[o]`
 * (frameLen bytes). Exported for the tests.
 */
export function writeFrame(out: Buffer, o: number, { spec, flow, n, macs }: FrameRef): void {
  const frameLen = spec.frameLen ?? 64;
  const dst = macs?.dst ?? parseMac(spec.dstMac);
  const src = macs?.src ?? parseMac(spec.srcMac ?? '02:00:00:00:0c:01');
  out.fill(0, o, o + frameLen);
  dst.copy(out, o);
  src.copy(out, o + 6);
  out.writeUInt16BE(0x0800, o + 12);
  const ip = o + ETH_LEN;
  const ipLen = frameLen - ETH_LEN;
  const { addr, port } = flowEndpoint(spec, flow);
  const daddr = ipToInt(spec.dst);
  const proto = spec.kind === 'tcp' ? 6 : spec.kind === 'udp' ? 17 : 1;
  out[ip] = 0x45;
  out[ip + 1] = 0;
  out.writeUInt16BE(ipLen, ip + 2);
  out.writeUInt16BE((flow * 7 + n) & 0xffff, ip + 4); // IP id
  out.writeUInt16BE(0x4000, ip + 6); // DF
  out[ip + 8] = 64;
  out[ip + 9] = proto;
  out.writeUInt32BE(addr, ip + 12);
  out.writeUInt32BE(daddr, ip + 16);
  out.writeUInt16BE(inetChecksum(out, ip, ip + IP_LEN), ip + 10);
  const l4 = ip + IP_LEN;
  const l4Len = ipLen - IP_LEN;
  // Payload: a recognisable pattern (flow and packet number).
  for (let i = 0; i < l4Len; i++) out[l4 + i] = 0;
  const pseudo = (): number => {
    let acc = (addr >>> 16) + (addr & 0xffff) + (daddr >>> 16) + (daddr & 0xffff) + proto + l4Len;
    while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 0x10000);
    return acc;
  };
  if (spec.kind === 'tcp') {
    const dport = spec.dport ?? 80;
    out.writeUInt16BE(port, l4);
    out.writeUInt16BE(dport, l4 + 2);
    const isn = Math.imul(flow + 1, 2654435761) >>> 0;
    out.writeUInt32BE(n === 0 ? isn : (isn + 1 + (n - 1) * (l4Len - 20)) >>> 0, l4 + 4); // seq
    out.writeUInt32BE(n === 0 ? 0 : 1, l4 + 8); // ack
    out[l4 + 12] = 5 << 4; // data offset 20
    out[l4 + 13] = n === 0 ? 0x02 : 0x18; // SYN | ACK+PSH
    out.writeUInt16BE(65535, l4 + 14); // window
    for (let i = 20; i < l4Len; i++) out[l4 + i] = (flow + n + i) & 0xff;
    out.writeUInt16BE(0, l4 + 16);
    out.writeUInt16BE(inetChecksum(out, l4, l4 + l4Len, pseudo()), l4 + 16);
  } else if (spec.kind === 'udp') {
    const dport = spec.dport ?? 80;
    out.writeUInt16BE(port, l4);
    out.writeUInt16BE(dport, l4 + 2);
    out.writeUInt16BE(l4Len, l4 + 4);
    for (let i = 8; i < l4Len; i++) out[l4 + i] = (flow + n + i) & 0xff;
    out.writeUInt16BE(0, l4 + 6);
    const c = inetChecksum(out, l4, l4 + l4Len, pseudo());
    out.writeUInt16BE(c === 0 ? 0xffff : c, l4 + 6);
  } else {
    out[l4] = 8; // echo request
    out[l4 + 1] = 0;
    out.writeUInt16BE((1 + flow) & 0xffff, l4 + 4); // id
    out.writeUInt16BE(n & 0xffff, l4 + 6); // seq
    for (let i = 8; i < l4Len; i++) out[l4 + i] = (flow + n + i) & 0xff;
    out.writeUInt16BE(0, l4 + 2);
    out.writeUInt16BE(inetChecksum(out, l4, l4 + l4Len), l4 + 2);
  }
}

export interface PcapInfo {
  file: string;
  packets: number;
  bytes: number;
  frameLen: number;
}

/** Packets in one pass of `spec`. */
export function packetCount(spec: FlowSpec): number {
  return spec.flows * spec.packetsPerFlow;
}

/**
 * The (flow, packet number) sequence of one pass, in file order: rounds of `burst` packets per
 * flow, flows in order within a round.
 */
export function* packetOrder(spec: FlowSpec): Generator<[number, number]> {
  const burst = Math.max(1, Math.min(spec.burst ?? 1, spec.packetsPerFlow));
  for (let first = 0; first < spec.packetsPerFlow; first += burst) {
    const last = Math.min(spec.packetsPerFlow, first + burst);
    for (let f = 0; f < spec.flows; f++) for (let n = first; n < last; n++) yield [f, n];
  }
}

/** Writes the pcap of `spec` to `file` (streamed in 4 MiB chunks) and returns what it holds. */
export function writePcap(file: string, spec: FlowSpec): PcapInfo {
  const frameLen = spec.frameLen ?? 64;
  if (frameLen < 60 || frameLen > 1514) throw new Error(`frameLen ${frameLen} out of 60..1514`);
  if (spec.flows < 1 || spec.flows > 1 << 24) throw new Error(`flows ${spec.flows} out of 1..2^24`);
  if (spec.kind !== 'icmp' && (spec.dport === undefined || spec.dport < 1)) spec = { ...spec, dport: spec.dport ?? 80 };
  const macs = { dst: parseMac(spec.dstMac), src: parseMac(spec.srcMac ?? '02:00:00:00:0c:01') };
  const rec = PCAP_RECORD_HEADER_LEN + frameLen;
  const perChunk = Math.max(1, Math.floor((4 << 20) / rec));
  const chunk = Buffer.alloc(perChunk * rec);
  const fd = fs.openSync(file, 'w');
  let packets = 0;
  try {
    fs.writeSync(fd, pcapFileHeader());
    let k = 0;
    for (const [flow, n] of packetOrder(spec)) {
      const o = k * rec;
      // Timestamps: one microsecond apart (replay ignores them).
      chunk.writeUInt32LE(Math.floor(packets / 1e6), o);
      chunk.writeUInt32LE(packets % 1e6, o + 4);
      chunk.writeUInt32LE(frameLen, o + 8);
      chunk.writeUInt32LE(frameLen, o + 12);
      writeFrame(chunk, o + PCAP_RECORD_HEADER_LEN, { spec, flow, n, macs });
      packets++;
      if (++k === perChunk) {
        fs.writeSync(fd, chunk);
        k = 0;
      }
    }
    if (k > 0) fs.writeSync(fd, chunk.subarray(0, k * rec));
  } finally {
    fs.closeSync(fd);
  }
  return { file, packets, bytes: PCAP_FILE_HEADER_LEN + packets * rec, frameLen };
}
