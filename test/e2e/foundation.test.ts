/**
 * The spine end to end: a real `retrace serve` child process with a net_af_packet port on a veth
 * whose peer sits in a fresh network namespace; traffic from the namespace shows up in the port
 * counters read over gRPC; reflection and health answer; SIGTERM stops it cleanly.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { PortServiceClient } from '../../src/gen/retrace/v1/port';
import { SystemServiceClient, LcoreRole, DataplaneState } from '../../src/gen/retrace/v1/system';
import { promised } from '../../src/api/client';
import { ApplianceProcess, REPO_ROOT as ROOT } from '../../src/lab/appliance';
import { NetnsLab } from '../../src/lab/netns';
import { listServices, reflect } from '../helpers/reflection';
import { sleep, until } from '../helpers/wait';
import { GRPCURL, itWith } from '../helpers/tools';

describe('retrace serve with an af_packet port in a namespace lab', () => {
  const lab = new NetnsLab(['client'] as const);
  const app = new ApplianceProcess();
  let rootEnd: string;
  let peer: string;
  let ports: PortServiceClient;
  const healthSock = path.join(app.dir, 'health.sock');
  let system: SystemServiceClient;

  beforeAll(async () => {
    lab.addNamespaces();
    rootEnd = lab.rootName('r0');
    peer = 'eth0';
    lab.vethRoot(rootEnd, 'client', peer);
    lab.finishLinks({ client: [peer] });
    lab.ip('client', ['addr', 'add', '198.18.0.2/24', 'dev', peer]);
    lab.linksUp({ client: [peer] });
    lab.waitLinksUp(5000);
    app.start(`
health:
  listen: unix:${healthSock}
eal:
  memory_mb: 128
dataplane:
  mbufs: 4095
  max_conns: 4096
ports:
  - name: lab0
    device: net_af_packet0,iface=${rootEnd}
`);
    await app.waitServing();
    ports = new PortServiceClient(app.address, grpc.credentials.createInsecure());
    system = new SystemServiceClient(app.address, grpc.credentials.createInsecure());
  }, 60000);

  afterAll(async () => {
    ports?.close();
    system?.close();
    await app.kill();
    lab.destroy();
  });

  describe('Health', () => {
    it('reports SERVING overall and for each retrace service once the dataplane runs', async () => {
      expect(await app.healthCheck('')).toBe('SERVING');
      expect(await app.healthCheck('retrace.v1.PortService')).toBe('SERVING');
      expect(await app.healthCheck('retrace.v1.SystemService')).toBe('SERVING');
    });

    it('serves readiness ("") and liveness on the health-only port, and nothing else there', async () => {
      const Client = grpc.makeGenericClientConstructor(healthService, 'Health');
      const hc = new Client(`unix:${healthSock}`, grpc.credentials.createInsecure());
      const check = (service: string) =>
        new Promise<string>((resolve, reject) =>
          hc.check({ service }, (e: grpc.ServiceError | null, r: { status: string }) => (e ? reject(e) : resolve(r.status))),
        );
      try {
        expect(await check('')).toBe('SERVING');
        expect(await check('liveness')).toBe('SERVING');
      } finally {
        hc.close();
      }
      const sys = new SystemServiceClient(`unix:${healthSock}`, grpc.credentials.createInsecure());
      try {
        await expect(promised(sys).getSystemInfo({})).rejects.toMatchObject({
          code: grpc.status.UNIMPLEMENTED,
        });
      } finally {
        sys.close();
      }
      await expect(listServices(`unix:${healthSock}`, 'v1')).rejects.toMatchObject({ code: grpc.status.UNIMPLEMENTED });
    });

    it('answers NOT_FOUND for a service it does not serve', async () => {
      await expect(app.healthCheck('retrace.v1.Nope')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    });
  });

  describe('ListPorts', () => {
    it('lists the af_packet port with the MAC of its interface', async () => {
      const res = await promised(ports).listPorts({});
      expect(res.ports).toHaveLength(1);
      const p = res.ports[0];
      expect(p.name).toBe('lab0');
      expect(p.driver).toBe('net_af_packet');
      expect(p.device).toBe(`net_af_packet0,iface=${rootEnd}`);
      expect(p.mac).toBe(lab.mac(undefined, rootEnd));
      expect(p.rxQueues).toBe(1);
    });

    it('shows rx counters growing with traffic sent from the namespace', async () => {
      const before = (await promised(ports).listPorts({})).ports[0].stats!;
      // A static neighbour makes the kernel send every echo request straight to the port's MAC
      // (nothing answers them yet: the dataplane only counts and drops at this stage).
      lab.exec('client', 'ip', ['neigh', 'replace', '198.18.0.1', 'lladdr', lab.mac(undefined, rootEnd), 'dev', peer, 'nud', 'permanent']);
      lab.exec('client', 'ping', ['-c', '5', '-i', '0.2', '-W', '1', '198.18.0.1'], { allowFail: true });
      const after = (await promised(ports).listPorts({})).ports[0].stats!;
      expect(after.rxPackets - before.rxPackets).toBeGreaterThanOrEqual(5n);
      expect(after.rxBytes - before.rxBytes).toBeGreaterThanOrEqual(5n * 98n);
      expect(typeof after.rxPackets).toBe('bigint');
    });
  });

  describe('neighbour learning (the housekeeping thread)', () => {
    /** Context switches so far of the appliance's retrace-hk thread. */
    const hkSwitches = (): number => {
      const dir = `/proc/${app.child!.pid}/task`;
      for (const tid of fs.readdirSync(dir)) {
        if (fs.readFileSync(`${dir}/${tid}/comm`, 'utf8').trim() !== 'retrace-hk') continue;
        const st = fs.readFileSync(`${dir}/${tid}/status`, 'utf8');
        const n = (k: string) => Number(new RegExp(`^${k}:\\s*(\\d+)`, 'm').exec(st)![1]);
        return n('voluntary_ctxt_switches') + n('nonvoluntary_ctxt_switches');
      }
      throw new Error('no retrace-hk thread');
    };

    it('learns a host from its ARP request', async () => {
      // An address nobody has: the kernel broadcasts ARP requests from 198.18.0.2, which the
      // dataplane learns from (and does not answer).
      lab.exec('client', 'ping', ['-c', '1', '-W', '1', '198.18.0.9'], { allowFail: true });
      const mac = lab.mac('client', peer).toLowerCase();
      const learned = await until(
        'the host learned',
        async () => (await app.api.network.listNeighbors({})).neighbors.find((n) => n.address === '198.18.0.2'),
        (n) => n !== undefined,
        5000,
      );
      expect(learned).toMatchObject({ mac, port: 'lab0', static: false });
    });

    it('sleeps between sightings instead of waking on a timer', async () => {
      // It used to nap 200 us at a time: ~5000 wake-ups a second, on the control thread's CPU or
      // the worker's. Now it sleeps until a sighting arrives or the once-a-second ageing is due.
      const before = hkSwitches();
      await sleep(2000);
      expect(hkSwitches() - before).toBeLessThan(20);
    });
  });

  describe('GetPort', () => {
    it('returns one port by name', async () => {
      const res = await promised(ports).getPort({ name: 'lab0' });
      expect(res.port?.name).toBe('lab0');
    });

    it('answers NOT_FOUND naming the port', async () => {
      await expect(promised(ports).getPort({ name: 'nope' })).rejects.toMatchObject({
        code: grpc.status.NOT_FOUND,
        details: expect.stringContaining('nope'),
      });
    });

    it('answers INVALID_ARGUMENT naming the field when name is empty', async () => {
      await expect(promised(ports).getPort({ name: '' })).rejects.toMatchObject({
        code: grpc.status.INVALID_ARGUMENT,
        details: expect.stringMatching(/^name:/),
      });
    });
  });

  describe('GetSystemInfo', () => {
    it('reports versions, a running dataplane, the control and worker lcores and the mbuf pool', async () => {
      const info = await promised(system).getSystemInfo({});
      expect(info.dpdkVersion).toMatch(/^DPDK 22\.11/);
      expect(info.version).toBe(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
      expect(info.state).toBe(DataplaneState.DATAPLANE_STATE_RUNNING);
      expect(info.lcores.map((l) => l.role)).toEqual([LcoreRole.LCORE_ROLE_CONTROL, LcoreRole.LCORE_ROLE_WORKER]);
      expect(info.lcores[1].busyPolls + info.lcores[1].idlePolls).toBeGreaterThan(0n);
      expect(info.mempool?.capacity).toBe(4095n);
      expect(info.uptime?.seconds).toBeGreaterThanOrEqual(0n);
    });
  });

  describe('server reflection', () => {
    it.each(['v1', 'v1alpha'] as const)('lists the retrace services and health over %s', async (version) => {
      const names = await listServices(app.address, version);
      expect(names).toEqual(expect.arrayContaining(['grpc.health.v1.Health', 'retrace.v1.PortService', 'retrace.v1.SystemService']));
    });

    it('serves the file defining a service together with the well-known types it imports', async () => {
      const res = await reflect(app.address, 'v1', { file_containing_symbol: 'retrace.v1.SystemService' });
      const blobs = res.file_descriptor_response?.file_descriptor_proto ?? [];
      const text = blobs.map((b) => Buffer.from(b).toString('latin1')).join('\n');
      expect(text).toContain('retrace/v1/system.proto');
      expect(text).toContain('google/protobuf/timestamp.proto');
    });

    itWith(GRPCURL)('lets grpcurl describe and call every retrace service', () => {
      const sock = app.socket;
      const g = (...args: string[]) => execFileSync(GRPCURL.path!, ['-plaintext', '-unix', ...args], { encoding: 'utf8' });
      expect(g(sock, 'list')).toContain('retrace.v1.PortService');
      expect(g(sock, 'describe', 'retrace.v1.SystemService')).toContain('rpc GetSystemInfo');
      const info = JSON.parse(g(sock, 'retrace.v1.SystemService/GetSystemInfo'));
      expect(info.dpdkVersion).toMatch(/^DPDK/);
      const list = JSON.parse(g(sock, 'retrace.v1.PortService/ListPorts'));
      expect(list.ports[0].name).toBe('lab0');
      expect(typeof list.ports[0].stats.rxPackets).toBe('string'); // uint64 as an exact decimal string
      expect(JSON.parse(g(sock, 'grpc.health.v1.Health/Check')).status).toBe('SERVING');
    });
  });

  describe('shutdown', () => {
    it('exits 0 within a few seconds of SIGTERM', async () => {
      const res = await app.stop();
      expect(res).toMatchObject({ code: 0, signal: null });
      expect(res.ms).toBeLessThan(5000);
      expect(app.output).toContain('"msg":"stopped"');
    });
  });
});
