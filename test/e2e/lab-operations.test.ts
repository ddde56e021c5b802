/**
 * Operating a live appliance in the lab: `retrace events` shows real conns as they come and go,
 * and ApplyConfig changing one service leaves traffic on the untouched ones uninterrupted.
 */
import { spawn } from 'node:child_process';
import { Config } from '../../src/gen/retrace/v1/config';
import { DeleteConnsRequest } from '../../src/gen/retrace/v1/conn';
import { CLI_PATH } from '../../src/lab/appliance';
import { LabScenario } from '../../src/lab/scenario';
import { LAB, labVip } from '../../src/lab/topology';

describe('operations on a live appliance in the lab', () => {
  let sc: LabScenario;
  const reals = Object.values(LAB.rs).map((address) => ({ address, port: LAB.echoPort }));

  beforeAll(async () => {
    sc = await LabScenario.start({ extraYaml: 'timeouts: {tcp_close: 2}' });
    await sc.addService('tcp', LAB.vip, 80, 'rr', reals);
  }, 120000);

  afterAll(async () => {
    await sc?.destroy();
  });

  describe('retrace events', () => {
    it('prints created, state and closed lines for real conns, with their sequence numbers', async () => {
      const child = spawn(process.execPath, [CLI_PATH, 'events', '--follow', '--server', sc.app.address], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      try {
        // Let the stream subscribe before traffic starts.
        const deadline = Date.now() + 15000;
        while (Date.now() < deadline && (await sc.app.api.conns.getEventStatus({})).producing !== true) {
          await new Promise((r) => setTimeout(r, 100));
        }
        const r = await sc.lab.tcpEcho('client-b', LAB.vip, 80, { conns: 5, bytes: 1000 });
        expect(r.ok).toBe(5);
        const end = Date.now() + 15000;
        while (Date.now() < end && (out.match(/ closed tcp /g) ?? []).length < 5) {
          await sc.app.api.conns.deleteConns(DeleteConnsRequest.fromPartial({ all: true })).catch(() => undefined);
          await new Promise((r2) => setTimeout(r2, 300));
        }
      } finally {
        child.kill('SIGINT');
      }
      expect(await exited).toBe(0);
      const lines = out.trim().split('\n');
      expect((out.match(/ created tcp /g) ?? []).length).toBeGreaterThanOrEqual(5);
      expect((out.match(/ closed tcp /g) ?? []).length).toBeGreaterThanOrEqual(5);
      expect(out).toContain(`${LAB.clientB}:`);
      expect(out).toContain(`-> ${LAB.vip}:80 via `);
      expect(out).toContain('client-side uplink-b');
      const seqs = lines.filter((l) => /^\d+ /.test(l)).map((l) => Number(l.split(' ')[0]));
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    }, 120000);
  });

  describe('ApplyConfig', () => {
    it('changes one service while conns of another keep flowing', async () => {
      const other = labVip(20);
      const current = (await sc.app.api.config.getConfig({})).config!;
      // A long conversation on the untouched service (tcp/VIP:80): 30 rounds, 100 ms apart.
      const talk = sc.lab.tcpEcho('client-b', LAB.vip, 80, { conns: 3, bytes: 2000, rounds: 30, intervalMs: 100 });
      await new Promise((r) => setTimeout(r, 500));
      // Meanwhile: add a service, then change its reals, then remove it — three diffs.
      const withOther = (realCount: number): Config =>
        Config.fromPartial({
          ...current,
          virtualServices: [
            ...current.virtualServices,
            {
              protocol: current.virtualServices[0].protocol,
              vip: other,
              port: 81,
              scheduler: current.virtualServices[0].scheduler,
              reals: reals.slice(0, realCount).map((r) => ({ address: r.address, port: 8081, weight: 1 })),
            },
          ],
        });
      const a = await sc.app.api.config.applyConfig({ config: withOther(1), dryRun: false });
      expect(a.diff?.virtualServices?.created).toEqual([`tcp/${other}:81`]);
      const b = await sc.app.api.config.applyConfig({ config: withOther(3), dryRun: false });
      expect(b.diff?.virtualServices?.created ?? []).toEqual([]);
      expect(b.diff?.reals?.created).toHaveLength(2);
      const c = await sc.app.api.config.applyConfig({ config: current, dryRun: false });
      expect(c.diff?.virtualServices?.deleted).toEqual([`tcp/${other}:81`]);
      const result = await talk;
      expect(result.failed).toBe(0);
      expect(result.ok).toBe(3);
      const same = await sc.app.api.config.applyConfig({ config: current, dryRun: false });
      expect(Object.values(same.diff ?? {}).flatMap((k) => [...(k?.created ?? []), ...(k?.updated ?? []), ...(k?.deleted ?? [])])).toEqual([]);
    }, 120000);
  });
});
