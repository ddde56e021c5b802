/**
 * `retrace ports` against a real `retrace serve` child: a net_ring port (uplink) with a kernel
 * interface in a namespace of the test's own, and a net_pcap port (probe) that replays a few frames
 * at start so that its receive counters are not zero. The kernel sends one UDP datagram through
 * uplink's interface, so its from_kernel counter moves too. What the command prints is checked
 * against ListPorts and ListAddresses read over the API.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Port } from '../../src/gen/retrace/v1/port';
import { ApplianceProcess } from '../../src/lab/appliance';
import { run } from '../../src/lab/sh';
import { runCli, type RunResult } from '../helpers/cli';
import { until } from '../helpers/wait';
import { pcapOf } from '../../src/bench/pcap';

const TAG = `${process.pid % 100000}`;
const NETNS = `rt-cp${TAG}-k`;
const KIF = `rtcp${TAG}`;
const UPLINK_ADDR = '198.18.50.1';
const PEER = { ip: '198.18.50.9', mac: '02:00:00:00:50:09' };
const PROBE_FRAMES = 4;

/** Broadcast IPv6 frames (dropped as unsupported_ethertype, counted as received). */
const probeFrames = () =>
  Array.from({ length: PROBE_FRAMES }, () => Buffer.concat([Buffer.alloc(6, 0xff), Buffer.from([2, 0, 0, 0, 0xaa, 1, 0x86, 0xdd]), Buffer.alloc(46)]));

describe('retrace ports', () => {
  const app = new ApplianceProcess();
  const cli = (...args: string[]): Promise<RunResult> => runCli([...args, '--server', app.address]);
  const ports = async () => (await app.api.ports.listPorts({})).ports;
  const byName = (l: Port[], name: string) => l.find((p) => p.name === name)!;

  beforeAll(async () => {
    run('ip', ['netns', 'add', NETNS]);
    const rx = path.join(app.dir, 'probe-rx.pcap');
    fs.writeFileSync(rx, pcapOf(probeFrames()));
    app.start(`
eal:
  memory_mb: 128
dataplane:
  mbufs: 4095
ports:
  - name: uplink
    device: net_ring0
    mac: "02:00:00:00:00:01"
    kernel: {name: ${KIF}, netns: ${NETNS}, queue: 256, rate: 5000, burst: 500}
  - name: probe
    device: "net_pcap0,rx_pcap=${rx},tx_pcap=${path.join(app.dir, 'probe-tx.pcap')}"
    mac: "02:00:00:00:00:03"
`);
    await app.waitServing();
    await app.api.network.createAddress({ address: { address: UPLINK_ADDR, prefixLength: 24, port: 'uplink' } });
    // One frame from the kernel, no more: a static neighbour, so no ARP and no retries.
    run('ip', ['-n', NETNS, 'neigh', 'replace', PEER.ip, 'lladdr', PEER.mac, 'dev', KIF, 'nud', 'permanent']);
    run('ip', [
      'netns',
      'exec',
      NETNS,
      process.execPath,
      '-e',
      `const s = require('dgram').createSocket('udp4'); s.send('x', 9, '${PEER.ip}', (e) => { s.close(); if (e) throw e; });`,
    ]);
    await until(
      'the probe frames and the kernel datagram counted',
      ports,
      (l) => byName(l, 'probe').stats!.rxPackets === BigInt(PROBE_FRAMES) && byName(l, 'uplink').stats!.fromKernel === 1n,
    );
  }, 60000);

  afterAll(async () => {
    if (app.running) await app.stop();
    await app.kill();
    run('ip', ['netns', 'del', NETNS], { allowFail: true });
  }, 30000);

  it('prints what each port is, its traffic and drops, and its kernel interface, as ListPorts has them', async () => {
    const r = await cli('ports');
    expect([r.code, r.stderr]).toEqual([0, '']);
    const l = await ports();
    const up = byName(l, 'uplink');
    const probe = byName(l, 'probe');
    const lines = r.stdout.trimEnd().split('\n');
    const cells = (line: string) => line.trim().split(/\s+/);
    const stats = (p: Port) => {
      const s = p.stats!;
      return [s.rxPackets, s.rxBytes, s.txPackets, s.txBytes, s.rxMissed, s.rxNombuf, s.rxErrors, s.txErrors, s.txDropped].map(String);
    };
    expect(lines.map(cells)).toEqual([
      ['NAME', 'ID', 'DEVICE', 'DRIVER', 'MAC', 'MTU', 'LINK', 'SPEED-MBPS', 'ADDRESSES'],
      ['uplink', String(up.id), 'net_ring0', 'net_ring', '02:00:00:00:00:01', '1500', 'up', String(up.linkSpeedMbps), `${UPLINK_ADDR}/24`],
      [
        'probe',
        String(probe.id),
        expect.stringMatching(/^net_pcap0,rx_pcap=/),
        'net_pcap',
        '02:00:00:00:00:03',
        '1500',
        'up',
        String(probe.linkSpeedMbps),
        '-',
      ],
      [''],
      ['PORT', 'RX-PKTS', 'RX-BYTES', 'TX-PKTS', 'TX-BYTES', 'RX-MISSED', 'RX-NOMBUF', 'RX-ERRORS', 'TX-ERRORS', 'TX-DROPPED'],
      ['uplink', ...stats(up)],
      ['probe', ...stats(probe)],
      [''],
      ['kernel', 'interfaces:'],
      ['PORT', 'INTERFACE', 'NETNS', 'QUEUE', 'RATE/BURST', 'TO-KERNEL', 'FROM-KERNEL', 'KERNEL-DROPPED'],
      ['uplink', KIF, NETNS, '256', '5000/500', String(up.stats!.toKernel), '1', String(up.stats!.kernelDropped)],
    ]);
    // The counters behind the table moved: the replayed frames and the kernel's datagram, which
    // left by the port.
    expect(stats(probe).slice(0, 2)).toEqual([String(PROBE_FRAMES), String(PROBE_FRAMES * 60)]);
    expect(up.stats!.txPackets).toBeGreaterThanOrEqual(1n);
  });

  it('--json prints the ListPorts response, each port with its addresses', async () => {
    const r = await cli('ports', '--json');
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout) as { ports: (Record<string, unknown> & { addresses: string[] })[] };
    const l = await ports();
    const expected = l.map((p) => ({
      ...JSON.parse(JSON.stringify(p, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))),
      addresses: p.name === 'uplink' ? [`${UPLINK_ADDR}/24`] : [],
    }));
    expect(json.ports).toEqual(expected);
    expect(json.ports[0]).toMatchObject({
      name: 'uplink',
      kernel: { name: KIF, netns: NETNS, queue: 256, rate: 5000, burst: 500 },
      stats: { fromKernel: '1' },
    });
  });

  it('exits 1 with the status for a server that is not there', async () => {
    const r = await runCli(['ports', '--server', `unix:${path.join(app.dir, 'nobody.sock')}`]);
    expect([r.code, r.stdout]).toEqual([1, '']);
    expect(r.stderr).toMatch(/^retrace: UNAVAILABLE: /);
  });
});
