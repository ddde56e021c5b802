import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { Config, ConfigError, DEFAULT_CONFIG_YAML, deviceKind, deviceName, listenAddressProblem, loadConfig, parseConfig, parseLcores } from '../../src/config';
import { buildEalArgs, lcoresArg, workerLcores } from '../../src/dataplane/eal';

const PORT = 'ports:\n  - name: a\n    device: net_ring0\n';

/** Runs fn, expects a ConfigError, returns it. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

/** Parses a config built from a JS object (serialised to YAML). */
function parseObj(obj: unknown): Config {
  return parseConfig(YAML.stringify(obj), 'test.yaml');
}

function expectPath(obj: unknown, errPath: string, reason?: RegExp): ConfigError {
  const err = configError(() => parseObj(obj));
  expect(err.path).toBe(errPath);
  expect(err.message.split('\n')[0]).toBe(`config: ${errPath}: ${err.reason}`);
  if (reason) expect(err.reason).toMatch(reason);
  return err;
}

const basePort = { name: 'a', device: 'net_ring0' };
const withPorts = (extra: Record<string, unknown> = {}, ports: unknown[] = [basePort]) => ({ ports, ...extra });

describe('default config', () => {
  it('loads without a file and applies every default', () => {
    const cfg = loadConfig({});
    expect(cfg).toEqual({
      grpc: {
        listen: '127.0.0.1:50051',
        event_history: 65536,
        subscriber_buffer: 4096,
        tls: { cert_file: '', key_file: '', client_ca_file: '' },
      },
      state: { file: '' },
      health: { listen: '' },
      health_checks: { netns: '', max_in_flight: 256 },
      metrics: { listen: '' },
      log: { level: 'info' },
      eal: {
        memory_mb: 256,
        hugepages: false,
        huge_dir: '',
        file_prefix: '',
        lcores: '',
        log_level: 'notice',
        telemetry: false,
        extra_args: [],
      },
      dataplane: {
        workers: 1,
        mbufs: 16383,
        mbuf_cache: 256,
        burst: 32,
        max_conns: 131072,
        icmp_rate: 1000,
        icmp_burst: 100,
        event_ring: 65536,
        table_pressure: { evict_embryonic: true, conns_percent: 90, ports_percent: 90, min_age_ms: 1000 },
        idle: { pause_after: 64, sleep_after: 1024, sleep_us: 100 },
      },
      ports: [{ name: 'virt0', device: 'net_ring0', mtu: 1500, rx_desc: 1024, tx_desc: 1024, promiscuous: false }],
      timeouts: { tcp_syn: 30, tcp_established: 900, tcp_fin: 60, tcp_close: 10, udp: 300, icmp: 60 },
      symmetric: { tcp: true, udp: true, icmp: true },
    });
  });

  it('needs no NIC and no hugepages', () => {
    const args = buildEalArgs(loadConfig({}), 42, 2);
    expect(args).toContain('--no-huge');
    expect(args).toContain('--no-pci');
    expect(args).toEqual(expect.arrayContaining(['--vdev', 'net_ring0']));
  });

  it('DEFAULT_CONFIG_YAML parses to the same config as an explicit file holding it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-cfg-'));
    try {
      const file = path.join(dir, 'retrace.yaml');
      fs.writeFileSync(file, DEFAULT_CONFIG_YAML);
      expect(loadConfig({ file })).toEqual(loadConfig({}));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a minimal file with only ports gets all other defaults', () => {
    const cfg = parseConfig(PORT);
    expect(cfg.dataplane.workers).toBe(1);
    expect(cfg.symmetric).toEqual({ tcp: true, udp: true, icmp: true });
    expect(cfg.ports[0]).toEqual({ name: 'a', device: 'net_ring0', mtu: 1500, rx_desc: 1024, tx_desc: 1024, promiscuous: false });
  });

  it('accepts a full production-style config', () => {
    const cfg = parseObj({
      grpc: { listen: '[::1]:6000' },
      log: { level: 'debug' },
      eal: { memory_mb: 2048, hugepages: true, file_prefix: 'lb_1', log_level: 'debug', telemetry: true, extra_args: ['--in-memory'] },
      dataplane: { workers: 4, mbufs: 262143, mbuf_cache: 512, burst: 64, idle: { pause_after: 0, sleep_after: 0, sleep_us: 1 } },
      ports: [
        { name: 'uplink-a', device: '0000:03:00.0', mac: '02:AA:00:00:00:01', mtu: 9000, rx_desc: 4096, tx_desc: 4096, promiscuous: true },
        { name: 'uplink-b', device: '03:00.1,rx_low_latency=1' },
        { name: 'servers', device: 'net_af_packet0,iface=veth0' },
      ],
      symmetric: { tcp: true, udp: false, icmp: true },
    });
    expect(cfg.ports[0].mac).toBe('02:aa:00:00:00:01');
    expect(cfg.symmetric.udp).toBe(false);
  });
});

describe('config errors name the offending key', () => {
  it('rejects an unknown top-level key', () => {
    expectPath(withPorts({ colour: 'red' }), 'colour', /unknown key/);
  });

  it('rejects an unknown nested key in a port', () => {
    expectPath(withPorts({}, [{ ...basePort, colour: 'red' }]), 'ports[0].colour', /unknown key/);
  });

  it('rejects an unknown key deep in dataplane.idle', () => {
    expectPath(withPorts({ dataplane: { idle: { sleep_ms: 5 } } }), 'dataplane.idle.sleep_ms', /unknown key/);
  });

  it('rejects a wrong type (string for an integer)', () => {
    expectPath(withPorts({ dataplane: { workers: '2' } }), 'dataplane.workers', /expected a number, got string "2"/);
  });

  it('rejects a wrong type (number for a boolean)', () => {
    expectPath(withPorts({ eal: { hugepages: 1 } }), 'eal.hugepages', /expected true or false/);
  });

  it('rejects a non-integer number', () => {
    expectPath(withPorts({ dataplane: { burst: 1.5 } }), 'dataplane.burst', /integer/);
  });

  it('rejects a section that is not a mapping', () => {
    expectPath(withPorts({ eal: 5 }), 'eal', /expected a mapping/);
  });

  it.each([
    ['eal.memory_mb', { eal: { memory_mb: 63 } }, /64\.\.65536/],
    ['eal.memory_mb', { eal: { memory_mb: 65537 } }, /64\.\.65536/],
    ['dataplane.workers', { dataplane: { workers: 0 } }, /1\.\.64/],
    ['dataplane.workers', { dataplane: { workers: 65 } }, /1\.\.64/],
    ['dataplane.mbufs', { dataplane: { mbufs: 1000 } }, /1023\.\.16777215/],
    ['dataplane.mbuf_cache', { dataplane: { mbuf_cache: 513 } }, /0\.\.512/],
    ['dataplane.burst', { dataplane: { burst: 257 } }, /1\.\.256/],
    ['dataplane.idle.sleep_us', { dataplane: { idle: { sleep_us: 0 } } }, /1\.\.100000/],
    ['dataplane.idle.pause_after', { dataplane: { idle: { pause_after: -1 } } }, />= 0/],
    ['health_checks.max_in_flight', { health_checks: { max_in_flight: 0 } }, /1\.\.4096/],
    ['health_checks.netns', { health_checks: { netns: 'a/b' } }, /namespace name/],
    ['health_checks.interval', { health_checks: { interval: 5 } }, /unrecognized|unknown/i],
    ['dataplane.table_pressure.conns_percent', { dataplane: { table_pressure: { conns_percent: 101 } } }, /0\.\.100/],
    ['dataplane.table_pressure.ports_percent', { dataplane: { table_pressure: { ports_percent: -1 } } }, /0\.\.100/],
    ['dataplane.table_pressure.min_age_ms', { dataplane: { table_pressure: { min_age_ms: 3600001 } } }, /0\.\.3600000/],
    ['dataplane.table_pressure.evict_embryonic', { dataplane: { table_pressure: { evict_embryonic: 'yes' } } }, /true or false/],
  ])('rejects out-of-range %s', (errPath, extra, reason) => {
    expectPath(withPorts(extra), errPath, reason);
  });

  it.each([
    ['mtu', 67, /68\.\.9600/],
    ['mtu', 9601, /68\.\.9600/],
    ['rx_desc', 1000, /power of two/],
    ['tx_desc', 32, /64\.\.16384/],
    ['tx_desc', 32768, /64\.\.16384/],
  ])('rejects out-of-range port %s = %p', (field, value, reason) => {
    expectPath(withPorts({}, [{ ...basePort, [field]: value }]), `ports[0].${field}`, reason);
  });

  it('rejects an unknown pino log level', () => {
    expectPath(withPorts({ log: { level: 'loud' } }), 'log.level', /must be one of fatal error warn info debug trace silent/);
  });

  it('rejects an unknown EAL log level', () => {
    expectPath(withPorts({ eal: { log_level: 'verbose' } }), 'eal.log_level', /must be one of/);
  });

  it('rejects a bad file prefix', () => {
    expectPath(withPorts({ eal: { file_prefix: 'a/b' } }), 'eal.file_prefix');
    expectPath(withPorts({ eal: { file_prefix: 'x'.repeat(33) } }), 'eal.file_prefix');
  });

  it('requires ports', () => {
    expectPath({}, 'ports', /required/);
  });

  it('rejects an empty port list and more than 32 ports', () => {
    expectPath(withPorts({}, []), 'ports', /at least one/);
    const many = Array.from({ length: 33 }, (_, i) => ({ name: `p${i}`, device: `net_ring${i}` }));
    expectPath(withPorts({}, many), 'ports', /at most 32/);
  });

  it('requires a port device', () => {
    expectPath(withPorts({}, [{ name: 'a' }]), 'ports[0].device', /required/);
  });

  it.each(['eth0', 'net_ring', 'net_af_packet0,iface', 'net_af_packet0,,iface=x', 'NET_ring0', '0000:3:00.0', '03:00.8', 'ring0'])(
    'rejects bad device string %p',
    (device) => {
      expectPath(withPorts({}, [{ name: 'a', device }]), 'ports[0].device', /not a vdev/);
    },
  );

  it.each(['bad name', 'Uplink', '1port', 'a'.repeat(32)])('rejects bad port name %p', (name) => {
    expectPath(withPorts({}, [{ name, device: 'net_ring0' }]), 'ports[0].name');
  });

  it('rejects a duplicate port name', () => {
    expectPath(withPorts({}, [basePort, { name: 'a', device: 'net_ring1' }]), 'ports[1].name', /duplicate port name "a" \(also ports\[0\]\.name\)/);
  });

  it('rejects a duplicate vdev name even with different devargs', () => {
    expectPath(
      withPorts({}, [
        { name: 'a', device: 'net_af_packet0,iface=veth0' },
        { name: 'b', device: 'net_af_packet0,iface=veth1' },
      ]),
      'ports[1].device',
      /duplicate device "net_af_packet0"/,
    );
  });

  it('rejects the same PCI device written with and without its domain', () => {
    expectPath(
      withPorts({}, [
        { name: 'a', device: '0000:03:00.0' },
        { name: 'b', device: '03:00.0' },
      ]),
      'ports[1].device',
      /duplicate device "0000:03:00.0"/,
    );
  });

  it.each([
    ['01:00:00:00:00:01', /unicast/],
    ['ff:ff:ff:ff:ff:ff', /unicast/],
    ['00:00:00:00:00:00', /zero/],
    ['02:00:00:00:00', /MAC address like/],
    ['02-00-00-00-00-01', /MAC address like/],
    ['zz:00:00:00:00:01', /MAC address like/],
  ])('rejects bad MAC %p', (mac, reason) => {
    expectPath(withPorts({}, [{ ...basePort, mac }]), 'ports[0].mac', reason);
  });

  it.each([
    '::1:50051',
    '127.0.0.1',
    '127.0.0.1:65536',
    '127.0.0.1:http',
    '[not-v6]:1',
    'unix:',
    'unix://host/x.sock',
    `unix:/${'x'.repeat(107)}`,
    '999.1.1.1:80',
  ])('rejects bad listen address %p', (listen) => {
    expectPath(withPorts({ grpc: { listen } }), 'grpc.listen');
  });

  it.each([
    '127.0.0.1:50051',
    '0.0.0.0:0',
    'localhost:50051',
    'lb-1.example.com:443',
    '[::]:50051',
    '[fe80::1]:1',
    'unix:/run/retrace.sock',
    'unix:///run/retrace.sock',
    'unix:retrace.sock',
  ])('accepts listen address %p', (listen) => {
    expect(listenAddressProblem(listen)).toBeUndefined();
    expect(parseObj(withPorts({ grpc: { listen } })).grpc.listen).toBe(listen);
  });

  it('rejects --in-memory in extra_args without hugepages', () => {
    expectPath(withPorts({ eal: { extra_args: ['--vdev=net_null9', '--in-memory'] } }), 'eal.extra_args[1]', /--in-memory/);
  });

  it('rejects raw lcores whose worker count disagrees with dataplane.workers', () => {
    expectPath(withPorts({ eal: { lcores: '0@0,1@1,2@1' } }), 'eal.lcores', /2 worker lcore\(s\).*dataplane\.workers is 1/);
  });

  it('rejects raw lcores without main lcore 0 and malformed raw lcores', () => {
    expectPath(withPorts({ eal: { lcores: '1@1' } }), 'eal.lcores', /lcore 0/);
    expectPath(withPorts({ eal: { lcores: '0@(0-1,1@1' } }), 'eal.lcores', /not a valid --lcores/);
  });

  it('rejects a document whose root is not a mapping', () => {
    const err = configError(() => parseConfig('- 1\n- 2\n'));
    expect(err.path).toBe('(root)');
  });

  it('reports every problem, one per line, first one in path/reason', () => {
    const err = configError(() => parseObj(withPorts({ dataplane: { workers: 0, burst: 0 } })));
    expect(err.issues.map((i) => i.path)).toEqual(['dataplane.workers', 'dataplane.burst']);
    expect(err.path).toBe('dataplane.workers');
    expect(err.message.split('\n')).toHaveLength(2);
  });
});

describe('config files', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-cfg-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reports a missing file with the file path', () => {
    const file = path.join(dir, 'nope.yaml');
    const err = configError(() => loadConfig({ file }));
    expect(err.path).toBe(file);
    expect(err.message).toBe(`config: ${file}: file not found`);
  });

  it('reports a YAML syntax error with line and column', () => {
    const file = path.join(dir, 'bad.yaml');
    fs.writeFileSync(file, 'ports:\n  - name: a\n    device: [net_ring0\nsymmetric: {tcp: true}\n');
    const err = configError(() => loadConfig({ file }));
    expect(err.path).toBe(file);
    expect(err.reason).toMatch(/^YAML syntax error: .*line \d+, column \d+$/);
  });

  it('reports a duplicated YAML key as a syntax error', () => {
    const file = path.join(dir, 'dup.yaml');
    fs.writeFileSync(file, `${PORT}log: {level: info}\nlog: {level: debug}\n`);
    const err = configError(() => loadConfig({ file }));
    expect(err.reason).toMatch(/unique.*line 5, column 1/);
  });

  it('treats an empty file as an empty mapping (ports still required)', () => {
    const file = path.join(dir, 'empty.yaml');
    fs.writeFileSync(file, '');
    expect(configError(() => loadConfig({ file })).path).toBe('ports');
  });

  it('loads a valid file', () => {
    const file = path.join(dir, 'ok.yaml');
    fs.writeFileSync(file, `${PORT}dataplane:\n  workers: 3\n`);
    expect(loadConfig({ file }).dataplane.workers).toBe(3);
  });
});

describe('command-line overrides', () => {
  it('override file values and defaults', () => {
    const cfg = loadConfig({
      overrides: { listen: 'unix:/tmp/r.sock', workers: 2, memoryMb: '512', filePrefix: 'lab', logLevel: 'debug' },
    });
    expect(cfg.grpc.listen).toBe('unix:/tmp/r.sock');
    expect(cfg.dataplane.workers).toBe(2);
    expect(cfg.eal.memory_mb).toBe(512);
    expect(cfg.eal.file_prefix).toBe('lab');
    expect(cfg.log.level).toBe('debug');
  });

  it('accept decimal strings for numbers (as commander passes them)', () => {
    expect(loadConfig({ overrides: { workers: '4' } }).dataplane.workers).toBe(4);
  });

  it.each([
    [{ workers: 0 }, 'dataplane.workers'],
    [{ workers: 'many' }, 'dataplane.workers'],
    [{ memoryMb: 1 }, 'eal.memory_mb'],
    [{ listen: 'nowhere' }, 'grpc.listen'],
    [{ filePrefix: 'has space' }, 'eal.file_prefix'],
    [{ logLevel: 'loud' }, 'log.level'],
  ])('invalid override %p is reported at config key %s', (overrides, errPath) => {
    const err = configError(() => loadConfig({ overrides }));
    expect(err.path).toBe(errPath);
    expect(err.reason).toMatch(/command-line override/);
  });

  it('apply to a file that lacks the section', () => {
    const cfg = parseConfig(PORT, 'x.yaml', { workers: 2 });
    expect(cfg.dataplane).toMatchObject({ workers: 2, burst: 32 });
  });
});

describe('devices', () => {
  it.each([
    ['net_af_packet0,iface=veth0', 'vdev', 'net_af_packet0'],
    ['net_ring0', 'vdev', 'net_ring0'],
    ['net_tap1,iface=rtr1', 'vdev', 'net_tap1'],
    ['net_pcap0,rx_pcap=/x.pcap,infinite_rx=1', 'vdev', 'net_pcap0'],
    ['0000:03:00.0', 'pci', '0000:03:00.0'],
    ['03:00.1', 'pci', '0000:03:00.1'],
    ['0000:AF:00.0,rx_low_latency=1', 'pci', '0000:af:00.0'],
  ])('%s is a %s named %s', (device, kind, name) => {
    expect(deviceKind(device)).toBe(kind);
    expect(deviceName(device)).toBe(name);
  });
});

describe('EAL arguments', () => {
  const cfgWith = (extra: Record<string, unknown>, ports: unknown[] = [basePort]) => parseObj(withPorts(extra, ports));

  it('default config without PCI ports passes --no-pci and the vdev', () => {
    expect(buildEalArgs(loadConfig({}), 1234, 2)).toEqual([
      'retrace',
      '-m',
      '256',
      '--no-huge',
      '--no-shconf',
      '--file-prefix',
      'retrace-1234',
      '--lcores',
      '0@(0-1),1@1',
      '--main-lcore',
      '0',
      '--log-level',
      'notice',
      '--no-telemetry',
      '--no-pci',
      '--vdev',
      'net_ring0',
    ]);
  });

  it('PCI ports are allow-listed with -a and suppress --no-pci; vdevs follow', () => {
    const cfg = cfgWith({}, [
      { name: 'a', device: '0000:03:00.0' },
      { name: 'b', device: 'net_af_packet0,iface=veth0' },
      { name: 'c', device: '03:00.1,rx_low_latency=1' },
      { name: 'd', device: 'net_tap1,iface=rtr1' },
    ]);
    const args = buildEalArgs(cfg, 1, 4);
    expect(args).not.toContain('--no-pci');
    const tail = args.slice(args.indexOf('--no-telemetry') + 1);
    expect(tail).toEqual(['-a', '0000:03:00.0', '-a', '03:00.1,rx_low_latency=1', '--vdev', 'net_af_packet0,iface=veth0', '--vdev', 'net_tap1,iface=rtr1']);
  });

  it('hugepages drop --no-huge; telemetry drops --no-telemetry; file prefix and log level pass through', () => {
    const args = buildEalArgs(cfgWith({ eal: { hugepages: true, telemetry: true, memory_mb: 1024, file_prefix: 'lb0', log_level: 'debug' } }), 7, 2);
    expect(args).not.toContain('--no-huge');
    expect(args).not.toContain('--no-telemetry');
    expect(args.slice(1, 3)).toEqual(['-m', '1024']);
    expect(args).toEqual(expect.arrayContaining(['--file-prefix', 'lb0']));
    expect(args[args.indexOf('--log-level') + 1]).toBe('debug');
  });

  it('extra_args come last, verbatim; --in-memory is allowed with hugepages', () => {
    const args = buildEalArgs(cfgWith({ eal: { hugepages: true, extra_args: ['--in-memory', '--huge-unlink'] } }), 1, 2);
    expect(args.slice(-2)).toEqual(['--in-memory', '--huge-unlink']);
  });

  it.each([
    [2, 1, '0@(0-1),1@1'],
    [1, 1, '0@0,1@0'],
    [1, 2, '0@0,1@0,2@0'],
    [4, 1, '0@(0-3),1@3'],
    [4, 2, '0@(0-3),1@2,2@3'],
    [4, 3, '0@(0-3),1@1,2@2,3@3'],
    [4, 5, '0@(0-3),1@1,2@2,3@3,4@1,5@2'],
    [2, 3, '0@(0-1),1@1,2@1,3@1'],
  ])('computed lcores with %i CPUs and %i workers is %s', (ncpus, workers, expected) => {
    const cfg = cfgWith({ dataplane: { workers } });
    expect(lcoresArg(cfg, ncpus)).toBe(expected);
    const args = buildEalArgs(cfg, 1, ncpus);
    expect(args[args.indexOf('--lcores') + 1]).toBe(expected);
    expect(workerLcores(cfg)).toEqual(Array.from({ length: workers }, (_, i) => i + 1));
  });

  it('raw eal.lcores is passed verbatim and defines the worker lcores', () => {
    const cfg = cfgWith({ eal: { lcores: '0@0,(4-5)@(2-3)' }, dataplane: { workers: 2 } });
    const args = buildEalArgs(cfg, 1, 8);
    expect(args[args.indexOf('--lcores') + 1]).toBe('0@0,(4-5)@(2-3)');
    expect(workerLcores(cfg)).toEqual([4, 5]);
  });

  it('parseLcores understands the DPDK --lcores syntax', () => {
    expect(parseLcores('1,2@(5-7),(3-5)@(0,2),(0,6),7-8')).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(() => parseLcores('1@')).toThrow();
    expect(() => parseLcores('(1-2')).toThrow();
    expect(() => parseLcores('3-1')).toThrow();
  });
});
