/**
 * Child processes the benchmark started (appliances, testpmd), so that an interrupted run stops
 * them by PID instead of leaving a busy-polling process behind.
 */
import type { ChildProcess } from 'node:child_process';

const live = new Set<ChildProcess>();

export function track(c: ChildProcess): void {
  live.add(c);
  c.once('exit', () => live.delete(c));
}

export function killAll(): void {
  for (const c of live) {
    if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}
