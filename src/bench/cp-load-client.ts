/**
 * The load half of the `control-load` bench case, run as its own process (`node
 * dist/bench/cp-load-client.js '<json options>'`) so that its CPU is not charged to the process
 * that times the unary calls and health probes.
 *
 * It opens `streams` WatchCounters streams (raw message bytes, never decoded: decoding 50 streams
 * of counters here would measure this process, not the appliance) and runs `scrapers` loops that
 * GET /metrics back to back, each on its own connection. It prints one JSON line with what it
 * received when it gets SIGTERM (or its stdin closes) and exits.
 */
import http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { WatchCountersRequest } from '../gen/retrace/v1/path';
import { percentile } from './stats';

export interface LoadOptions {
  address: string;
  metricsUrl: string;
  streams: number;
  scrapers: number;
  intervalMs: number;
}

export interface LoadTally {
  /** Seconds from 'ready' to the stop. */
  seconds: number;
  streamsOpen: number;
  streamMessages: number;
  streamBytes: number;
  streamErrors: string[];
  scrapes: number;
  scrapeErrors: number;
  scrapeBytes: number;
  scrapeMsP50: number;
  scrapeMsP99: number;
  scrapeStatus: Record<string, number>;
}

function main(): void {
  const o = JSON.parse(process.argv[2]) as LoadOptions;
  const t: LoadTally = {
    seconds: 0,
    streamsOpen: 0,
    streamMessages: 0,
    streamBytes: 0,
    streamErrors: [],
    scrapes: 0,
    scrapeErrors: 0,
    scrapeBytes: 0,
    scrapeMsP50: NaN,
    scrapeMsP99: NaN,
    scrapeStatus: {},
  };
  const scrapeMs: number[] = [];
  let stopping = false;

  const Client = grpc.makeGenericClientConstructor({}, 'PathService');
  const client = new Client(o.address, grpc.credentials.createInsecure());
  const calls: grpc.ClientReadableStream<Buffer>[] = [];
  const req = Buffer.from(WatchCountersRequest.encode({ interval: { seconds: 0n, nanos: o.intervalMs * 1e6 }, count: 0 }).finish());
  for (let i = 0; i < o.streams; i++) {
    const call = client.makeServerStreamRequest<Buffer, Buffer>(
      '/retrace.v1.PathService/WatchCounters',
      (b) => b,
      (b) => b,
      req,
    );
    t.streamsOpen++;
    call.on('data', (b: Buffer) => {
      t.streamMessages++;
      t.streamBytes += b.length;
    });
    call.on('error', (e: grpc.ServiceError) => {
      if (!stopping && t.streamErrors.length < 10) t.streamErrors.push(`${e.code} ${e.details}`);
    });
    call.on('close', () => t.streamsOpen--);
    calls.push(call);
  }

  const url = new URL(o.metricsUrl);
  const scrape = (): void => {
    if (stopping) return;
    const t0 = performance.now();
    // A fresh connection per scrape, as concurrent scrapers (several Prometheus servers, a
    // curl loop) would open.
    const r = http.get({ host: url.hostname, port: url.port, path: url.pathname, agent: false, timeout: 10000 }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => (bytes += d.length));
      res.on('end', () => {
        t.scrapes++;
        t.scrapeBytes += bytes;
        t.scrapeStatus[res.statusCode ?? 0] = (t.scrapeStatus[res.statusCode ?? 0] ?? 0) + 1;
        scrapeMs.push(performance.now() - t0);
        setImmediate(scrape);
      });
      res.on('error', () => {
        t.scrapeErrors++;
        setTimeout(scrape, 100);
      });
    });
    r.on('timeout', () => r.destroy(new Error('timeout')));
    r.on('error', () => {
      t.scrapeErrors++;
      setTimeout(scrape, 100);
    });
  };
  for (let i = 0; i < o.scrapers; i++) scrape();

  const finish = (): void => {
    if (stopping) return;
    stopping = true;
    t.seconds = (performance.now() - started) / 1000;
    for (const c of calls) c.cancel();
    client.close();
    t.scrapeMsP50 = percentile(scrapeMs, 50);
    t.scrapeMsP99 = percentile(scrapeMs, 99);
    process.stdout.write(`${JSON.stringify(t)}\n`, () => process.exit(0));
  };
  process.on('SIGTERM', finish);
  process.stdin.on('end', finish);
  process.stdin.resume();
  const started = performance.now();
  process.stdout.write('ready\n');
}

main();
