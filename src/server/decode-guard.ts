/**
 * Malformed request bytes answer INVALID_ARGUMENT, not INTERNAL.
 *
 * grpc-js turns an exception from a method's requestDeserialize into INTERNAL ("Error
 * deserializing request") before any handler runs, and the docs define INTERNAL as a bug of the
 * appliance. So each method's deserializer here catches the decode error and hands the handler a
 * MalformedRequest instead, which the wrapped handler answers with INVALID_ARGUMENT naming the
 * message type: the client sent bytes that are not that message.
 */
import { status, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { echo, serviceError } from './errors';

export class MalformedRequest {
  constructor(readonly reason: string) {}
}

/**
 * "/retrace.v1.NetworkService/CreateAddress" → "retrace.v1.CreateAddressRequest message" (every
 * retrace.v1 method takes <Method>Request); another service's → "request of /pkg.Service/Method".
 */
function requestTypeName(path: string): string {
  const m = /^\/(retrace\.v\d+)\.[^./]+\/([^/]+)$/.exec(path);
  return m === null ? `request of ${path}` : `${m[1]}.${m[2]}Request message`;
}

export function guardDecoding<D extends ServiceDefinition, I extends object>(def: D, impl: I): [D, I] {
  const guardedDef: Record<string, unknown> = {};
  const guardedImpl: Record<string, unknown> = {};
  const handlers = impl as unknown as UntypedServiceImplementation;
  for (const [name, method] of Object.entries(def)) {
    // grpc-js finds a method's handler under its key or its originalName (camelCase).
    const key = name in handlers ? name : method.originalName !== undefined && method.originalName in handlers ? method.originalName : name;
    // A client stream's handler reads the messages itself: left as grpc-js has it.
    if (method.requestStream) {
      guardedDef[name] = method;
      if (key in handlers) guardedImpl[key] = handlers[key];
      continue;
    }
    guardedDef[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return method.requestDeserialize(bytes);
        } catch (e) {
          return new MalformedRequest(e instanceof Error ? e.message : String(e));
        }
      },
    };
    const handler = handlers[key] as ((call: { request: unknown; emit(ev: 'error', e: unknown): void }, cb?: (e: unknown) => void) => void) | undefined;
    if (handler === undefined) continue;
    const refuse = (m: MalformedRequest) => serviceError(status.INVALID_ARGUMENT, `request: not a valid ${requestTypeName(method.path)} (${echo(m.reason)})`);
    guardedImpl[key] = method.responseStream
      ? (call: { request: unknown; emit(ev: 'error', e: unknown): void }) => {
          if (call.request instanceof MalformedRequest) call.emit('error', refuse(call.request));
          else handler(call);
        }
      : (call: { request: unknown; emit(ev: 'error', e: unknown): void }, cb: (e: unknown) => void) => {
          if (call.request instanceof MalformedRequest) cb(refuse(call.request));
          else handler(call, cb);
        };
  }
  return [guardedDef as D, guardedImpl as I];
}
