/**
 * A spoofed SYN flood from a lab namespace: `hping3 --flood --rand-source -S`, as fast as the
 * namespace can send, each SYN from a random source address, for a fixed time. What an attacker
 * sends (issue 17); the SYN proxy's lab test (test/e2e/synproxy.test.ts) measures what a real client
 * gets meanwhile.
 */
import type { NetnsLab } from './netns';

export interface SynFloodReport {
  /** SYNs hping3 says it sent. */
  sent: number;
  durationMs: number;
}

/**
 * Floods dst:port with spoofed SYNs from `role` for `durationMs` (hping3 stopped with SIGINT by
 * coreutils `timeout`, so it prints its statistics). Resolves when it has stopped; throws if hping3
 * could not run.
 */
export async function synFlood<R extends string>(lab: NetnsLab<R>, role: R, dst: string, port: number, durationMs: number): Promise<SynFloodReport> {
  const secs = (durationMs / 1000).toFixed(1);
  const t0 = Date.now();
  const res = await lab.execAsync(role, 'timeout', ['-s', 'INT', secs, 'hping3', '--flood', '--rand-source', '-S', '-q', '-p', String(port), dst], {
    timeoutMs: durationMs + 15000,
  });
  const m = /(\d+) packets transmitted/.exec(res.stdout + res.stderr);
  // timeout exits 124 after stopping hping3 on time.
  if (m === null || (res.code !== 124 && res.code !== 0)) {
    throw new Error(`hping3 in ${lab.ns(role)} failed (exit ${res.signal ?? res.code}): ${(res.stdout + res.stderr).trim()}`);
  }
  return { sent: Number(m[1]), durationMs: Date.now() - t0 };
}
