import os from 'node:os';
import type { Dataplane } from '../dataplane';
import { DataplaneState, LcoreRole, type SystemServiceServer } from '../gen/retrace/v1/system';
import type { Logger } from '../log';
import { unary } from './unary';
import { VERSION } from '../version';

const STATE: Record<Dataplane['state'], DataplaneState> = {
  starting: DataplaneState.DATAPLANE_STATE_STARTING,
  running: DataplaneState.DATAPLANE_STATE_RUNNING,
  stopping: DataplaneState.DATAPLANE_STATE_STOPPING,
  stopped: DataplaneState.DATAPLANE_STATE_STOPPING,
};

export function systemService(dp: Dataplane, log: Logger): SystemServiceServer {
  return {
    getSystemInfo: unary(log, 'GetSystemInfo', () => {
      const started = dp.startedAt ?? new Date();
      const upMs = Date.now() - started.getTime();
      const mp = dp.mempool();
      return {
        version: VERSION,
        dpdkVersion: dp.dpdkVersion,
        nodeVersion: process.version,
        hostname: os.hostname(),
        startedAt: started,
        uptime: { seconds: BigInt(Math.floor(upMs / 1000)), nanos: (upMs % 1000) * 1_000_000 },
        lcores: dp.lcores().map((l) => ({
          id: l.id,
          role: l.role === 'worker' ? LcoreRole.LCORE_ROLE_WORKER : LcoreRole.LCORE_ROLE_CONTROL,
          cpus: l.cpus,
          busyPolls: l.busyPolls,
          idlePolls: l.idlePolls,
        })),
        state: STATE[dp.state],
        mempool: { capacity: mp.capacity, inUse: mp.inUse, mbufSize: mp.mbufSize },
      };
    }),
  };
}
