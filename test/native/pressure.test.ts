/**
 * Table pressure through the whole packet path (native/fixtures/driver.c, manual worker on net_null
 * ports, under ASan/UBSan): a flood of spoofed SYNs against a small conn table, or against a worker
 * whose TCP source ports are under pressure, evicts embryonic conns oldest first; conns established
 * before the flood keep forwarding both ways; the eviction counters say how many went. Each case
 * runs its own driver, so each starts from an empty table with its own dataplane.table_pressure.
 * The control case (eviction off) shows the denial the eviction prevents.
 */
import { build, fields, TCP_FLAGS, type Frame } from './fixtures/frames';
import { buildDriver, FixtureDriver, type PacketResult } from './fixtures/driver';
import { PORTS, portIndex } from './fixtures/table';

const ROUTER_B = { ip: '198.18.20.2', mac: '02:bb:00:00:00:0b' };
const RS1 = { ip: '198.18.30.11', mac: '02:cc:00:00:00:11' };
const LIP = '198.18.30.100';
const VIP = '198.19.0.10';
const RPORT = 8080;
const LPORT_MIN = 1024;
const mac = (name: string): string => PORTS.find((p) => p.name === name)!.mac;
const UPLINK_B = portIndex('uplink-b');
const SERVERS = portIndex('servers');

/** Setup of the fixture table's lab, with pre-start lines (table size, pressure) first. */
function setup(preStart: string[]): string[] {
  return [
    ...PORTS.map((p) => `port ${p.name} ${p.mac} ${p.mtu}`),
    ...preStart,
    'start',
    'addr 198.18.10.1/24 0',
    'addr 198.18.20.1/24 1',
    'addr 198.18.30.1/24 2',
    `route 0.0.0.0/0 1 ${ROUTER_B.ip}`,
    `neigh ${ROUTER_B.ip} ${ROUTER_B.mac} 1`,
    `neigh ${RS1.ip} ${RS1.mac} 2`,
    `lip ${LIP} 2`,
    `service tcp ${VIP} 80 rr`,
    `reals tcp ${VIP} 80 ${RS1.ip}:${RPORT}:1`,
  ];
}

/** A client-side TCP segment from client:sport to the VIP, entering uplink-b. */
function fromClient(client: string, sport: number, flags: number, seq: number, payload?: Buffer): Frame {
  return {
    eth: { src: ROUTER_B.mac, dst: mac('uplink-b') },
    ip: { src: client, dst: VIP, id: sport & 0xffff, ttl: 64, df: true },
    tcp: { sport, dport: 80, seq, ack: flags & TCP_FLAGS.ack ? 5001 : 0, flags, window: 1000, payload },
  };
}

/** A segment from the real to the LIP's source port lport. */
function fromReal(lport: number, flags: number, seq: number, payload?: Buffer): Frame {
  return {
    eth: { src: RS1.mac, dst: mac('servers') },
    ip: { src: RS1.ip, dst: LIP, id: lport & 0xffff, ttl: 64, df: true },
    tcp: { sport: RPORT, dport: lport, seq, ack: 1001, flags, window: 1000, payload },
  };
}

/** The one frame a packet sent, with its port; fails the test when it sent none or several. */
function onlyTx(res: PacketResult): { port: number; f: Record<string, unknown> } {
  expect({ sent: res.tx.length, drops: res.drops }).toEqual({ sent: 1, drops: {} });
  expect(res.mbufs).toBe(0);
  return { port: res.tx[0].port, f: fields(res.tx[0].frame) };
}

interface Established {
  client: string;
  sport: number;
  lport: number;
}

/** Opens a conn through the whole handshake (SYN, SYN-ACK from the real, ACK): ESTABLISHED. */
async function establish(d: FixtureDriver, client: string, sport: number): Promise<Established> {
  const syn = onlyTx(await d.packet(UPLINK_B, build(fromClient(client, sport, TCP_FLAGS.syn, 1000))));
  expect(syn.port).toBe(SERVERS);
  const lport = syn.f.sport as number;
  expect(lport).toBeGreaterThanOrEqual(LPORT_MIN);
  expect(onlyTx(await d.packet(SERVERS, build(fromReal(lport, TCP_FLAGS.syn | TCP_FLAGS.ack, 5000)))).port).toBe(UPLINK_B);
  expect(onlyTx(await d.packet(UPLINK_B, build(fromClient(client, sport, TCP_FLAGS.ack, 1001)))).port).toBe(SERVERS);
  return { client, sport, lport };
}

/** Data both ways on an established conn: each segment leaves toward the other side, translated. */
async function exchange(d: FixtureDriver, c: Established): Promise<void> {
  const up = onlyTx(await d.packet(UPLINK_B, build(fromClient(c.client, c.sport, TCP_FLAGS.ack | TCP_FLAGS.psh, 1001, Buffer.from('ping')))));
  expect({ port: up.port, src: up.f.ipSrc, sport: up.f.sport, dst: up.f.ipDst, dport: up.f.dport }).toEqual({
    port: SERVERS,
    src: LIP,
    sport: c.lport,
    dst: RS1.ip,
    dport: RPORT,
  });
  const down = onlyTx(await d.packet(SERVERS, build(fromReal(c.lport, TCP_FLAGS.ack | TCP_FLAGS.psh, 5001, Buffer.from('pong')))));
  expect({ port: down.port, src: down.f.ipSrc, sport: down.f.sport, dst: down.f.ipDst, dport: down.f.dport }).toEqual({
    port: UPLINK_B,
    src: VIP,
    sport: 80,
    dst: c.client,
    dport: c.sport,
  });
}

/** Spoofed SYNs from n distinct sources (10.x.y.z); what they did, summed. */
async function flood(d: FixtureDriver, n: number, from = 0): Promise<{ forwarded: number; drops: Record<string, number>; conn: Record<string, number> }> {
  const out = { forwarded: 0, drops: {} as Record<string, number>, conn: {} as Record<string, number> };
  for (let i = from; i < from + n; i++) {
    const src = `10.${(i >> 16) & 0xff}.${(i >> 8) & 0xff}.${i & 0xff}`;
    const res = await d.packet(UPLINK_B, build(fromClient(src, 1024 + (i % 60000), TCP_FLAGS.syn, i)));
    expect(res.mbufs).toBe(0);
    out.forwarded += res.tx.filter((t) => t.port === SERVERS).length;
    for (const [k, v] of Object.entries(res.drops)) out.drops[k.split('/')[1]] = (out.drops[k.split('/')[1]] ?? 0) + v;
    for (const [k, v] of Object.entries(res.conn)) out.conn[k] = (out.conn[k] ?? 0) + v;
  }
  return out;
}

const CLIENTS = ['203.0.113.7', '203.0.113.8', '203.0.113.9', '203.0.113.10'];

describe('table pressure: embryonic conns are evicted first, established conns survive', () => {
  let driver: FixtureDriver | undefined;

  beforeAll(() => buildDriver(), 180000);

  async function start(preStart: string[]): Promise<FixtureDriver> {
    driver = FixtureDriver.start();
    for (const line of setup(preStart)) await driver.command(line);
    return driver;
  }

  afterEach(async () => {
    const d = driver;
    driver = undefined;
    if (d === undefined) return;
    try {
      await d.stop();
    } finally {
      d.kill();
    }
  });

  it('a full table: every spoofed SYN evicts the oldest embryonic conn, never an established one', async () => {
    const d = await start(['max-conns 64', 'pressure 0 0 1000']);
    const est = [];
    for (const [i, c] of CLIENTS.entries()) est.push(await establish(d, c, 40000 + i));

    const res = await flood(d, 200);
    // Every SYN got a conn: the first 60 into free records, the other 140 each by evicting one.
    expect(res).toEqual({ forwarded: 200, drops: {}, conn: { evicted_embryonic_table: 140 } });
    expect(await d.connCount()).toBe(64);
    for (const c of est) await exchange(d, c);
  });

  it('control: with eviction off the same flood is refused once the table is full', async () => {
    const d = await start(['max-conns 64']);
    const est = [];
    for (const [i, c] of CLIENTS.entries()) est.push(await establish(d, c, 40000 + i));

    const res = await flood(d, 200);
    expect(res).toEqual({ forwarded: 60, drops: { conn_table_full: 140 }, conn: {} });
    // And a legitimate client's SYN now finds no room: the denial eviction prevents.
    const late = await d.packet(UPLINK_B, build(fromClient('203.0.113.99', 50000, TCP_FLAGS.syn, 1000)));
    expect({ sent: late.tx.length, drops: late.drops }).toEqual({ sent: 0, drops: { [`${UPLINK_B}/conn_table_full`]: 1 } });
    for (const c of est) await exchange(d, c);
  });

  it('nearly full: above conns_percent a new conn evicts an embryonic conn old enough, keeping room free', async () => {
    // 50% of 64: from 32 conns on, each new conn first evicts the oldest embryonic one (min age 0).
    const d = await start(['max-conns 64', 'pressure 50 0 0']);
    const est = [];
    for (const [i, c] of CLIENTS.entries()) est.push(await establish(d, c, 40000 + i));

    const res = await flood(d, 200);
    expect(res).toEqual({ forwarded: 200, drops: {}, conn: { evicted_embryonic_table: 200 - 28 } });
    expect(await d.connCount()).toBe(32);
    for (const c of est) await exchange(d, c);
    // A legitimate handshake completes while the flood is recycled around it.
    const fresh = await establish(d, '203.0.113.99', 50000);
    await flood(d, 100, 200);
    await exchange(d, fresh);
  });

  it('nearly full with a min age: young embryonic conns stay until the table is full', async () => {
    const d = await start(['max-conns 64', 'pressure 50 0 3600000']);
    await establish(d, CLIENTS[0], 40000);
    // Nothing is an hour old: the table fills up (63 SYNs), then the oldest goes whatever its age.
    const res = await flood(d, 100);
    expect(res).toEqual({ forwarded: 100, drops: {}, conn: { evicted_embryonic_table: 100 - 63 } });
    expect(await d.connCount()).toBe(64);
  });

  it('TCP source ports under pressure: above ports_percent a new TCP conn evicts an embryonic one', async () => {
    // 1% of the LIP's 64512 ports for this worker: 645. The table (2048) is far from full.
    const d = await start(['max-conns 2048', 'pressure 0 1 0']);
    const est = [];
    for (const [i, c] of CLIENTS.entries()) est.push(await establish(d, c, 40000 + i));

    const res = await flood(d, 700);
    expect(res).toEqual({ forwarded: 700, drops: {}, conn: { evicted_embryonic_ports: 700 + 4 - 645 } });
    expect(await d.connCount()).toBe(645);
    for (const c of est) await exchange(d, c);
  }, 120000);
});
