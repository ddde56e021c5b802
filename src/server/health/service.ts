/**
 * retrace.v1.HealthCheckService: WatchHealthEvents over the HealthEventHub.
 */
import type { ServerWritableStream } from '@grpc/grpc-js';
import type { HealthCheckServiceServer, WatchHealthEventsRequest, WatchHealthEventsResponse } from '../../gen/retrace/v1/health_check';
import type { HealthChecker } from './checker';
import type { HealthEventHub } from './hub';

export function healthCheckService(hub: HealthEventHub, checker: HealthChecker): HealthCheckServiceServer {
  return {
    watchHealthEvents: (call: ServerWritableStream<WatchHealthEventsRequest, WatchHealthEventsResponse>) => {
      const snapshot = call.request.initialState ? checker.snapshot().map((event) => ({ event })) : undefined;
      const sub = hub.subscribe(call, snapshot);
      const stop = () => hub.unsubscribe(sub);
      call.once('cancelled', stop);
      call.once('close', stop);
      call.once('error', stop);
    },
  };
}
