/** The client CLI's pure parts: argument parsing, the strict config file reader, rendering. */
import { UsageError, serverAddress } from '../../src/cli/client';
import { parseConnTuple, parseReal, parseServiceKey } from '../../src/cli/commands';
import { configToYaml, parseConfigDocument } from '../../src/cli/config-file';
import { HealthCheck, HealthCheckKind, HealthState } from '../../src/gen/retrace/v1/health_check';
import { formatCounters, formatDiff, formatPorts, formatServices, table } from '../../src/cli/format';
import { LinkState, Port } from '../../src/gen/retrace/v1/port';
import { renderTop } from '../../src/cli/top';
import { ConfigDiff } from '../../src/gen/retrace/v1/config';
import { GetCountersResponse, PathCounters } from '../../src/gen/retrace/v1/path';
import { Protocol, Scheduler, SynProxyMode } from '../../src/gen/retrace/v1/types';
import { ClientAddressMode, Real, VirtualService } from '../../src/gen/retrace/v1/balancer';

function usage(fn: () => unknown): string {
  try {
    fn();
    return '';
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    return e.message;
  }
}

describe('parseServiceKey and parseReal', () => {
  it('reads PROTO/VIP:PORT and icmp/VIP', () => {
    expect(parseServiceKey('tcp/198.18.0.10:80')).toEqual({ protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.10', port: 80 });
    expect(parseServiceKey('ICMP/198.18.0.10')).toEqual({ protocol: Protocol.PROTOCOL_ICMP, vip: '198.18.0.10', port: 0 });
  });

  it.each(['tcp/198.18.0.10', 'sctp/1.2.3.4:80', 'tcp:1.2.3.4:80', 'udp/1.2.3:53', ''])('rejects "%s"', (s) => {
    expect(usage(() => parseServiceKey(s))).toMatch(/^bad service/);
  });

  it('reads ADDRESS:PORT@WEIGHT with weight 1 by default', () => {
    expect(parseReal('10.1.0.11:8080@3')).toEqual({ address: '10.1.0.11', port: 8080, weight: 3 });
    expect(parseReal('10.1.0.11:8080')).toEqual({ address: '10.1.0.11', port: 8080, weight: 1 });
    expect(parseReal('10.1.0.11@0')).toEqual({ address: '10.1.0.11', port: 0, weight: 0 });
    expect(usage(() => parseReal('10.1.0.11:http'))).toMatch(/^bad real/);
  });
});

describe('parseConnTuple (conns get)', () => {
  it('reads PROTO CLIENT:PORT VIP:PORT, and icmp CLIENT:ECHO-ID VIP', () => {
    expect(parseConnTuple('tcp', '198.18.2.2:40000', '198.19.0.1:80')).toEqual({
      protocol: Protocol.PROTOCOL_TCP,
      client: '198.18.2.2',
      clientPort: 40000,
      vip: '198.19.0.1',
      vipPort: 80,
    });
    expect(parseConnTuple('UDP', '198.18.1.2:1', '198.19.0.1:65535')).toMatchObject({ protocol: Protocol.PROTOCOL_UDP, clientPort: 1, vipPort: 65535 });
    expect(parseConnTuple('icmp', '198.18.2.2:4242', '198.19.0.1')).toEqual({
      protocol: Protocol.PROTOCOL_ICMP,
      client: '198.18.2.2',
      clientPort: 4242,
      vip: '198.19.0.1',
      vipPort: 0,
    });
  });

  it.each([
    [['sctp', '1.2.3.4:5', '1.2.3.5:80'], /^bad protocol "sctp"/],
    [['tcp', '1.2.3.4', '1.2.3.5:80'], /^bad client "1\.2\.3\.4": expected CLIENT:PORT/],
    [['icmp', '1.2.3.4', '1.2.3.5'], /^bad client "1\.2\.3\.4": expected CLIENT:ECHO-ID/],
    [['tcp', '1.2.3:5', '1.2.3.5:80'], /^bad client/],
    [['tcp', '1.2.3.4:0', '1.2.3.5:80'], /^bad client port "0": must be 1\.\.65535/],
    [['udp', '1.2.3.4:65536', '1.2.3.5:80'], /^bad client port "65536"/],
    [['icmp', '1.2.3.4:0', '1.2.3.5'], /^bad echo id "0"/],
    [['tcp', '1.2.3.4:5', '1.2.3.5'], /^bad vip "1\.2\.3\.5": tcp needs a port/],
    [['tcp', '1.2.3.4:5', '1.2.3.5:0'], /^bad vip port "0"/],
    [['icmp', '1.2.3.4:5', '1.2.3.5:80'], /^bad vip "1\.2\.3\.5:80": an ICMP conn has no vip port/],
    [['udp', '1.2.3.4:5', 'vip:80'], /^bad vip "vip:80"/],
  ])('rejects %j', (args, message) => {
    expect(usage(() => parseConnTuple(args[0], args[1], args[2]))).toMatch(message);
  });
});

describe('serverAddress', () => {
  it('prefers --server, then $RETRACE_SERVER, then the default', () => {
    expect(serverAddress({ server: 'unix:/x.sock' }, { RETRACE_SERVER: '1.2.3.4:5' })).toBe('unix:/x.sock');
    expect(serverAddress({}, { RETRACE_SERVER: '1.2.3.4:5' })).toBe('1.2.3.4:5');
    expect(serverAddress({}, {})).toBe('127.0.0.1:50051');
  });
});

describe('parseConfigDocument', () => {
  it('accepts camelCase and snake_case keys and short enum names', () => {
    const c = parseConfigDocument(
      'local_addresses: [{address: 10.1.0.1, port: b}]\nvirtualServices:\n  - {protocol: udp, vip: 198.18.0.10, port: 53, scheduler: maglev, seed: 7, reals: [{address: 10.1.0.11, port: 53}]}\n',
      'f',
    );
    expect(c.localAddresses[0].address).toBe('10.1.0.1');
    expect(c.virtualServices[0]).toMatchObject({ protocol: Protocol.PROTOCOL_UDP, scheduler: Scheduler.SCHEDULER_MAGLEV, seed: 7 });
    expect(c.virtualServices[0].reals[0]).toMatchObject({ address: '10.1.0.11', port: 53, weight: 0 });
    expect(c.symmetric).toBeUndefined();
  });

  it('accepts a GetConfig response ({config, drained})', () => {
    expect(
      parseConfigDocument('{"config": {"addresses": [{"address": "1.2.3.4", "prefixLength": 24, "port": "a"}]}, "drained": true}', 'f').addresses,
    ).toHaveLength(1);
  });

  it.each([
    ['routes: [{prefix: 0.0.0.0, gatway: 1.2.3.4}]', 'f: routes[0].gatway: unknown key'],
    ['colour: blue', 'f: colour: unknown key'],
    ['symmetric: {tcp: "no"}', 'f: symmetric.tcp: expected true or false, got "no"'],
    ['virtual_services: [{port: "80"}]', 'f: virtual_services[0].port: expected a whole number 0..4294967295, got "80"'],
    // A number a uint32 cannot carry is refused before serialisation (it used to fail as INTERNAL).
    ['virtual_services: [{reals: [{weight: 1.5}]}]', 'f: virtual_services[0].reals[0].weight: expected a whole number 0..4294967295, got 1.5'],
    ['virtual_services: [{reals: [{weight: -5}]}]', 'f: virtual_services[0].reals[0].weight: expected a whole number 0..4294967295, got -5'],
    ['virtual_services: [{seed: 4294967296}]', 'f: virtual_services[0].seed: expected a whole number 0..4294967295, got 4294967296'],
    ['addresses: {address: 1.2.3.4}', 'f: addresses: expected a list, got a mapping'],
    ['virtual_services: [{deny: 10.0.0.0/8}]', 'f: virtual_services[0].deny: expected a list of strings, got "10.0.0.0/8"'],
    ['virtual_services: [{allow: [10.0.0.0/8, 24]}]', 'f: virtual_services[0].allow[1]: expected a string, got 24'],
    ['virtual_services: [{max_conns: -1}]', 'f: virtual_services[0].max_conns: expected a whole number 0..4294967295, got -1'],
    ['routes: [\n', /^f: YAML syntax error/],
    ['virtual_services: [{health_check: {kind: ftp}}]', 'f: virtual_services[0].health_check.kind: unknown kind "ftp" (tcp, http, grpc, udp or icmp)'],
    ['virtual_services: [{health_check: {interval: 5}}]', 'f: virtual_services[0].health_check.interval: unknown key'],
    [
      'virtual_services: [{health_check: {udp_payload: "not base64!"}}]',
      'f: virtual_services[0].health_check.udp_payload: expected base64 text, got "not base64!"',
    ],
  ])('rejects %j naming the path', (text, message) => {
    const m = usage(() => parseConfigDocument(text, 'f'));
    if (typeof message === 'string') expect(m).toBe(message);
    else expect(m).toMatch(message);
  });

  it('reads service limits in either spelling', () => {
    const c = parseConfigDocument('virtual_services: [{max_conns: 100, allow: [10.0.0.0/8], deny: [10.1.0.0/16, 10.2.0.0/16]}, {maxConns: 5}]', 'f');
    expect(c.virtualServices[0]).toMatchObject({ maxConns: 100, allow: ['10.0.0.0/8'], deny: ['10.1.0.0/16', '10.2.0.0/16'] });
    expect(c.virtualServices[1]).toMatchObject({ maxConns: 5, allow: [], deny: [] });
  });

  it('reads a health check with short kind names and base64 payloads, and writes it back', () => {
    const c = parseConfigDocument(
      'virtual_services: [{protocol: udp, vip: 198.18.0.10, port: 53, scheduler: rr, health_check: {kind: udp, interval_ms: 1000, timeout_ms: 300, rise: 2, fall: 3, udp_payload: cGluZw==, udp_expect: cG9uZw==, close_conns: true}}]',
      'f',
    );
    expect(c.virtualServices[0].healthCheck).toMatchObject({
      kind: HealthCheckKind.HEALTH_CHECK_KIND_UDP,
      intervalMs: 1000,
      timeoutMs: 300,
      udpPayload: Buffer.from('ping'),
      udpExpect: Buffer.from('pong'),
      closeConns: true,
    });
    expect(parseConfigDocument(configToYaml(c), 'g')).toEqual(c);
  });

  it('reads client_address by its short or full name, and writes it back', () => {
    const c = parseConfigDocument('virtual_services: [{client_address: proxy_v2}, {clientAddress: CLIENT_ADDRESS_MODE_TOA}, {client_address: none}, {}]', 'f');
    expect(c.virtualServices.map((s) => s.clientAddress)).toEqual([
      ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2,
      ClientAddressMode.CLIENT_ADDRESS_MODE_TOA,
      ClientAddressMode.CLIENT_ADDRESS_MODE_NONE,
      ClientAddressMode.CLIENT_ADDRESS_MODE_UNSPECIFIED,
    ]);
    expect(parseConfigDocument(configToYaml(c), 'g')).toEqual(c);
  });

  it('reads back what configToYaml writes', () => {
    const c = parseConfigDocument(
      'virtualServices: [{protocol: tcp, vip: 198.18.0.10, port: 80, scheduler: wrr, maxConns: 10, deny: [10.0.0.0/8], reals: [{address: 10.1.0.11, port: 80, weight: 2}]}]\ntimeouts: {udp: 30}\n',
      'f',
    );
    expect(parseConfigDocument(configToYaml(c), 'g')).toEqual(c);
  });
});

describe('rendering', () => {
  it('shows weight and health apart, with the time of the change and the last error', () => {
    const svc = VirtualService.create({
      protocol: Protocol.PROTOCOL_TCP,
      vip: '198.18.0.10',
      port: 80,
      scheduler: Scheduler.SCHEDULER_WRR,
      healthCheck: {
        ...HealthCheck.create(),
        kind: HealthCheckKind.HEALTH_CHECK_KIND_HTTP,
        httpPath: '/healthz',
        intervalMs: 500,
        timeoutMs: 200,
        rise: 2,
        fall: 3,
      },
      reals: [
        Real.create({
          address: '10.1.0.11',
          port: 8080,
          weight: 2,
          health: HealthState.HEALTH_STATE_UP,
          healthChangedAt: new Date('2026-12-06T08:40:01.250Z'),
        }),
        Real.create({
          address: '10.1.0.12',
          port: 8080,
          weight: 1,
          health: HealthState.HEALTH_STATE_DOWN,
          healthChangedAt: new Date('2026-12-06T08:41:00Z'),
          healthLastError: 'connect ECONNREFUSED',
          inhibited: true,
        }),
      ],
    });
    const plain = VirtualService.create({
      protocol: Protocol.PROTOCOL_UDP,
      vip: '198.18.0.10',
      port: 53,
      scheduler: Scheduler.SCHEDULER_RR,
      reals: [Real.create({ address: '10.1.0.11', port: 53, weight: 1 })],
    });
    expect(formatServices([svc, plain]).split('\n')).toEqual([
      'PROTO  ADDRESS         SCHED  SYN-PROXY  WEIGHT  ACTIVE  CONNS  HEALTH                                   SINCE                 LAST-ERROR',
      'tcp    198.18.0.10:80  wrr    off                            0  http /healthz every 500ms rise 2 fall 3',
      '  ->   10.1.0.11:8080                         2       0      0  up                                       2026-12-06T08:40:01Z',
      '  ->   10.1.0.12:8080                         1       0      0  down                                     2026-12-06T08:41:00Z  connect ECONNREFUSED',
      'udp    198.18.0.10:53  rr     off                            0  -',
      '  ->   10.1.0.11:53                           1       0      0  -',
      '',
      'limits: none',
    ]);
    // Without any health check the table is as before.
    expect(formatServices([plain]).split('\n')[0]).toBe('PROTO  ADDRESS         SCHED  SYN-PROXY  WEIGHT  ACTIVE  CONNS');
  });

  it("shows a service's client-address mode after its scheduler, and nothing without one", () => {
    const svc = (clientAddress: ClientAddressMode, port: number) =>
      VirtualService.create({ protocol: Protocol.PROTOCOL_TCP, vip: '198.18.0.10', port, scheduler: Scheduler.SCHEDULER_RR, clientAddress });
    const lines = formatServices([svc(ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2, 80), svc(ClientAddressMode.CLIENT_ADDRESS_MODE_UNSPECIFIED, 81)]).split(
      '\n',
    );
    expect(lines[1]).toMatch(/^tcp +198\.18\.0\.10:80 +rr proxy_v2 +off /);
    expect(lines[2]).toMatch(/^tcp +198\.18\.0\.10:81 +rr +off +0$/);
    // With a SYN proxy too: the mode stays with the scheduler, the SYN proxy in its own column.
    const both = { ...svc(ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2, 82), synProxy: SynProxyMode.SYN_PROXY_MODE_ON };
    expect(formatServices([both]).split('\n')[1]).toMatch(/^tcp +198\.18\.0\.10:82 +rr proxy_v2 +on +0$/);
  });

  it('aligns columns, numbers to the right', () => {
    expect(
      table(
        ['A', 'N'],
        [
          ['x', 1n],
          ['long', 100],
        ],
      ),
    ).toBe('A       N\nx       1\nlong  100');
  });

  it('lists the limits of the services that have any, with the refusals by reason', () => {
    const plain = VirtualService.fromPartial({ protocol: Protocol.PROTOCOL_UDP, vip: '198.18.0.10', port: 53, scheduler: Scheduler.SCHEDULER_RR });
    const limited = VirtualService.fromPartial({
      protocol: Protocol.PROTOCOL_TCP,
      vip: '198.18.0.10',
      port: 80,
      scheduler: Scheduler.SCHEDULER_WRR,
      maxConns: 1000,
      activeConns: 12n,
      allow: ['10.0.0.0/8'],
      deny: ['10.1.0.0/16', '10.2.0.0/16'],
      connRate: 5,
      connBurst: 20,
      refusedMaxConns: 3n,
      refusedDenied: 4n,
      refusedNotAllowed: 5n,
      refusedRateLimited: 6n,
    });
    // Limits removed since, refusals kept: still listed, its limits as '-'.
    const formerly = VirtualService.fromPartial({
      protocol: Protocol.PROTOCOL_ICMP,
      vip: '198.18.0.11',
      scheduler: Scheduler.SCHEDULER_RR,
      refusedMaxConns: 9n,
    });
    const lines = formatServices([plain, limited, formerly]).split('\n');
    const at = lines.findIndex((l) => l.startsWith('limits'));
    expect(lines[at + 1].split(/\s+/)).toEqual([
      'PROTO',
      'ADDRESS',
      'MAX-CONNS',
      'ACTIVE',
      'ALLOW',
      'DENY',
      'RATE/BURST',
      'REFUSED-MAX-CONNS',
      'REFUSED-DENIED',
      'REFUSED-NOT-ALLOWED',
      'REFUSED-RATE',
    ]);
    expect(lines[at + 2].split(/\s+/)).toEqual(['tcp', '198.18.0.10:80', '1000', '12', '1', '2', '5/20', '3', '4', '5', '6']);
    expect(lines[at + 3].split(/\s+/)).toEqual(['icmp', '198.18.0.11', '-', '0', '0', '0', '-', '9', '0', '0', '0']);
    expect(lines).toHaveLength(at + 4);
    expect(formatServices([plain]).split('\n').pop()).toBe('limits: none');
  });

  it('shows the embryonic conns evicted under table pressure next to the conn count', () => {
    const c = GetCountersResponse.fromPartial({ connCount: 7n, connTable: { evictedEmbryonicTable: 42n, evictedEmbryonicPorts: 3n } });
    expect(formatCounters(c)).toMatch(/^conns: 7\nembryonic conns evicted \(table pressure\): 42 for the table, 3 for ports$/m);
  });

  it('lists the ports: what each is, its traffic and drops, then the kernel interfaces of those with one', () => {
    const up = Port.fromPartial({
      name: 'uplink-a',
      id: 0,
      device: 'net_af_packet0,iface=veth0',
      driver: 'net_af_packet',
      mac: '02:00:00:00:00:01',
      mtu: 1500,
      linkState: LinkState.LINK_STATE_UP,
      linkSpeedMbps: 10000,
      stats: {
        rxPackets: 1234n,
        rxBytes: 98765n,
        txPackets: 1200n,
        txBytes: 90000n,
        rxMissed: 3n,
        txDropped: 2n,
        toKernel: 40n,
        fromKernel: 38n,
        kernelDropped: 1n,
      },
      kernel: { name: 'rt-up-a', netns: 'host', queue: 1024, rate: 10000, burst: 1000 },
    });
    const down = Port.fromPartial({ name: 'uplink-b', id: 1, device: '0000:03:00.0', driver: 'net_ixgbe', mac: '02:00:00:00:00:02', mtu: 9000 });
    const addresses = [
      { address: '198.18.0.1', prefixLength: 24, port: 'uplink-a' },
      { address: '10.1.0.254', prefixLength: 24, port: 'uplink-c' },
      { address: '198.18.1.1', prefixLength: 32, port: 'uplink-a' },
    ];
    expect(formatPorts([up, down], addresses).split('\n')).toEqual([
      'NAME      ID  DEVICE                      DRIVER         MAC                 MTU  LINK  SPEED-MBPS  ADDRESSES',
      'uplink-a   0  net_af_packet0,iface=veth0  net_af_packet  02:00:00:00:00:01  1500  up         10000  198.18.0.1/24,198.18.1.1/32',
      'uplink-b   1  0000:03:00.0                net_ixgbe      02:00:00:00:00:02  9000  -              -  -',
      '',
      'PORT      RX-PKTS  RX-BYTES  TX-PKTS  TX-BYTES  RX-MISSED  RX-NOMBUF  RX-ERRORS  TX-ERRORS  TX-DROPPED',
      'uplink-a     1234     98765     1200     90000          3          0          0          0           2',
      'uplink-b        0         0        0         0          0          0          0          0           0',
      '',
      'kernel interfaces:',
      'PORT      INTERFACE  NETNS  QUEUE  RATE/BURST  TO-KERNEL  FROM-KERNEL  KERNEL-DROPPED',
      'uplink-a  rt-up-a    host    1024  10000/1000         40           38               1',
    ]);
    // No limit and the appliance's own namespace read as '-'; no kernel interface at all says so.
    const unbound = Port.fromPartial({ ...up, kernel: { name: 'rt-up-a', netns: '', queue: 64, rate: 0, burst: 1 } });
    expect(formatPorts([unbound], []).split('\n').pop()).toMatch(/^uplink-a\s+rt-up-a\s+-\s+64\s+-\s+40\s+38\s+1$/);
    expect(formatPorts([down], []).split('\n').pop()).toBe('kernel interfaces: none');
    expect(formatPorts([], [])).toBe('no ports');
  });

  it('prints a diff by kind with + ~ -', () => {
    const d = ConfigDiff.fromPartial({
      routes: { created: ['0.0.0.0/0'], updated: [], deleted: ['10.0.0.0/8'] },
      reals: { created: [], updated: ['s r'], deleted: [] },
    });
    expect(formatDiff(d)).toBe('routes:\n  + 0.0.0.0/0\n  - 10.0.0.0/8\nreals:\n  ~ s r');
  });

  it('shows per-second rates over the interval between two frames', () => {
    const counters = (rx: bigint): GetCountersResponse => ({
      tcp: { total: { ...PathCounters.create(), rx }, ports: [] },
      udp: undefined,
      icmp: undefined,
      drops: [],
      connCount: 0n,
      connTable: undefined,
    });
    const frame = renderTop('s', 1, { at: 3000, counters: counters(150n) }, { at: 1000, counters: counters(50n) });
    expect(frame).toMatch(/^rx\s+150\s+50\.0\s+0\s+0\s+0\s+0$/m);
  });
});
