/**
 * ports[].kernel in the appliance configuration: defaults, the errors that name their key, and what
 * it adds to the EAL argv and the addon's start() argument.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import YAML from 'yaml';
import { ConfigError, parseConfig } from '../../src/config';
import { buildEalArgs } from '../../src/dataplane/eal';
import { nativeConf } from '../../src/dataplane/setup';

const parse = (ports: unknown[]) => parseConfig(YAML.stringify({ ports }), 'test.yaml');

function errorOf(ports: unknown[]): ConfigError {
  try {
    parse(ports);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('ports[].kernel', () => {
  it('is absent unless asked for, and takes defaults for queue, rate and burst', () => {
    const cfg = parse([
      { name: 'a', device: 'net_ring0' },
      { name: 'b', device: 'net_ring1', kernel: { name: 'rt-up-b' } },
    ]);
    expect(cfg.ports[0].kernel).toBeUndefined();
    expect(cfg.ports[1].kernel).toEqual({ name: 'rt-up-b', netns: '', queue: 1024, rate: 10000, burst: 1000 });
  });

  it('adds one net_tap per kernel interface to the EAL argv, and passes it to the dataplane', () => {
    const cfg = parse([
      { name: 'a', device: 'net_ring0' },
      { name: 'b', device: 'net_ring1', kernel: { name: 'rt-up-b', queue: 64, rate: 0, burst: 5 } },
    ]);
    const args = buildEalArgs(cfg, 1, 2);
    expect(args.slice(args.indexOf('--vdev'))).toEqual(['--vdev', 'net_ring0', '--vdev', 'net_ring1', '--vdev', 'net_tap_kni1,iface=rt-up-b']);
    expect(nativeConf(cfg).ports.map((p) => p.kernel)).toEqual([undefined, { devname: 'net_tap_kni1', queue: 64, rate: 0, burst: 5 }]);
  });

  it.each([
    [{ name: 'this-name-is-too-long' }, 'ports[0].kernel.name', /Linux interface name/],
    [{ name: '-x' }, 'ports[0].kernel.name', /Linux interface name/],
    [{ name: 'k', queue: 100 }, 'ports[0].kernel.queue', /power of two/],
    [{ name: 'k', rate: -1 }, 'ports[0].kernel.rate', /./],
    [{ name: 'k', burst: 0 }, 'ports[0].kernel.burst', /./],
    [{ name: 'k', netns: 'bad/ns' }, 'ports[0].kernel.netns', /namespace name/],
    [{ name: 'k', netns: `retrace-no-such-ns-${crypto.randomBytes(4).toString('hex')}` }, 'ports[0].kernel.netns', /not found/],
    [{ name: 'k', mtu: 1500 }, 'ports[0].kernel.mtu', /./],
  ])('rejects %p at %s', (kernel, path, reason) => {
    const e = errorOf([{ name: 'a', device: 'net_ring0', kernel }]);
    expect(e.path).toBe(path);
    expect(e.reason).toMatch(reason);
  });

  it('rejects two ports with the same kernel interface name', () => {
    const e = errorOf([
      { name: 'a', device: 'net_ring0', kernel: { name: 'k' } },
      { name: 'b', device: 'net_ring1', kernel: { name: 'k' } },
    ]);
    expect([e.path, e.reason]).toEqual(['ports[1].kernel.name', 'duplicate kernel interface "k" (also ports[0].kernel.name)']);
  });

  it('rejects a port device named like a kernel interface', () => {
    const e = errorOf([{ name: 'a', device: 'net_tap_kni0,iface=x' }]);
    expect(e.path).toBe('ports[0].device');
    expect(e.reason).toMatch(/reserved for kernel interfaces/);
  });

  it('counts kernel interfaces against DPDK ports (32)', () => {
    const ports = Array.from({ length: 17 }, (_, i) => ({ name: `p${i}`, device: `net_ring${i}`, kernel: { name: `k${i}` } }));
    expect(errorOf(ports).reason).toMatch(/17 ports and 17 kernel interfaces need 34 DPDK ports; at most 32/);
  });

  it('accepts a namespace that exists', () => {
    const ns = `retrace-kcfg-${crypto.randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      expect(parse([{ name: 'a', device: 'net_ring0', kernel: { name: 'k', netns: ns } }]).ports[0].kernel?.netns).toBe(ns);
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
  });
});
