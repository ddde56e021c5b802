/**
 * One mapping from failures to gRPC status codes, used by every handler: validation errors name
 * their field, dataplane errno codes map to their meaning, anything else is INTERNAL with a log line
 * (never a raw throw for grpc-js to turn into UNKNOWN, never CANCELLED).
 */
import { status, type ServiceError, Metadata } from '@grpc/grpc-js';
import { DataplaneError } from '../dataplane';
import type { Logger } from '../log';

/** A request field failed validation; nothing was changed. */
export class ValidationError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'ValidationError';
  }
}

/** A well-formed request that asks for something beyond what exists (a seq not yet assigned). */
export class OutOfRangeError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'OutOfRangeError';
  }
}

/** A well-formed request the current state refuses, with the code to answer and the field at fault. */
export class StatusError extends Error {
  constructor(
    readonly code: status,
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'StatusError';
  }
}

/** Characters of a value an error message echoes; a longer value is cut (see echo). */
export const ECHO_MAX = 64;

/**
 * A value as error messages quote it: in double quotes, non-printable and non-ASCII characters
 * escaped (\uXXXX), and cut after ECHO_MAX characters with the full length given:
 * `"aaaa..." (100000 characters)`. A status must stay small: clients drop large ones.
 */
export function echo(value: string): string {
  const cut = value.length > ECHO_MAX;
  const head = cut ? value.slice(0, ECHO_MAX) : value;
  const quoted = JSON.stringify(head).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return cut ? `${quoted.slice(0, -1)}..." (${value.length} characters)` : quoted;
}

/**
 * Most bytes of a status message on the wire (grpc-message, percent-encoded). Echoed values are
 * cut already; this bounds whatever else a message might carry, so that status plus trailers
 * stay far below the 8 KiB of metadata that gRPC's C core accepts by default (and grpc-js's own
 * limit, 64 KiB of headers).
 */
export const MAX_DETAILS_BYTES = 2048;

export function boundDetails(details: string): string {
  if (encodeURI(details).length <= MAX_DETAILS_BYTES) return details;
  let n = Math.min(details.length, MAX_DETAILS_BYTES);
  const suffix = ` ... (cut: ${details.length} characters)`;
  while (n > 0 && encodeURI(details.slice(0, n) + suffix).length > MAX_DETAILS_BYTES) n = Math.floor(n * 0.9);
  return details.slice(0, n) + suffix;
}

const ERRNO_STATUS: Record<string, status> = {
  ENOENT: status.NOT_FOUND,
  EEXIST: status.ALREADY_EXISTS,
  EINVAL: status.INVALID_ARGUMENT,
  // Too many items in one request (more reals than a service holds).
  E2BIG: status.INVALID_ARGUMENT,
  ENOSPC: status.RESOURCE_EXHAUSTED,
  ENOMEM: status.RESOURCE_EXHAUSTED,
  // Dataplane not running: Dataplane checks its own state before every native call.
  EUNAVAILABLE: status.UNAVAILABLE,
  // The object is in use (a local address whose ports conns still hold). The native layer also
  // answers EBUSY when it is not running, but Dataplane turns that case into EUNAVAILABLE first.
  EBUSY: status.FAILED_PRECONDITION,
  // Not allowed in the current state (deleting the connected route of an address).
  EPERM: status.FAILED_PRECONDITION,
  ENOTSUP: status.UNIMPLEMENTED,
};

export function serviceError(code: status, details: string): ServiceError {
  const bounded = boundDetails(details);
  const e = new Error(bounded) as ServiceError;
  e.code = code;
  e.details = bounded;
  e.metadata = new Metadata();
  return e;
}

export function toStatus(err: unknown, log: Logger, method: string): ServiceError {
  if (err instanceof ValidationError) return serviceError(status.INVALID_ARGUMENT, err.message);
  if (err instanceof OutOfRangeError) return serviceError(status.OUT_OF_RANGE, err.message);
  if (err instanceof StatusError) return serviceError(err.code, err.message);
  if (err instanceof DataplaneError) {
    const code = ERRNO_STATUS[err.code];
    if (code !== undefined) return serviceError(code, err.message);
  }
  log.error({ err, method }, 'unexpected error in RPC handler');
  return serviceError(status.INTERNAL, `internal error in ${method}`);
}
