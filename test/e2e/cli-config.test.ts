/**
 * `retrace serve` with bad configuration: exits 2 before the EAL starts, and the message names the
 * offending key (or the file).
 */
import fs from 'node:fs';
import path from 'node:path';
import { runCli, tmpDir } from '../helpers/cli';

describe('retrace serve with a bad configuration', () => {
  const dir = tmpDir('retrace-cfg');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, text: string) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, text);
    return f;
  };

  const cases: [string, string, RegExp][] = [
    ['an unknown top-level key', 'colour: blue\nports: [{name: a, device: net_ring0}]\n', /config: colour: /],
    ['an unknown nested key', 'ports: [{name: a, device: net_ring0, colour: red}]\n', /config: ports\[0\]\.colour: /],
    ['a wrong type', 'dataplane: {workers: many}\nports: [{name: a, device: net_ring0}]\n', /config: dataplane\.workers: /],
    ['a bad port device string', 'ports: [{name: a, device: "eth0"}]\n', /config: ports\[0\]\.device: /],
    ['a value out of range', 'ports: [{name: a, device: net_ring0, mtu: 20}]\n', /config: ports\[0\]\.mtu: /],
    ['a YAML syntax error', 'ports: [\n', /config: .*bad-yaml\.yaml: YAML syntax error/],
  ];

  it.each(cases)('rejects %s with exit code 2 and the key path', async (_name, yaml, message) => {
    const file = write(`${_name.replace(/\W+/g, '-')}.yaml`.replace('a-YAML-syntax-error', 'bad-yaml'), yaml);
    const res = await runCli(['serve', '--config', file]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(message);
    // Nothing of DPDK ran: the config is checked before the EAL starts.
    expect(res.stderr).not.toContain('EAL:');
  });

  it('rejects a missing file naming the file', async () => {
    const file = path.join(dir, 'does-not-exist.yaml');
    const res = await runCli(['serve', '--config', file]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`config: ${file}: file not found`);
  });

  it('rejects a bad command-line override naming the key it overrides', async () => {
    const res = await runCli(['serve', '--listen', 'not an address']);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/config: grpc\.listen: .*command-line/);
  });

  it('rejects an unknown flag with exit code 2', async () => {
    const res = await runCli(['serve', '--colour', 'red']);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain("unknown option '--colour'");
  });
});
