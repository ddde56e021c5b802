/**
 * The gRPC server: retrace.v1 services over the dataplane, grpc.health.v1 and server reflection
 * (v1 and v1alpha). Handlers stay thin; see unary.ts and errors.ts.
 */
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, type ServingStatus } from 'grpc-health-check';
import type { Dataplane } from '../dataplane';
import { LoadBalancerServiceService } from '../gen/retrace/v1/balancer';
import { ConfigServiceService } from '../gen/retrace/v1/config';
import { NetworkServiceService } from '../gen/retrace/v1/network';
import { PortServiceService } from '../gen/retrace/v1/port';
import { SystemServiceService } from '../gen/retrace/v1/system';
import { HealthCheckServiceService } from '../gen/retrace/v1/health_check';
import { ProberClient } from '../health/prober-client';
import { HealthChecker, ProberPool } from './health/checker';
import { HealthEventHub } from './health/hub';
import { healthCheckService } from './health/service';
import type { Logger } from '../log';
import { balancerService } from './balancer-service';
import { ConnServiceDefinition, connService } from './conn-service';
import type { ConnEventHub } from './event-hub';
import { EventHubThread } from './event-thread';
import { ConfigManager } from './config/apply';
import { configService } from './config-service';
import { guardDecoding } from './decode-guard';
import { networkService } from './network-service';
import { PathServiceDefinition, pathService } from './path-service';
import { portService } from './port-service';
import { StatePersister } from './persist';
import { reflectionPackageDefinition } from './protos';
import { systemService } from './system-service';
import { CounterSampler } from './watch-counters';

/** Fully-qualified names of the services this server implements (health reports each). */
export const RETRACE_SERVICES = [
  'retrace.v1.SystemService',
  'retrace.v1.PortService',
  'retrace.v1.NetworkService',
  'retrace.v1.LoadBalancerService',
  'retrace.v1.PathService',
  'retrace.v1.ConnService',
  'retrace.v1.ConfigService',
  'retrace.v1.HealthCheckService',
] as const;

/**
 * Health service name that reports liveness: SERVING while the dataplane runs, drained or not
 * (a drained appliance must not be restarted by a liveness probe). "" is readiness.
 */
export const LIVENESS_SERVICE = 'liveness';

export class ApplianceServer {
  /**
   * Server-streaming calls in progress, on any service (WatchCounters, WatchConnEvents, health
   * Watch, reflection): shutdown ends whatever is still open with UNAVAILABLE, because an open
   * stream holds grpc-js' graceful shutdown until the grace runs out.
   */
  private readonly streams = new Set<grpc.ServerInterceptingCall>();
  readonly grpc = new grpc.Server({ interceptors: [(method, call) => this.track(method, call)] });
  /** Health only, plaintext, for probes (health.listen); created on listenHealth. */
  private healthServer: grpc.Server | undefined;
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING', [LIVENESS_SERVICE]: 'NOT_SERVING' });
  private boundAddress = '';
  /** Conn events: drain timer and WatchConnEvents streams; closed first on shutdown. */
  readonly events: ConnEventHub;
  /** WatchCounters: one dataplane read per tick shared by every stream; closed first on shutdown. */
  readonly counters: CounterSampler;
  /** ConfigService's state (drain); read by the metrics. */
  readonly config: ConfigManager;
  /** state.file persistence; undefined when off. */
  readonly persister: StatePersister | undefined;
  /** Health checks of reals: the prober loop (started with startHealthChecks) and its events. */
  readonly healthEvents: HealthEventHub;
  readonly healthChecker: HealthChecker;

  constructor(
    private readonly dp: Dataplane,
    private readonly log: Logger,
  ) {
    const add = <D extends grpc.ServiceDefinition, I extends object>(def: D, impl: I) =>
      this.grpc.addService(...(guardDecoding(def, impl) as [D, grpc.UntypedServiceImplementation]));
    add(SystemServiceService, systemService(dp, log));
    add(PortServiceService, portService(dp, log));
    add(NetworkServiceService, networkService(dp, log));
    this.healthEvents = new HealthEventHub(dp.config.grpc.subscriber_buffer);
    const hc = dp.config.health_checks;
    const probers = new ProberPool((netns) => new ProberClient({ netns, maxInFlight: hc.max_in_flight }, log));
    this.healthChecker = new HealthChecker(dp, probers, this.healthEvents, log, { maxInFlight: hc.max_in_flight, netns: hc.netns });
    dp.onChange(() => this.healthChecker.reconcile());
    add(
      LoadBalancerServiceService,
      balancerService(dp, log, (svc, real) => this.healthChecker.lookup(svc, real)),
    );
    add(HealthCheckServiceService, healthCheckService(this.healthEvents, this.healthChecker));
    this.counters = new CounterSampler(dp, log);
    add(PathServiceDefinition, pathService(dp, log, this.counters));
    this.events = new EventHubThread(dp, {
      historyCapacity: dp.config.grpc.event_history,
      subscriberBuffer: dp.config.grpc.subscriber_buffer,
      log,
    });
    add(ConnServiceDefinition, connService(dp, this.events, log));
    // Drain turns health NOT_SERVING (overall and per service) until Undrain.
    this.config = new ConfigManager(dp, log, {
      setDrained: (d) => {
        this.setServing(d ? 'NOT_SERVING' : 'SERVING');
        this.persister?.schedule();
      },
    });
    add(ConfigServiceService, configService(this.config, log));
    if (dp.config.state.file !== '') {
      const persister = new StatePersister(dp.config.state.file, this.config, log);
      this.persister = persister;
      dp.onChange(() => persister.schedule());
    }
    // Health too (a probe's garbage is not a bug either); reflection is a bidi stream, left alone.
    this.health.addToServer(guarded(this.grpc));
    new ReflectionService(reflectionPackageDefinition()).addToServer(this.grpc);
    this.setServing('NOT_SERVING');
  }

  private track(method: grpc.ServerMethodDefinition<unknown, unknown>, call: grpc.ServerInterceptingCallInterface): grpc.ServerInterceptingCall {
    if (!method.responseStream) return new grpc.ServerInterceptingCall(call);
    const ic: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start: (next) => next({ onCancel: () => this.streams.delete(ic) }),
      sendStatus: (st, next) => {
        this.streams.delete(ic);
        next(st);
      },
    });
    this.streams.add(ic);
    return ic;
  }

  /** Starts probing reals (once the dataplane runs). */
  startHealthChecks(): void {
    this.healthChecker.start();
  }

  /** Readiness: overall ('') and per-service health. */
  setServing(s: ServingStatus): void {
    this.health.setStatus('', s);
    for (const name of RETRACE_SERVICES) this.health.setStatus(name, s);
  }

  /** Liveness (LIVENESS_SERVICE): the dataplane runs. Drain does not touch it. */
  setLive(live: boolean): void {
    this.health.setStatus(LIVENESS_SERVICE, live ? 'SERVING' : 'NOT_SERVING');
  }

  /** Serves grpc.health.v1 alone on a second, plaintext address; resolves to the bound address. */
  async listenHealth(address: string): Promise<string> {
    this.healthServer = new grpc.Server({ interceptors: [(method, call) => this.track(method, call)] });
    this.health.addToServer(guarded(this.healthServer));
    return bind(this.healthServer, address);
  }

  /** Binds the listen address; resolves to the address actually bound (port 0 → real port). */
  async listen(address: string, credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure()): Promise<string> {
    this.boundAddress = await bind(this.grpc, address, credentials);
    return this.boundAddress;
  }

  get address(): string {
    return this.boundAddress;
  }

  /** Graceful shutdown: lets running calls finish for up to `graceMs`, then forces. */
  async shutdown(graceMs: number): Promise<void> {
    this.setServing('NOT_SERVING');
    this.setLive(false);
    // Open streams would hold tryShutdown for the whole grace: end them (UNAVAILABLE) first,
    // ours through their own paths (which stop their timers and subscriptions), then any other
    // (health Watch, reflection), which have already been sent NOT_SERVING.
    this.events.close();
    this.counters.close();
    this.healthChecker.close();
    this.healthEvents.close();
    for (const c of [...this.streams]) c.sendStatus({ code: grpc.status.UNAVAILABLE, details: 'the server is shutting down' });
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.grpc.forceShutdown();
        resolve();
      }, graceMs);
      this.grpc.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    // Last, so probes see NOT_SERVING for as long as the API drains.
    this.healthServer?.forceShutdown();
  }
}

/** A stand-in for a server whose addService decodes requests through guardDecoding. */
function guarded(server: grpc.Server): grpc.Server {
  return {
    addService: (def: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation) => server.addService(...guardDecoding(def, impl)),
  } as unknown as grpc.Server;
}

/** Server credentials from grpc.tls: plaintext, TLS, or mutual TLS. Reads the files now. */
export function serverCredentials(tls: { cert_file: string; key_file: string; client_ca_file: string }): grpc.ServerCredentials {
  if (tls.cert_file === '') return grpc.ServerCredentials.createInsecure();
  const ca = tls.client_ca_file === '' ? null : fs.readFileSync(tls.client_ca_file);
  return grpc.ServerCredentials.createSsl(ca, [{ cert_chain: fs.readFileSync(tls.cert_file), private_key: fs.readFileSync(tls.key_file) }], ca !== null);
}

async function bind(server: grpc.Server, address: string, credentials = grpc.ServerCredentials.createInsecure()): Promise<string> {
  if (address.startsWith('unix:')) {
    // A stale socket from a crashed run would make bind fail with EADDRINUSE.
    const p = address.replace(/^unix:(\/\/)?/, '');
    try {
      if (fs.statSync(p).isSocket()) fs.unlinkSync(p);
    } catch {
      // Nothing to remove.
    }
  }
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, credentials, (err, p) => (err ? reject(err) : resolve(p)));
  });
  return address.startsWith('unix:') ? address : address.replace(/:\d+$/, `:${port}`);
}
