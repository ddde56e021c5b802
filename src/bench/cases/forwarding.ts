/**
 * Cases (1)-(3), forwarding against testpmd on the same pcap: FNAT TCP/UDP (`fnat`), ICMP echo to
 * a local address (`icmp-local`) and ICMP echo through FNAT (`icmp-fnat`).
 */
import { ClientAddressMode, UpdateVirtualServiceRequest } from '../../gen/retrace/v1/balancer';
import { Protocol, Scheduler } from '../../gen/retrace/v1/types';
import type { FlowSpec } from '../pcap';
import type { Profile } from '../profile';
import { NET, RetraceRun, type Proto } from '../retrace';
import { median, spread } from '../stats';
import { clientFlows, FWD_FLOWS, figure, measure, pcapFor, pct0, shareJudge, testpmd, tryQuiet, withBaseline, type Ctx, type Figure } from '../harness';

interface FwdSpec {
  id: string;
  label: string;
  spec: FlowSpec;
  services: Proto[];
  /** Where forwarded packets leave: servers (FNAT) or client (local echo replies). */
  out: 'servers' | 'client';
  /** A client-address mode for the TCP service (none when absent). */
  clientAddress?: ClientAddressMode;
  /** The rate reported: packets sent out (default), or packets taken in from the pcap port (when
   * the appliance sends more than it takes in, e.g. PROXY header segments). */
  rate?: 'out' | 'in';
}

async function forwarding(ctx: Ctx, f: FwdSpec): Promise<Figure> {
  const pcap = pcapFor(ctx, f.id, f.spec);
  const base: number[] = [];
  const vals: number[] = [];
  const details: Record<string, unknown>[] = [];
  let profile: Profile | undefined;
  const retrace = async (profileTag?: string) => {
    const rr = new RetraceRun({
      pcap: pcap.file,
      packets: pcap.packets,
      maxConns: Math.max(16384, f.spec.flows * 2),
      emptyPcap: ctx.emptyPcap,
      huge: ctx.huge,
    });
    try {
      await rr.start();
      await rr.setupNetwork();
      const tcpKey = { protocol: Protocol.PROTOCOL_TCP, vip: NET.vip, port: NET.vport };
      for (const p of f.services) {
        // The mode before the reals: the pcap is already replaying, and a conn keeps the mode it
        // was created with.
        const withMode = p === 'tcp' && f.clientAddress !== undefined;
        await rr.addService(p, !withMode);
        if (withMode) {
          await rr.app.api.balancer.updateVirtualService({
            ...UpdateVirtualServiceRequest.create(),
            key: tcpKey,
            scheduler: Scheduler.SCHEDULER_RR,
            seed: 0,
            limits: undefined,
            clientAddress: f.clientAddress,
          });
          await rr.setReals(p);
        }
      }
      const conns = await rr.waitConns(f.spec.flows, 30);
      const m = await measure(ctx, rr, { out: f.out, profileTag });
      // What the mode did, so a run without it cannot pass for one with it.
      const caddr =
        f.clientAddress === undefined
          ? undefined
          : await rr.app.api.balancer.getVirtualService({ key: tcpKey }).then(({ virtualService: s }) => ({
              proxyHeaders: Number(s!.proxyHeaders),
              segmentsShifted: Number(s!.segmentsShifted),
            }));
      if (caddr !== undefined && (caddr.proxyHeaders === 0 || caddr.segmentsShifted === 0))
        throw new Error(`${f.id}: the client-address mode did nothing (${JSON.stringify(caddr)})`);
      return { ...m, connsBefore: conns, caddr };
    } finally {
      await rr.stop();
    }
  };
  for (let r = 0; r < ctx.runs; r++) {
    const at = await tryQuiet(ctx, {
      label: `${f.id} run ${r + 1}`,
      run: async () => ({ tp: await testpmd(ctx, pcap), m: await retrace() }),
      judge: ({ tp, m }) => shareJudge(ctx, [tp.cpuShare, m.cpuShare], Math.max(tp.foreignCores, m.foreignCores)),
    });
    const { tp, m } = at.value;
    base.push(tp.pps);
    vals.push(f.rate === 'in' ? m.rxPps : m.pps);
    details.push({
      run: r + 1,
      testpmdPps: tp.pps,
      testpmdCpuShare: tp.cpuShare,
      testpmdForeignCores: tp.foreignCores,
      pps: m.pps,
      clientRxPps: m.rxPps,
      workerCpuShare: m.cpuShare,
      foreignCores: m.foreignCores,
      conns: m.connsBefore,
      ...(m.hugeMiB !== undefined ? { hugeMiB: m.hugeMiB, testpmdHugeMiB: tp.hugeMiB } : {}),
      ...(m.caddr !== undefined ? { clientAddress: m.caddr } : {}),
      dropsInWindow: m.drops,
      attempts: at.attempts,
      discarded: at.discarded,
      noisy: at.noisy,
    });
    ctx.log(
      `  ${f.id} run ${r + 1}: testpmd ${(tp.pps / 1e6).toFixed(2)} Mpps (cpu ${pct0(tp.cpuShare)}), retrace ${(m.pps / 1e6).toFixed(2)} Mpps (cpu ${pct0(m.cpuShare)}), conns ${m.connsBefore}, drops ${JSON.stringify(m.drops)}${at.noisy ? ' NOISY' : ''}`,
    );
  }
  // With --profile, one more retrace run (not counted) under perf.
  if (ctx.profile) {
    const m = await retrace(f.id);
    profile = m.profile;
    ctx.log(`  ${f.id} profile run: ${(m.pps / 1e6).toFixed(2)} Mpps under perf`);
  }
  const fig = withBaseline(figure({ id: f.id, label: f.label, unit: 'pps', runs: vals, chart: true }), { label: 'testpmd macswap', runs: base });
  fig.details = {
    pcap: { flows: f.spec.flows, packetsPerFlow: f.spec.packetsPerFlow, packets: pcap.packets, frameLen: pcap.frameLen },
    runs: details,
    profile,
  };
  return fig;
}

export async function caseFnat(ctx: Ctx): Promise<Figure[]> {
  const flows = FWD_FLOWS(ctx);
  const out: Figure[] = [];
  for (const kind of ['tcp', 'udp'] as const) {
    out.push(
      await forwarding(ctx, {
        id: `fnat-${kind}`,
        label: `FNAT ${kind.toUpperCase()} ${kind === 'tcp' ? 'established ' : ''}(${flows} flows, 16 packets each per pass)`,
        spec: clientFlows({ kind, flows, packetsPerFlow: 16 }),
        services: ['icmp', 'tcp', 'udp'],
        out: 'servers',
      }),
    );
  }
  // The sink check: testpmd with the net_null,no-rx=1 sink the issue names, once per run, to show
  // that the empty-pcap sink both sides use costs the same.
  const tcp = out[0];
  const pcap = pcapFor(ctx, 'fnat-tcp', clientFlows({ kind: 'tcp', flows, packetsPerFlow: 16 }));
  const nullRuns: number[] = [];
  for (let r = 0; r < Math.min(ctx.runs, 2); r++) nullRuns.push((await testpmd(ctx, pcap, 'null')).pps);
  tcp.details.testpmdNullSink = { runs: nullRuns, value: spread(nullRuns) };
  ctx.log(
    `  testpmd with net_null0,no-rx=1 as the sink: ${nullRuns.map((x) => (x / 1e6).toFixed(2)).join(', ')} Mpps (empty-pcap sink: ${(tcp.baseline!.value.median / 1e6).toFixed(2)})`,
  );
  return out;
}

export async function caseIcmpLocal(ctx: Ctx): Promise<Figure[]> {
  const flows = FWD_FLOWS(ctx);
  return [
    await forwarding(ctx, {
      id: 'icmp-local',
      label: `ICMP echo to a local address (${flows} flows, 16 requests each per pass; replies out of the pcap port)`,
      spec: clientFlows({ kind: 'icmp', flows, packetsPerFlow: 16, dst: NET.clientAddr }),
      services: ['icmp', 'tcp', 'udp'],
      out: 'client',
    }),
  ];
}

export async function caseIcmpFnat(ctx: Ctx): Promise<Figure[]> {
  const flows = FWD_FLOWS(ctx);
  return [
    await forwarding(ctx, {
      id: 'icmp-fnat',
      label: `ICMP echo through FNAT to a VIP (${flows} flows, 16 requests each per pass)`,
      spec: clientFlows({ kind: 'icmp', flows, packetsPerFlow: 16 }),
      services: ['icmp', 'tcp', 'udp'],
      out: 'servers',
    }),
  ];
}

/**
 * (1b) FNAT TCP with PROXY protocol v2 on the service beside the same without: the cost of the
 * seq/ack translation and the header segments. Every pass of the pcap repeats each flow's first data
 * segment, and with no real to acknowledge the header, each repeat sends the header again: 1 packet
 * in 16 builds a header segment, the other 15 are shifted. The rate is the packets taken in from
 * the pcap port (the appliance sends 17 for 16 with PROXY v2), for both runs.
 */
export async function caseFnatProxy(ctx: Ctx): Promise<Figure[]> {
  const flows = FWD_FLOWS(ctx);
  const spec = clientFlows({ kind: 'tcp', flows, packetsPerFlow: 16 });
  const out: Figure[] = [];
  for (const [id, mode, what] of [
    ['fnat-tcp-plain', undefined, 'client_address none'],
    ['fnat-tcp-proxy-v2', ClientAddressMode.CLIENT_ADDRESS_MODE_PROXY_V2, 'client_address PROXY v2'],
  ] as const) {
    out.push(
      await forwarding(ctx, {
        id,
        label: `FNAT TCP established, ${what} (${flows} flows, 16 packets each per pass; packets taken in per second)`,
        spec,
        services: ['tcp'],
        out: 'servers',
        clientAddress: mode,
        rate: 'in',
      }),
    );
  }
  const [off, on] = out;
  // On a shared machine the worker gets a varying share of its core: packets per second of CPU
  // the worker actually got (it busy-polls) says what a packet costs, whatever the share was.
  const perCpu = (f: Figure) => median((f.details.runs as { clientRxPps: number; workerCpuShare: number }[]).map((r) => r.clientRxPps / r.workerCpuShare));
  on.details.ratioToPlain = on.value.median / off.value.median;
  on.details.ratioToPlainPerWorkerCpu = perCpu(on) / perCpu(off);
  ctx.log(
    `  PROXY v2 on / off: ${(on.value.median / off.value.median).toFixed(3)} (median packets in per second), ${(perCpu(on) / perCpu(off)).toFixed(3)} (per second of worker CPU)`,
  );
  return out;
}
