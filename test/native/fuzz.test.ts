/**
 * A short libFuzzer run over the whole packet path under ASan/UBSan (native/fuzz/fuzz_packet.c):
 * arbitrary frame sequences on three ports must never crash, trip a sanitizer or leak an mbuf.
 * The long run is `scripts/fuzz.sh -runs=10000000`.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');

describe('packet path fuzzing', () => {
  it('survives 20000 generated inputs with sanitizers on', () => {
    const res = spawnSync('bash', [path.join(ROOT, 'scripts', 'fuzz.sh'), '-runs=20000'], { cwd: ROOT, encoding: 'utf8', timeout: 600000 });
    const tail = `${res.stdout}\n${res.stderr}`.split('\n').slice(-40).join('\n');
    expect({ status: res.status, tail }).toEqual({ status: 0, tail: expect.stringContaining('Done 20000 runs') });
  }, 600000);
});
