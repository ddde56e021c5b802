/**
 * The fuzzer's corpus, replayed into the LIVE appliance in the namespace lab.
 *
 * native/fuzz/fuzz_packet.c drives the packet path in-process over net_null ports; here the same
 * inputs go over the wire: every record [port:1][len:2 BE][frame] of the seed corpus
 * (native/fuzz/make_corpus.py, regenerated into a scratch directory) and of the fuzzer's grown
 * corpus (build/fuzz/corpus, when present) is parsed exactly as the harness does and sent as a raw
 * frame from the device facing that appliance port: router-a's `uplink` for port 0 (uplink-a),
 * router-b's for port 1 (uplink-b), sw's `uplink` for port 2 (servers). The destination MAC is
 * rewritten to the port's real MAC (so frames get past L2), frames under 14 bytes are skipped (no
 * Ethernet header to send) and so are frames longer than the veth MTU allows. A second replay
 * sends a deterministic random corpus (seeded PRNG): plausible Ethernet/IPv4/ARP frames to the
 * lab's addresses with random corruption.
 *
 * After each replay:
 * - the appliance is still SERVING and RUNNING;
 * - every frame is accounted for at L2/L3: each frame is classified here the way dp_l2.c,
 *   dp_arp.c and dp_ipv4.c would, and the per-port drop counters of the header checks
 *   (unsupported_ethertype, arp_malformed, ip_truncated, ip_bad_version, ip_bad_ihl,
 *   ip_bad_checksum) moved by exactly the predicted amounts. IPv4 fragments never reach the
 *   dataplane through net_af_packet (its PACKET_FANOUT_FLAG_DEFRAG makes the kernel hold them,
 *   see fnat.test.ts), so those are predicted as swallowed and ip_fragment must not move;
 * - past L3 nothing vanished uncounted: over every port and protocol, packets sent (tx_symmetric +
 *   tx_routed) plus L4-stage drops are at least the packets that entered L4 (path rx);
 * - the mbuf pool's in-use count (GetSystemInfo) returns to its baseline, and the conn count to 0
 *   once the conns the replay opened expire;
 * - ordinary TCP, UDP and ping traffic from both clients still works.
 *
 * The lab's real next hops (routers, real servers) get static neighbour entries first: the corpus
 * holds ARP packets claiming their addresses (the seed `arp` says 198.18.20.2 is at
 * 02:aa:00:00:00:01), and a learned entry would follow them; static entries never change by ARP.
 *
 * One file (over 500 lines): most of it is what only this replay uses (the corpus reader, the
 * random corpus generator, the model of each frame's fate in classify/predict) beside its one lab.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DropCounters, GetCountersResponse } from '../../src/gen/retrace/v1/path';
import { DataplaneState } from '../../src/gen/retrace/v1/system';
import { LabScenario, type Proto, type RealSpec } from '../../src/lab/scenario';
import { LAB, REAL_SERVERS, ROOT_PORTS, type Role, type RootPort } from '../../src/lab/topology';
import { prng } from '../helpers/prng';

const REPO = path.resolve(__dirname, '..', '..');
const VIP = '198.19.0.1'; // the fuzz harness's VIP: TCP/UDP port 80 and ICMP
const VPORT = 80;
const ECHO = LAB.echoPort;
const EXTRA_YAML = 'timeouts: {tcp_syn: 3, tcp_established: 10, tcp_fin: 3, tcp_close: 2, udp: 3, icmp: 3}';
/** Longest frame a veth with MTU 1500 sends (an 802.1Q tag may add 4, not counted on). */
const MAX_FRAME = 1514;
/** Tailroom of a fresh mbuf (RTE_MBUF_DEFAULT_DATAROOM): the harness clamps records to it. */
const MBUF_ROOM = 2048;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const show = (x: unknown): string => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? Number(v) : v));

type DropName = keyof DropCounters;

/** The drop reasons decided by the L2/L3 header checks alone: predicted exactly. */
const HEADER_DROPS = [
  'ethTruncated',
  'unsupportedEthertype',
  'arpMalformed',
  'ipTruncated',
  'ipBadVersion',
  'ipBadIhl',
  'ipBadChecksum',
  'ipFragment',
] as const;
type HeaderDrop = (typeof HEADER_DROPS)[number];
/** Drop reasons of the L2/ARP/L3 stage (everything else happens after a packet entered L4). */
const L23_DROPS: readonly DropName[] = [...HEADER_DROPS, 'notForUs', 'arpNotOurs'];

/** The device facing each appliance port, which injects that port's records. */
const INJECTOR: Record<RootPort, { role: Role; dev: string }> = {
  'uplink-a': { role: 'router-a', dev: 'uplink' },
  'uplink-b': { role: 'router-b', dev: 'uplink' },
  servers: { role: 'sw', dev: 'uplink' },
};

interface Rec {
  port: RootPort;
  frame: Buffer;
}

// ---------------------------------------------------------------------------------------------
// Corpus input
// ---------------------------------------------------------------------------------------------

/** Records of one fuzz input, split exactly as LLVMFuzzerTestOneInput does. */
function parseInput(data: Buffer): Rec[] {
  const out: Rec[] = [];
  let off = 0;
  while (off + 3 <= data.length) {
    // Bit 7 asks the harness to write a SYN cookie into a TCP frame's ack; the live appliance's
    // secret is its own, so here such a frame goes as it is (an ACK with a wrong cookie).
    const port = ROOT_PORTS[(data[off] & 0x7f) % 3];
    let len = (data[off + 1] << 8) | data[off + 2];
    off += 3;
    if (len > data.length - off) len = data.length - off;
    if (len > MBUF_ROOM) len = MBUF_ROOM;
    out.push({ port, frame: Buffer.from(data.subarray(off, off + len)) });
    off += len;
  }
  return out;
}

/** The seed corpus (regenerated) and the fuzzer's grown corpus, in a stable order. */
function fuzzCorpus(): { files: number; recs: Rec[] } {
  const seeds = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-seeds-'));
  try {
    execFileSync('python3', [path.join(REPO, 'native', 'fuzz', 'make_corpus.py'), seeds], { stdio: 'pipe' });
    const dirs = [seeds, path.join(REPO, 'build', 'fuzz', 'corpus')].filter((d) => fs.existsSync(d));
    let files = 0;
    const recs: Rec[] = [];
    for (const d of dirs) {
      for (const name of fs.readdirSync(d).sort()) {
        const file = path.join(d, name);
        if (!fs.statSync(file).isFile()) continue;
        files++;
        recs.push(...parseInput(fs.readFileSync(file)));
      }
    }
    return { files, recs };
  } finally {
    fs.rmSync(seeds, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Frame building
// ---------------------------------------------------------------------------------------------

const macBytes = (m: string): Buffer => Buffer.from(m.split(':').map((x) => parseInt(x, 16)));
const ipBytes = (a: string): Buffer => Buffer.from(a.split('.').map(Number));
const ipStr = (b: Buffer, o: number): string => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

/** Folded ones'-complement sum of b[from, to) (16-bit big-endian words). */
function sum16(b: Buffer, from: number, to: number): number {
  let acc = 0;
  let i = from;
  for (; i + 1 < to; i += 2) acc += (b[i] << 8) | b[i + 1];
  if (i < to) acc += b[i] << 8;
  while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 0x10000);
  return acc;
}

/** A deterministic corpus of `n` frames: plausible lab traffic, randomly corrupted. */
function randomCorpus(seed: number, n: number, peerMac: Record<RootPort, string>): Rec[] {
  const rnd = prng(seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const bytes = (k: number): Buffer => Buffer.from(Array.from({ length: k }, () => int(0, 255)));
  const randIp = (): string => `${int(1, 223)}.${int(0, 255)}.${int(0, 255)}.${int(1, 254)}`;
  const clientSide = [LAB.clientA, LAB.clientB, '198.18.2.99', '198.18.1.77'];
  const serverSide: string[] = REAL_SERVERS.map((rs) => LAB.rs[rs]);
  const ours = [VIP, ...LAB.lips, LAB.ports['uplink-a'].addr, LAB.ports['uplink-b'].addr, LAB.ports.servers.addr];

  const ipv4 = (src: string, dst: string, proto: number, payload: Buffer, o: { ttl?: number; frag?: number; id?: number } = {}): Buffer => {
    const h = Buffer.alloc(20);
    h[0] = 0x45;
    h.writeUInt16BE(20 + payload.length, 2);
    h.writeUInt16BE(o.id ?? int(0, 0xffff), 4);
    h.writeUInt16BE(o.frag ?? 0x4000, 6);
    h[8] = o.ttl ?? 64;
    h[9] = proto;
    ipBytes(src).copy(h, 12);
    ipBytes(dst).copy(h, 16);
    h.writeUInt16BE(~sum16(h, 0, 20) & 0xffff, 10);
    return Buffer.concat([h, payload]);
  };
  const tcp = (sport: number, dport: number, flags: number, data: Buffer = Buffer.alloc(0)): Buffer => {
    const h = Buffer.alloc(20);
    h.writeUInt16BE(sport, 0);
    h.writeUInt16BE(dport, 2);
    h.writeUInt32BE(int(0, 0xffffffff), 4);
    h.writeUInt32BE(flags & 0x10 ? int(0, 0xffffffff) : 0, 8);
    h[12] = 5 << 4;
    h[13] = flags;
    h.writeUInt16BE(65535, 14);
    return Buffer.concat([h, data]);
  };
  const udp = (sport: number, dport: number, data: Buffer): Buffer => {
    const h = Buffer.alloc(8);
    h.writeUInt16BE(sport, 0);
    h.writeUInt16BE(dport, 2);
    h.writeUInt16BE(8 + data.length, 4);
    return Buffer.concat([h, data]);
  };
  const icmp = (type: number, code: number, rest: Buffer, data: Buffer): Buffer => {
    const m = Buffer.concat([Buffer.from([type, code, 0, 0]), rest, data]);
    m.writeUInt16BE(~sum16(m, 0, m.length) & 0xffff, 2);
    return m;
  };
  const l4 = (proto: number, sport: number, dport: number): Buffer =>
    proto === 6
      ? tcp(sport, dport, pick([0x02, 0x02, 0x10, 0x18, 0x11, 0x04, 0x12, int(0, 255)]), bytes(int(0, 64)))
      : proto === 17
        ? udp(sport, dport, bytes(int(0, 200)))
        : icmp(pick([8, 8, 0, 3, 11, 12, 5, 13, int(0, 255)]), int(0, 4), bytes(4), bytes(int(0, 56)));

  const out: Rec[] = [];
  for (let i = 0; i < n; i++) {
    const port = pick(ROOT_PORTS);
    const toServers = port === 'servers';
    const srcMac = rnd() < 0.7 ? macBytes(peerMac[port]) : Buffer.concat([Buffer.from([0x02]), bytes(5)]);
    const kind = rnd();
    let ethertype = 0x0800;
    let l3: Buffer;
    if (kind < 0.08) {
      // ARP: a request or reply about our addresses (sender: a made-up host, never a lab host).
      ethertype = 0x0806;
      l3 = Buffer.alloc(28);
      l3.writeUInt16BE(1, 0);
      l3.writeUInt16BE(0x0800, 2);
      l3[4] = 6;
      l3[5] = 4;
      l3.writeUInt16BE(pick([1, 1, 2, int(0, 9)]), 6);
      srcMac.copy(l3, 8);
      ipBytes(pick(['198.18.20.77', '198.18.10.77', '198.18.30.77', randIp()])).copy(l3, 14);
      ipBytes(pick([...ours, randIp()])).copy(l3, 24);
    } else if (kind < 0.13) {
      ethertype = pick([0x86dd, 0x8100, 0x88cc, 0x0842, int(0, 0xffff)]);
      l3 = bytes(int(0, 100));
    } else if (kind < 0.18) {
      l3 = bytes(int(0, 120)); // an IPv4 ethertype over garbage
    } else {
      const proto = kind < 0.2 ? pick([2, 47, 50, 132, int(0, 255)]) : kind < 0.5 ? 6 : kind < 0.75 ? 17 : 1;
      const src = toServers ? pick([...serverSide, randIp()]) : pick([...clientSide, randIp()]);
      const dst = toServers ? pick([...LAB.lips, LAB.ports.servers.addr, randIp()]) : pick([VIP, VIP, VIP, ...ours, randIp()]);
      const sport = toServers ? pick([ECHO, int(1, 65535)]) : int(1024, 65535);
      const dport = toServers ? int(1024, 65535) : pick([VPORT, VPORT, ECHO, int(1, 65535)]);
      let payload = l4(proto, sport, dport);
      if (proto === 1 && rnd() < 0.4) {
        // An ICMP error quoting a plausible packet of ours.
        const quoted = toServers
          ? ipv4(pick(LAB.lips), pick(serverSide), 6, tcp(int(1024, 65535), ECHO, 0x02))
          : ipv4(VIP, pick(clientSide), pick([6, 17]), udp(VPORT, int(1024, 65535), Buffer.alloc(0)));
        payload = icmp(pick([3, 11, 12]), int(0, 4), Buffer.from([0, 0, 5, 0xdc]), quoted.subarray(0, int(0, quoted.length)));
      }
      l3 = ipv4(src, dst, proto, payload, { ttl: pick([64, 64, 64, 1, 0, 2]), frag: rnd() < 0.05 ? pick([0x2000, 0x0003, 0x2010]) : 0x4000 });
    }
    let frame = Buffer.concat([Buffer.alloc(6), srcMac, Buffer.from([ethertype >> 8, ethertype & 0xff]), l3]);
    // Corruption: none for 40%, else one to three of these.
    if (rnd() >= 0.4) {
      const k = int(1, 3);
      for (let j = 0; j < k; j++) {
        const what = int(0, 9);
        if (what === 0 && frame.length > 14)
          frame = frame.subarray(0, int(14, frame.length - 1)); // truncate
        else if (what === 1)
          frame = Buffer.concat([frame, bytes(int(1, 40))]); // trailing bytes
        else if (what === 2 && frame.length > 15)
          frame[int(14, frame.length - 1)] ^= 1 << int(0, 7); // bit flip
        else if (what === 3 && frame.length > 14)
          frame[14] = (frame[14] & 0xf0) | int(0, 15); // IHL
        else if (what === 4 && frame.length > 14)
          frame[14] = (int(0, 15) << 4) | (frame[14] & 0x0f); // version
        else if (what === 5 && frame.length > 17)
          frame.writeUInt16BE(int(0, 0xffff), 16); // total length
        else if (what === 6 && frame.length > 25)
          frame.writeUInt16BE(int(0, 0xffff), 24); // header checksum
        else if (what === 7 && frame.length > 34 + 13)
          frame[34 + 12] = int(0, 255); // TCP data offset
        else if (what === 8 && frame.length > 34 + 5)
          frame.writeUInt16BE(int(0, 0xffff), 34 + 4); // UDP length
        else if (what === 9 && frame.length > 34) {
          // A valid header checksum over whatever the header now says, so later checks are reached.
          const ihl = (frame[14] & 0x0f) * 4;
          if (ihl >= 20 && 14 + ihl <= frame.length) {
            frame.writeUInt16BE(0, 24);
            frame.writeUInt16BE(~sum16(frame, 14, 14 + ihl) & 0xffff, 24);
          }
        }
      }
    }
    out.push({ port, frame: Buffer.from(frame.subarray(0, MAX_FRAME)) });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// What the dataplane must do with each frame, up to L3
// ---------------------------------------------------------------------------------------------

type Verdict =
  | { kind: 'drop'; reason: HeaderDrop | 'arpNotOurs' | 'noHandler' }
  | { kind: 'l4'; proto: Proto }
  | { kind: 'arp' }
  /** An IPv4 fragment: the kernel (af_packet fanout defrag) keeps it from the dataplane. */
  | { kind: 'kernel' };

/**
 * net/ipv4/ip_fragment.c ip_check_defrag(), run for af_packet's PACKET_FANOUT_FLAG_DEFRAG: a
 * well-formed IPv4 fragment (version 4, header length >= 20, total length within the frame) at
 * offset `l3` is queued for reassembly instead of reaching the socket. The checksum is not looked at.
 */
function kernelHoldsFragment(f: Buffer, l3: number): boolean {
  if (f.length < l3 + 20) return false;
  const ihl = (f[l3] & 0x0f) * 4;
  const total = f.readUInt16BE(l3 + 2);
  const fragment = (f.readUInt16BE(l3 + 6) & 0x3fff) !== 0;
  return f[l3] >> 4 === 4 && ihl >= 20 && l3 + total <= f.length && total >= ihl && fragment;
}

/** dp_l2.c / dp_arp.c / dp_ipv4.c for a frame already addressed to the port's MAC. */
function classify(f: Buffer, ours: ReadonlySet<string>): Verdict {
  if (f.length < 14) return { kind: 'drop', reason: 'ethTruncated' };
  const ethertype = f.readUInt16BE(12);
  if (ethertype === 0x0806) {
    if (f.length < 14 + 28) return { kind: 'drop', reason: 'arpMalformed' };
    if (f.readUInt16BE(14) !== 1 || f.readUInt16BE(16) !== 0x0800 || f[18] !== 6 || f[19] !== 4) return { kind: 'drop', reason: 'arpMalformed' };
    if (f.readUInt16BE(20) !== 1) return { kind: 'arp' };
    return ours.has(ipStr(f, 38)) ? { kind: 'arp' } : { kind: 'drop', reason: 'arpNotOurs' };
  }
  if (ethertype === 0x8100 || ethertype === 0x88a8) {
    // The receiving kernel strips one VLAN tag before the packet sockets see the frame
    // (skb_vlan_untag(): a frame without 4 + 2 bytes after the Ethernet header is dropped), then
    // applies the fanout defrag below to what the tag carried; net_af_packet puts the tag back.
    if (f.length < 14 + 4 + 2) return { kind: 'kernel' };
    if (f.readUInt16BE(16) === 0x0800 && kernelHoldsFragment(f, 18)) return { kind: 'kernel' };
    return { kind: 'drop', reason: 'unsupportedEthertype' };
  }
  if (ethertype !== 0x0800) return { kind: 'drop', reason: 'unsupportedEthertype' };
  const len = f.length;
  if (kernelHoldsFragment(f, 14)) return { kind: 'kernel' };
  if (len < 14 + 20) return { kind: 'drop', reason: 'ipTruncated' };
  const version = f[14] >> 4;
  const ihl = (f[14] & 0x0f) * 4;
  const total = f.readUInt16BE(16);
  const fragment = (f.readUInt16BE(20) & 0x3fff) !== 0;
  if (version !== 4) return { kind: 'drop', reason: 'ipBadVersion' };
  if (ihl < 20) return { kind: 'drop', reason: 'ipBadIhl' };
  if (total < ihl || 14 + total > len) return { kind: 'drop', reason: 'ipTruncated' };
  if (sum16(f, 14, 14 + ihl) !== 0xffff) return { kind: 'drop', reason: 'ipBadChecksum' };
  if (fragment) return { kind: 'drop', reason: 'ipFragment' };
  const proto = f[14 + 9];
  if (proto === 6) return { kind: 'l4', proto: 'tcp' };
  if (proto === 17) return { kind: 'l4', proto: 'udp' };
  if (proto === 1) return { kind: 'l4', proto: 'icmp' };
  return { kind: 'drop', reason: 'noHandler' };
}

interface PortPrediction {
  frames: number;
  drops: Partial<Record<DropName, number>>;
  l4: Record<Proto, number>;
  arp: number;
  kernel: number;
}

function predict(recs: readonly Rec[], ours: ReadonlySet<string>): Record<RootPort, PortPrediction> {
  const out = Object.fromEntries(ROOT_PORTS.map((p) => [p, { frames: 0, drops: {}, l4: { tcp: 0, udp: 0, icmp: 0 }, arp: 0, kernel: 0 }])) as Record<
    RootPort,
    PortPrediction
  >;
  for (const r of recs) {
    const p = out[r.port];
    p.frames++;
    const v = classify(r.frame, ours);
    if (v.kind === 'drop') p.drops[v.reason] = (p.drops[v.reason] ?? 0) + 1;
    else if (v.kind === 'l4') p.l4[v.proto]++;
    else if (v.kind === 'arp') p.arp++;
    else p.kernel++;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

describe('the fuzz corpus and a random corpus replayed into the live appliance', () => {
  let sc: LabScenario;
  const portMac = {} as Record<RootPort, string>;
  const peerMac = {} as Record<RootPort, string>;
  let ours: Set<string>;

  const reals = (port: number): RealSpec[] => REAL_SERVERS.map((rs) => ({ address: LAB.rs[rs], port }));
  const mempoolInUse = async (): Promise<bigint> => (await sc.app.api.system.getSystemInfo({})).mempool!.inUse;
  const drops = (c: GetCountersResponse, port: RootPort): DropCounters => c.drops.find((d) => d.port === port)!.counters!;

  async function until(probe: () => Promise<boolean>, timeoutMs: number, stepMs = 200): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await probe()) return true;
      if (Date.now() > deadline) return false;
      await sleep(stepMs);
    }
  }

  /** TCP, UDP and ping through the VIP from both clients, and ping to the appliance itself. */
  async function normalTraffic(): Promise<void> {
    for (const client of ['client-a', 'client-b'] as const) {
      const tcp = await sc.lab.tcpEcho(client, VIP, VPORT, { conns: 10, concurrency: 5, bytes: 4096 });
      expect(tcp.failures).toEqual([]);
      const udp = await sc.lab.udpEcho(client, VIP, VPORT, { count: 10, concurrency: 5, bytes: 512 });
      expect(udp.failures).toEqual([]);
      const ping = await sc.lab.ping(client, VIP, { count: 3, deadline: 20 });
      expect(ping.received).toBeGreaterThanOrEqual(3);
    }
    const local = await sc.lab.ping('client-b', LAB.ports['uplink-b'].addr, { count: 3, deadline: 20 });
    expect(local.received).toBeGreaterThanOrEqual(3);
  }

  /**
   * Sends `recs` (destination MAC rewritten) from each port's facing device, then waits until the
   * dataplane has seen them; runs every check of the file header. Returns figures for the log.
   */
  async function replay(label: string, recs: readonly Rec[]): Promise<Record<string, unknown>> {
    const sendable: Rec[] = [];
    let short = 0;
    let long = 0;
    for (const r of recs) {
      if (r.frame.length < 14) short++;
      else if (r.frame.length > MAX_FRAME) long++;
      else {
        const frame = Buffer.from(r.frame);
        macBytes(portMac[r.port]).copy(frame, 0);
        sendable.push({ port: r.port, frame });
      }
    }
    const want = predict(sendable, ours);

    // Quiet baseline: no conns, and the pool at rest.
    expect(await until(async () => (await sc.counters()).connCount === 0n, 30000)).toBe(true);
    const baseline = await mempoolInUse();
    const before = await sc.counters();
    const portsBefore = (await sc.app.api.ports.listPorts({})).ports;

    const sent: Record<string, unknown> = {};
    for (const port of ROOT_PORTS) {
      const frames = sendable.filter((r) => r.port === port).map((r) => r.frame);
      if (frames.length === 0) continue;
      const inj = INJECTOR[port];
      const res = await sc.lab.injectFrameBatch(inj.role, inj.dev, frames, { burst: 16, pauseMs: 2 });
      expect({ port, sent: res.sent, refused: res.refused }).toEqual({ port, sent: frames.length, refused: {} });
      sent[port] = res.sent;
    }

    // Wait until the dataplane received at least every frame that reaches it, then a little more.
    const rxOf = (ports: typeof portsBefore, port: RootPort): bigint => ports.find((p) => p.name === port)!.stats!.rxPackets;
    const arrived = await until(async () => {
      const now = (await sc.app.api.ports.listPorts({})).ports;
      return ROOT_PORTS.every((p) => rxOf(now, p) - rxOf(portsBefore, p) >= BigInt(want[p].frames - want[p].kernel));
    }, 20000);
    await sleep(1000);
    const after = await sc.counters();
    const portsAfter = (await sc.app.api.ports.listPorts({})).ports;

    // Alive and serving.
    expect(sc.app.running).toBe(true);
    expect(await sc.app.healthCheck('')).toBe('SERVING');
    expect((await sc.app.api.system.getSystemInfo({})).state).toBe(DataplaneState.DATAPLANE_STATE_RUNNING);

    // Every frame reached the dataplane (bar kernel-held fragments) ...
    const received: Record<string, number> = {};
    for (const p of ROOT_PORTS) received[p] = Number(rxOf(portsAfter, p) - rxOf(portsBefore, p));
    const expected = Object.fromEntries(ROOT_PORTS.map((p) => [p, want[p].frames - want[p].kernel]));
    // (More may arrive: the lab's hosts answer what the corpus opened.)
    expect({ arrived, received: show(received), expected: show(expected) }).toEqual({ arrived: true, received: show(received), expected: show(expected) });

    // ... and the header checks counted exactly the predicted drops, per port and reason.
    const header: Record<string, Record<string, number>> = {};
    const headerWant: Record<string, Record<string, number>> = {};
    for (const p of ROOT_PORTS) {
      header[p] = {};
      headerWant[p] = {};
      for (const k of HEADER_DROPS) {
        header[p][k] = Number(drops(after, p)[k] - drops(before, p)[k]);
        headerWant[p][k] = want[p].drops[k] ?? 0;
      }
    }
    expect(header).toEqual(headerWant);
    // Lower bounds where the lab's hosts add traffic of their own (replies to what the corpus opened).
    for (const p of ROOT_PORTS) {
      expect(`${p} arp_not_ours ${drops(after, p).arpNotOurs - drops(before, p).arpNotOurs >= BigInt(want[p].drops.arpNotOurs ?? 0)}`).toBe(
        `${p} arp_not_ours true`,
      );
      expect(`${p} no_handler ${drops(after, p).noHandler - drops(before, p).noHandler >= BigInt(want[p].drops.noHandler ?? 0)}`).toBe(`${p} no_handler true`);
      for (const proto of ['tcp', 'udp', 'icmp'] as const) {
        const rx = LabScenario.portCounters(after, proto, p).rx - LabScenario.portCounters(before, proto, p).rx;
        expect(`${p} ${proto} rx ${rx >= BigInt(want[p].l4[proto])}`).toBe(`${p} ${proto} rx true`);
      }
    }

    // Drop totals rose by at least every frame predicted to be dropped.
    const dropTotal = (c: GetCountersResponse): bigint =>
      c.drops.reduce((s, d) => s + Object.values(d.counters!).reduce((x: bigint, y) => x + (y as bigint), 0n), 0n);
    const predictedDrops = ROOT_PORTS.reduce((s, p) => s + Object.values(want[p].drops).reduce((x, y) => x + (y ?? 0), 0), 0);
    const dropDelta = dropTotal(after) - dropTotal(before);
    expect(dropDelta).toBeGreaterThanOrEqual(BigInt(predictedDrops));

    // Past L3, nothing vanished uncounted and nothing was counted twice: packets that entered L4
    // (path rx) were each sent (tx_symmetric/tx_routed) or dropped for an L4-stage reason. Only
    // the ICMP errors the appliance originates add to that (at most one per ip_ttl_exceeded or
    // mtu_exceeded drop, or an icmp_rate_limited drop in its place), and tx_full re-counts a packet
    // already counted as sent.
    let l4In = 0n;
    let l4Out = 0n;
    for (const proto of ['tcp', 'udp', 'icmp'] as const) {
      for (const p of ROOT_PORTS) {
        const a = LabScenario.portCounters(after, proto, p);
        const b = LabScenario.portCounters(before, proto, p);
        l4In += a.rx - b.rx;
        l4Out += a.txSymmetric - b.txSymmetric + (a.txRouted - b.txRouted);
      }
    }
    let l4Drops = 0n;
    const l4DropsByReason: Record<string, number> = {};
    for (const p of ROOT_PORTS) {
      for (const [k, v] of Object.entries(drops(after, p)) as [DropName, bigint][]) {
        if (L23_DROPS.includes(k)) continue;
        let d = v - drops(before, p)[k];
        if (k === 'noHandler') d -= BigInt(want[p].drops.noHandler ?? 0); // those never entered L4
        if (d !== 0n) l4DropsByReason[k] = (l4DropsByReason[k] ?? 0) + Number(d);
        l4Drops += d;
      }
    }
    const sumDrop = (k: DropName): bigint => ROOT_PORTS.reduce((x, p) => x + drops(after, p)[k] - drops(before, p)[k], 0n);
    const slack = sumDrop('ipTtlExceeded') + sumDrop('mtuExceeded') + sumDrop('txFull');
    const figures = {
      label,
      records: recs.length,
      skippedShort: short,
      skippedLong: long,
      sent,
      received,
      keptByKernel: ROOT_PORTS.reduce((s, p) => s + want[p].kernel, 0),
      headerDrops: header,
      dropDelta,
      l4: { in: l4In, sent: l4Out, dropped: l4Drops, originatedOrRecountedAtMost: slack, byReason: l4DropsByReason },
    };
    const balance = { enough: l4Out + l4Drops >= l4In, notTooMuch: l4Out + l4Drops <= l4In + slack };
    expect({ ...balance, figures: show(figures) }).toEqual({ enough: true, notTooMuch: true, figures: show(figures) });

    // The mbuf pool returns to its baseline (nothing leaked), the conns the replay opened expire.
    let inUse = -1n;
    const rested = await until(async () => (inUse = await mempoolInUse()) <= baseline, 15000);
    expect({ rested, inUse, baseline }).toEqual({ rested: true, inUse: baseline, baseline });
    let conns = -1n;
    expect(await until(async () => (conns = (await sc.counters()).connCount) === 0n, 60000)).toBe(true);
    expect(conns).toBe(0n);

    await normalTraffic();
    expect(await mempoolInUse()).toBeGreaterThanOrEqual(0n);
    return { ...figures, mempoolBaseline: baseline };
  }

  beforeAll(async () => {
    sc = await LabScenario.start({ extraYaml: EXTRA_YAML });
    for (const p of (await sc.app.api.ports.listPorts({})).ports) portMac[p.name as RootPort] = p.mac.toLowerCase();
    peerMac['uplink-a'] = sc.lab.mac('router-a', 'uplink');
    peerMac['uplink-b'] = sc.lab.mac('router-b', 'uplink');
    peerMac.servers = sc.lab.mac('sw', 'uplink');
    // The fuzz harness's services, with the lab's reals (echo on 8080).
    await sc.addService(
      'tcp',
      VIP,
      VPORT,
      'wrr',
      reals(ECHO).map((r, i) => ({ ...r, weight: i + 1 })),
    );
    await sc.addService('udp', VIP, VPORT, 'maglev', reals(ECHO), 7);
    await sc.addService('icmp', VIP, 0, 'rr', reals(0));
    ours = new Set<string>([VIP, ...LAB.lips, ...ROOT_PORTS.map((p) => LAB.ports[p].addr)]);
    // Static neighbours for the real next hops: ARP in the corpus cannot redirect them.
    const statics: [string, string, RootPort][] = [
      [LAB.routerAUplink, peerMac['uplink-a'], 'uplink-a'],
      [LAB.routerBUplink, peerMac['uplink-b'], 'uplink-b'],
      ...REAL_SERVERS.map((rs): [string, string, RootPort] => [LAB.rs[rs], sc.lab.mac(rs, 'eth0'), 'servers']),
    ];
    for (const [address, mac, port] of statics) {
      await sc.app.api.network.createNeighbor({ neighbor: { address, mac, port, static: true, ageSeconds: 0 } });
    }
    await normalTraffic();
  }, 180000);

  afterAll(async () => {
    await sc?.destroy();
  }, 60000);

  it('survives the fuzzer corpus (seeds + build/fuzz/corpus), every frame accounted for', async () => {
    const { files, recs } = fuzzCorpus();
    expect(files).toBeGreaterThanOrEqual(9); // at least the seeds
    const figures = await replay('fuzz corpus', recs);
    console.log(`fuzz corpus: ${files} files\n${show(figures)}`);
  }, 300000);

  it('survives a deterministic random corpus of 2000 corrupted frames, every frame accounted for', async () => {
    const recs = randomCorpus(0x5eed_2024, 2000, peerMac);
    const figures = await replay('random corpus', recs);
    console.log(`random corpus:\n${show(figures)}`);
  }, 300000);
});
