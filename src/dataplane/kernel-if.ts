/**
 * The Linux side of the ports' kernel interfaces (native/dp_kni.c is the dataplane side).
 *
 * EAL creates each interface (a net_tap, `--vdev net_tap_kni<i>,iface=<name>`) in the appliance's
 * own network namespace when it starts. Then, with iproute2, as an operator would: the interface
 * moves to its namespace (ports[].kernel.netns, when set), takes the port's MAC (so the kernel's
 * frames carry the port's MAC and the port's peers see one host) and MTU, IPv6 off (the dataplane
 * forwards IPv4 and ARP only), link up; and it carries the port's addresses, kept in step with the
 * address table by every address change (one `ip addr` per change, before the change returns).
 * net_tap's own ioctls work by name in the appliance's namespace, so nothing here goes through
 * DPDK once the interface has moved. The interface disappears when the appliance closes it.
 *
 * Routes beyond the connected prefixes are not copied: what the host reaches through its kernel
 * interfaces is the host's routing (a BGP speaker needs only its directly connected peer).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type { Config } from '../config';
import { DataplaneError } from './errors';

const IP_TIMEOUT_MS = 10000;

export interface KernelInterfaceSpec {
  port: string;
  name: string;
  netns: string;
}

export class KernelInterfaces {
  private readonly byPort = new Map<string, KernelInterfaceSpec>();

  constructor(cfg: Config) {
    for (const p of cfg.ports) {
      if (p.kernel !== undefined) this.byPort.set(p.name, { port: p.name, name: p.kernel.name, netns: p.kernel.netns });
    }
  }

  get size(): number {
    return this.byPort.size;
  }

  /** The port's kernel interface, if it has one. */
  of(port: string): KernelInterfaceSpec | undefined {
    return this.byPort.get(port);
  }

  private ip(k: KernelInterfaceSpec, args: string[]): void {
    const argv = k.netns === '' ? args : ['-n', k.netns, ...args];
    try {
      execFileSync('ip', argv, { stdio: ['ignore', 'ignore', 'pipe'], timeout: IP_TIMEOUT_MS });
    } catch (e) {
      const stderr = String((e as { stderr?: Buffer }).stderr ?? '').trim();
      throw new DataplaneError('EIO', `kernel interface ${k.name} of port ${k.port}: ip ${argv.join(' ')}: ${stderr || (e as Error).message}`);
    }
  }

  /** After the dataplane started: namespace, MAC, MTU, IPv6 off, up. `ports` gives MAC and MTU. */
  setup(ports: { name: string; mac: string; mtu: number }[]): void {
    for (const k of this.byPort.values()) {
      const p = ports.find((x) => x.name === k.port);
      if (p === undefined) throw new DataplaneError('ENOENT', `kernel interface ${k.name}: no port ${k.port}`);
      if (k.netns !== '') {
        try {
          execFileSync('ip', ['link', 'set', 'dev', k.name, 'netns', k.netns], { stdio: ['ignore', 'ignore', 'pipe'], timeout: IP_TIMEOUT_MS });
        } catch (e) {
          const stderr = String((e as { stderr?: Buffer }).stderr ?? '').trim();
          throw new DataplaneError(
            'EIO',
            `kernel interface ${k.name} of port ${k.port}: cannot move it to netns ${k.netns}: ${stderr || (e as Error).message}`,
          );
        }
      }
      this.disableIpv6(k);
      this.ip(k, ['link', 'set', 'dev', k.name, 'address', p.mac, 'mtu', String(p.mtu), 'up']);
    }
  }

  private disableIpv6(k: KernelInterfaceSpec): void {
    const key = `net.ipv6.conf.${k.name}.disable_ipv6`;
    try {
      if (k.netns === '') fs.writeFileSync(`/proc/sys/net/ipv6/conf/${k.name}/disable_ipv6`, '1');
      else execFileSync('ip', ['netns', 'exec', k.netns, 'sysctl', '-qw', `${key}=1`], { stdio: 'ignore', timeout: IP_TIMEOUT_MS });
    } catch {
      // A kernel without IPv6 has nothing to turn off; the dataplane drops IPv6 frames anyway.
    }
  }

  /** The port's address appears on its kernel interface (no-op without one). */
  addAddress(port: string, address: string, prefixLength: number): void {
    const k = this.byPort.get(port);
    if (k !== undefined) this.ip(k, ['addr', 'replace', `${address}/${prefixLength}`, 'dev', k.name]);
  }

  /** The address leaves the port's kernel interface; already gone is fine. */
  deleteAddress(port: string, address: string, prefixLength: number): void {
    const k = this.byPort.get(port);
    if (k === undefined) return;
    try {
      this.ip(k, ['addr', 'del', `${address}/${prefixLength}`, 'dev', k.name]);
    } catch (e) {
      if (!/Cannot assign requested address|not found/i.test((e as Error).message)) throw e;
    }
  }
}
