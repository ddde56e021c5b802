/**
 * docs/api.md's examples are real: every grpcurl command in its ```sh blocks runs, in document
 * order, with the real grpcurl (../shared/tools/grpcurl; skipped if absent) against a fresh
 * appliance with two net_ring ports named as in the docs. `127.0.0.1:50051` becomes the
 * appliance's unix socket. A command succeeds (exit 0) unless a `# expect: <Code>` comment right
 * before it names the gRPC code it must fail with.
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import { DESCRIPTOR_SET_BASE64 } from '../../src/gen/descriptors';
import { ApplianceProcess, REPO_ROOT } from '../../src/lab/appliance';
import { RETRACE_SERVICES } from '../../src/server/server';
import { GRPCURL, describeWith } from '../helpers/tools';

const DOC = path.join(REPO_ROOT, 'docs', 'api.md');

export interface DocCommand {
  /** 1-based line of the command's first line in the document. */
  line: number;
  text: string;
  /** gRPC code name (grpcurl's spelling, e.g. InvalidArgument) the command must fail with. */
  expect?: string;
}

/** The grpcurl commands of every ```sh block, in order, with their `# expect:` codes. */
export function docCommands(markdown: string): DocCommand[] {
  const lines = markdown.split('\n');
  const out: DocCommand[] = [];
  let inSh = false;
  let expect: string | undefined;
  let cur: DocCommand | undefined;
  const flush = () => {
    if (cur) out.push({ ...cur, text: cur.text.trim() });
    cur = undefined;
  };
  lines.forEach((l, i) => {
    if (!inSh) {
      if (l.trim() === '```sh') inSh = true;
      return;
    }
    if (l.trim() === '```') {
      flush();
      inSh = false;
      expect = undefined;
      return;
    }
    if (l.startsWith('#')) {
      flush();
      const m = /^#\s*expect:\s*(\w+)/.exec(l);
      if (m) expect = m[1];
      return;
    }
    if (l.startsWith('grpcurl ')) {
      flush();
      cur = { line: i + 1, text: l, expect };
      expect = undefined;
      return;
    }
    if (cur) cur.text += `\n${l}`;
  });
  return out;
}

/** grpcurl exits with 64 + the status code when the RPC fails. */
const GRPCURL_STATUS_EXIT = 64;

/** grpcurl's code names (Go's codes.Code.String()): INVALID_ARGUMENT → InvalidArgument. */
function codeNumber(name: string): number {
  const upper = name.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase();
  const n = (grpc.status as unknown as Record<string, number>)[upper === 'OK' ? 'OK' : upper];
  if (typeof n !== 'number') throw new Error(`unknown gRPC code name "${name}"`);
  return n;
}

function run(cmd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env, PATH: `${path.dirname(GRPCURL.path!)}:${process.env.PATH ?? ''}` };
    execFile('bash', ['-c', cmd], { env, timeout: 20000, cwd: REPO_ROOT }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const markdown = fs.readFileSync(DOC, 'utf8');
const commands = docCommands(markdown);

describe('docs/api.md', () => {
  it('has grpcurl examples, each with a known expectation', () => {
    expect(commands.length).toBeGreaterThan(20);
    for (const c of commands) if (c.expect !== undefined) expect(() => codeNumber(c.expect!)).not.toThrow();
  });

  it('names every RPC of every retrace.v1 service the server registers', () => {
    const set = fromBinary(FileDescriptorSetSchema, Buffer.from(DESCRIPTOR_SET_BASE64, 'base64'));
    for (const file of set.file) {
      for (const svc of file.service) {
        if (!(RETRACE_SERVICES as readonly string[]).includes(`${file.package}.${svc.name}`)) continue;
        for (const m of svc.method) expect([svc.name, markdown.includes(`\`${m.name}\``) || markdown.includes(`/${m.name}`)]).toEqual([svc.name, true]);
      }
    }
  });
});

describeWith(GRPCURL)('docs/api.md grpcurl examples against an appliance', () => {
  const app = new ApplianceProcess();
  // The examples give a service a health check whose reals (10.1.0.x) exist nowhere: its probes run
  // in a namespace of their own with only loopback, so none leaves this machine's namespace.
  const probeNs = `rt-docs-${process.pid}`;

  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', probeNs]);
    app.start(`
health_checks:
  netns: ${probeNs}
eal:
  memory_mb: 128
dataplane:
  mbufs: 4095
  max_conns: 4096
ports:
  - name: uplink-a
    device: net_ring0
    mac: "02:00:00:00:00:01"
  - name: uplink-b
    device: net_ring1
    mac: "02:00:00:00:00:02"
`);
    await app.waitServing();
  }, 60000);

  afterAll(async () => {
    if (app.running) await app.stop();
    await app.kill();
    execFileSync('ip', ['netns', 'del', probeNs]);
  });

  /** `retrace.v1.PortService/GetPort`, or grpcurl's verb (`list`, `describe ...`). */
  const title = (c: DocCommand) =>
    (/([\w.]+\/\w+)\s*$/.exec(c.text)?.[1] ?? c.text.replace(/^.*127\.0\.0\.1:50051 /s, '')) + (c.expect ? ` (${c.expect})` : '');

  it.each(commands.map((c) => [c.line, title(c), c] as const))('line %i: %s', async (_line, _name, c) => {
    const cmd = c.text.replaceAll('127.0.0.1:50051', `-unix ${app.socket}`);
    const res = await run(cmd);
    const context = `${c.text}\nexit ${res.code}\n${res.stderr}${res.stdout.slice(0, 2000)}`;
    if (c.expect === undefined) {
      expect([res.code, context]).toEqual([0, context]);
    } else {
      expect([res.code, context]).toEqual([GRPCURL_STATUS_EXIT + codeNumber(c.expect), context]);
      expect(res.stderr).toContain(`Code: ${c.expect}`);
    }
  });
});
