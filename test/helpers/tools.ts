/**
 * External tools that some tests drive (grpcurl, podman, ...), found once, and the rule for a
 * test whose tool is missing:
 *   - under CI (CI=true) the test is registered and fails, naming the tool and how to get it;
 *   - elsewhere it is skipped with the reason in its title, and test/helpers/skip-reporter.js
 *     lists every skipped test with that reason in the run's last line.
 * So a machine that lacks a tool never passes silently.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface Tool {
  name: string;
  /** Absolute path or a command on PATH; null when missing. */
  path: string | null;
  /** How to get it, for the failure or skip message. */
  hint: string;
}

const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const IN_CI = process.env.CI === 'true' || process.env.CI === '1';

function onPath(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/**
 * grpcurl 1.9.x, the operators' client the API docs are written for. It is neither an npm nor a
 * Debian package: $RETRACE_GRPCURL, else `grpcurl` on PATH, else the copy the project's CI and
 * development machines keep beside the clone (../shared/tools/grpcurl).
 */
export const GRPCURL: Tool = (() => {
  const hint = 'grpcurl 1.9.x (a static binary from the grpcurl releases); set RETRACE_GRPCURL or put it on PATH';
  const env = process.env.RETRACE_GRPCURL;
  if (env) return { name: 'grpcurl', path: fs.existsSync(env) ? path.resolve(env) : null, hint };
  const beside = path.resolve(REPO_ROOT, '..', 'shared', 'tools', 'grpcurl');
  return { name: 'grpcurl', path: onPath('grpcurl') ?? (fs.existsSync(beside) ? beside : null), hint };
})();

/** A Debian-packaged tool that deploy/bootstrap.sh installs; missing means bootstrap did not run. */
export function debianTool(cmd: string, pkg: string): Tool {
  return { name: cmd, path: onPath(cmd), hint: `apt-get install ${pkg} (deploy/bootstrap.sh installs it)` };
}

const missing = (t: Tool) => `needs ${t.name}: not found; ${t.hint}`;

/** `it`, or its stand-in when a tool is missing (see the header). */
export function itWith(...tools: Tool[]): jest.It {
  const tool = tools.find((t) => t.path === null);
  if (tool === undefined) return it;
  if (IN_CI) {
    const failing = ((name: string) =>
      it(name, () => {
        throw new Error(missing(tool));
      })) as unknown as jest.It;
    (failing as unknown as { each: unknown }).each = (table: unknown[]) => (name: string) =>
      table.forEach((row, i) =>
        it(`${name} [${i}]`, () => {
          throw new Error(`${missing(tool)} (${JSON.stringify(row)})`);
        }),
      );
    return failing;
  }
  const skip = ((name: string, fn?: jest.ProvidesCallback) => it.skip(`${name} [skipped: ${missing(tool)}]`, fn)) as unknown as jest.It;
  (skip as unknown as { each: unknown }).each = (table: unknown[]) => (name: string, fn: (...a: unknown[]) => unknown) =>
    it.skip.each(table as never[])(`${name} [skipped: ${missing(tool)}]`, fn as never);
  return skip;
}

/** `describe`, or its stand-in when a tool is missing (see the header). */
export function describeWith(...tools: Tool[]): jest.Describe {
  const tool = tools.find((t) => t.path === null);
  if (tool === undefined) return describe;
  if (IN_CI) {
    return ((name: string) =>
      describe(name, () =>
        it(missing(tool), () => {
          throw new Error(missing(tool));
        }),
      )) as unknown as jest.Describe;
  }
  return ((name: string, fn: jest.EmptyFunction) => describe.skip(`${name} [skipped: ${missing(tool)}]`, fn)) as unknown as jest.Describe;
}
