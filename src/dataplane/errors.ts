/**
 * DataplaneError, the one error type of the dataplane layer, and the wrapping of native errors
 * into it.
 */
import { isNativeError } from './binding';

export class DataplaneError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'DataplaneError';
  }
}

export function wrap(e: unknown, context: string): DataplaneError {
  if (e instanceof DataplaneError) return e;
  if (isNativeError(e)) return new DataplaneError(e.code, `${context}: ${e.message}`);
  return new DataplaneError('EIO', `${context}: ${e instanceof Error ? e.message : String(e)}`);
}

/** A port name as an error quotes it: cut after 64 characters (errors must stay small). */
export function quoteName(name: string): string {
  return name.length > 64 ? `${JSON.stringify(name.slice(0, 64)).slice(0, -1)}..." (${name.length} characters)` : JSON.stringify(name);
}
