/**
 * ConfigManager: ApplyConfig as validate -> readState -> plan -> execute (one Dataplane call per
 * step; a failure stops there and reports what was made), GetConfig, Drain and Undrain.
 * Everything runs synchronously on the control thread (every Dataplane call is synchronous), so
 * no other RPC can interleave with an ApplyConfig.
 */
import { type ServiceError } from '@grpc/grpc-js';
import { DataplaneError, serviceKeyString, type Dataplane, type RealSpec } from '../../dataplane';
import { ConfigDiff, type ApplyConfigRequest, type ApplyConfigResponse, type Config } from '../../gen/retrace/v1/config';
import { APPLIED_METADATA_KEY } from '../../api/metadata';
import type { Logger } from '../../log';
import { boundDetails, toStatus } from '../errors';
import { boundDiff, describeStep, foldChanges, planConfig, summarizeDiff, type Change, type Step } from './plan';
import { DrainState, readState, realKey, restoreWeights, toConfigMessage } from './state';
import { validateConfig } from './validate';

/** Zero weights: what the dataplane gets while drained. */
function drainedReals(reals: readonly RealSpec[]): RealSpec[] {
  return reals.map((r) => ({ ...r, weight: 0 }));
}

/** Makes one step's Dataplane call (and keeps DrainState in step with what it changes). */
function execute(dp: Dataplane, drain: DrainState, s: Step): void {
  switch (s.op) {
    case 'deleteService':
      dp.deleteService(s.key);
      drain.weights.delete(serviceKeyString(s.key));
      return;
    case 'deleteLocalAddress':
      return dp.deleteLocalAddress(s.address);
    case 'deleteRoute':
      return dp.deleteRoute(s.prefix, s.prefixLength);
    case 'deleteNeighbor':
      return dp.deleteNeighbor(s.address);
    case 'deleteAddress':
      return dp.deleteAddress(s.address);
    case 'addAddress':
      return dp.addAddress(s.address);
    case 'addRoute':
      return dp.addRoute(s.route);
    case 'addNeighbor':
      return dp.addNeighbor(s.neighbor);
    case 'addLocalAddress':
      return dp.addLocalAddress(s.localAddress);
    case 'addService':
      return dp.addService(s.service);
    case 'updateService':
      return dp.updateService(s.key, s.scheduler, s.seed, {
        limits: s.limits,
        healthCheck: s.healthCheck,
        clientAddress: s.clientAddress,
        synProxy: s.synProxy,
      });
    case 'setReals':
      if (drain.drained) {
        dp.setReals(s.key, drainedReals(s.reals));
        drain.weights.set(serviceKeyString(s.key), new Map(s.reals.map((r) => [realKey(r), r.weight])));
      } else {
        dp.setReals(s.key, s.reals);
      }
      return;
    case 'setSymmetric':
      return dp.setSymmetric(s.protocol, s.enabled);
    case 'setTimeouts':
      dp.setTimeouts(s.timeouts);
      return;
  }
}

/** ApplyConfig failed at a step after others were made: the status to answer. */
export class PartialApplyError extends Error {
  constructor(readonly status: ServiceError) {
    super(status.details);
  }
}

export { APPLIED_METADATA_KEY };

// ---------------------------------------------------------------------------------------- service

export interface ConfigServiceHooks {
  /** Called with true on Drain and false on Undrain (the server turns health to match). */
  setDrained(drained: boolean): void;
}

function requireRunning(dp: Dataplane): void {
  if (dp.state !== 'running') throw new DataplaneError('EUNAVAILABLE', `dataplane is ${dp.state}`);
}

/** The service's state and logic, apart from the grpc-js wiring (tests call it directly). */
export class ConfigManager {
  readonly drain = new DrainState();

  constructor(
    private readonly dp: Dataplane,
    private readonly log: Logger,
    private readonly hooks: ConfigServiceHooks,
  ) {}

  get drained(): boolean {
    return this.drain.drained;
  }

  getConfig(): Config {
    requireRunning(this.dp);
    return toConfigMessage(readState(this.dp, this.drain));
  }

  /** Throws ValidationError / DataplaneError before any change, PartialApplyError after some. */
  apply(req: ApplyConfigRequest): ApplyConfigResponse {
    const desired = validateConfig(
      req.config,
      this.dp.config.ports.map((p) => p.name),
      undefined,
      this.dp.connCapacity,
    );
    requireRunning(this.dp);
    const steps = planConfig(readState(this.dp, this.drain), desired);
    if (req.dryRun) return { diff: foldChanges(steps.flatMap((s) => s.changes)), dryRun: true };
    const done: Change[] = [];
    for (const step of steps) {
      try {
        execute(this.dp, this.drain, step);
      } catch (e) {
        const applied = foldChanges(done);
        const st = toStatus(e, this.log, 'ApplyConfig');
        st.details = boundDetails(`${describeStep(step)}: ${st.details} (applied before the failure: ${summarizeDiff(applied)})`);
        st.message = st.details;
        st.metadata.set(APPLIED_METADATA_KEY, Buffer.from(ConfigDiff.encode(boundDiff(applied)).finish()));
        if (done.length > 0) this.log.warn({ step: describeStep(step), applied: summarizeDiff(applied) }, 'ApplyConfig failed midway');
        throw new PartialApplyError(st);
      }
      done.push(...step.changes);
    }
    const diff = foldChanges(done);
    if (done.length > 0) this.log.info({ changes: summarizeDiff(diff) }, 'configuration applied');
    return { diff, dryRun: false };
  }

  /** Sets every non-zero weight to 0, remembering it. */
  drainAll(): { realsDrained: number; virtualServices: number } {
    requireRunning(this.dp);
    this.drain.drained = true;
    this.hooks.setDrained(true);
    let realsDrained = 0;
    let virtualServices = 0;
    for (const s of this.dp.listServices()) {
      const live = s.reals.filter((r) => r.weight > 0);
      if (live.length === 0) continue;
      this.dp.setReals(s, drainedReals(s.reals));
      const key = serviceKeyString(s);
      const mem = this.drain.weights.get(key) ?? new Map<string, number>();
      for (const r of live) mem.set(realKey(r), r.weight);
      this.drain.weights.set(key, mem);
      realsDrained += live.length;
      virtualServices++;
    }
    this.log.info({ realsDrained, virtualServices }, 'drained');
    return { realsDrained, virtualServices };
  }

  /** Gives back the remembered weights to reals still at 0. */
  undrainAll(): { realsRestored: number; virtualServices: number } {
    requireRunning(this.dp);
    let realsRestored = 0;
    let virtualServices = 0;
    for (const s of this.dp.listServices()) {
      const key = serviceKeyString(s);
      const mem = this.drain.weights.get(key);
      if (mem === undefined) continue;
      const restored = restoreWeights(s.reals, mem);
      const n = restored.filter((r, i) => r.weight !== s.reals[i].weight).length;
      if (n > 0) {
        this.dp.setReals(s, restored);
        realsRestored += n;
        virtualServices++;
      }
      this.drain.weights.delete(key);
    }
    this.drain.weights.clear();
    this.drain.drained = false;
    this.hooks.setDrained(false);
    this.log.info({ realsRestored, virtualServices }, 'undrained');
    return { realsRestored, virtualServices };
  }
}
