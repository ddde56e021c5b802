/**
 * Case (6), `conn-events`: the new-conns burst with one WatchConnEvents / WatchConnEventBatches
 * subscriber: events/s received, losses reported and unreported, and the control thread's
 * responsiveness meanwhile.
 */
import { figure, foreignJudge, tryQuiet, type Ctx, type Figure } from '../harness';
import { newConnsPcap, newConnsRun } from './new-conns';

export async function caseConnEvents(ctx: Ctx): Promise<Figure[]> {
  const syn = newConnsPcap(ctx);
  const { flows } = syn;
  const out: Figure[] = [];
  // The default per-stream buffer (grpc.subscriber_buffer 4096), and one large enough to hold the
  // whole burst, which shows how fast the stream itself drains.
  for (const v of [
    { id: '-batches', buffer: 4096, batch: 4096, rpc: 'WatchConnEventBatches', what: 'max_batch 4096, grpc.subscriber_buffer 4096 (default)' },
    { id: '', buffer: 4096, batch: undefined, rpc: 'WatchConnEvents', what: 'one event per message, grpc.subscriber_buffer 4096 (default)' },
    { id: '-buffer-1m', buffer: 1 << 20, batch: undefined, rpc: 'WatchConnEvents', what: 'one event per message, grpc.subscriber_buffer 1048576' },
  ]) {
    const perS: number[] = [];
    const conns: number[] = [];
    const lost: number[] = [];
    const unreported: number[] = [];
    const unreportedNext: number[] = [];
    const unaryP99: number[] = [];
    const healthOk: number[] = [];
    const runs: unknown[] = [];
    for (let r = 0; r < ctx.runs; r++) {
      const at = await tryQuiet(ctx, {
        label: `conn-events${v.id} run ${r + 1}`,
        run: () => newConnsRun(ctx, { syn, watch: { subscriberBuffer: v.buffer, maxBatch: v.batch } }),
        judge: (res) => foreignJudge(ctx, res.foreignCores),
      });
      const res = at.value;
      const e = res.events!;
      perS.push(e.perS);
      conns.push(res.connsPerS);
      lost.push(Object.values(e.lost).reduce((x, y) => x + y, 0));
      unreported.push(e.unreported);
      unreportedNext.push(e.unreportedAfterNextEvent);
      const rs = res.responsiveness!;
      unaryP99.push(rs.p99);
      healthOk.push(rs.probes > 0 ? (100 * rs.probesOk) / rs.probes : NaN);
      runs.push({ run: r + 1, ...res, attempts: at.attempts, discarded: at.discarded, noisy: at.noisy });
      ctx.log(
        `  conn-events${v.id} run ${r + 1}${at.noisy ? ' (NOISY)' : ''}: ${e.received} of ${e.produced} events received at ${(e.perS / 1e3).toFixed(0)}k/s over ${e.streamSeconds.toFixed(2)} s; lost reported ${JSON.stringify(e.lost)}; unreported at the end of the burst ${e.unreported}, after one more event ${e.unreportedAfterNextEvent} (lost then ${JSON.stringify(e.lostAfterNextEvent)}); conns ${(res.connsPerS / 1e6).toFixed(2)} M/s, created ${res.created}${e.error ? `; stream error ${e.error}` : ''}; meanwhile GetTimeouts p50 ${rs.p50.toFixed(2)} p99 ${rs.p99.toFixed(2)} max ${rs.max.toFixed(1)} ms (${rs.calls} calls, ${rs.errors} errors), health ${rs.probesOk}/${rs.probes}`,
      );
    }
    const f1 = figure({
      id: `conn-events${v.id}`,
      label: `Conn events/s received by one ${v.rpc} subscriber during new-conns (${flows} conns), ${v.what}`,
      unit: 'events/s',
      runs: perS,
    });
    f1.details = { flows, subscriberBuffer: v.buffer, maxBatch: v.batch, runs };
    out.push(f1);
    out.push(
      figure({
        id: `conn-events${v.id}-lost`,
        label: `Conn events reported lost in the stream (LostEvents), ${v.what}`,
        unit: 'events',
        runs: lost,
        higherIsBetter: false,
      }),
    );
    out.push(
      figure({
        id: `conn-events${v.id}-unreported`,
        label: `Conn events neither received nor reported, once the burst is over, ${v.what}`,
        unit: 'events',
        runs: unreported,
        higherIsBetter: false,
      }),
    );
    out.push(
      figure({
        id: `conn-events${v.id}-unreported-next`,
        label: `The same after one more event, ${v.what}`,
        unit: 'events',
        runs: unreportedNext,
        higherIsBetter: false,
      }),
    );
    out.push(figure({ id: `new-conns-watched${v.id}`, label: `New TCP conns/s while the subscriber watches, ${v.what}`, unit: 'conns/s', runs: conns }));
    out.push(
      figure({
        id: `conn-events${v.id}-unary-p99`,
        label: `Unary (GetTimeouts) p99 from SetReals until the stream went quiet, ${v.what}`,
        unit: 'ms',
        runs: unaryP99,
        higherIsBetter: false,
      }),
    );
    out.push(
      figure({
        id: `conn-events${v.id}-health-ok`,
        label: `Health probes answered SERVING within 1 s over the same time, ${v.what}`,
        unit: '%',
        runs: healthOk,
      }),
    );
  }
  return out;
}
