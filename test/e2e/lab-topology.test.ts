/**
 * The namespace lab on its own (no appliance): it builds, routes between its namespaces as drawn
 * in src/lab/topology.ts, runs the echo servers and clients, captures, and leaves nothing behind.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { parseConfig } from '../../src/config';
import { LAB, LabTopology, ROLES, DEVICES, ROOT_PORTS, type CapturedPacket } from '../../src/lab/topology';

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });
const netnsList = (): string => sh('ip', ['netns', 'list']);
const rootLinks = (): string => sh('ip', ['-br', 'link']);

describe('LabTopology', () => {
  let lab: LabTopology;

  beforeAll(() => {
    lab = LabTopology.create();
  }, 60000);

  afterAll(() => {
    lab?.destroy();
  });

  describe('construction', () => {
    it('names namespaces rt-<tag>-<role> and root ends rt<tag>ua/ub/sv, all present', () => {
      expect(lab.tag).toMatch(/^[0-9a-f]{6}$/);
      const list = netnsList();
      for (const role of ROLES) {
        expect(lab.ns(role)).toBe(`rt-${lab.tag}-${role}`);
        expect(list).toContain(lab.ns(role));
      }
      expect(ROOT_PORTS.map((p) => lab.rootDev(p))).toEqual([`rt${lab.tag}ua`, `rt${lab.tag}ub`, `rt${lab.tag}sv`]);
      for (const p of ROOT_PORTS) expect(lab.rootDev(p).length).toBeLessThanOrEqual(15);
    });

    it('leaves the root ends up, address-less, without IPv6, forwarding or ARP', () => {
      for (const p of ROOT_PORTS) {
        const dev = lab.rootDev(p);
        const [info] = JSON.parse(sh('ip', ['-j', 'addr', 'show', 'dev', dev])) as { operstate: string; flags: string[]; addr_info: unknown[] }[];
        expect(info.operstate).toBe('UP');
        expect(info.flags).toContain('NOARP');
        expect(info.addr_info).toEqual([]);
        expect(sh('sysctl', ['-n', `net.ipv6.conf.${dev}.disable_ipv6`]).trim()).toBe('1');
        expect(sh('sysctl', ['-n', `net.ipv4.conf.${dev}.forwarding`]).trim()).toBe('0');
        expect(lab.rootMac(p)).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      }
    });

    it('has no IPv6 address anywhere, TX checksum offload off on every namespace veth, all links UP', () => {
      for (const role of ROLES) {
        expect(lab.ip(role, ['-6', 'addr', 'show'])).toBe('');
        const links = JSON.parse(lab.ip(role, ['-j', 'link', 'show'])) as { ifname: string; operstate: string }[];
        expect(links.map((l) => l.ifname).sort()).toEqual(['lo', ...DEVICES[role]].sort());
        for (const l of links) if (l.ifname !== 'lo') expect(`${role}/${l.ifname} ${l.operstate}`).toBe(`${role}/${l.ifname} UP`);
        for (const dev of DEVICES[role]) {
          if (dev === 'br0') continue;
          expect(`${role}/${dev}: ${lab.exec(role, 'ethtool', ['-k', dev]).match(/tx-checksumming: \w+/)?.[0]}`).toBe(`${role}/${dev}: tx-checksumming: off`);
        }
      }
    });

    it('makes the routers forward with rp_filter 0 (all, default, per interface)', () => {
      for (const r of ['router-a', 'router-b'] as const) {
        const keys = [
          'net.ipv4.ip_forward',
          'net.ipv4.conf.all.rp_filter',
          'net.ipv4.conf.default.rp_filter',
          ...DEVICES[r].map((d) => `net.ipv4.conf.${d}.rp_filter`),
        ];
        const vals = lab
          .exec(r, 'sysctl', ['-n', ...keys])
          .trim()
          .split('\n');
        expect(vals).toEqual(['1', ...keys.slice(1).map(() => '0')]);
      }
    });

    it('routes VIPs to the appliance ports and each client net to the other router', () => {
      const via = (role: 'router-a' | 'router-b', dst: string): string => lab.ip(role, ['route', 'get', dst]);
      expect(via('router-a', LAB.vip)).toMatch(/via 198\.18\.10\.1 dev uplink/);
      expect(via('router-b', LAB.vip)).toMatch(/via 198\.18\.20\.1 dev uplink/);
      expect(via('router-a', LAB.clientB)).toMatch(/via 198\.18\.40\.2 dev inter/);
      expect(via('router-b', LAB.clientA)).toMatch(/via 198\.18\.40\.1 dev inter/);
      expect(lab.ip('client-b', ['route', 'get', LAB.vip])).toMatch(/via 198\.18\.2\.1 dev eth0/);
      expect(lab.ip('rs3', ['route', 'get', LAB.clientA])).toMatch(/via 198\.18\.30\.1 dev eth0/);
    });

    it('writes a ports: section the appliance config accepts', () => {
      const yaml = lab.applianceConfigYaml({ port: { servers: { mtu: 1400 } } });
      const cfg = parseConfig(yaml);
      expect(cfg.ports.map((p) => [p.name, p.device])).toEqual([
        ['uplink-a', `net_af_packet0,iface=${lab.rootDev('uplink-a')}`],
        ['uplink-b', `net_af_packet1,iface=${lab.rootDev('uplink-b')}`],
        ['servers', `net_af_packet2,iface=${lab.rootDev('servers')}`],
      ]);
      expect(cfg.ports[2].mtu).toBe(1400);
    });
  });

  describe('reachability', () => {
    it('client-a reaches router-a', async () => {
      expect((await lab.ping('client-a', LAB.routerA.lan, { count: 2 })).received).toBe(2);
    });

    it('router-a reaches router-b over the inter-router link', async () => {
      expect((await lab.ping('router-a', LAB.routerB.inter, { count: 2 })).received).toBe(2);
    });

    it('client-a reaches client-b through router-a then router-b', async () => {
      const cap = await lab.startCapture('router-b', 'inter', 'icmp');
      const res = await lab.ping('client-a', LAB.clientB, { count: 2 });
      const pkts = await cap.stop();
      expect(res.received).toBe(2);
      const requests = pkts.filter((p) => p.icmp?.type === 8 && p.src === LAB.clientA && p.dst === LAB.clientB);
      expect(requests).toHaveLength(2);
      expect(requests[0].srcMac).toBe(lab.mac('router-a', 'inter'));
      expect(requests[0].dstMac).toBe(lab.mac('router-b', 'inter'));
    });

    it('rs1 reaches rs2 over the bridge', async () => {
      expect((await lab.ping('rs1', LAB.rs.rs2, { count: 2 })).received).toBe(2);
    });

    it('reports loss instead of throwing', async () => {
      // Nothing answers for the appliance's uplink-a address while no appliance runs.
      const res = await lab.ping('router-a', LAB.ports['uplink-a'].addr, { count: 1, timeout: 1 });
      expect(res).toMatchObject({ transmitted: 1, received: 0 });
    });
  });

  describe('echo servers and clients', () => {
    let uplinkCap: Awaited<ReturnType<LabTopology['startCapture']>>;
    let rsCap: Awaited<ReturnType<LabTopology['startCapture']>>;

    beforeAll(async () => {
      await lab.startEchoServers();
      uplinkCap = await lab.startCapture('router-a', 'uplink');
      rsCap = await lab.startCapture('rs2', 'eth0', `host ${LAB.rs.rs1}`);
    }, 60000);

    it('echoes TCP byte-exact (rs1 → rs2)', async () => {
      const res = await lab.tcpEcho('rs1', LAB.rs.rs2, LAB.echoPort, { conns: 5, bytes: 200_000, concurrency: 5 });
      expect(res.failures).toEqual([]);
      expect(res.ok).toBe(5);
      for (const r of res.results) expect(r).toMatchObject({ ok: true, echoed: 200_000, rounds: 1, closed: true });
      expect(new Set(res.results.map((r) => r.localPort)).size).toBe(5);
    });

    it('keeps a TCP connection over several rounds', async () => {
      const res = await lab.tcpEcho('rs1', LAB.rs.rs2, LAB.echoPort, { conns: 2, bytes: 1000, rounds: 3, intervalMs: 50 });
      expect(res.failures).toEqual([]);
      expect(res.results.map((r) => r.echoed)).toEqual([3000, 3000]);
    });

    it('echoes UDP byte-exact from distinct source ports', async () => {
      const res = await lab.udpEcho('rs1', LAB.rs.rs2, LAB.echoPort, { count: 20, bytes: 1200 });
      expect(res.failures).toEqual([]);
      expect(res.ok).toBe(20);
      expect(new Set(res.results.map((r) => r.localPort)).size).toBe(20);
      expect(res.results.every((r) => r.from === `${LAB.rs.rs2}:${LAB.echoPort}`)).toBe(true);
    });

    it('names the server on the identity port, TCP and UDP', async () => {
      const tcp = await lab.who('rs1', LAB.rs.rs2, LAB.whoPort, { proto: 'tcp', count: 3 });
      expect(tcp.names).toEqual(['rs2', 'rs2', 'rs2']);
      const udp = await lab.who('rs1', LAB.rs.rs3, LAB.whoPort, { proto: 'udp', count: 2 });
      expect(udp.names).toEqual(['rs3', 'rs3']);
      expect(udp.counts).toEqual({ rs3: 2 });
    });

    it('logs the source address each server saw', () => {
      const log = lab.echoLog('rs2');
      expect(log.length).toBeGreaterThan(0);
      expect(log.every((e) => e.event === 'conn' && e.peer === LAB.rs.rs1)).toBe(true);
    });

    it('reports refused and unanswered items per item, without failing the run', async () => {
      const tcp = await lab.tcpEcho('rs1', LAB.rs.rs2, 9, { conns: 2 });
      expect(tcp).toMatchObject({ ok: 0, failed: 2 });
      expect(tcp.failures.map((f) => f.reason)).toEqual(['ECONNREFUSED', 'ECONNREFUSED']);
      const udp = await lab.udpEcho('rs1', LAB.rs.rs2, 9, { count: 1, timeoutMs: 300 });
      expect(udp.failures[0].reason).toMatch(/^timeout after 300 ms/);
      const connected = await lab.udpEcho('rs1', LAB.rs.rs2, 9, { count: 1, timeoutMs: 1000, connected: true });
      expect(connected.failures[0].reason).toBe('ECONNREFUSED');
    });

    it('captures the rs traffic on rs2 with correct checksums, and none of it on router-a', async () => {
      // Something the uplink capture must see (ARP for the absent appliance), so "nothing of the rs
      // traffic" below is not just a capture that saw nothing at all.
      await lab.ping('router-a', LAB.ports['uplink-a'].addr, { count: 1, timeout: 1 });
      const [onUplink, onRs]: CapturedPacket[][] = await Promise.all([uplinkCap.stop(), rsCap.stop()]);
      const arp = onUplink.filter((p) => p.arp?.op === 'request' && p.arp.targetIp === LAB.ports['uplink-a'].addr);
      expect(arp.length).toBeGreaterThan(0);
      expect(arp[0]).toMatchObject({ srcMac: lab.mac('router-a', 'uplink'), dstMac: 'ff:ff:ff:ff:ff:ff', src: LAB.routerAUplink });
      const rsAddrs = new Set<string>(Object.values(LAB.rs));
      expect(onUplink.filter((p) => rsAddrs.has(p.src ?? '') || rsAddrs.has(p.dst ?? ''))).toEqual([]);
      expect(onUplink.filter((p) => p.proto === 'ipv6')).toEqual([]);

      const tcp = onRs.filter((p) => p.proto === 'tcp' && p.dport === LAB.echoPort);
      const udp = onRs.filter((p) => p.proto === 'udp');
      expect(tcp.length).toBeGreaterThan(10);
      expect(udp.length).toBeGreaterThanOrEqual(40);
      expect(tcp.find((p) => p.tcpFlags === 'S')?.summary).toMatch(/Flags \[S\]/);
      const bad = onRs.filter((p) => p.ethertype === 0x0800 && (p.ipChecksumOk === false || p.l4ChecksumOk === false));
      expect(bad.map((p) => p.summary)).toEqual([]);
      expect(tcp[0].srcMac).toBe(lab.mac('rs1', 'eth0'));
      expect(tcp[0].dstMac).toBe(lab.mac('rs2', 'eth0'));
    });
  });

  describe('changes', () => {
    it('moves client-b’s VIP route to router-a and back', () => {
      lab.routeClientBVia('router-a');
      expect(lab.ip('router-b', ['route', 'get', LAB.vip])).toMatch(/via 198\.18\.40\.1 dev inter/);
      lab.routeClientBVia('router-b');
      expect(lab.ip('router-b', ['route', 'get', LAB.vip])).toMatch(/via 198\.18\.20\.1 dev uplink/);
    });

    it('sets MTUs in a namespace and on root ends', () => {
      lab.setMtu('router-a', 'uplink', 1400);
      lab.setMtu('root', 'uplink-a', 1400);
      expect(lab.ip('router-a', ['link', 'show', 'dev', 'uplink'])).toMatch(/mtu 1400/);
      expect(sh('ip', ['link', 'show', 'dev', lab.rootDev('uplink-a')])).toMatch(/mtu 1400/);
      lab.setMtu('router-a', 'uplink', 1500);
      lab.setMtu('root', 'uplink-a', 1500);
    });
  });

  describe('teardown', () => {
    it('destroy() stops the servers and removes every namespace and root link; twice is fine', () => {
      const pids = (sh('ip', ['netns', 'pids', lab.ns('rs1')]) + sh('ip', ['netns', 'pids', lab.ns('rs2')])).trim().split('\n').filter(Boolean);
      expect(pids.length).toBeGreaterThanOrEqual(2);
      const dir = lab.dir;
      lab.destroy();
      lab.destroy();
      expect(netnsList()).not.toContain(`rt-${lab.tag}-`);
      expect(rootLinks()).not.toContain(`rt${lab.tag}`);
      for (const pid of pids) expect(fs.existsSync(`/proc/${pid}`) && !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))).toBe(false);
      expect(fs.existsSync(dir)).toBe(false);
    });
  });
});

describe('LabTopology.destroyByTag', () => {
  it('removes an orphaned lab: its processes, root links and namespaces', async () => {
    const lab = LabTopology.create({ cleanupOnExit: false });
    try {
      await lab.startEchoServers();
      const removed = LabTopology.destroyByTag(lab.tag);
      expect(removed.namespaces.sort()).toEqual(ROLES.map((r) => lab.ns(r)).sort());
      expect(removed.links.sort()).toEqual(ROOT_PORTS.map((p) => lab.rootDev(p)).sort());
      expect(removed.pids.length).toBe(3);
      expect(netnsList()).not.toContain(`rt-${lab.tag}-`);
      expect(rootLinks()).not.toContain(`rt${lab.tag}`);
    } finally {
      lab.destroy();
    }
  }, 30000);
});

describe('LabTopology.create failures', () => {
  it('rejects a malformed tag', () => {
    expect(() => LabTopology.create({ tag: 'XYZ' })).toThrow(/6 lower-case hex digits/);
  });

  it('tears down what it built when a step fails, and leaves what it did not make alone', () => {
    const tag =
      'f' +
      Math.floor(Math.random() * 0xfffff)
        .toString(16)
        .padStart(5, '0');
    // A link squatting on the servers port's root name: create() fails after it has made every
    // namespace and the two uplink root ends.
    const squatter = `rt${tag}sv`;
    sh('ip', ['link', 'add', 'name', squatter, 'type', 'veth', 'peer', 'name', `rt${tag}sx`]);
    try {
      expect(() => LabTopology.create({ tag })).toThrow(new RegExp(`link add name ${squatter}`));
      expect(netnsList()).not.toContain(`rt-${tag}-`);
      const left = rootLinks()
        .split('\n')
        .filter((l) => l.includes(`rt${tag}`))
        .map((l) => l.split(/[@ ]/)[0])
        .sort();
      expect(left).toEqual([squatter, `rt${tag}sx`]);
    } finally {
      sh('ip', ['link', 'del', 'dev', squatter]);
    }
  });
});
