/** GetCounters' response mapping: names, totals and 64-bit exactness through the wire format. */
import { GetCountersResponse } from '../../src/gen/retrace/v1/path';
import { toCountersResponse } from '../../src/server/path-service';

const MAX = 2n ** 64n - 1n;
const BIG = 2n ** 53n + 1n; // not representable as a double

describe('toCountersResponse', () => {
  const snap = {
    path: {
      tcp: {
        p0: { rx: BIG, tx_symmetric: MAX, tx_routed: 0n, route_divergence: 1n, asymmetric: 2n, path_changes: 3n },
        p1: { rx: BIG, tx_symmetric: 0n, tx_routed: 5n, route_divergence: 0n, asymmetric: 0n, path_changes: 0n },
      },
      udp: {},
      icmp: {},
    },
    drops: { p0: { not_for_us: MAX, tx_full: 7n }, p1: {} },
    conn: { evicted_embryonic_table: MAX, evicted_embryonic_ports: 3n },
  };

  it('maps snake_case counter names to the message fields and sums totals exactly', () => {
    const res = toCountersResponse(snap, BIG);
    expect(res.tcp?.ports.map((p) => p.port)).toEqual(['p0', 'p1']);
    expect(res.tcp?.ports[0].counters).toEqual({
      rx: BIG,
      txSymmetric: MAX,
      txRouted: 0n,
      routeDivergence: 1n,
      asymmetric: 2n,
      pathChanges: 3n,
      synCookiesSent: 0n,
      synCookiesValid: 0n,
    });
    expect(res.tcp?.total?.rx).toBe(2n * BIG);
    expect(res.tcp?.total?.txRouted).toBe(5n);
    expect(res.drops[0]).toMatchObject({ port: 'p0', counters: { notForUs: MAX, txFull: 7n, ethTruncated: 0n } });
    expect(res.connCount).toBe(BIG);
    expect(res.connTable).toEqual({ evictedEmbryonicTable: MAX, evictedEmbryonicPorts: 3n });
  });

  it('keeps every uint64 exact through encode and decode', () => {
    const res = toCountersResponse(snap, MAX);
    const back = GetCountersResponse.decode(GetCountersResponse.encode(res).finish());
    expect(back.tcp?.ports[0].counters?.txSymmetric).toBe(MAX);
    expect(back.tcp?.ports[0].counters?.rx).toBe(BIG);
    expect(back.drops[0].counters?.notForUs).toBe(MAX);
    expect(back.connCount).toBe(MAX);
    expect(back.connTable?.evictedEmbryonicTable).toBe(MAX);
  });
});
