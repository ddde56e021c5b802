/**
 * `retrace lab demo`: the main job. Builds the namespace lab, starts the appliance, configures it
 * over gRPC, sends TCP, UDP and ping traffic from a client behind each uplink, and prints per
 * protocol which path the replies took — first with source-in, source-out on, then off. Tears
 * everything down at the end, on error, and on Ctrl-C.
 */
import { PathCounters, type GetCountersResponse } from '../gen/retrace/v1/path';
import { LabScenario, pathDelta, type Proto } from './scenario';
import { LAB, ROOT_PORTS, type Role } from './topology';

const PROTOS: Proto[] = ['tcp', 'udp', 'icmp'];
const CLIENTS: { role: Role; label: string }[] = [
  { role: 'client-a', label: 'client-a (behind uplink-a, the default route)' },
  { role: 'client-b', label: 'client-b (behind uplink-b)' },
];

interface Totals {
  rx: bigint;
  symmetric: bigint;
  routed: bigint;
  prevented: bigint;
  happened: bigint;
}

function sumPorts(c: GetCountersResponse, proto: Proto): PathCounters {
  const zero: PathCounters = PathCounters.create();
  return ROOT_PORTS.map((p) => LabScenario.portCounters(c, proto, p)).reduce(
    (a, b) => ({
      rx: a.rx + b.rx,
      txSymmetric: a.txSymmetric + b.txSymmetric,
      txRouted: a.txRouted + b.txRouted,
      routeDivergence: a.routeDivergence + b.routeDivergence,
      asymmetric: a.asymmetric + b.asymmetric,
      pathChanges: a.pathChanges + b.pathChanges,
      synCookiesSent: a.synCookiesSent + b.synCookiesSent,
      synCookiesValid: a.synCookiesValid + b.synCookiesValid,
    }),
    zero,
  );
}

function table(title: string, rows: Record<Proto, Totals>, outcome: Record<Proto, string>): string {
  const head = ['protocol', 'rx', 'symmetric', 'routed', 'triangles prevented', 'triangles that happened', 'clients'];
  const body = PROTOS.map((p) => [
    p,
    String(rows[p].rx),
    String(rows[p].symmetric),
    String(rows[p].routed),
    String(rows[p].prevented),
    String(rows[p].happened),
    outcome[p],
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 || i === cells.length - 1 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [title, line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

async function phase(sc: LabScenario, log: (s: string) => void): Promise<{ rows: Record<Proto, Totals>; outcome: Record<Proto, string> }> {
  const before = await sc.counters();
  const ok: Record<Proto, [number, number]> = { tcp: [0, 0], udp: [0, 0], icmp: [0, 0] };
  for (const c of CLIENTS) {
    const t = await sc.lab.tcpEcho(c.role, LAB.vip, 80, { conns: 20, bytes: 4000 });
    const u = await sc.lab.udpEcho(c.role, LAB.vip, 80, { count: 20 });
    const p = await sc.lab.ping(c.role, LAB.vip, { count: 5, interval: 0.1 });
    ok.tcp[0] += t.ok;
    ok.tcp[1] += t.ok + t.failed;
    ok.udp[0] += u.ok;
    ok.udp[1] += u.ok + u.failed;
    ok.icmp[0] += p.received;
    ok.icmp[1] += p.transmitted;
    log(`  ${c.label}: tcp ${t.ok}/${t.ok + t.failed} conns echoed, udp ${u.ok}/${u.ok + u.failed} datagrams, ping ${p.received}/${p.transmitted} replies`);
  }
  const after = await sc.counters();
  const rows = {} as Record<Proto, Totals>;
  const outcome = {} as Record<Proto, string>;
  for (const p of PROTOS) {
    const d = pathDelta(sumPorts(after, p), sumPorts(before, p));
    rows[p] = { rx: d.rx, symmetric: d.txSymmetric, routed: d.txRouted, prevented: d.routeDivergence, happened: d.asymmetric };
    outcome[p] = `${ok[p][0]}/${ok[p][1]} ok`;
  }
  return { rows, outcome };
}

export async function runDemo(log: (s: string) => void = (s) => process.stdout.write(`${s}\n`)): Promise<number> {
  let sc: LabScenario | undefined;
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    log('\ninterrupted: tearing the lab down');
    void (sc?.destroy() ?? Promise.resolve()).then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    log('retrace lab demo: replies retrace the request path');
    log('building the lab (network namespaces, routers, real servers) and starting the appliance...');
    sc = await LabScenario.start({ log: (s) => log(`  ${s}`) });
    const reals = Object.values(LAB.rs).map((address) => ({ address, port: LAB.echoPort }));
    await sc.addService('tcp', LAB.vip, 80, 'rr', reals);
    await sc.addService('udp', LAB.vip, 80, 'rr', reals);
    await sc.addService(
      'icmp',
      LAB.vip,
      0,
      'rr',
      Object.values(LAB.rs).map((address) => ({ address, port: 0 })),
    );
    log(`  services on VIP ${LAB.vip}: tcp/80 and udp/80 -> rs1..rs3:${LAB.echoPort}, icmp echo -> rs1..rs3 (round robin)`);

    log('\nphase 1: source-in, source-out ON for tcp, udp and icmp');
    const on = await phase(sc, log);
    for (const p of PROTOS) await sc.setSymmetric(p, false);
    log('\nphase 2: source-in, source-out OFF (replies follow the default route via router-a)');
    const off = await phase(sc, log);
    for (const p of PROTOS) await sc.setSymmetric(p, true);

    log('');
    log(table('ON  - replies leave by the port and toward the MAC their request came from:', on.rows, on.outcome));
    log('');
    log(table("OFF - replies are routed; client-b's go out by uplink-a (a triangle):", off.rows, off.outcome));
    log('');
    log("symmetric = sent with the conn's recorded port/MAC; routed = route + ARP lookup;");
    log('triangles prevented = symmetric sends where the route would have picked another port;');
    log('triangles that happened = routed replies that left by another port than their request came in on.');
    log('(with OFF, client-b still gets its replies: router-a forwards them to router-b over their own link.)');
    return 0;
  } catch (e) {
    log(`demo failed: ${e instanceof Error ? e.message : String(e)}`);
    if (sc?.app.output) log(`appliance output (last lines):\n${sc.app.output.split('\n').slice(-20).join('\n')}`);
    return 1;
  } finally {
    if (!interrupted) {
      await sc?.destroy();
      log('lab torn down.');
    }
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}
