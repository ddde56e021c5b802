/**
 * state.file: the configuration applied over the API survives a crash. The document is replaced
 * atomically, so SIGKILL at any moment — even in the middle of a large ApplyConfig — leaves the
 * previous or the new configuration, never a mix; a damaged file stops start-up naming the file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ApplianceProcess } from '../../src/lab/appliance';
import { Real, VirtualService } from '../../src/gen/retrace/v1/balancer';
import { Protocol, Scheduler } from '../../src/gen/retrace/v1/types';
import type { Config } from '../../src/gen/retrace/v1/config';

const real = (address: string, port: number, weight: number): Real => Real.create({ address, port, weight });

function service(n: number) {
  return VirtualService.create({
    protocol: Protocol.PROTOCOL_TCP,
    vip: `198.19.${Math.floor(n / 250)}.${(n % 250) + 1}`,
    port: 80,
    scheduler: Scheduler.SCHEDULER_WRR,
    seed: 0,
    reals: [real('10.1.0.11', 8080, 1), real('10.1.0.12', 8080, 2), real('10.1.0.13', 8080, 3)],
  });
}

function baseConfig(services: number): Config {
  return {
    addresses: [{ address: '10.0.0.1', prefixLength: 24, port: 'p0' }],
    routes: [{ prefix: '0.0.0.0', prefixLength: 0, port: 'p0', gateway: '10.0.0.254', connected: false }],
    neighbors: [],
    localAddresses: [{ address: '10.1.0.100', port: 'p1', portsInUse: 0n, portsTotal: 0n }],
    virtualServices: Array.from({ length: services }, (_, i) => service(i)),
    symmetric: { tcp: true, udp: false, icmp: true },
    timeouts: { tcpSyn: 30, tcpEstablished: 900, tcpFin: 60, tcpClose: 10, udp: 42, icmp: 60 },
  };
}

/** GetConfig without volatile fields, comparable across restarts. */
const comparable = (c: Config | undefined) => JSON.parse(JSON.stringify(c, (_k, v) => (typeof v === 'bigint' ? String(v) : v)));

describe('persistence of the applied configuration (state.file)', () => {
  const dir = fs.mkdtempSync('/tmp/retrace-state-');
  const stateFile = path.join(dir, 'state.json');
  const common = `
eal: {memory_mb: 256}
dataplane: {mbufs: 2047, max_conns: 4096}
ports:
  - {name: p0, device: net_ring0, mac: "02:00:00:00:00:01"}
  - {name: p1, device: net_ring1, mac: "02:00:00:00:00:02"}
`;
  const yaml = `${common}state: {file: ${stateFile}}\n`;
  const all: ApplianceProcess[] = [];
  const make = () => {
    const a = new ApplianceProcess();
    all.push(a);
    return a;
  };
  let app = make();

  const start = async () => {
    app = make();
    app.start(yaml);
    await app.waitServing().catch(async (e) => {
      // A drained appliance never becomes SERVING; that is checked separately.
      if (!/NOT_SERVING/.test(String(e))) throw e;
    });
  };

  afterAll(async () => {
    for (const a of all) await a.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('restores the configuration and the drain after a SIGKILL', async () => {
    await start();
    await app.api.config.applyConfig({ config: baseConfig(3), dryRun: false });
    await app.api.config.drain({});
    const before = await app.api.config.getConfig({});
    expect(before.drained).toBe(true);
    await new Promise((r) => setTimeout(r, 200)); // the save runs on the next turn of the loop
    await app.crash();

    app.start(yaml);
    const deadline = Date.now() + 20000;
    let after;
    while (Date.now() < deadline) {
      try {
        after = await app.api.config.getConfig({});
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    expect(comparable(after?.config)).toEqual(comparable(before.config));
    expect(after?.drained).toBe(true);
    expect(await app.healthCheck('')).toBe('NOT_SERVING');
    expect(await app.healthCheck('liveness')).toBe('SERVING');
    await app.api.config.undrain({});
    await app.stop();
  }, 60000);

  it('finds the previous or the new configuration, never a mix, after SIGKILL during a large ApplyConfig', async () => {
    await start();
    await app.api.config.applyConfig({ config: baseConfig(2), dryRun: false });
    await new Promise((r) => setTimeout(r, 200));
    const old = comparable((await app.api.config.getConfig({})).config);
    const big = baseConfig(400);
    // Not awaited: the appliance is killed while it applies (and perhaps while it saves).
    const pending = app.api.config.applyConfig({ config: big, dryRun: false }, 30000).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 60));
    await app.crash();
    await pending;

    await start();
    const restored = comparable((await app.api.config.getConfig({})).config);
    const fresh = make();
    try {
      // What the new document looks like once applied (GetConfig's normal form).
      fresh.start(common);
      await fresh.waitServing();
      await fresh.api.config.applyConfig({ config: big, dryRun: false }, 30000);
      const bigForm = comparable((await fresh.api.config.getConfig({})).config);
      expect([old, bigForm]).toContainEqual(restored);
    } finally {
      await fresh.kill();
    }
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    await app.stop();
  }, 120000);

  it('refuses to start with a damaged state file, naming it', async () => {
    fs.writeFileSync(stateFile, '{"version": 1, "config": {"virtualServices": [{"protocol": "PROTOCOL_TCP"');
    app = make();
    app.start(yaml);
    expect(await app.exitCode()).toBe(2);
    expect(app.output).toContain(`retrace: state: ${stateFile}: not valid JSON`);
  }, 60000);
});
