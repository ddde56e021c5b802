/**
 * Packet fixtures: the table in ./fixtures/table.ts run in order through the whole packet path
 * (native/fixtures/driver.c: manual worker mode on net_null ports, no namespaces, no threads).
 * Each row's input goes in on its port; the frames that leave must equal, byte for byte, frames
 * built independently by ./fixtures/frames.ts (so their checksums are right), and exactly the
 * listed drop counters must move. The driver runs under ASan/UBSan and reports leaked mbufs.
 */
import { build, fields, type Frame } from './fixtures/frames';
import { buildDriver, FixtureDriver, type TxFrame } from './fixtures/driver';
import {
  FIXTURES,
  PORTS,
  portIndex,
  SETUP,
  tcpAck,
  tcpData,
  tcpReply,
  tcpSyn,
  tcpSynAck,
  TCP_REAL,
  CADDR,
  echoToLip,
  echoFromLip,
  type Captures,
} from './fixtures/table';

const LPORT_MIN = 1024;
const portName = (i: number): string => PORTS[i]?.name ?? `port${i}`;
const toBytes = (f: Frame | Buffer): Buffer => (Buffer.isBuffer(f) ? f : build(f));

/** The checksums a receiver would check: IP header, L4 (or ICMP), and a quoted IP header. */
function checksumsOk(frame: Buffer): Record<string, unknown> {
  const f = fields(frame);
  const q = f.quoted as Record<string, unknown> | undefined;
  return { ip: f.ipChecksumOk, l4: f.l4ChecksumOk ?? f.icmpChecksumOk, quotedIp: q?.ipChecksumOk ?? 'none' };
}

describe('packet fixtures through the packet path (no namespaces)', () => {
  let driver: FixtureDriver;
  const cap: Captures = {};

  beforeAll(async () => {
    buildDriver();
    driver = FixtureDriver.start();
    for (const line of SETUP) await driver.command(line);
  }, 180000);

  afterAll(() => FixtureDriver.close(driver));

  it.each(FIXTURES.map((f) => [f.name, f] as const))('%s', async (_name, fx) => {
    for (const line of fx.before ?? []) await driver.command(line);
    const res = await driver.packet(portIndex(fx.port), toBytes(fx.input(cap)));

    for (const [key, [index, offset, width]] of Object.entries(fx.capture ?? {})) {
      const frame: Buffer | undefined = res.tx[index]?.frame;
      const size = width === 'u32' ? 4 : 2;
      expect({ key, present: frame !== undefined && frame.length >= offset + size }).toEqual({ key, present: true });
      if (width === 'u32') {
        cap[key] = frame!.readUInt32BE(offset);
      } else {
        cap[key] = frame!.readUInt16BE(offset);
        expect(cap[key]).toBeGreaterThanOrEqual(LPORT_MIN);
      }
    }

    const show = (t: TxFrame) => ({ port: portName(t.port), ...fields(t.frame) });
    const expected = fx.out.map((o) => ({ port: portIndex(o.port), frame: build(o.frame(cap)) }));
    // Field by field first (a readable diff), then every byte.
    expect(res.tx.map(show)).toEqual(expected.map(show));
    expect(res.tx.map((t) => [portName(t.port), t.frame.toString('hex')])).toEqual(expected.map((t) => [portName(t.port), t.frame.toString('hex')]));
    // Implied by the byte comparison; said outright so a wrong expectation cannot hide a bad sum.
    for (const t of res.tx) {
      const c = checksumsOk(t.frame);
      expect({ ip: c.ip, l4: c.l4 === true || c.l4 === 'none', quotedIp: c.quotedIp !== false }).toEqual({ ip: true, l4: true, quotedIp: true });
    }

    const drops = Object.fromEntries(Object.entries(res.drops).map(([k, v]) => [`${portName(Number(k.split('/')[0]))}/${k.split('/')[1]}`, v]));
    expect(drops).toEqual(fx.drops ?? {});
    const path = Object.fromEntries(
      Object.entries(res.path).map(([k, v]) => {
        const [proto, port, counter] = k.split('/');
        return [`${proto}/${portName(Number(port))}/${counter}`, v];
      }),
    );
    for (const [k, v] of Object.entries(fx.path ?? {})) expect([k, path[k] ?? 0]).toEqual([k, v]);
    expect(res.mbufs).toBe(0);
  });

  it("echo to a LIP address whose echo id is the LIP port of a conn: one local conn, found again (not the FNAT conn's)", async () => {
    // cap.echoId is the LIP echo id of the ICMP FNAT conn to rs1: that conn sits in the LIP's slot
    // for this id, and the request (from the client, not rs1) must not match it but the local conn.
    expect(cap.echoId).toBeGreaterThanOrEqual(LPORT_MIN);
    const before = await driver.connCount();
    for (let i = 0; i < 2; i++) {
      const res = await driver.packet(portIndex('uplink-b'), build(echoToLip(cap.echoId)));
      expect(res.tx.map((t) => [portName(t.port), t.frame.toString('hex')])).toEqual([['uplink-b', build(echoFromLip(cap.echoId)).toString('hex')]]);
      expect(res.mbufs).toBe(0);
      expect(await driver.connCount()).toBe(before + 1);
    }
  });

  it('SipHash-2-4 of the driver gives the reference test vector (key 00..0f, message 00..0e)', async () => {
    expect(await driver.command('siphash-vector')).toEqual(['siphash a129ca6149be45e5']);
  });

  it('sums a message as rte_raw_cksum does (dp_csum_sum: every length 0..1600, every start offset 0..7)', async () => {
    expect(await driver.command('csum-check')).toEqual([`csum ${3 * 8 * 1601} 0`]);
  });

  it('ICMP rate limit: a bucket quiet for a while holds the burst, however high the rate', async () => {
    // 2^26 messages/s for 2^38 TSC cycles: 2^64 tokens, one more than 64 bits hold.
    expect(await driver.command(`icmp-bucket ${2 ** 26} 5 ${2 ** 38} 10`)).toEqual(['allowed 5']);
    expect(await driver.command(`icmp-bucket 1000 3 ${2 ** 40} 10`)).toEqual(['allowed 3']);
    // Quiet for no time at all: an empty bucket stays empty.
    expect(await driver.command('icmp-bucket 1000 3 0 10')).toEqual(['allowed 0']);
  });

  it('counts the TCP rows on their real by name: packets and bytes to it and from it', async () => {
    const toReal = [build(tcpSyn), build(tcpData), build(tcpAck)];
    const fromReal = [build(tcpSynAck(cap)), build(tcpReply(cap))];
    const sum = (bs: Buffer[]) => bs.reduce((n, b) => n + b.length, 0);
    expect(await driver.realCounters(TCP_REAL.proto, TCP_REAL.vip, TCP_REAL.vport)).toEqual({
      [TCP_REAL.real]: {
        packets_to_real: toReal.length,
        packets_from_real: fromReal.length,
        bytes_to_real: sum(toReal),
        bytes_from_real: sum(fromReal),
        proxy_headers: 0,
        segments_shifted: 0,
        toa_added: 0,
        toa_no_room: 0,
      },
    });
  });

  it('counts what the client-address modes did on their reals', async () => {
    const pick = (r: Record<string, Record<string, number>>) => {
      const c = r[CADDR.real];
      return { proxy_headers: c.proxy_headers, segments_shifted: c.segments_shifted, toa_added: c.toa_added, toa_no_room: c.toa_no_room };
    };
    // proxy_v2: headers for the first segment, its retransmission, the out-of-order and the full-MTU
    // conns, and twice for the zero-window probe; shifted: 5 segments of the first conn (3 from
    // the client, the real's ack, the stale copy; not the one dropped), 1 each of the out-of-order
    // and full-MTU conns, 2 probes.
    expect(pick(await driver.realCounters('tcp', CADDR.vip, CADDR.v2))).toEqual({ proxy_headers: 6, segments_shifted: 9, toa_added: 0, toa_no_room: 0 });
    expect(pick(await driver.realCounters('tcp', CADDR.vip, CADDR.v1))).toEqual({ proxy_headers: 1, segments_shifted: 1, toa_added: 0, toa_no_room: 0 });
    expect(pick(await driver.realCounters('tcp', CADDR.vip, CADDR.toa))).toEqual({ proxy_headers: 0, segments_shifted: 0, toa_added: 4, toa_no_room: 2 });
    const udp = (await driver.realCounters('udp', CADDR.vip, CADDR.udp))[CADDR.udpReal];
    expect(udp.proxy_headers).toBe(2);
  });
});
