/**
 * retrace.v1.ConfigService: the desired state as one document, applied as a diff, and drain. This
 * file is the grpc-js wiring; the work is in config/:
 *   validate.ts  validateConfig (pure): the whole document, each entry and then the whole
 *                (invariants.ts, the rules every unary call obeys too); nothing changed yet
 *   state.ts     readState: the current desired state, from Dataplane list/get calls only;
 *                DrainState, the weights Drain remembers
 *   plan.ts      planConfig (pure): current + desired -> ordered steps with their diff entries
 *   apply.ts     ConfigManager: execute, one Dataplane call per step (a failure stops there and
 *                reports what was made), GetConfig, Drain, Undrain
 */
import { type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { type ApplyConfigRequest, type ApplyConfigResponse, type ConfigServiceServer } from '../gen/retrace/v1/config';
import type { Logger } from '../log';
import { toStatus } from './errors';
import { unary } from './unary';
import { ConfigManager, PartialApplyError } from './config/apply';

export function configService(manager: ConfigManager, log: Logger): ConfigServiceServer {
  return {
    // Not through unary(): a failure after some steps carries its own status and metadata.
    applyConfig: (call: ServerUnaryCall<ApplyConfigRequest, ApplyConfigResponse>, callback: sendUnaryData<ApplyConfigResponse>) => {
      try {
        callback(null, manager.apply(call.request));
      } catch (e) {
        callback(e instanceof PartialApplyError ? e.status : toStatus(e, log, 'ApplyConfig'));
      }
    },
    getConfig: unary(log, 'GetConfig', () => ({ config: manager.getConfig(), drained: manager.drained })),
    drain: unary(log, 'Drain', () => manager.drainAll()),
    undrain: unary(log, 'Undrain', () => manager.undrainAll()),
  };
}
