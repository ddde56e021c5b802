/**
 * What every client subcommand shares: the server address (--server, $RETRACE_SERVER, the config
 * file's grpc.listen, or 127.0.0.1:50051), promise-based gRPC clients, and the two ways a command
 * fails: UsageError (exit 2) and a gRPC status (exit 1, printed as `CODE_NAME: details`).
 */
import * as grpc from '@grpc/grpc-js';
import type { Command } from 'commander';
import { ConfigError, loadConfig } from '../config';
import { APPLIED_METADATA_KEY, connect, isServiceError, type ApiClient } from '../api/client';
import { ConfigDiff } from '../gen/retrace/v1/config';
import { formatDiff } from './format';

export { isServiceError };

export const DEFAULT_SERVER = '127.0.0.1:50051';

/** Bad command-line usage: exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface ServerOptions {
  server?: string;
  config?: string;
}

/** Adds --server and --config to a client subcommand. */
export function serverOptions(cmd: Command): Command {
  return cmd
    .option(
      '-s, --server <address>',
      `appliance gRPC address: host:port or unix:/path (default: $RETRACE_SERVER, else grpc.listen of --config, else ${DEFAULT_SERVER})`,
    )
    .option('-c, --config <file>', 'appliance configuration file to read grpc.listen from');
}

/**
 * The address to dial. A wildcard listen address (0.0.0.0, [::]) in the config file is dialled on
 * loopback.
 */
export function serverAddress(opts: ServerOptions, env: NodeJS.ProcessEnv = process.env): string {
  if (opts.server !== undefined && opts.server !== '') return opts.server;
  if (env.RETRACE_SERVER) return env.RETRACE_SERVER;
  if (opts.config !== undefined) {
    const listen = loadConfig({ file: opts.config }).grpc.listen;
    return listen.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
  }
  return DEFAULT_SERVER;
}

export type Api = ApiClient;

/**
 * Largest response the CLI takes: GetConfig and an ApplyConfig diff of a large configuration pass
 * the 4 MiB gRPC default (about 200 000 reals).
 */
const MAX_RESPONSE_BYTES = 256 * 1024 * 1024;

/** Runs a command body with clients for the resolved server, closing them afterwards. */
export async function withApi<T>(opts: ServerOptions, fn: (api: Api) => Promise<T>): Promise<T> {
  const api = connect(serverAddress(opts), { channelOptions: { 'grpc.max_receive_message_length': MAX_RESPONSE_BYTES } });
  try {
    return await fn(api);
  } finally {
    api.close();
  }
}

/** `INVALID_ARGUMENT: config.routes[0].port: ...`, plus what a failed ApplyConfig applied. */
export function describeServiceError(e: grpc.ServiceError): string {
  const name = grpc.status[e.code] ?? String(e.code);
  const details = e.details || e.message;
  const applied = e.metadata?.get(APPLIED_METADATA_KEY)[0];
  if (!(applied instanceof Buffer)) return `${name}: ${details}`;
  // The details end in a one-line summary of the same: print the full list instead.
  const diff = ConfigDiff.decode(applied);
  let out = `${name}: ${details.replace(/ \(applied before the failure: .*\)$/, '')}`;
  out += `\napplied before the failure:\n${formatDiff(diff) || '  nothing'}`;
  return out;
}

/** Exit code and message for an error a command threw. */
export function failure(e: unknown): { code: number; message: string } {
  if (e instanceof UsageError || e instanceof ConfigError) return { code: 2, message: e.message };
  if (isServiceError(e)) return { code: 1, message: describeServiceError(e) };
  return { code: 1, message: e instanceof Error ? e.message : String(e) };
}
