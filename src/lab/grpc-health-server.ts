/**
 * Lab real server for gRPC health checks: a grpc-js server with grpc-health-check's
 * grpc.health.v1 implementation, "" SERVING.
 *
 *   node dist/lab/grpc-health-server.js --port 9050 [--host 0.0.0.0]
 *
 * Prints {"event":"ready"} once it listens; exits when stdin closes (its parent went away) or on
 * SIGTERM/SIGINT.
 */
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';

const { values } = parseArgs({ options: { port: { type: 'string', default: '9050' }, host: { type: 'string', default: '0.0.0.0' } }, strict: true });
const server = new grpc.Server();
new HealthImplementation({ '': 'SERVING' }).addToServer(server);
server.bindAsync(`${values.host}:${values.port}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`grpc-health-server: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify({ event: 'ready', port })}\n`);
});
const stop = () => {
  server.forceShutdown();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
