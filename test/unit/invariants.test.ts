/**
 * The rules shared by ApplyConfig and the unary calls (src/server/invariants.ts), seen from the
 * unary side: each refusal names the request's field and answers the code of the reverse order.
 * Plus the bounds that keep every status small (issue 18 item 4) and state.file checks (item 5).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { ConfigDiff } from '../../src/gen/retrace/v1/config';
import { loadConfig, stateFileProblem } from '../../src/config';
import { tableLimits, type ConfigShape } from '../../src/dataplane';
import { APPLIED_TRAILER_MAX_KEYS, boundDiff, foldChanges, type Change } from '../../src/server/config/plan';
import { boundDetails, echo, MAX_DETAILS_BYTES, serviceError, StatusError } from '../../src/server/errors';
import { StateGuard, type Addition } from '../../src/server/invariants';
import { formatDiff } from '../../src/cli/format';

function shape(): ConfigShape {
  return {
    addresses: [{ address: '198.18.0.1', prefixLength: 24, port: 'p0' }],
    routes: [{ prefix: '0.0.0.0', prefixLength: 0, port: 'p0', gateway: '198.18.0.254' }],
    neighbors: [{ address: '198.18.0.254', mac: '02:00:00:00:00:fe', port: 'p0' }],
    localAddresses: [{ address: '10.1.0.1', port: 'p1' }],
    services: [{ protocol: 'tcp', vip: '198.18.0.10', port: 80, reals: [] }],
  };
}

/** [code, message] of the refusal, or 'ok'. */
function refusal(s: ConfigShape, add: Addition, prefix: string): [status, string] | 'ok' {
  try {
    new StateGuard(() => s).check(add, prefix);
    return 'ok';
  } catch (e) {
    if (!(e instanceof StatusError)) throw e;
    return [e.code, e.message];
  }
}

describe('StateGuard: unary calls keep the state ApplyConfig accepts', () => {
  it.each<[string, Addition, string, [status, string]]>([
    [
      'CreateVirtualService on a port address (the issue 18 reproduction)',
      { list: 'virtual_services', item: { protocol: 'tcp', vip: '198.18.0.1', port: 443 } },
      'virtual_service',
      [status.ALREADY_EXISTS, 'virtual_service.vip: "198.18.0.1" is also the port address 198.18.0.1/24 on p0: an address is local in one role only'],
    ],
    [
      'CreateVirtualService on a local address',
      { list: 'virtual_services', item: { protocol: 'udp', vip: '10.1.0.1', port: 53 } },
      'virtual_service',
      [status.ALREADY_EXISTS, 'virtual_service.vip: "10.1.0.1" is also the local address 10.1.0.1: an address is local in one role only'],
    ],
    [
      'CreateAddress on a vip (the reverse order)',
      { list: 'addresses', item: { address: '198.18.0.10', prefixLength: 32, port: 'p1' } },
      'address',
      [status.ALREADY_EXISTS, 'address.address: "198.18.0.10" is also the vip of virtual service tcp/198.18.0.10:80: an address is local in one role only'],
    ],
    [
      'CreateLocalAddress on a port address',
      { list: 'local_addresses', item: { address: '198.18.0.1', port: 'p1' } },
      'local_address',
      [status.ALREADY_EXISTS, 'local_address.address: "198.18.0.1" is also the port address 198.18.0.1/24 on p0: an address is local in one role only'],
    ],
    [
      'CreateNeighbor for a port address',
      { list: 'neighbors', item: { address: '198.18.0.1', mac: '02:00:00:00:00:09', port: 'p0' } },
      'neighbor',
      [
        status.ALREADY_EXISTS,
        'neighbor.address: "198.18.0.1" is also the port address 198.18.0.1/24 on p0: no static neighbor for the appliance\'s own addresses',
      ],
    ],
    [
      'CreateAddress for an address with a static neighbor',
      { list: 'addresses', item: { address: '198.18.0.254', prefixLength: 24, port: 'p0' } },
      'address',
      [
        status.ALREADY_EXISTS,
        'address.address: "198.18.0.254" is also the static neighbor 198.18.0.254: no static neighbor for the appliance\'s own addresses',
      ],
    ],
    [
      'CreateAddress in a subnet connected on another port',
      { list: 'addresses', item: { address: '198.18.0.2', prefixLength: 24, port: 'p1' } },
      'address',
      [
        status.ALREADY_EXISTS,
        'address.port: "p1" is not the port of subnet 198.18.0.0/24, which is connected on "p0" (the port address 198.18.0.1/24 on p0): one port per subnet',
      ],
    ],
    [
      'CreateAddress twice',
      { list: 'addresses', item: { address: '198.18.0.1', prefixLength: 16, port: 'p1' } },
      'address',
      [status.ALREADY_EXISTS, 'address.address: repeats the port address 198.18.0.1/24 on p0 (address 198.18.0.1)'],
    ],
    [
      'CreateRoute twice',
      { list: 'routes', item: { prefix: '0.0.0.0', prefixLength: 0, port: 'p1' } },
      'route',
      [status.ALREADY_EXISTS, 'route.prefix: repeats the static route 0.0.0.0/0 (route 0.0.0.0/0)'],
    ],
  ])('refuses %s', (_what, add, prefix, want) => {
    expect(refusal(shape(), add, prefix)).toEqual(want);
  });

  it('lets a second port address into a subnet on the same port', () => {
    expect(refusal(shape(), { list: 'addresses', item: { address: '198.18.0.2', prefixLength: 24, port: 'p0' } }, 'address')).toBe('ok');
  });

  it('lets a CreateNeighbor replace the entry of the same address', () => {
    expect(refusal(shape(), { list: 'neighbors', item: { address: '198.18.0.254', mac: '02:00:00:00:00:01', port: 'p1' } }, 'neighbor')).toBe('ok');
  });

  it("lets another service share a vip, and a static route cover an address's subnet", () => {
    expect(refusal(shape(), { list: 'virtual_services', item: { protocol: 'udp', vip: '198.18.0.10', port: 80 } }, 'virtual_service')).toBe('ok');
    expect(refusal(shape(), { list: 'routes', item: { prefix: '198.18.0.0', prefixLength: 24, port: 'p1', gateway: '10.9.9.9' } }, 'route')).toBe('ok');
  });

  it('answers SetReals beyond the reals of a service with INVALID_ARGUMENT on reals', () => {
    const L = tableLimits();
    const reals = Array.from({ length: L.realsPerService + 1 }, (_, i) => ({ address: `10.2.${i >> 8}.${i & 255}`, port: 80, weight: 1 }));
    expect(refusal(shape(), { list: 'reals', key: { protocol: 'tcp', vip: '198.18.0.10', port: 80 }, reals }, '')).toEqual([
      status.INVALID_ARGUMENT,
      `reals: at most ${L.realsPerService} reals, got ${L.realsPerService + 1}`,
    ]);
    expect(refusal(shape(), { list: 'reals', key: { protocol: 'tcp', vip: '198.18.0.10', port: 80 }, reals: reals.slice(1) }, '')).toBe('ok');
  });

  it('answers a full table with RESOURCE_EXHAUSTED on the new entry, whichever entry is counted last', () => {
    const L = tableLimits();
    const s = shape();
    // Fill the address table with vips: a new port address (counted before the vips) is the one too many.
    for (let i = s.services.length + 2; i < L.localAddresses; i++) s.services.push({ protocol: 'tcp', vip: `20.0.${i >> 8}.${i & 255}`, port: 80, reals: [] });
    const add: Addition = { list: 'addresses', item: { address: '10.9.0.1', prefixLength: 24, port: 'p1' } };
    expect(refusal({ ...s, services: s.services.slice(1) }, add, 'address')).toBe('ok');
    expect(refusal(s, add, 'address')).toEqual([
      status.RESOURCE_EXHAUSTED,
      `address.address: the ${L.localAddresses + 1}th of the local addresses of all roles (port addresses, local addresses, distinct vips); the table holds ${L.localAddresses}`,
    ]);
  });

  it('answers the LIP beyond the table with RESOURCE_EXHAUSTED', () => {
    const L = tableLimits();
    const s = shape();
    for (let i = 2; i <= L.lips; i++) s.localAddresses.push({ address: `10.1.0.${i}`, port: 'p1' });
    expect(refusal(s, { list: 'local_addresses', item: { address: '10.1.1.1', port: 'p1' } }, 'local_address')).toEqual([
      status.RESOURCE_EXHAUSTED,
      `local_address.address: the ${L.lips + 1}th of the local addresses (LIPs); the table holds ${L.lips}`,
    ]);
  });
});

describe('small statuses (issue 18 item 4)', () => {
  it('echoes a value cut after 64 characters with its length, escaped', () => {
    expect(echo('10.0.0')).toBe('"10.0.0"');
    expect(echo('a'.repeat(65))).toBe(`"${'a'.repeat(64)}..." (65 characters)`);
    expect(echo('é"\n')).toBe('"\\u00e9\\"\\n"');
  });

  it('bounds any status message on the wire', () => {
    for (const text of ['x'.repeat(100000), '"'.repeat(100000), 'é'.repeat(50000)]) {
      const d = serviceError(status.INVALID_ARGUMENT, text).details;
      expect(encodeURI(d).length).toBeLessThanOrEqual(MAX_DETAILS_BYTES);
      expect(d).toMatch(/ \.\.\. \(cut: \d+ characters\)$/);
    }
    expect(boundDetails('short')).toBe('short');
  });

  it('keeps the first keys of a large applied diff with every count', () => {
    const changes: Change[] = [];
    for (let i = 0; i < 5000; i++) changes.push(['routes', 'created', `10.${i >> 8}.${i & 255}.0/24`]);
    changes.push(['addresses', 'deleted', '198.18.0.1']);
    const full = foldChanges(changes);
    const cut = boundDiff(full);
    expect(cut.truncated).toBe(true);
    expect(cut.addresses).toMatchObject({ deleted: ['198.18.0.1'], deletedCount: 1 });
    expect(cut.routes!.created).toHaveLength(APPLIED_TRAILER_MAX_KEYS - 1);
    expect(cut.routes!.createdCount).toBe(5000);
    expect(ConfigDiff.encode(cut).finish().length).toBeLessThan(2048);
    expect(formatDiff(cut)).toContain(`  + ... ${5000 - (APPLIED_TRAILER_MAX_KEYS - 1)} more created (not listed)`);
    expect(boundDiff(foldChanges(changes.slice(0, 3))).truncated).toBe(false);
  });
});

describe('state.file checks at start (issue 18 item 5)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-state-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('accepts a file in an existing directory, there or not yet', () => {
    expect(stateFileProblem(path.join(dir, 'state.json'))).toBeUndefined();
  });

  it('names a directory that does not exist', () => {
    expect(stateFileProblem(path.join(dir, 'nope', 'state.json'))).toBe(
      `directory ${path.join(dir, 'nope')} does not exist (create it, or choose another path)`,
    );
  });

  it("is not loadConfig's concern: a client reading grpc.listen from the file needs no access", () => {
    const file = path.join(dir, 'retrace.yaml');
    fs.writeFileSync(file, `state: {file: ${path.join(dir, 'nope', 'state.json')}}\nports: [{name: p0, device: net_ring0}]\n`);
    expect(loadConfig({ file }).state.file).toBe(path.join(dir, 'nope', 'state.json'));
  });

  it('names a path that is a directory', () => {
    expect(stateFileProblem(dir)).toMatch(/is a directory; give the path of a file in it/);
  });
});
