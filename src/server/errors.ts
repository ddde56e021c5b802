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
  const e = new Error(details) as ServiceError;
  e.code = code;
  e.details = details;
  e.metadata = new Metadata();
  return e;
}

export function toStatus(err: unknown, log: Logger, method: string): ServiceError {
  if (err instanceof ValidationError) return serviceError(status.INVALID_ARGUMENT, err.message);
  if (err instanceof OutOfRangeError) return serviceError(status.OUT_OF_RANGE, err.message);
  if (err instanceof DataplaneError) {
    const code = ERRNO_STATUS[err.code];
    if (code !== undefined) return serviceError(code, err.message);
  }
  log.error({ err, method }, 'unexpected error in RPC handler');
  return serviceError(status.INTERNAL, `internal error in ${method}`);
}
