import type { sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import type { Logger } from '../log';
import { toStatus } from './errors';

/**
 * Adapts `(request) => response` to a grpc-js unary handler: a thrown error is mapped by toStatus,
 * so each handler reads as validate → call the dataplane → build the response.
 */
export function unary<Req, Res>(
  log: Logger,
  method: string,
  fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Res | Promise<Res>,
): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) => {
    Promise.resolve()
      .then(() => fn(call.request, call))
      .then(
        (res) => callback(null, res),
        (err: unknown) => callback(toStatus(err, log, method)),
      );
  };
}
