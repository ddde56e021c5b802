/**
 * The benchmark's pcap generator (src/bench/pcap.ts): a classic pcap header, frames of the asked
 * size, correct IPv4 header checksums (the dataplane drops frames whose checksum does not verify)
 * and L4 checksums, the flows and the packet order it promises. Read back with the lab's pcap
 * reader (src/lab/pcap.ts), an independent decoder.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { flowEndpoint, inetChecksum, intToIp, packetOrder, pcapOf, writePcap, type FlowSpec } from '../../src/bench/pcap';
import { parsePcap } from '../../src/lab/pcap';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-pcap-test-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const base = { dstMac: '02:00:00:00:00:01', srcMac: '02:00:00:00:0c:01', clientBase: '100.64.0.0' };

function gen(name: string, spec: FlowSpec): { buf: Buffer; packets: ReturnType<typeof parsePcap> } {
  const file = path.join(dir, `${name}.pcap`);
  const info = writePcap(file, spec);
  const buf = fs.readFileSync(file);
  expect(info.bytes).toBe(buf.length);
  expect(info.packets).toBe(spec.flows * spec.packetsPerFlow);
  return { buf, packets: parsePcap(buf) };
}

describe('bench pcap generator', () => {
  test('inetChecksum matches a known IPv4 header', () => {
    const h = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
    expect(inetChecksum(h, 0, 20)).toBe(0xb861);
  });

  test('classic pcap header and 64-byte records', () => {
    const { buf, packets } = gen('tcp', { ...base, kind: 'tcp', flows: 40, packetsPerFlow: 4, dst: '198.18.1.10', dport: 80 });
    expect(buf.readUInt32LE(0)).toBe(0xa1b2c3d4);
    expect(buf.readUInt16LE(4)).toBe(2);
    expect(buf.readUInt16LE(6)).toBe(4);
    expect(buf.readUInt32LE(16)).toBe(65535);
    expect(buf.readUInt32LE(20)).toBe(1); // Ethernet
    expect(buf.length).toBe(24 + 160 * (16 + 64));
    for (let o = 24; o < buf.length; o += 16 + 64) {
      expect(buf.readUInt32LE(o + 8)).toBe(64); // captured
      expect(buf.readUInt32LE(o + 12)).toBe(64); // on the wire
    }
    expect(packets).toHaveLength(160);
  });

  test.each([
    ['tcp', '198.18.1.10'],
    ['udp', '198.18.1.10'],
    ['icmp', '198.18.0.1'],
  ] as const)('%s frames: addresses, checksums, flows', (kind, dst) => {
    const flows = 100;
    const { packets } = gen(`${kind}-flows`, { ...base, kind, flows, packetsPerFlow: 3, dst, dport: 80 });
    const seen = new Set<string>();
    for (const p of packets) {
      expect(p.length).toBe(64);
      expect(p.dstMac).toBe(base.dstMac);
      expect(p.srcMac).toBe(base.srcMac);
      expect(p.ethertype).toBe(0x0800);
      expect(p.proto).toBe(kind);
      expect(p.dst).toBe(dst);
      expect(p.ipChecksumOk).toBe(true);
      expect(p.l4ChecksumOk).toBe(true);
      expect(p.ttl).toBe(64);
      expect(p.df).toBe(true);
      if (kind === 'icmp') {
        expect(p.icmp?.type).toBe(8);
        seen.add(`${p.src}/${p.icmp?.id}`);
      } else {
        expect(p.dport).toBe(80);
        seen.add(`${p.src}:${p.sport}`);
      }
    }
    expect(seen.size).toBe(flows);
  });

  test('TCP: a SYN first, then ACK segments; burst 1 spreads flows, burst 8 keeps them together', () => {
    const spread = gen('order1', { ...base, kind: 'tcp', flows: 10, packetsPerFlow: 8, burst: 1, dst: '198.18.1.10', dport: 80 }).packets;
    // Round-robin: the first pass over the flows is all SYNs.
    expect(spread.slice(0, 10).every((p) => p.tcpFlags === 'S')).toBe(true);
    expect(spread.slice(10).every((p) => p.tcpFlags === 'P.')).toBe(true);
    expect(spread[0].sport).not.toBe(spread[1].sport);
    const local = gen('order8', { ...base, kind: 'tcp', flows: 10, packetsPerFlow: 8, burst: 8, dst: '198.18.1.10', dport: 80 }).packets;
    for (let f = 0; f < 10; f++) {
      const group = local.slice(f * 8, f * 8 + 8);
      expect(new Set(group.map((p) => `${p.src}:${p.sport}`)).size).toBe(1);
      expect(group[0].tcpFlags).toBe('S');
      expect(group.slice(1).every((p) => p.tcpFlags === 'P.')).toBe(true);
    }
  });

  test('flow endpoints stay distinct for millions of flows', () => {
    const a = flowEndpoint(base, 0);
    const b = flowEndpoint(base, 16);
    const c = flowEndpoint(base, 4_000_000 - 1);
    expect(intToIp(a.addr)).toBe('100.64.0.0');
    expect(intToIp(b.addr)).toBe('100.64.0.1');
    expect(a.port).toBe(b.port);
    expect(intToIp(c.addr)).toBe('100.67.208.143');
    expect(c.port).toBe(10015);
    expect([...packetOrder({ ...base, kind: 'udp', flows: 3, packetsPerFlow: 4, burst: 2, dst: '198.18.1.10' })]).toEqual([
      [0, 0],
      [0, 1],
      [1, 0],
      [1, 1],
      [2, 0],
      [2, 1],
      [0, 2],
      [0, 3],
      [1, 2],
      [1, 3],
      [2, 2],
      [2, 3],
    ]);
  });

  test('other frame sizes; bad sizes refused', () => {
    const { packets } = gen('big', { ...base, kind: 'udp', flows: 2, packetsPerFlow: 1, dst: '198.18.1.10', dport: 53, frameLen: 128 });
    expect(packets.every((p) => p.length === 128 && p.ipChecksumOk && p.l4ChecksumOk && p.payloadLength === 128 - 14 - 20 - 8)).toBe(true);
    expect(() => writePcap(path.join(dir, 'x.pcap'), { ...base, kind: 'udp', flows: 1, packetsPerFlow: 1, dst: '1.2.3.4', frameLen: 40 })).toThrow(/frameLen/);
  });
});

test('pcapOf: a file header, then one record per frame in order', () => {
  const a = Buffer.from([1, 2, 3]);
  const b = Buffer.alloc(60, 7);
  const f = pcapOf([a, b]);
  expect(f.length).toBe(24 + 16 + a.length + 16 + b.length);
  expect(f.readUInt32LE(0)).toBe(0xa1b2c3d4);
  expect(f.readUInt32LE(20)).toBe(1); // Ethernet
  expect(f.readUInt32LE(24 + 8)).toBe(a.length); // incl_len
  expect(f.subarray(24 + 16, 24 + 16 + a.length)).toEqual(a);
  const second = 24 + 16 + a.length;
  expect(f.readUInt32LE(second + 12)).toBe(b.length); // orig_len
  expect(f.subarray(second + 16)).toEqual(b);
});
