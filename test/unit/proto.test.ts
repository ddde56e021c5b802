/** The API schema: Buf STANDARD lint with no exceptions, and src/gen regenerated from it exactly. */
import { execFileSync } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');

describe('proto/', () => {
  it('passes buf lint (STANDARD rules)', () => {
    expect(() =>
      execFileSync(path.join(ROOT, 'node_modules', '.bin', 'buf'), ['lint'], { cwd: path.join(ROOT, 'proto'), encoding: 'utf8', stdio: 'pipe' }),
    ).not.toThrow();
  });

  it('matches the committed generated code in src/gen', () => {
    const out = execFileSync('bash', [path.join(ROOT, 'scripts', 'gen-proto.sh'), '--check'], { cwd: ROOT, encoding: 'utf8', stdio: 'pipe' });
    expect(out).toContain('up to date');
  });
});
