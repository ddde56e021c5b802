/**
 * grpc.tls: the control API over TLS and mutual TLS; the health-only listener stays plaintext.
 * Certificates are made for the test with openssl.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { SystemServiceClient, type GetSystemInfoResponse } from '../../src/gen/retrace/v1/system';
import { CLI_PATH } from '../../src/lab/appliance';
import { runCli } from '../helpers/cli';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retrace-tls-'));
const f = (name: string) => path.join(dir, name);

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA. */
function makePki(prefix: string): void {
  openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '1',
    '-subj',
    `/CN=${prefix} test CA`,
    '-keyout',
    f(`${prefix}-ca.key`),
    '-out',
    f(`${prefix}-ca.pem`),
  );
  for (const who of ['server', 'client']) {
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${who}`, '-keyout', f(`${prefix}-${who}.key`), '-out', f(`${prefix}-${who}.csr`));
    fs.writeFileSync(f(`${prefix}-${who}.ext`), who === 'server' ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' : 'extendedKeyUsage=clientAuth\n');
    openssl(
      'x509',
      '-req',
      '-in',
      f(`${prefix}-${who}.csr`),
      '-CA',
      f(`${prefix}-ca.pem`),
      '-CAkey',
      f(`${prefix}-ca.key`),
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      f(`${prefix}-${who}.ext`),
      '-out',
      f(`${prefix}-${who}.pem`),
    );
  }
}

interface Running {
  child: ChildProcess;
  address: string;
  healthSock: string;
  output: () => string;
}

async function startAppliance(tlsYaml: string, name: string): Promise<Running> {
  const healthSock = f(`${name}-health.sock`);
  const cfg = f(`${name}.yaml`);
  fs.writeFileSync(
    cfg,
    `grpc:\n  listen: "127.0.0.1:0"\n  tls: ${tlsYaml}\nhealth: {listen: "unix:${healthSock}"}\neal: {memory_mb: 128}\ndataplane: {mbufs: 2047, max_conns: 4096}\nports: [{name: p0, device: net_ring0, mac: "02:00:00:00:00:01"}]\n`,
  );
  const child = spawn(process.execPath, [CLI_PATH, 'serve', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    const m = /"listen":"(127\.0\.0\.1:\d+)"/.exec(out);
    if (m && out.includes('dataplane running')) return { child, address: m[1], healthSock, output: () => out };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`appliance did not start:\n${out}`);
}

function systemInfo(address: string, creds: grpc.ChannelCredentials): Promise<GetSystemInfoResponse> {
  const c = new SystemServiceClient(address, creds);
  return new Promise<GetSystemInfoResponse>((resolve, reject) =>
    c.getSystemInfo({}, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e, r) => (e ? reject(e) : resolve(r))),
  ).finally(() => c.close());
}

function health(sock: string): Promise<string> {
  const Client = grpc.makeGenericClientConstructor(healthService, 'Health');
  const c = new Client(`unix:${sock}`, grpc.credentials.createInsecure());
  return new Promise<string>((resolve, reject) =>
    c.check({ service: '' }, { deadline: Date.now() + 5000 }, (e: grpc.ServiceError | null, r: { status: string }) => (e ? reject(e) : resolve(r.status))),
  ).finally(() => c.close());
}

const running: Running[] = [];

beforeAll(() => {
  makePki('good');
  makePki('rogue');
}, 60000);

afterAll(async () => {
  for (const r of running) {
    if (r.child.exitCode !== null) continue;
    const exited = new Promise((resolve) => r.child.once('exit', resolve));
    r.child.kill('SIGTERM');
    const timer = setTimeout(() => r.child.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(timer);
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('control API over TLS', () => {
  let app: Running;
  beforeAll(async () => {
    app = await startAppliance(`{cert_file: "${f('good-server.pem')}", key_file: "${f('good-server.key')}"}`, 'tls');
    running.push(app);
  }, 60000);

  it('answers a client that trusts the server CA', async () => {
    const info = await systemInfo(app.address, grpc.credentials.createSsl(fs.readFileSync(f('good-ca.pem'))));
    expect(info.dpdkVersion).toMatch(/^DPDK/);
  });

  it('refuses a plaintext client', async () => {
    await expect(systemInfo(app.address, grpc.credentials.createInsecure())).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });

  it('keeps the health-only listener plaintext for probes', async () => {
    expect(await health(app.healthSock)).toBe('SERVING');
  });
});

describe('control API over mutual TLS', () => {
  let app: Running;
  beforeAll(async () => {
    app = await startAppliance(`{cert_file: "${f('good-server.pem')}", key_file: "${f('good-server.key')}", client_ca_file: "${f('good-ca.pem')}"}`, 'mtls');
    running.push(app);
  }, 60000);

  it('answers a client with a certificate from the client CA', async () => {
    const creds = grpc.credentials.createSsl(fs.readFileSync(f('good-ca.pem')), fs.readFileSync(f('good-client.key')), fs.readFileSync(f('good-client.pem')));
    expect((await systemInfo(app.address, creds)).dpdkVersion).toMatch(/^DPDK/);
  });

  it('refuses a client without a certificate', async () => {
    await expect(systemInfo(app.address, grpc.credentials.createSsl(fs.readFileSync(f('good-ca.pem'))))).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
    });
  });

  it('refuses a client whose certificate another CA signed', async () => {
    const creds = grpc.credentials.createSsl(fs.readFileSync(f('good-ca.pem')), fs.readFileSync(f('rogue-client.key')), fs.readFileSync(f('rogue-client.pem')));
    await expect(systemInfo(app.address, creds)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });
});

describe('bad TLS configuration', () => {
  it('fails at start naming the key when a certificate comes without its key', async () => {
    const cfg = f('bad.yaml');
    fs.writeFileSync(cfg, `grpc:\n  tls: {cert_file: "${f('good-server.pem')}"}\nports: [{name: p0, device: net_ring0}]\n`);
    const res = await runCli(['serve', '--config', cfg]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('config: grpc.tls.key_file: cert_file and key_file go together');
  });

  it('fails at start naming the key when a file does not exist', async () => {
    const cfg = f('missing.yaml');
    fs.writeFileSync(cfg, `grpc:\n  tls: {cert_file: "/nonexistent.pem", key_file: "${f('good-server.key')}"}\nports: [{name: p0, device: net_ring0}]\n`);
    const res = await runCli(['serve', '--config', cfg]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('config: grpc.tls.cert_file: file not found: /nonexistent.pem');
  });
});
