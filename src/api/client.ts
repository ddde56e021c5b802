/**
 * The one client of the retrace API that the CLI, the lab, the benchmarks and the tests share:
 * a promise per unary call, the raw ts-proto clients for streams, grpc.health.v1, and the
 * metadata keys the server and its clients agree on. Nothing here knows about processes or labs.
 */
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { LoadBalancerServiceClient } from '../gen/retrace/v1/balancer';
import { ConfigServiceClient } from '../gen/retrace/v1/config';
import { ConnServiceClient } from '../gen/retrace/v1/conn';
import { NetworkServiceClient } from '../gen/retrace/v1/network';
import { PathServiceClient } from '../gen/retrace/v1/path';
import { PortServiceClient } from '../gen/retrace/v1/port';
import { SystemServiceClient } from '../gen/retrace/v1/system';
import { HealthCheckServiceClient } from '../gen/retrace/v1/health_check';

export { APPLIED_METADATA_KEY } from './metadata';

/** Deadline of a unary call unless the caller gives one. */
export const DEFAULT_TIMEOUT_MS = 10000;

type UnaryMethod<Req, Res> = (
  req: Req,
  md: grpc.Metadata,
  opts: Partial<grpc.CallOptions>,
  cb: (e: grpc.ServiceError | null, r: Res) => void,
) => grpc.ClientUnaryCall;

/** The unary methods of a ts-proto grpc-js client, as (request, timeoutMs?) => Promise<response>. */
export type Promised<C> = {
  [K in keyof C as C[K] extends UnaryMethod<infer _Q, infer _R> ? K : never]: C[K] extends UnaryMethod<infer Q, infer R>
    ? (req: Q, timeoutMs?: number) => Promise<R>
    : never;
};

/** Wraps a client's unary methods; each call gets a deadline (default DEFAULT_TIMEOUT_MS). */
export function promised<C extends grpc.Client>(client: C): Promised<C> {
  return new Proxy({} as Promised<C>, {
    get(_t, name: string) {
      const fn = (client as unknown as Record<string, unknown>)[name];
      if (typeof fn !== 'function') return undefined;
      return (req: unknown, timeoutMs = DEFAULT_TIMEOUT_MS) =>
        new Promise((resolve, reject) => {
          (fn as UnaryMethod<unknown, unknown>).call(client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (e, r) =>
            e ? reject(e) : resolve(r),
          );
        });
    },
  });
}

/** Every retrace service, promised, plus the raw ConnService client for its streams. */
export interface ApiClient {
  network: Promised<NetworkServiceClient>;
  balancer: Promised<LoadBalancerServiceClient>;
  path: Promised<PathServiceClient>;
  ports: Promised<PortServiceClient>;
  system: Promised<SystemServiceClient>;
  config: Promised<ConfigServiceClient>;
  conns: Promised<ConnServiceClient>;
  /** The raw clients, for streams (WatchConnEvents, WatchCounters, ...). */
  raw: { conns: ConnServiceClient; path: PathServiceClient; healthChecks: HealthCheckServiceClient };
  /** grpc.health.v1 Check: the serving status of `service` ("" = the whole appliance). */
  health(service?: string, timeoutMs?: number): Promise<string>;
  close(): void;
}

export interface ConnectOptions {
  /** Default: plaintext. */
  credentials?: grpc.ChannelCredentials;
  /** Channel options (e.g. 'grpc.max_receive_message_length'). */
  channelOptions?: grpc.ChannelOptions;
}

/** Clients of every service at `address` (host:port or unix:/path), sharing one channel. */
export function connect(address: string, opts: ConnectOptions = {}): ApiClient {
  const creds = opts.credentials ?? grpc.credentials.createInsecure();
  const clients: grpc.Client[] = [];
  const mk = <C extends grpc.Client>(Ctor: new (addr: string, c: grpc.ChannelCredentials, o?: grpc.ChannelOptions) => C): C => {
    // Clients built with the same address, credentials and options share a subchannel in grpc-js.
    const c = new Ctor(address, creds, opts.channelOptions);
    clients.push(c);
    return c;
  };
  const conns = mk(ConnServiceClient);
  const path = mk(PathServiceClient);
  const Health = grpc.makeGenericClientConstructor(healthService, 'Health');
  const health = mk(Health) as unknown as grpc.Client & {
    check(req: { service: string }, opts: Partial<grpc.CallOptions>, cb: (e: grpc.ServiceError | null, r: { status: string }) => void): void;
  };
  return {
    network: promised(mk(NetworkServiceClient)),
    balancer: promised(mk(LoadBalancerServiceClient)),
    path: promised(path),
    ports: promised(mk(PortServiceClient)),
    system: promised(mk(SystemServiceClient)),
    config: promised(mk(ConfigServiceClient)),
    conns: promised(conns),
    raw: { conns, path, healthChecks: mk(HealthCheckServiceClient) },
    health: (service = '', timeoutMs = 2000) =>
      new Promise((resolve, reject) => health.check({ service }, { deadline: Date.now() + timeoutMs }, (e, r) => (e ? reject(e) : resolve(r.status)))),
    close: () => clients.forEach((c) => c.close()),
  };
}

/** True for the errors grpc-js reports a call's status with. */
export function isServiceError(e: unknown): e is grpc.ServiceError {
  return e instanceof Error && typeof (e as grpc.ServiceError).code === 'number' && 'metadata' in e;
}
