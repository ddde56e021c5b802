/**
 * ConfigService, /metrics and the client CLI end to end: a real `retrace serve` child with two
 * net_ring ports (uplink-a, uplink-b) and a net_pcap port (`probe`) that replays a few frames at
 * start so that some counters are not zero (no namespaces, no NIC). One describe per RPC or
 * command; failure cases check the status code, the path named, and that nothing changed.
 *
 * One file (over 500 lines): one appliance, started once, serves ConfigService, /metrics and the
 * CLI cases; splitting them would start it once per file for the same fixture.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import YAML from 'yaml';
import { Real, VirtualService } from '../../src/gen/retrace/v1/balancer';
import { ConfigDiff, ConfigServiceClient, type Config, type ResourceChanges } from '../../src/gen/retrace/v1/config';
import { DropCounters, PathCounters } from '../../src/gen/retrace/v1/path';
import { Protocol, Scheduler } from '../../src/gen/retrace/v1/types';
import { promised, type Promised } from '../../src/api/client';
import { ApplianceProcess, CLI_PATH } from '../../src/lab/appliance';
import { APPLIED_METADATA_KEY } from '../../src/api/metadata';
import { runCli, type RunResult } from '../helpers/cli';
import { pcapOf } from '../../src/bench/pcap';

// ------------------------------------------------------------------------------------- fixtures

const OUR_PROBE_MAC = '02:00:00:00:00:03';

const mac = (s: string) => Buffer.from(s.split(':').map((h) => parseInt(h, 16)));
const ip = (s: string) => Buffer.from(s.split('.').map(Number));

function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i] << 8) + (b[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

/** Ethernet + IPv4 + a TCP SYN or a UDP datagram, checksums right unless `badIpChecksum`. */
function ipv4Frame(dstMac: string, proto: 'tcp' | 'udp', src: string, dst: string, sport: number, dport: number, badIpChecksum = false): Buffer {
  const l4 = proto === 'tcp' ? Buffer.alloc(20) : Buffer.alloc(8 + 4);
  l4.writeUInt16BE(sport, 0);
  l4.writeUInt16BE(dport, 2);
  if (proto === 'tcp') {
    l4.writeUInt32BE(1000, 4);
    l4[12] = 5 << 4;
    l4[13] = 0x02; // SYN
    l4.writeUInt16BE(64240, 14);
  } else {
    l4.writeUInt16BE(l4.length, 4);
  }
  const pseudo = Buffer.concat([ip(src), ip(dst), Buffer.from([0, proto === 'tcp' ? 6 : 17]), Buffer.from([l4.length >> 8, l4.length & 255]), l4]);
  l4.writeUInt16BE(checksum(pseudo), proto === 'tcp' ? 16 : 6);
  const iph = Buffer.alloc(20);
  iph[0] = 0x45;
  iph.writeUInt16BE(20 + l4.length, 2);
  iph[8] = 64;
  iph[9] = proto === 'tcp' ? 6 : 17;
  ip(src).copy(iph, 12);
  ip(dst).copy(iph, 16);
  iph.writeUInt16BE(checksum(iph) ^ (badIpChecksum ? 0x5555 : 0), 10);
  return Buffer.concat([mac(dstMac), mac('02:00:00:00:aa:01'), Buffer.from([0x08, 0x00]), iph, l4]);
}

/** What the probe port receives once at start: drops of four reasons, TCP and UDP rx. */
function probeFrames(): Buffer[] {
  const frames: Buffer[] = [];
  for (let i = 0; i < 5; i++) frames.push(ipv4Frame('02:00:00:00:99:99', 'tcp', '203.0.113.5', '198.51.100.1', 40000 + i, 80));
  for (let i = 0; i < 3; i++) frames.push(Buffer.concat([mac('ff:ff:ff:ff:ff:ff'), mac('02:00:00:00:aa:01'), Buffer.from([0x86, 0xdd]), Buffer.alloc(46)]));
  for (let i = 0; i < 2; i++) frames.push(ipv4Frame(OUR_PROBE_MAC, 'tcp', '203.0.113.5', '198.51.100.1', 41000 + i, 80, true));
  for (let i = 0; i < 4; i++) frames.push(ipv4Frame(OUR_PROBE_MAC, 'tcp', '203.0.113.5', '198.51.100.1', 42000 + i, 80));
  for (let i = 0; i < 2; i++) frames.push(ipv4Frame(OUR_PROBE_MAC, 'udp', '203.0.113.5', '198.51.100.1', 43000 + i, 53));
  return frames;
}

const real = (address: string, port: number, weight: number): Real => ({ ...Real.create(), address, port, weight });
const service = (protocol: Protocol, port: number, scheduler: Scheduler, reals: Real[], seed = 0): VirtualService =>
  VirtualService.create({ protocol, vip: '198.18.0.10', port, scheduler, seed, reals });

/** The base document: one of every kind of resource, three services. */
function doc(): Config {
  return {
    addresses: [
      { address: '198.18.0.1', prefixLength: 24, port: 'uplink-a' },
      { address: '10.1.0.254', prefixLength: 24, port: 'uplink-b' },
    ],
    routes: [{ prefix: '0.0.0.0', prefixLength: 0, port: 'uplink-a', gateway: '198.18.0.254', connected: false }],
    neighbors: [{ address: '198.18.0.254', mac: '02:00:00:00:00:fe', port: 'uplink-a', static: false, ageSeconds: 0 }],
    localAddresses: [{ address: '10.1.0.1', port: 'uplink-b', portsInUse: 0n, portsTotal: 0n }],
    virtualServices: [
      service(Protocol.PROTOCOL_TCP, 80, Scheduler.SCHEDULER_WRR, [real('10.1.0.11', 8080, 1), real('10.1.0.12', 8080, 2)]),
      service(Protocol.PROTOCOL_UDP, 53, Scheduler.SCHEDULER_MAGLEV, [real('10.1.0.11', 53, 1)], 7),
      service(Protocol.PROTOCOL_TCP, 443, Scheduler.SCHEDULER_WLC, [real('10.1.0.13', 8443, 4)]),
    ],
    symmetric: { tcp: true, udp: true, icmp: true },
    timeouts: { udp: 60 },
  };
}

const KINDS = ['addresses', 'routes', 'neighbors', 'localAddresses', 'virtualServices', 'reals', 'symmetric', 'timeouts'] as const;
const changes = (d: ConfigDiff | undefined) =>
  KINDS.flatMap((k) => (['created', 'updated', 'deleted'] as const).flatMap((w) => (d?.[k] as ResourceChanges)[w].map((key) => `${k} ${w} ${key}`)));

async function fails(p: Promise<unknown>, code: grpc.status, details?: RegExp): Promise<grpc.ServiceError> {
  const e = (await p.then(
    () => undefined,
    (err: unknown) => err,
  )) as grpc.ServiceError | undefined;
  expect(e).toBeDefined();
  expect({ code: e!.code, details: e!.details }).toEqual({ code, details: details ? expect.stringMatching(details) : expect.any(String) });
  return e!;
}

// ---------------------------------------------------------------------- Prometheus text parsing

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the text exposition format; throws on a line that is not a comment or a sample. */
function parseProm(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const t = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (t) {
      types.set(t[1], t[2]);
      continue;
    }
    if (line.startsWith('# HELP ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return { samples, types };
}

function get(url: string): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }));
      })
      .on('error', reject);
  });
}

// ----------------------------------------------------------------------------------------- tests

describe('ConfigService, metrics and CLI on a net_ring appliance', () => {
  const app = new ApplianceProcess();
  let config: Promised<ConfigServiceClient>;
  let configClient: ConfigServiceClient;
  let metricsUrl = '';

  const cli = (...args: string[]): Promise<RunResult> => runCli([...args, '--server', app.address]);
  const getConfig = async () => (await config.getConfig({})).config!;
  const services = async () => (await app.api.balancer.listVirtualServices({})).virtualServices;
  /** Service port → its reals' weights, e.g. `{ 80: '1,2' }` (services are listed in creation order). */
  const weightsOf = (l: VirtualService[]) => Object.fromEntries(l.map((s) => [s.port, s.reals.map((r) => r.weight).join(',')]));
  const weights = async () => weightsOf(await services());

  beforeAll(async () => {
    const rx = path.join(app.dir, 'probe-rx.pcap');
    fs.writeFileSync(rx, pcapOf(probeFrames()));
    app.start(`
eal:
  memory_mb: 128
dataplane:
  mbufs: 4095
  max_conns: 4096
metrics:
  listen: "127.0.0.1:0"
ports:
  - name: uplink-a
    device: net_ring0
    mac: "02:00:00:00:00:01"
  - name: uplink-b
    device: net_ring1
    mac: "02:00:00:00:00:02"
  - name: probe
    device: "net_pcap0,rx_pcap=${rx},tx_pcap=${path.join(app.dir, 'probe-tx.pcap')}"
    mac: "${OUR_PROBE_MAC}"
`);
    await app.waitServing();
    const listening = app.output.split('\n').find((l) => l.includes('metrics listening'));
    metricsUrl = `http://${JSON.parse(listening!).listen as string}/metrics`;
    configClient = new ConfigServiceClient(app.address, grpc.credentials.createInsecure());
    config = promised(configClient);
  }, 60000);

  afterAll(async () => {
    configClient?.close();
    if (app.running) await app.stop();
    await app.kill();
  });

  describe('ApplyConfig', () => {
    it('creates every resource of a fresh document and lists each change', async () => {
      const res = await config.applyConfig({ config: doc(), dryRun: false });
      expect(res.dryRun).toBe(false);
      expect(changes(res.diff)).toEqual([
        'addresses created 198.18.0.1',
        'addresses created 10.1.0.254',
        'routes created 0.0.0.0/0',
        'neighbors created 198.18.0.254',
        'localAddresses created 10.1.0.1',
        'virtualServices created tcp/198.18.0.10:80',
        'virtualServices created udp/198.18.0.10:53',
        'virtualServices created tcp/198.18.0.10:443',
        'reals created tcp/198.18.0.10:80 10.1.0.11:8080',
        'reals created tcp/198.18.0.10:80 10.1.0.12:8080',
        'reals created udp/198.18.0.10:53 10.1.0.11:53',
        'reals created tcp/198.18.0.10:443 10.1.0.13:8443',
        'timeouts updated udp',
      ]);
      expect(await weights()).toEqual({ 80: '1,2', 53: '1', 443: '4' });
      expect((await app.api.balancer.getTimeouts({})).timeouts!.udp).toBe(60);
    });

    it('reports no change for the same document again', async () => {
      const res = await config.applyConfig({ config: doc(), dryRun: false });
      expect(changes(res.diff)).toEqual([]);
    });

    it('reports no change for what GetConfig returns (round trip)', async () => {
      const res = await config.applyConfig({ config: await getConfig(), dryRun: false });
      expect(changes(res.diff)).toEqual([]);
    });

    it('applies only the difference: one SetReals, one update, one delete, one create', async () => {
      const before = await services();
      const next = doc();
      next.virtualServices[0].reals[1].weight = 5; // tcp/80: a weight
      next.virtualServices.splice(1, 1); // udp/53: gone
      next.virtualServices[1].scheduler = Scheduler.SCHEDULER_RR; // tcp/443: scheduler only
      next.virtualServices.push(service(Protocol.PROTOCOL_ICMP, 0, Scheduler.SCHEDULER_RR, [real('10.1.0.11', 0, 1)]));
      const res = await config.applyConfig({ config: next, dryRun: false });
      expect(changes(res.diff)).toEqual([
        'virtualServices created icmp/198.18.0.10:0',
        'virtualServices updated tcp/198.18.0.10:443',
        'virtualServices deleted udp/198.18.0.10:53',
        'reals created icmp/198.18.0.10:0 10.1.0.11:0',
        'reals updated tcp/198.18.0.10:80 10.1.0.12:8080',
        'reals deleted udp/198.18.0.10:53 10.1.0.11:53',
      ]);
      const after = await services();
      // The service whose reals did not change keeps its reals and counters as they were.
      const tls = (l: VirtualService[]) => l.find((s) => s.port === 443)!;
      expect({ ...tls(after), scheduler: 0 }).toEqual({ ...tls(before), scheduler: 0 });
      expect(tls(after).scheduler).toBe(Scheduler.SCHEDULER_RR);
      expect(await weights()).toEqual({ 80: '1,5', 443: '4', 0: '1' });
      // Back to the base document.
      expect(changes((await config.applyConfig({ config: doc(), dryRun: false })).diff)).toHaveLength(6);
    });

    it('reports a dry run without changing anything', async () => {
      const before = await getConfig();
      const next = doc();
      next.routes = [];
      const res = await config.applyConfig({ config: next, dryRun: true });
      expect(res.dryRun).toBe(true);
      expect(changes(res.diff)).toEqual(['routes deleted 0.0.0.0/0']);
      expect(await getConfig()).toEqual(before);
    });

    it.each([
      [
        'a real weight',
        (c: Config) => (c.virtualServices[1].reals[0].weight = 70000),
        /^config\.virtual_services\[1\]\.reals\[0\]\.weight: must be 0\.\.65535, got 70000$/,
      ],
      ['a port name', (c: Config) => (c.localAddresses[0].port = 'eth9'), /^config\.local_addresses\[0\]\.port: no port named "eth9"/],
      ['a duplicate route', (c: Config) => c.routes.push({ ...c.routes[0] }), /^config\.routes\[1\]\.prefix: repeats config\.routes\[0\]\.prefix/],
    ])('rejects a bad %s with INVALID_ARGUMENT naming its path, changing nothing', async (_what, mutate, details) => {
      const before = await getConfig();
      const bad = doc();
      bad.virtualServices[0].reals[0].weight = 9; // a valid change that must not be applied either
      mutate(bad);
      await fails(config.applyConfig({ config: bad, dryRun: false }), grpc.status.INVALID_ARGUMENT, details);
      expect(await getConfig()).toEqual(before);
    });

    it('refuses more next hops than the table holds before changing anything (issue 18)', async () => {
      // More distinct gateways than the next-hop table (1024) holds: it used to fail midway after
      // creating hundreds of routes. A failure midway is in control-invariants.test.ts.
      const before = await getConfig();
      const big = doc();
      for (let i = 0; i < 1100; i++) {
        big.routes.push({
          prefix: `10.${100 + (i >> 8)}.${i & 255}.0`,
          prefixLength: 24,
          port: 'uplink-a',
          gateway: `198.18.${1 + (i >> 8)}.${i & 255 || 1}`,
          connected: false,
        });
      }
      const e = await fails(
        config.applyConfig({ config: big, dryRun: false }),
        grpc.status.RESOURCE_EXHAUSTED,
        /^config\.routes\[\d+\]\.prefix: the 1025th of the next hops \(distinct port and gateway pairs of the routes\); the table holds 1024$/,
      );
      expect(e.metadata.get(APPLIED_METADATA_KEY)).toEqual([]);
      expect(await getConfig()).toEqual(before);
    });
  });

  describe('GetConfig', () => {
    it('returns the applied document with canonical real order and every timeout', async () => {
      const got = await getConfig();
      const want = doc();
      expect(got.addresses).toEqual(want.addresses);
      expect(got.routes).toEqual(want.routes);
      expect(got.neighbors).toEqual(want.neighbors);
      expect(got.localAddresses).toEqual(want.localAddresses);
      // Services come in creation order: udp/53 was deleted and created again above.
      const byPort = (l: VirtualService[]) => [...l].sort((a, b) => a.port - b.port);
      expect(byPort(got.virtualServices)).toEqual(byPort(want.virtualServices));
      expect(got.symmetric).toEqual(want.symmetric);
      expect(got.timeouts).toEqual({ tcpSyn: 30, tcpEstablished: 900, tcpFin: 60, tcpClose: 10, udp: 60, icmp: 60 });
      expect((await config.getConfig({})).drained).toBe(false);
    });
  });

  describe('Drain and Undrain', () => {
    it('turns health NOT_SERVING and every weight to 0, then restores both', async () => {
      expect(await config.drain({})).toEqual({ realsDrained: 4, virtualServices: 3 });
      expect(await app.healthCheck()).toBe('NOT_SERVING');
      expect(await app.healthCheck('retrace.v1.ConfigService')).toBe('NOT_SERVING');
      expect(await app.healthCheck('retrace.v1.LoadBalancerService')).toBe('NOT_SERVING');
      expect(await weights()).toEqual({ 80: '0,0', 53: '0', 443: '0' });
      // Idempotent; GetConfig shows the weights Undrain will restore.
      expect(await config.drain({})).toEqual({ realsDrained: 0, virtualServices: 0 });
      const got = await config.getConfig({});
      expect(got.drained).toBe(true);
      expect(weightsOf(got.config!.virtualServices)).toEqual({ 80: '1,2', 53: '1', 443: '4' });
      expect(changes((await config.applyConfig({ config: doc(), dryRun: false })).diff)).toEqual([]);

      expect(await config.undrain({})).toEqual({ realsRestored: 4, virtualServices: 3 });
      expect(await app.healthCheck()).toBe('SERVING');
      expect(await app.healthCheck('retrace.v1.ConfigService')).toBe('SERVING');
      expect(await weights()).toEqual({ 80: '1,2', 53: '1', 443: '4' });
      expect(await config.undrain({})).toEqual({ realsRestored: 0, virtualServices: 0 });
    });

    it('keeps weights applied while drained at 0 and restores them on Undrain', async () => {
      await config.drain({});
      const next = doc();
      next.virtualServices[2].reals[0].weight = 9;
      expect(changes((await config.applyConfig({ config: next, dryRun: false })).diff)).toEqual(['reals updated tcp/198.18.0.10:443 10.1.0.13:8443']);
      expect(await weights()).toEqual({ 80: '0,0', 53: '0', 443: '0' });
      await config.undrain({});
      expect(await weights()).toEqual({ 80: '1,2', 53: '1', 443: '9' });
      await config.applyConfig({ config: doc(), dryRun: false });
    });
  });

  describe('GET /metrics', () => {
    it('serves Prometheus text whose counters match GetCounters, ListPorts and the services', async () => {
      const res = await get(metricsUrl);
      expect(res.status).toBe(200);
      expect(res.type).toContain('text/plain');
      const { samples, types } = parseProm(res.body);
      const counters = await app.api.path.getCounters({});
      const ports = (await app.api.ports.listPorts({})).ports;
      const value = (name: string, labels: Record<string, string>) =>
        samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;

      let compared = 0;
      let nonZero = 0;
      for (const proto of ['tcp', 'udp', 'icmp'] as const) {
        for (const p of counters[proto]!.ports) {
          for (const [field, v] of Object.entries(p.counters!)) {
            const name = `retrace_path_${field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}_total`;
            expect(types.get(name)).toBe('counter');
            expect([name, proto, p.port, value(name, { protocol: proto, port: p.port })]).toEqual([name, proto, p.port, Number(v)]);
            compared++;
            if (v !== 0n) nonZero++;
          }
        }
      }
      for (const d of counters.drops) {
        for (const [field, v] of Object.entries(d.counters!)) {
          const reason = field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
          expect([d.port, reason, value('retrace_drops_total', { port: d.port, reason })]).toEqual([d.port, reason, Number(v)]);
          compared++;
          if (v !== 0n) nonZero++;
        }
      }
      expect(compared).toBe(3 * 3 * Object.keys(PathCounters.create()).length + 3 * Object.keys(DropCounters.create()).length);
      // The probe port's frames moved some of them.
      expect(nonZero).toBeGreaterThan(0);
      expect(value('retrace_drops_total', { port: 'probe', reason: 'not_for_us' })).toBe(5);
      for (const p of ports) {
        expect([p.name, value('retrace_port_rx_packets_total', { port: p.name })]).toEqual([p.name, Number(p.stats!.rxPackets)]);
        expect([p.name, value('retrace_port_tx_bytes_total', { port: p.name })]).toEqual([p.name, Number(p.stats!.txBytes)]);
      }
      expect(value('retrace_port_rx_packets_total', { port: 'probe' })).toBe(probeFrames().length);
      expect(value('retrace_conns', {})).toBe(Number(counters.connCount));
      expect(value('retrace_virtual_services', {})).toBe(3);
      expect(value('retrace_real_weight', { protocol: 'tcp', vip: '198.18.0.10', vport: '80', real: '10.1.0.12:8080' })).toBe(2);
      expect(value('retrace_real_active_conns', { protocol: 'tcp', vip: '198.18.0.10', vport: '443', real: '10.1.0.13:8443' })).toBe(0);
      expect(types.get('retrace_real_conns_total')).toBe('counter');
      for (const m of ['packets_to_reals', 'packets_from_reals', 'bytes_to_reals', 'bytes_from_reals']) {
        expect([m, types.get(`retrace_service_${m}_total`)]).toEqual([m, 'counter']);
        expect([m, value(`retrace_service_${m}_total`, { protocol: 'tcp', vip: '198.18.0.10', vport: '80' })]).toEqual([m, 0]);
      }
      expect(value('retrace_conn_events_lost_total', { stage: 'dataplane_ring' })).toBe(0);
      expect(types.get('retrace_conn_events_total')).toBe('counter');
      expect(value('retrace_drained', {})).toBe(0);
      expect(value('retrace_dataplane_running', {})).toBe(1);
    });

    it('shows a drain', async () => {
      await config.drain({});
      try {
        const { samples } = parseProm((await get(metricsUrl)).body);
        expect(samples.find((s) => s.name === 'retrace_drained')?.value).toBe(1);
        expect(samples.filter((s) => s.name === 'retrace_real_weight').map((s) => s.value)).toEqual([0, 0, 0, 0]);
      } finally {
        await config.undrain({});
      }
    });

    it('answers 404 elsewhere', async () => {
      expect((await get(metricsUrl.replace('/metrics', '/'))).status).toBe(404);
    });
  });

  // ------------------------------------------------------------------------------------- CLI

  describe('retrace services', () => {
    it('lists each service with its reals, weights and conns', async () => {
      const r = await cli('services');
      expect(r.code).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines[0].split(/\s+/)).toEqual(['PROTO', 'ADDRESS', 'SCHED', 'SYN-PROXY', 'WEIGHT', 'ACTIVE', 'CONNS']);
      expect(lines[1].split(/\s+/)).toEqual(['tcp', '198.18.0.10:80', 'wrr', 'off', '0']);
      expect(lines[2].trim().split(/\s+/)).toEqual(['->', '10.1.0.11:8080', '1', '0', '0']);
      expect(lines[3].trim().split(/\s+/)).toEqual(['->', '10.1.0.12:8080', '2', '0', '0']);
      expect(r.stdout).toMatch(/^udp\s+198\.18\.0\.10:53\s+maglev\s+off\s+0$/m);
    });
  });

  describe('retrace reals set', () => {
    it('replaces the reals and prints the service', async () => {
      const r = await cli('reals', 'set', 'tcp/198.18.0.10:443', '10.1.0.13:8443@7', '10.1.0.14:8443');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/->\s+10\.1\.0\.13:8443\s+7\b/);
      expect(r.stdout).toMatch(/->\s+10\.1\.0\.14:8443\s+1\b/);
      expect(changes((await config.applyConfig({ config: doc(), dryRun: false })).diff)).toEqual([
        'reals updated tcp/198.18.0.10:443 10.1.0.13:8443',
        'reals deleted tcp/198.18.0.10:443 10.1.0.14:8443',
      ]);
    });

    it('exits 1 with the status code name for an unknown service', async () => {
      const r = await cli('reals', 'set', 'tcp/198.18.0.99:80', '10.1.0.11:80');
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^retrace: NOT_FOUND: .*198\.18\.0\.99/);
    });

    it('exits 1 with INVALID_ARGUMENT naming the field for a bad weight', async () => {
      const r = await cli('reals', 'set', 'tcp/198.18.0.10:80', '10.1.0.11:8080@70000');
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^retrace: INVALID_ARGUMENT: reals\[0\]\.weight: /);
    });
  });

  describe('retrace conns', () => {
    it('lists conns through ListConns (none here: nothing reaches a service)', async () => {
      const r = await cli('conns', '--protocol', 'tcp', '--vip', '198.18.0.10');
      expect([r.code, r.stdout]).toEqual([0, 'no conns\n']);
      const j = await cli('conns', '--json');
      expect([j.code, JSON.parse(j.stdout)]).toEqual([0, []]);
    });

    it('exits 2 for a bad filter', async () => {
      const r = await cli('conns', '--protocol', 'sctp');
      expect([r.code, r.stderr]).toEqual([2, 'retrace: --protocol: expected tcp, udp or icmp, got "sctp"\n']);
      const v = await cli('conns', '--vip', '198.18.0');
      expect(v.code).toBe(2);
    });
  });

  describe('retrace counters', () => {
    it('prints the path counters per protocol and port and the non-zero drops', async () => {
      const r = await cli('counters');
      expect(r.code).toBe(0);
      const lines = r.stdout.split('\n');
      expect(lines[0].split(/\s+/)).toEqual(['PROTO', 'PORT', 'RX', 'SYMMETRIC', 'ROUTED', 'TRIANGLES-PREVENTED', 'TRIANGLES-HAPPENED', 'PATH-CHANGES']);
      for (const proto of ['tcp', 'udp', 'icmp'])
        for (const port of ['uplink-a', 'uplink-b', 'probe']) expect(r.stdout).toMatch(new RegExp(`^${proto}\\s+${port}\\s+\\d+`, 'm'));
      const c = await app.api.path.getCounters({});
      const tcpProbe = c.tcp!.ports.find((p) => p.port === 'probe')!.counters!;
      expect(
        lines
          .find((l) => /^tcp\s+probe\b/.test(l))!
          .split(/\s+/)
          .slice(2),
      ).toEqual([tcpProbe.rx, tcpProbe.txSymmetric, tcpProbe.txRouted, tcpProbe.routeDivergence, tcpProbe.asymmetric, tcpProbe.pathChanges].map(String));
      expect(r.stdout).toMatch(/^conns: \d+$/m);
      expect(r.stdout).toMatch(/^embryonic conns evicted \(table pressure\): 0 for the table, 0 for ports$/m);
      expect(r.stdout).toMatch(/^drops:\nPORT\s+REASON\s+PACKETS$/m);
      expect(r.stdout).toMatch(/^probe\s+not_for_us\s+5$/m);
      expect(r.stdout).toMatch(/^probe\s+unsupported_ethertype\s+3$/m);
      // Zero drops are left out.
      expect(r.stdout).not.toMatch(/^uplink-a\s+/m);
    });
  });

  describe('retrace apply, get-config', () => {
    const file = (name: string, text: string) => {
      const f = path.join(app.dir, name);
      fs.writeFileSync(f, text);
      return f;
    };

    it('round-trips: get-config output applied is no change', async () => {
      const g = await cli('get-config');
      expect(g.code).toBe(0);
      expect(YAML.parse(g.stdout).virtualServices[0].scheduler).toBe('SCHEDULER_WRR');
      const r = await cli('apply', '-f', file('got.yaml', g.stdout));
      expect([r.code, r.stdout]).toEqual([0, 'no changes\n']);
    });

    it('prints the diff, with short enum names and snake_case keys accepted', async () => {
      const g = YAML.parse((await cli('get-config')).stdout);
      g.virtualServices[0] = { protocol: 'tcp', vip: '198.18.0.10', port: 80, scheduler: 'wrr', reals: [{ address: '10.1.0.11', port: 8080, weight: 3 }] };
      g.local_addresses = g.localAddresses;
      delete g.localAddresses;
      const f = file('change.yaml', YAML.stringify(g));
      const dry = await cli('apply', '-f', f, '--dry-run');
      expect([dry.code, dry.stdout]).toEqual([
        0,
        'reals:\n  ~ tcp/198.18.0.10:80 10.1.0.11:8080\n  - tcp/198.18.0.10:80 10.1.0.12:8080\nwould apply 2 changes\n',
      ]);
      const r = await cli('apply', '-f', f);
      expect([r.code, r.stdout]).toEqual([0, 'reals:\n  ~ tcp/198.18.0.10:80 10.1.0.11:8080\n  - tcp/198.18.0.10:80 10.1.0.12:8080\napplied 2 changes\n']);
      await config.applyConfig({ config: doc(), dryRun: false });
    });

    it('prints get-config as JSON with -o json', async () => {
      const r = await cli('get-config', '-o', 'json');
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout).addresses[0]).toEqual({ address: '198.18.0.1', prefixLength: 24, port: 'uplink-a' });
    });

    it('exits 1 with INVALID_ARGUMENT and the path for a bad value in the file', async () => {
      const g = YAML.parse((await cli('get-config')).stdout);
      g.virtualServices[1].reals[0].weight = 70000;
      const r = await cli('apply', '-f', file('bad.yaml', YAML.stringify(g)));
      expect(r.code).toBe(1);
      expect(r.stderr).toBe('retrace: INVALID_ARGUMENT: config.virtual_services[1].reals[0].weight: must be 0..65535, got 70000\n');
    });

    it('exits 1 with RESOURCE_EXHAUSTED naming the first route beyond the next-hop table', async () => {
      const g = YAML.parse((await cli('get-config')).stdout);
      for (let i = 0; i < 1100; i++)
        g.routes.push({ prefix: `10.${100 + (i >> 8)}.${i & 255}.0`, prefixLength: 24, port: 'uplink-a', gateway: `198.18.${1 + (i >> 8)}.${i & 255 || 1}` });
      const r = await cli('apply', '-f', file('big.yaml', YAML.stringify(g)));
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^retrace: RESOURCE_EXHAUSTED: config\.routes\[\d+\]\.prefix: the 1025th of the next hops .*\n$/);
      expect((await getConfig()).routes).toHaveLength(1);
    });
  });

  describe('retrace drain, undrain', () => {
    it('drains and undrains, printing what changed', async () => {
      const d = await cli('drain');
      expect([d.code, d.stdout]).toEqual([0, 'drained: 4 real(s) set to weight 0 in 3 virtual service(s); health NOT_SERVING\n']);
      expect(await app.healthCheck()).toBe('NOT_SERVING');
      expect((await cli('get-config')).stdout).toMatch(/^# drained: /);
      const u = await cli('undrain');
      expect([u.code, u.stdout]).toEqual([0, 'undrained: 4 real weight(s) restored in 3 virtual service(s); health SERVING\n']);
      expect(await app.healthCheck()).toBe('SERVING');
    });
  });

  describe('retrace top', () => {
    it('redraws the per-protocol counters in place with rates and stops after --iterations', async () => {
      const r = await cli('top', '--interval', '0.2', '--iterations', '2');
      expect(r.code).toBe(0);
      const frames = r.stdout.split('\x1b[H\x1b[2J').slice(1);
      expect(frames).toHaveLength(2);
      expect(frames[0]).toMatch(/^\s+TCP\s+\/s\s+UDP\s+\/s\s+ICMP\s+\/s$/m);
      for (const row of ['rx', 'symmetric', 'routed', 'triangles prevented', 'triangles happened', 'path changes']) {
        expect(frames[1]).toMatch(new RegExp(`^${row}\\s+\\d+\\s+[0-9.]+\\s+\\d+\\s+[0-9.]+\\s+\\d+\\s+[0-9.]+$`, 'm'));
      }
      // First frame has no rate yet.
      expect(frames[0]).toMatch(/^rx\s+\d+\s+-\s/m);
    });

    it('quits on q', async () => {
      const child = spawn(process.execPath, [CLI_PATH, 'top', '--interval', '0.2', '--server', app.address], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      while (!out.includes('triangles prevented')) await new Promise((r) => setTimeout(r, 50));
      child.stdin.write('q');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      expect(await exited).toBe(0);
      clearTimeout(timer);
    });
  });

  describe('bad usage and unreachable servers', () => {
    it.each([
      [['reals', 'set', 'tcp/198.18.0.10', '10.1.0.11:80'], /tcp needs a port/],
      [['reals', 'set', 'sctp/198.18.0.10:80', '10.1.0.11:80'], /bad service "sctp\/198\.18\.0\.10:80"/],
      [['reals', 'set', 'tcp/198.18.0.10:80', '10.1.0.11:eighty'], /bad real "10\.1\.0\.11:eighty"/],
      [['reals', 'set', 'tcp/198.18.0.10:80'], /at least one REAL, or --clear/],
      [['counters', '--colour'], /unknown option '--colour'/],
      [['apply'], /required option '-f, --file <file>'/],
      [['get-config', '-o', 'xml'], /--output: expected yaml or json/],
      [['top', '--interval', '0'], /must be a number > 0/],
      [['frobnicate'], /unknown command 'frobnicate'/],
    ])('%j exits 2 with a clear message', async (args, message) => {
      const r = await cli(...args);
      expect([r.code, r.stderr]).toEqual([2, expect.stringMatching(message)]);
      expect(r.stdout).toBe('');
    });

    it('exits 2 naming the key for an unknown key in the file', async () => {
      const f = path.join(app.dir, 'typo.yaml');
      fs.writeFileSync(f, 'virtual_services:\n  - {protocol: tcp, vip: 198.18.0.10, port: 80, schedular: wrr}\n');
      const r = await cli('apply', '-f', f);
      expect([r.code, r.stderr]).toEqual([2, `retrace: ${f}: virtual_services[0].schedular: unknown key\n`]);
    });

    it('exits 2 for a missing file', async () => {
      const r = await cli('apply', '-f', path.join(app.dir, 'nope.yaml'));
      expect([r.code, r.stderr]).toEqual([2, expect.stringMatching(/nope\.yaml: file not found/)]);
    });

    it('exits 1 with UNAVAILABLE when nothing listens', async () => {
      const r = await runCli(['services', '--server', `unix:${path.join(app.dir, 'nobody.sock')}`]);
      expect([r.code, r.stderr]).toEqual([1, expect.stringMatching(/^retrace: UNAVAILABLE: /)]);
    });

    it('takes the server from the config file given with --config', async () => {
      const f = path.join(app.dir, 'client.yaml');
      fs.writeFileSync(f, `grpc:\n  listen: "${app.address}"\nports: [{name: a, device: net_ring9}]\n`);
      const r = await runCli(['services', '--config', f]);
      expect([r.code, r.stdout.split('\n')[0].split(/\s+/)[0]]).toEqual([0, 'PROTO']);
    });
  });
});
