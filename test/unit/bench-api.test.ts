/**
 * The api case's account of its own client (src/bench/cases/api.ts clientGcShare): which of the
 * slowest calls overlapped a GC pause of the process making them.
 */
import { clientGcShare } from '../../src/bench/cases/api';

describe('clientGcShare', () => {
  // 100 calls of 0.2 ms, 1 s apart, except calls 10 and 50 (5 ms): those two are the p99 and above.
  const calls: [number, number][] = Array.from({ length: 100 }, (_, i) => [i, i === 10 || i === 50 ? 5 : 0.2]);

  it('counts the slow calls that overlap a pause, and sums the pauses', () => {
    // One pause inside call 10 (starts 1 ms into it), one between calls, one ending just before 50.
    const gcs: [number, number][] = [
      [10.001, 3],
      [20.5, 2],
      [49.99, 9.9],
    ];
    expect(clientGcShare(calls, gcs)).toEqual({ pauses: 3, totalMs: 14.9, maxMs: 9.9, slowCalls: 2, slowInGc: 1 });
  });

  it('counts a pause that began before a slow call and runs into it', () => {
    expect(clientGcShare(calls, [[49.999, 2]]).slowInGc).toBe(1);
  });

  it('reports no pauses as none', () => {
    expect(clientGcShare(calls, [])).toEqual({ pauses: 0, totalMs: 0, maxMs: 0, slowCalls: 2, slowInGc: 0 });
  });
});
