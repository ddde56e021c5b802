/**
 * What start() and stop() derive from the appliance config beyond the EAL argv (eal.ts): the
 * addon's start() argument, and the EAL runtime directory to remove afterwards.
 */
import fs from 'node:fs';
import path from 'node:path';
import { deviceName, type Config } from '../config';
import type { NativeConf } from './binding';
import { filePrefix, kernelDevname } from './eal';

/** Maps the appliance config onto the addon's start() argument. */
export function nativeConf(cfg: Config): NativeConf {
  return {
    mbufs: cfg.dataplane.mbufs,
    mbufCache: cfg.dataplane.mbuf_cache,
    burst: cfg.dataplane.burst,
    idlePauseAfter: cfg.dataplane.idle.pause_after,
    idleSleepAfter: cfg.dataplane.idle.sleep_after,
    idleSleepUs: cfg.dataplane.idle.sleep_us,
    maxConns: cfg.dataplane.max_conns,
    icmpRate: cfg.dataplane.icmp_rate,
    icmpBurst: cfg.dataplane.icmp_burst,
    eventRing: cfg.dataplane.event_ring,
    evictEmbryonic: cfg.dataplane.table_pressure.evict_embryonic,
    pressureConnsPercent: cfg.dataplane.table_pressure.conns_percent,
    pressurePortsPercent: cfg.dataplane.table_pressure.ports_percent,
    evictMinAgeMs: cfg.dataplane.table_pressure.min_age_ms,
    ports: cfg.ports.map((p, i) => ({
      name: p.name,
      devname: deviceName(p.device),
      mtu: p.mtu,
      rxDesc: p.rx_desc,
      txDesc: p.tx_desc,
      mac: p.mac,
      promiscuous: p.promiscuous,
      kernel: p.kernel && { devname: kernelDevname(i), queue: p.kernel.queue, rate: p.kernel.rate, burst: p.kernel.burst },
    })),
  };
}

/**
 * EAL leaves /var/run/dpdk/<file-prefix> (or $XDG_RUNTIME_DIR/dpdk/<prefix> for non-root) behind
 * even with --no-shconf; with a prefix per process they would pile up.
 */
export function removeEalRuntimeDir(cfg: Config): void {
  const base = process.getuid?.() === 0 ? '/var/run/dpdk' : path.join(process.env.XDG_RUNTIME_DIR ?? '/tmp', 'dpdk');
  try {
    fs.rmSync(path.join(base, filePrefix(cfg, process.pid)), { recursive: true, force: true });
  } catch {
    // Best effort: a leftover directory is harmless.
  }
}
