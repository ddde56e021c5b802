/**
 * The kernel interface's classification, through the whole packet path (the fixture driver,
 * native/fixtures/driver.c, with a net_null standing in for each port's net_tap): what goes up to
 * the kernel, what the dataplane keeps answering, what the kernel's frames become, and the bound.
 *
 * uplink-a has a kernel interface without a rate limit; uplink-b has none (the path as before);
 * servers has one limited to a burst of 2 frames at 1 frame/s.
 */
import { build, ipDatagram, quoteOf, TCP_FLAGS, macBytes, ipBytes, type Frame } from './fixtures/frames';
import { buildDriver, FixtureDriver, type PacketResult } from './fixtures/driver';

const PORTS = [
  { name: 'uplink-a', mac: '02:00:00:00:00:01' },
  { name: 'uplink-b', mac: '02:00:00:00:00:02' },
  { name: 'servers', mac: '02:00:00:00:00:03' },
] as const;
const A = 0;
const B = 1;
const S = 2;
const ROUTER_A = { ip: '198.18.10.2', mac: '02:aa:00:00:00:0a' };
const ROUTER_B = { ip: '198.18.20.2', mac: '02:bb:00:00:00:0b' };
const RS1 = { ip: '198.18.30.11', mac: '02:cc:00:00:00:11' };
const ADDR_A = '198.18.10.1';
const ADDR_B = '198.18.20.1';
const ADDR_S = '198.18.30.1';
const VIP = '198.19.0.10';
const LIP = '198.18.30.100';
const BROADCAST = 'ff:ff:ff:ff:ff:ff';

const SETUP = [
  ...PORTS.map((p) => `port ${p.name} ${p.mac} 1500`),
  `kernel ${A} 64 0 1`,
  `kernel ${S} 64 1 2`,
  'start',
  `addr ${ADDR_A}/24 ${A}`,
  `addr ${ADDR_B}/24 ${B}`,
  `addr ${ADDR_S}/24 ${S}`,
  `neigh ${ROUTER_A.ip} ${ROUTER_A.mac} ${A}`,
  `neigh ${ROUTER_B.ip} ${ROUTER_B.mac} ${B}`,
  `neigh ${RS1.ip} ${RS1.mac} ${S}`,
  `route 0.0.0.0/0 ${A} ${ROUTER_A.ip}`,
  `lip ${LIP} ${S}`,
  `service tcp ${VIP} 80 rr`,
  `reals tcp ${VIP} 80 ${RS1.ip}:8080:1`,
];

const ip = (src: string, dst: string, id = 1, ttl = 64) => ({ src, dst, id, ttl, df: true });
const fromRouterA = { src: ROUTER_A.mac, dst: PORTS[A].mac };
const toRouterA = { src: PORTS[A].mac, dst: ROUTER_A.mac };

/** An Ethernet/ARP frame, built by hand like ./fixtures/frames.ts builds IPv4. */
function arp(op: 1 | 2, eth: { src: string; dst: string }, sha: string, sip: string, tha: string, tip: string): Buffer {
  const b = Buffer.alloc(14 + 28);
  macBytes(eth.dst).copy(b, 0);
  macBytes(eth.src).copy(b, 6);
  b.writeUInt16BE(0x0806, 12);
  b.writeUInt16BE(1, 14); // Ethernet
  b.writeUInt16BE(0x0800, 16); // IPv4
  b[18] = 6;
  b[19] = 4;
  b.writeUInt16BE(op, 20);
  macBytes(sha).copy(b, 22);
  ipBytes(sip).copy(b, 28);
  macBytes(tha).copy(b, 32);
  ipBytes(tip).copy(b, 38);
  return b;
}

const bgpSyn: Frame = {
  eth: fromRouterA,
  ip: ip(ROUTER_A.ip, ADDR_A),
  tcp: { sport: 40179, dport: 179, seq: 1, ack: 0, flags: TCP_FLAGS.syn, window: 64240 },
};

describe('kernel interface: what goes up, what comes down (no namespaces)', () => {
  let driver: FixtureDriver;

  beforeAll(async () => {
    buildDriver();
    driver = FixtureDriver.start();
    for (const line of SETUP) await driver.command(line);
  }, 180000);

  afterAll(() => FixtureDriver.close(driver));

  /** Only the frames, counters and drops that moved, port indexes as names. */
  const summary = (r: PacketResult) => ({
    tx: r.tx.map((t) => [PORTS[t.port].name, t.frame.toString('hex')]),
    up: r.up.map((t) => [PORTS[t.port].name, t.frame.toString('hex')]),
    kni: r.kni,
    drops: r.drops,
    mbufs: r.mbufs,
  });
  const upOnly = (port: number, frame: Buffer) => ({
    tx: [],
    up: [[PORTS[port].name, frame.toString('hex')]],
    kni: { [`${port}/to_kernel`]: 1 },
    drops: {},
    mbufs: 0,
  });

  it('TCP to a port address with no conn or service (BGP) goes up unchanged', async () => {
    const f = build(bgpSyn);
    expect(summary(await driver.packet(A, f))).toEqual(upOnly(A, f));
  });

  it('UDP to a port address goes up', async () => {
    const f = build({ eth: fromRouterA, ip: ip(ROUTER_A.ip, ADDR_A, 2), udp: { sport: 5000, dport: 53, payload: Buffer.from('q') } });
    expect(summary(await driver.packet(A, f))).toEqual(upOnly(A, f));
  });

  it('echo requests to a port address are still answered by the dataplane, nothing goes up', async () => {
    const req: Frame = { eth: fromRouterA, ip: ip(ROUTER_A.ip, ADDR_A, 3), echo: { type: 8, id: 7, seq: 1, payload: Buffer.from('ping') } };
    const reply = build({ eth: toRouterA, ip: ip(ADDR_A, ROUTER_A.ip, 3), echo: { type: 0, id: 7, seq: 1, payload: Buffer.from('ping') } });
    const r = summary(await driver.packet(A, build(req)));
    expect(r).toEqual({ tx: [['uplink-a', reply.toString('hex')]], up: [], kni: {}, drops: {}, mbufs: 0 });
  });

  it("echo replies to a port address (the kernel's own ping) go up", async () => {
    const f = build({ eth: fromRouterA, ip: ip(ROUTER_A.ip, ADDR_A, 4), echo: { type: 0, id: 99, seq: 1, payload: Buffer.from('pong') } });
    expect(summary(await driver.packet(A, f))).toEqual(upOnly(A, f));
  });

  it('ICMP errors about a packet the kernel sent (its traceroute) go up', async () => {
    const probe = ipDatagram({ eth: toRouterA, ip: ip(ADDR_A, '192.0.2.1', 5, 1), udp: { sport: 33434, dport: 33435 } });
    const f = build({ eth: fromRouterA, ip: ip(ROUTER_A.ip, ADDR_A, 6), icmpError: { type: 11, code: 0, quote: quoteOf(probe) } });
    expect(summary(await driver.packet(A, f))).toEqual(upOnly(A, f));
  });

  it('a port without a kernel interface drops as before (no_handler)', async () => {
    const f = build({ ...bgpSyn, eth: { src: ROUTER_B.mac, dst: PORTS[B].mac }, ip: ip(ROUTER_B.ip, ADDR_B) });
    expect(summary(await driver.packet(B, f))).toEqual({ tx: [], up: [], kni: {}, drops: { '1/no_handler': 1 }, mbufs: 0 });
  });

  it('TCP to a VIP is load-balanced as before; a VIP port without service is dropped, not sent up', async () => {
    const syn = build({ eth: fromRouterA, ip: ip(ROUTER_A.ip, VIP, 7), tcp: { sport: 41000, dport: 80, seq: 1, ack: 0, flags: TCP_FLAGS.syn, window: 1000 } });
    const r = await driver.packet(A, syn);
    expect([r.tx.map((t) => PORTS[t.port].name), r.up.length, r.drops]).toEqual([['servers'], 0, {}]);
    const ssh = build({ eth: fromRouterA, ip: ip(ROUTER_A.ip, VIP, 8), tcp: { sport: 41001, dport: 22, seq: 1, ack: 0, flags: TCP_FLAGS.syn, window: 1000 } });
    expect(summary(await driver.packet(A, ssh))).toEqual({ tx: [], up: [], kni: {}, drops: { '0/no_handler': 1 }, mbufs: 0 });
  });

  it('ARP requests for a port address: answered by the dataplane and mirrored up', async () => {
    const req = arp(1, { src: ROUTER_A.mac, dst: BROADCAST }, ROUTER_A.mac, ROUTER_A.ip, '00:00:00:00:00:00', ADDR_A);
    const reply = arp(2, { src: PORTS[A].mac, dst: ROUTER_A.mac }, PORTS[A].mac, ADDR_A, ROUTER_A.mac, ROUTER_A.ip);
    expect(summary(await driver.packet(A, req))).toEqual({
      tx: [['uplink-a', reply.toString('hex')]],
      up: [['uplink-a', req.toString('hex')]],
      kni: { '0/to_kernel': 1 },
      drops: {},
      mbufs: 0,
    });
  });

  it("ARP replies (to the kernel's requests) go up; requests for a VIP do not", async () => {
    const reply = arp(2, fromRouterA, ROUTER_A.mac, ROUTER_A.ip, PORTS[A].mac, ADDR_A);
    expect(summary(await driver.packet(A, reply))).toEqual(upOnly(A, reply));
    const forVip = arp(1, { src: ROUTER_A.mac, dst: BROADCAST }, ROUTER_A.mac, ROUTER_A.ip, '00:00:00:00:00:00', VIP);
    const r = summary(await driver.packet(A, forVip));
    expect([r.tx.length, r.up, r.kni]).toEqual([1, [], {}]);
  });

  it("the kernel's frames leave by the interface's port as they are", async () => {
    const synAck = build({
      eth: toRouterA,
      ip: ip(ADDR_A, ROUTER_A.ip, 9),
      tcp: { sport: 179, dport: 40179, seq: 500, ack: 2, flags: TCP_FLAGS.syn | TCP_FLAGS.ack, window: 64240 },
    });
    expect(summary(await driver.fromKernel(A, synAck))).toEqual({
      tx: [['uplink-a', synAck.toString('hex')]],
      up: [],
      kni: { '0/from_kernel': 1 },
      drops: {},
      mbufs: 0,
    });
    const who = arp(1, { src: PORTS[A].mac, dst: BROADCAST }, PORTS[A].mac, ADDR_A, '00:00:00:00:00:00', '198.18.10.3');
    expect(summary(await driver.fromKernel(A, who)).tx).toEqual([['uplink-a', who.toString('hex')]]);
  });

  it("the kernel's ARP replies for addresses the dataplane answers are not sent twice; IPv6 is dropped (kernel_dropped)", async () => {
    const dup = arp(2, toRouterA, PORTS[A].mac, ADDR_A, ROUTER_A.mac, ROUTER_A.ip);
    expect(summary(await driver.fromKernel(A, dup))).toEqual({ tx: [], up: [], kni: { '0/from_kernel': 1 }, drops: {}, mbufs: 0 });
    const v6 = Buffer.concat([macBytes('33:33:00:00:00:02'), macBytes(PORTS[A].mac), Buffer.from([0x86, 0xdd]), Buffer.alloc(40)]);
    expect(summary(await driver.fromKernel(A, v6))).toEqual({ tx: [], up: [], kni: {}, drops: { '0/kernel_dropped': 1 }, mbufs: 0 });
  });

  it("a reply the kernel routes through another port's interface leaves by the port its request came in on", async () => {
    // Up from uplink-a: router-a opens a session to the port address.
    const syn = build({
      eth: fromRouterA,
      ip: ip(ROUTER_A.ip, ADDR_A, 20),
      tcp: { sport: 40200, dport: 179, seq: 1, ack: 0, flags: TCP_FLAGS.syn, window: 1000 },
    });
    expect(summary(await driver.packet(A, syn)).up).toHaveLength(1);
    // The kernel (one namespace for both interfaces) answers through the servers port's interface.
    const synAck = (eth: { src: string; dst: string }) =>
      build({ eth, ip: ip(ADDR_A, ROUTER_A.ip, 21), tcp: { sport: 179, dport: 40200, seq: 9, ack: 2, flags: TCP_FLAGS.syn | TCP_FLAGS.ack, window: 1000 } });
    const viaS = { src: PORTS[S].mac, dst: RS1.mac };
    expect(summary(await driver.fromKernel(S, synAck(viaS)))).toEqual({
      tx: [['uplink-a', synAck(toRouterA).toString('hex')]],
      up: [],
      kni: { '0/from_kernel': 1 },
      drops: {},
      mbufs: 0,
    });
    // ICMP about that peer (the address pair) follows the same way.
    const unreach = (eth: { src: string; dst: string }) =>
      build({
        eth,
        ip: ip(ADDR_A, ROUTER_A.ip, 22),
        icmpError: { type: 3, code: 3, quote: quoteOf(ipDatagram({ eth: fromRouterA, ip: ip(ROUTER_A.ip, ADDR_A, 5), udp: { sport: 5, dport: 6 } })) },
      });
    expect(summary(await driver.fromKernel(S, unreach(viaS))).tx).toEqual([['uplink-a', unreach(toRouterA).toString('hex')]]);
    // A flow the kernel opens itself follows the kernel's choice of interface.
    const own = build({ eth: viaS, ip: ip(ADDR_A, ROUTER_A.ip, 23), tcp: { sport: 50000, dport: 22, seq: 1, ack: 0, flags: TCP_FLAGS.syn, window: 1000 } });
    expect(summary(await driver.fromKernel(S, own)).tx).toEqual([['servers', own.toString('hex')]]);
  });

  it('reads idle kernel interfaces every 200 us, not every poll round (a read is a system call)', async () => {
    // 200 empty rounds take well under 200 x 200 us even under ASan: a read per round would be 200.
    const reads = (await driver.command('rounds 200')).map((l) => l.split(' '));
    expect(reads.map((r) => r[1])).toEqual([String(A), String(S)]);
    for (const r of reads) expect(Number(r[2])).toBeLessThan(100);
  });

  it('the bound: over the rate, frames for the kernel are dropped and counted kernel_dropped', async () => {
    // servers: burst 2 at 1 frame/s; the three frames arrive within well under a second.
    const f = (n: number) =>
      build({ eth: { src: RS1.mac, dst: PORTS[S].mac }, ip: ip(RS1.ip, ADDR_S, 100 + n), udp: { sport: 6000 + n, dport: 7000, payload: Buffer.from('x') } });
    const results = [];
    for (let n = 0; n < 3; n++) results.push(summary(await driver.packet(S, f(n))));
    expect(results.map((r) => [r.up.length, r.kni, r.drops])).toEqual([
      [1, { '2/to_kernel': 1 }, {}],
      [1, { '2/to_kernel': 1 }, {}],
      [0, {}, { '2/kernel_dropped': 1 }],
    ]);
    expect(results.every((r) => r.mbufs === 0)).toBe(true);
  });
});

describe('kernel interface rate bucket after a long idle (no namespaces)', () => {
  // Regression for the bucket refill (dp_kni_take): tokens are counted times hz and a refill added
  // idle x rate, which at 2^26 frames/s after 2^38 cycles idle (about 100 s at a few GHz; on the
  // first call the idle time is the whole TSC) is exactly 2^64: it wrapped to 0 and a bucket that
  // should have been full dropped the frame. The driver sets the worker's clock for the bucket.
  const RATE = 2 ** 26;
  const IDLE = 2n ** 38n;
  const UP = { name: 'uplink', mac: '02:00:00:00:00:21' };
  const PEER = { ip: '198.18.40.2', mac: '02:dd:00:00:00:02' };
  const ADDR = '198.18.40.1';
  let driver: FixtureDriver;

  beforeAll(async () => {
    buildDriver();
    driver = FixtureDriver.start();
    for (const line of [`port ${UP.name} ${UP.mac} 1500`, `kernel 0 64 ${RATE} 1`, 'start', `addr ${ADDR}/24 0`]) await driver.command(line);
  }, 180000);

  afterAll(() => FixtureDriver.close(driver));

  const frame = (n: number) =>
    build({ eth: { src: PEER.mac, dst: UP.mac }, ip: ip(PEER.ip, ADDR, 200 + n), udp: { sport: 6100 + n, dport: 7000, payload: Buffer.from('x') } });
  const outcome = (r: PacketResult) => ({ up: r.up.length, kni: r.kni, drops: r.drops, mbufs: r.mbufs });
  const wentUp = { up: 1, kni: { '0/to_kernel': 1 }, drops: {}, mbufs: 0 };

  it('the first frame, 2^38 cycles after the bucket was made, goes up', async () => {
    expect(outcome(await driver.toKernel(0, IDLE, frame(1)))).toEqual(wentUp);
  });

  it('so does the next after another 2^38 cycles idle; one more at that instant is over the burst', async () => {
    expect(outcome(await driver.toKernel(0, 2n * IDLE, frame(2)))).toEqual(wentUp);
    expect(outcome(await driver.toKernel(0, 2n * IDLE, frame(3)))).toEqual({ up: 0, kni: {}, drops: { '0/kernel_dropped': 1 }, mbufs: 0 });
  });
});
