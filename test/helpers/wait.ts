/** Polling and gRPC-failure helpers shared by the e2e suites. */
import type * as grpc from '@grpc/grpc-js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls fn every 100 ms until ok(value); throws with the last value (bigints as strings) after timeoutMs. */
export async function until<T>(what: string, fn: () => T | Promise<T>, ok: (v: T) => boolean, timeoutMs = 20000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let v = await fn();
  while (!ok(v)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? String(x) : x))}`);
    await sleep(100);
    v = await fn();
  }
  return v;
}

/** Expects a call to fail with `code` and, when given, details containing (string) or matching (RegExp). */
export async function fails(p: Promise<unknown>, code: grpc.status, details?: string | RegExp): Promise<void> {
  await expect(p).rejects.toMatchObject({
    code,
    ...(details === undefined ? {} : { details: typeof details === 'string' ? expect.stringContaining(details) : expect.stringMatching(details) }),
  });
}
