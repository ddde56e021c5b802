/**
 * `retrace serve`: the appliance's life cycle.
 *   gRPC up (health NOT_SERVING) → metrics HTTP up (if metrics.listen) → EAL + ports + workers → SERVING
 *   SIGINT/SIGTERM → NOT_SERVING → gRPC drains (bounded) → metrics closed → workers, ports, EAL stopped → exit 0
 */
import type { Config } from './config';
import { Dataplane } from './dataplane';
import { createLogger } from './log';
import { createMetrics, MetricsServer } from './server/metrics';
import { ApplianceServer, serverCredentials } from './server/server';

const SHUTDOWN_GRACE_MS = 2000;

export async function serve(cfg: Config): Promise<number> {
  const log = createLogger(cfg.log.level);
  const dp = new Dataplane(cfg);
  const server = new ApplianceServer(dp, log);

  let address: string;
  try {
    address = await server.listen(cfg.grpc.listen, serverCredentials(cfg.grpc.tls));
  } catch (e) {
    log.fatal({ err: e, listen: cfg.grpc.listen }, 'cannot bind the gRPC listen address');
    return 1;
  }
  log.info(
    { listen: address, tls: cfg.grpc.tls.cert_file === '' ? 'off' : cfg.grpc.tls.client_ca_file === '' ? 'on' : 'mutual' },
    'gRPC server listening (NOT_SERVING until the dataplane is up)',
  );

  if (cfg.health.listen !== '') {
    try {
      log.info({ listen: await server.listenHealth(cfg.health.listen) }, 'health-only gRPC listening');
    } catch (e) {
      log.fatal({ err: e, listen: cfg.health.listen }, 'cannot bind the health listen address');
      await server.shutdown(0);
      return 1;
    }
  }

  let metrics: MetricsServer | undefined;
  if (cfg.metrics.listen !== '') {
    metrics = new MetricsServer(
      createMetrics({
        dp,
        drained: () => server.config.drained,
        events: () => server.events.status(),
        counterStreams: () => server.counters.status(),
        health: (svc, real) => server.healthChecker.lookup(svc, real),
        healthEvents: () => server.healthEvents.seq,
      }),
      log,
    );
    try {
      log.info({ listen: await metrics.listen(cfg.metrics.listen) }, 'metrics listening (GET /metrics)');
    } catch (e) {
      log.fatal({ err: e, listen: cfg.metrics.listen }, 'cannot bind the metrics listen address');
      await server.shutdown(0);
      return 1;
    }
  }

  let stopping: Promise<number> | undefined;
  const stop = (reason: string): Promise<number> => {
    stopping ??= (async () => {
      log.info({ reason }, 'shutting down');
      await server.shutdown(SHUTDOWN_GRACE_MS);
      await metrics?.close();
      try {
        dp.stop();
      } catch (e) {
        log.error({ err: e }, 'dataplane stop failed');
        return 1;
      }
      log.info('stopped');
      return 0;
    })();
    return stopping;
  };

  const signalled = new Promise<number>((resolve) => {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => void stop(sig).then(resolve));
    }
  });

  try {
    await dp.start();
  } catch (e) {
    log.fatal({ err: e }, 'dataplane failed to start');
    await server.shutdown(0);
    await metrics?.close();
    return 1;
  }
  if (stopping !== undefined) {
    // A signal arrived while the dataplane was starting: finish the stop it began.
    dp.stop();
    return stopping;
  }
  if (server.persister !== undefined) {
    try {
      const r = server.persister.restore();
      log.info({ file: server.persister.file, ...r }, r.restored ? 'configuration restored' : 'no saved configuration yet');
    } catch (e) {
      log.fatal({ err: e }, 'cannot restore the saved configuration');
      process.stderr.write(`retrace: state: ${(e as Error).message}\n`);
      await server.shutdown(0);
      await metrics?.close();
      dp.stop();
      return 2;
    }
  }
  server.startHealthChecks();
  server.setServing(server.config.drained ? 'NOT_SERVING' : 'SERVING');
  server.setLive(true);
  log.info({ ports: dp.ports().map((p) => ({ name: p.name, driver: p.driver, mac: p.mac })), dpdk: dp.dpdkVersion }, 'dataplane running');
  return signalled;
}
