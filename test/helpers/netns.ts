/**
 * Network namespaces and veth pairs for lab tests. Names are unique per run; everything made is
 * recorded and removed by destroy(), which tests call from afterAll/finally.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';

export function sh(cmd: string, args: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 20000 });
  } catch (e) {
    if (opts.allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr ?? err.message}`);
  }
}

export function nsExec(ns: string, cmd: string, args: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}): string {
  return sh('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

export function linkMac(dev: string, ns?: string): string {
  const out = ns ? nsExec(ns, 'ip', ['-j', 'link', 'show', 'dev', dev]) : sh('ip', ['-j', 'link', 'show', 'dev', dev]);
  return (JSON.parse(out) as { address: string }[])[0].address;
}

export class Lab {
  /** Short random tag: veth names must fit in 15 characters. */
  readonly tag = crypto.randomBytes(3).toString('hex');
  private readonly namespaces: string[] = [];
  private readonly rootLinks: string[] = [];

  nsName(role: string): string {
    return `rt-${this.tag}-${role}`;
  }

  addNamespace(role: string): string {
    const ns = this.nsName(role);
    sh('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    nsExec(ns, 'ip', ['link', 'set', 'lo', 'up']);
    return ns;
  }

  /**
   * A veth pair with one end (`root`) left in the root namespace for the appliance's af_packet port
   * and the other moved into `ns` with `addr` (CIDR). The root end gets no address, no IPv6 and no
   * forwarding, so the host kernel stays out of the lab's traffic. TX checksum offload is switched
   * off on the namespace end so af_packet sees complete L4 checksums.
   */
  addVeth(ns: string, idx: number, addr?: string): { root: string; peer: string } {
    const root = `rt${this.tag}r${idx}`;
    const peer = `rt${this.tag}p${idx}`;
    sh('ip', ['link', 'add', root, 'type', 'veth', 'peer', 'name', peer]);
    this.rootLinks.push(root);
    sh('sysctl', ['-q', '-w', `net.ipv6.conf.${root}.disable_ipv6=1`], { allowFail: true });
    sh('sysctl', ['-q', '-w', `net.ipv4.conf.${root}.forwarding=0`], { allowFail: true });
    sh('ip', ['link', 'set', peer, 'netns', ns]);
    nsExec(ns, 'sysctl', ['-q', '-w', `net.ipv6.conf.${peer}.disable_ipv6=1`], { allowFail: true });
    nsExec(ns, 'ethtool', ['-K', peer, 'tx', 'off'], { allowFail: true });
    if (addr) nsExec(ns, 'ip', ['addr', 'add', addr, 'dev', peer]);
    nsExec(ns, 'ip', ['link', 'set', peer, 'up']);
    sh('ip', ['link', 'set', root, 'up']);
    return { root, peer };
  }

  /** Removes every namespace and root-side link this lab made. Never throws. */
  destroy(): void {
    for (const ns of this.namespaces.splice(0)) sh('ip', ['netns', 'del', ns], { allowFail: true });
    for (const l of this.rootLinks.splice(0)) sh('ip', ['link', 'del', l], { allowFail: true });
  }
}
