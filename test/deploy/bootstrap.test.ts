/**
 * deploy/bootstrap.sh's TypeScript step against stale output: tsc never deletes the output of a
 * source that is gone, and when a module moves into a directory of the same name (src/config.ts ->
 * src/config/index.ts) the old dist/config.js would still be what require('./config') loads.
 * Runs the real bootstrap on this checkout (its other steps are stamped, so only tsc reruns).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');
const DIST = path.join(ROOT, 'dist');
const STALE = path.join(DIST, 'config.js');
const ORPHAN = path.join(DIST, `no-such-source-${process.pid}.js`);

afterAll(() => {
  for (const f of [STALE, `${STALE}.map`, ORPHAN]) fs.rmSync(f, { force: true });
});

test('a rebuild removes JavaScript whose TypeScript source is gone', () => {
  fs.mkdirSync(DIST, { recursive: true });
  fs.writeFileSync(STALE, "throw new Error('stale dist/config.js loaded');\n");
  fs.writeFileSync(`${STALE}.map`, '{}\n');
  fs.writeFileSync(ORPHAN, '\n');
  // Force the tsc step: its stamp is what tells bootstrap that src changed.
  fs.rmSync(path.join(ROOT, 'build', '.stamps', 'tsc'), { force: true });

  const r = spawnSync('bash', ['deploy/bootstrap.sh'], { cwd: ROOT, encoding: 'utf8', timeout: 300000 });
  expect({ code: r.status, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });

  expect(fs.existsSync(STALE)).toBe(false);
  expect(fs.existsSync(`${STALE}.map`)).toBe(false);
  expect(fs.existsSync(ORPHAN)).toBe(false);
  expect(require.resolve(path.join(DIST, 'config'))).toBe(path.join(DIST, 'config', 'index.js'));
  expect(fs.existsSync(path.join(DIST, 'cli.js'))).toBe(true);
});
