/**
 * The client subcommands of `retrace` (ipvsadm-like), each one or a few gRPC calls to --server:
 *   services                     virtual services with reals, weights, health, active and total conns,
 *                                then their limits and the conns the limits refused
 *   reals set SERVICE REAL...    replace a service's reals (SERVICE tcp/198.18.0.10:80, REAL 10.1.0.11:8080@2)
 *   conns                        conns (ConnService.ListConns), with filters
 *   conns get PROTO CLIENT VIP   one conn by its client-side tuple (ConnService.GetConn)
 *   events                       conn events (ConnService.WatchConnEvents), one line each; --follow
 *   counters                     path counters per protocol × port, non-zero drops
 *   ports                        ports: device, MAC, MTU, link, addresses, traffic, drops, kernel interface
 *   top                          live path counters with rates
 *   apply -f FILE                ApplyConfig from YAML; prints the diff
 *   get-config                   GetConfig as YAML (or JSON)
 *   drain / undrain              ConfigService.Drain / Undrain
 *   health                       grpc.health.v1 Check, for scripts (the BGP announcer)
 * Exit codes: 0 done, 1 a gRPC error (printed as CODE_NAME: details) or other failure, 2 bad usage;
 * `health` also 4 when the answer is not SERVING.
 */
import { Command, InvalidArgumentError } from 'commander';
import { Real } from '../gen/retrace/v1/balancer';
import { Config } from '../gen/retrace/v1/config';
import {
  ConnEventType,
  type Conn,
  type ConnFilter,
  type GetConnRequest,
  type WatchConnEventsRequest,
  type WatchConnEventsResponse,
} from '../gen/retrace/v1/conn';
import { Protocol } from '../gen/retrace/v1/types';
import { failure, serverAddress, serverOptions, UsageError, withApi, type ServerOptions } from './client';
import { configToYaml, readConfigFile } from './config-file';
import { diffCount, formatConns, formatCounters, formatDiff, formatEvent, formatPorts, formatServices, portAddresses } from './format';
import { runTop } from './top';

const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const IPV4 = `${OCTET}(?:\\.${OCTET}){3}`;
const PROTOCOLS: Record<string, Protocol> = { tcp: Protocol.PROTOCOL_TCP, udp: Protocol.PROTOCOL_UDP, icmp: Protocol.PROTOCOL_ICMP };

const bigintJson = (_k: string, v: unknown) => (typeof v === 'bigint' ? v.toString() : v);

/** `tcp/198.18.0.10:80`, `udp/198.18.0.10:53`, `icmp/198.18.0.10`. */
export function parseServiceKey(s: string): { protocol: Protocol; vip: string; port: number } {
  const m = new RegExp(`^(tcp|udp|icmp)/(${IPV4})(?::([0-9]{1,5}))?$`, 'i').exec(s);
  if (!m) throw new UsageError(`bad service "${s}": expected PROTO/VIP:PORT (tcp/198.18.0.10:80) or icmp/VIP`);
  const protocol = PROTOCOLS[m[1].toLowerCase()];
  if (protocol !== Protocol.PROTOCOL_ICMP && m[3] === undefined) throw new UsageError(`bad service "${s}": ${m[1]} needs a port (${m[1]}/${m[2]}:PORT)`);
  return { protocol, vip: m[2], port: Number(m[3] ?? 0) };
}

/** `10.1.0.11:8080`, `10.1.0.11:8080@3` (weight, default 1), `10.1.0.11@0` for ICMP. */
export function parseReal(s: string): { address: string; port: number; weight: number } {
  const m = new RegExp(`^(${IPV4})(?::([0-9]{1,5}))?(?:@([0-9]{1,5}))?$`).exec(s);
  if (!m) throw new UsageError(`bad real "${s}": expected ADDRESS:PORT[@WEIGHT] (10.1.0.11:8080@2)`);
  return { address: m[1], port: Number(m[2] ?? 0), weight: Number(m[3] ?? 1) };
}

/**
 * The GetConn request for `conns get PROTO CLIENT:PORT VIP[:PORT]`: `tcp 198.18.2.2:40000
 * 198.19.0.1:80`, `icmp 198.18.2.2:4242 198.19.0.1` (ICMP: the echo id in place of the client
 * port, no VIP port). Ports 1..65535.
 */
export function parseConnTuple(proto: string, client: string, vip: string): GetConnRequest {
  const protocol = PROTOCOLS[proto.toLowerCase()];
  if (protocol === undefined) throw new UsageError(`bad protocol "${proto}": expected tcp, udp or icmp`);
  const icmp = protocol === Protocol.PROTOCOL_ICMP;
  const port = (s: string | undefined, what: string): number => {
    const n = Number(s);
    if (!/^[0-9]{1,5}$/.test(s ?? '') || n < 1 || n > 65535) throw new UsageError(`bad ${what} "${s}": must be 1..65535`);
    return n;
  };
  const c = new RegExp(`^(${IPV4}):([0-9]+)$`).exec(client);
  if (!c) throw new UsageError(`bad client "${client}": expected CLIENT:${icmp ? 'ECHO-ID' : 'PORT'} (198.18.2.2:${icmp ? '4242' : '40000'})`);
  const v = new RegExp(`^(${IPV4})(?::([0-9]+))?$`).exec(vip);
  if (!v) throw new UsageError(`bad vip "${vip}": expected ${icmp ? 'VIP (198.19.0.1)' : 'VIP:PORT (198.19.0.1:80)'}`);
  if (icmp && v[2] !== undefined) throw new UsageError(`bad vip "${vip}": an ICMP conn has no vip port (give VIP alone)`);
  if (!icmp && v[2] === undefined) throw new UsageError(`bad vip "${vip}": ${proto.toLowerCase()} needs a port (VIP:PORT)`);
  return {
    protocol,
    client: c[1],
    clientPort: port(c[2], icmp ? 'echo id' : 'client port'),
    vip: v[1],
    vipPort: icmp ? 0 : port(v[2], 'vip port'),
  };
}

/** Wraps an action: prints `retrace: message` on failure and sets the exit code (1, or 2 for usage). */
function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      const f = failure(e);
      process.stderr.write(`retrace: ${f.message}\n`);
      process.exitCode = f.code;
    }
  };
}

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

function positiveNumber(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a number > 0');
  return n;
}

function positiveInt(v: string): number {
  if (!/^[1-9][0-9]*$/.test(v)) throw new InvalidArgumentError('must be a whole number > 0');
  return Number(v);
}

function ipv4Arg(v: string): string {
  if (!new RegExp(`^${IPV4}$`).test(v)) throw new InvalidArgumentError('must be a dotted-quad IPv4 address');
  return v;
}

export function addClientCommands(program: Command): void {
  serverOptions(program.command('services'))
    .description('list virtual services with their reals, weights, health (when checked), active and total conns, then their limits and refusals')
    .option('--json', 'print the ListVirtualServices response as JSON')
    .action(
      action(async (opts: ServerOptions & { json?: boolean }) => {
        await withApi(opts, async (api) => {
          const { virtualServices } = await api.balancer.listVirtualServices({});
          out(opts.json ? JSON.stringify({ virtualServices }, bigintJson, 2) : formatServices(virtualServices));
        });
      }),
    );

  const reals = program.command('reals').description('change the reals of a virtual service');
  serverOptions(reals.command('set'))
    .description('replace every real of SERVICE (reals listed again keep their conns; weight 0 drains)')
    .argument('<service>', 'PROTO/VIP:PORT, e.g. tcp/198.18.0.10:80 (icmp/VIP for ICMP)')
    .argument('[reals...]', 'ADDRESS:PORT[@WEIGHT], weight 0..65535, default 1 (ADDRESS[@WEIGHT] for ICMP)')
    .option('--clear', 'remove every real (no REAL given)')
    .action(
      action(async (service: string, realArgs: string[], opts: ServerOptions & { clear?: boolean }) => {
        const key = parseServiceKey(service);
        if (realArgs.length === 0 && !opts.clear) throw new UsageError('reals set: give at least one REAL, or --clear to remove them all');
        if (realArgs.length > 0 && opts.clear) throw new UsageError('reals set: --clear takes no REAL');
        const list = realArgs.map(parseReal).map((r) => ({ ...Real.create(), ...r }));
        await withApi(opts, async (api) => {
          await api.balancer.setReals({ key, reals: list });
          const { virtualService } = await api.balancer.getVirtualService({ key });
          out(formatServices(virtualService ? [virtualService] : []));
        });
      }),
    );

  const conns = serverOptions(program.command('conns'))
    .description('list conns (ConnService.ListConns); `conns get` shows one')
    .option('-p, --protocol <proto>', 'tcp, udp or icmp')
    .option('--client <address>', 'client address', ipv4Arg)
    .option('--vip <address>', 'virtual service address', ipv4Arg)
    .option('--real <address>', 'real server address', ipv4Arg)
    .option('-n, --limit <n>', 'print at most n conns', positiveInt)
    .option('--json', 'print the conns as JSON')
    .action(
      action(async (opts: ServerOptions & { protocol?: string; client?: string; vip?: string; real?: string; limit?: number; json?: boolean }) => {
        const filter: ConnFilter = { protocols: [], clients: [], vips: [], reals: [], states: [] };
        if (opts.protocol !== undefined) {
          const p = PROTOCOLS[opts.protocol.toLowerCase()];
          if (p === undefined) throw new UsageError(`--protocol: expected tcp, udp or icmp, got "${opts.protocol}"`);
          filter.protocols.push(p);
        }
        if (opts.client) filter.clients.push(opts.client);
        if (opts.vip) filter.vips.push(opts.vip);
        if (opts.real) filter.reals.push(opts.real);
        await withApi(opts, async (api) => {
          const conns: Conn[] = [];
          let pageToken = '';
          do {
            const page = await api.conns.listConns({ filter, pageSize: 1000, pageToken });
            conns.push(...page.conns);
            pageToken = page.nextPageToken;
          } while (pageToken !== '' && (opts.limit === undefined || conns.length < opts.limit));
          const shown = opts.limit === undefined ? conns : conns.slice(0, opts.limit);
          out(opts.json ? JSON.stringify(shown, bigintJson, 2) : formatConns(shown));
        });
      }),
    );

  serverOptions(conns.command('get'))
    .description('show one conn by its client-side tuple (ConnService.GetConn); NOT_FOUND if there is none')
    .argument('<protocol>', 'tcp, udp or icmp')
    .argument('<client>', 'CLIENT:PORT (ICMP: CLIENT:ECHO-ID), e.g. 198.18.2.2:40000')
    .argument('<vip>', 'VIP:PORT (ICMP: VIP alone), e.g. 198.19.0.1:80')
    .option('--json', 'print the conn as JSON')
    .action(
      action(async (proto: string, client: string, vip: string, _opts: unknown, cmd: Command) => {
        // The parent `conns` shares --server, --config and --json: read them from either.
        const opts = cmd.optsWithGlobals<ServerOptions & { json?: boolean; protocol?: string; client?: string; vip?: string; real?: string; limit?: number }>();
        if (opts.protocol !== undefined || opts.client !== undefined || opts.vip !== undefined || opts.real !== undefined || opts.limit !== undefined) {
          throw new UsageError('conns get: the list filters (--protocol, --client, --vip, --real, --limit) do not apply; give the tuple');
        }
        const req = parseConnTuple(proto, client, vip);
        await withApi(opts, async (api) => {
          const { conn } = await api.conns.getConn(req);
          out(opts.json ? JSON.stringify(conn, bigintJson, 2) : formatConns(conn ? [conn] : []));
        });
      }),
    );

  const EVENT_TYPES: Record<string, ConnEventType> = {
    created: ConnEventType.CONN_EVENT_TYPE_CREATED,
    state: ConnEventType.CONN_EVENT_TYPE_STATE_CHANGED,
    path: ConnEventType.CONN_EVENT_TYPE_PATH_CHANGED,
    closed: ConnEventType.CONN_EVENT_TYPE_CLOSED,
  };
  serverOptions(program.command('events'))
    .description('conn events, one line each (ConnService.WatchConnEvents); lost events are reported as such')
    .option('-f, --follow', 'keep streaming new events until Ctrl-C (default unless --since or --initial)')
    .option('--initial', 'first list the current conns, then a snapshot-end line')
    .option('--since <seq>', 'replay kept events after this sequence number', (v) => {
      if (!/^[0-9]+$/.test(v)) throw new InvalidArgumentError('must be a sequence number');
      return BigInt(v);
    })
    .option('-t, --type <types>', 'comma-separated: created, state, path, closed (default all)')
    .option('--vip <address>', 'only conns of this virtual service address', ipv4Arg)
    .option('--client <address>', 'only conns of this client', ipv4Arg)
    .option('--json', 'one JSON object per line')
    .action(
      action(
        async (opts: ServerOptions & { follow?: boolean; initial?: boolean; since?: bigint; type?: string; vip?: string; client?: string; json?: boolean }) => {
          const types = (opts.type ?? '')
            .split(',')
            .filter((t) => t !== '')
            .map((t) => {
              const v = EVENT_TYPES[t.trim()];
              if (v === undefined) throw new UsageError(`--type: expected created, state, path or closed, got "${t}"`);
              return v;
            });
          const follow = opts.follow ?? (opts.since === undefined && !opts.initial);
          const req: WatchConnEventsRequest = {
            follow,
            sinceSeq: opts.since,
            initialState: opts.initial ?? false,
            filter: { protocols: [], clients: opts.client ? [opts.client] : [], vips: opts.vip ? [opts.vip] : [], reals: [], states: [] },
            types,
          };
          await withApi(
            opts,
            (api) =>
              new Promise<void>((resolve, reject) => {
                const stream = api.raw.conns.watchConnEvents(req);
                const stop = () => stream.cancel();
                process.once('SIGINT', stop);
                stream.on('data', (m: WatchConnEventsResponse) => out(opts.json ? JSON.stringify(m, bigintJson) : formatEvent(m)));
                stream.on('error', (e: Error & { code?: number }) => {
                  process.removeListener('SIGINT', stop);
                  // Cancelled by our own Ctrl-C handler: a normal end.
                  if (e.code === 1) resolve();
                  else reject(e);
                });
                stream.on('end', () => {
                  process.removeListener('SIGINT', stop);
                  resolve();
                });
              }),
          );
        },
      ),
    );

  serverOptions(program.command('counters'))
    .description('path counters per protocol and port (rx, symmetric, routed, triangles prevented and happened, path changes) and non-zero drops')
    .option('--json', 'print the GetCounters response as JSON')
    .action(
      action(async (opts: ServerOptions & { json?: boolean }) => {
        await withApi(opts, async (api) => {
          const c = await api.path.getCounters({});
          out(opts.json ? JSON.stringify(c, bigintJson, 2) : formatCounters(c));
        });
      }),
    );

  serverOptions(program.command('ports'))
    .description('list the ports: device, MAC, MTU, link, addresses, packets and bytes, drops and errors, and the kernel interface counters')
    .option('--json', 'print the ListPorts response as JSON, each port with its addresses (ListAddresses)')
    .action(
      action(async (opts: ServerOptions & { json?: boolean }) => {
        await withApi(opts, async (api) => {
          const [{ ports }, { addresses }] = await Promise.all([api.ports.listPorts({}), api.network.listAddresses({})]);
          out(
            opts.json
              ? JSON.stringify({ ports: ports.map((p) => ({ ...p, addresses: portAddresses(p.name, addresses) })) }, bigintJson, 2)
              : formatPorts(ports, addresses),
          );
        });
      }),
    );

  serverOptions(program.command('top'))
    .description('live per-protocol path counters with rates; q or Ctrl-C quits')
    .option('-i, --interval <seconds>', 'refresh interval', positiveNumber, 1)
    .option('-n, --iterations <n>', 'quit after n refreshes', positiveInt)
    .action(
      action(async (opts: ServerOptions & { interval: number; iterations?: number }) => {
        const server = serverAddress(opts);
        await withApi(opts, (api) =>
          runTop(api, { server, intervalMs: opts.interval * 1000, iterations: opts.iterations, out: process.stdout, input: process.stdin }),
        );
      }),
    );

  serverOptions(program.command('apply'))
    .description('make the configuration equal to a YAML document (ConfigService.ApplyConfig) and print what changed')
    .requiredOption('-f, --file <file>', 'YAML or JSON retrace.v1.Config ("-" reads standard input)')
    .option('--dry-run', 'only print what would change')
    .action(
      action(async (opts: ServerOptions & { file: string; dryRun?: boolean }) => {
        const config = readConfigFile(opts.file);
        await withApi(opts, async (api) => {
          const res = await api.config.applyConfig({ config, dryRun: opts.dryRun === true });
          const diff = res.diff!;
          const n = diffCount(diff);
          if (n > 0) out(formatDiff(diff));
          out(n === 0 ? 'no changes' : `${res.dryRun ? 'would apply' : 'applied'} ${n} change${n === 1 ? '' : 's'}`);
        });
      }),
    );

  serverOptions(program.command('get-config'))
    .description('print the configuration (ConfigService.GetConfig) in the form `retrace apply -f` reads')
    .option('-o, --output <format>', 'yaml or json', 'yaml')
    .action(
      action(async (opts: ServerOptions & { output: string }) => {
        if (opts.output !== 'yaml' && opts.output !== 'json') throw new UsageError(`--output: expected yaml or json, got "${opts.output}"`);
        await withApi(opts, async (api) => {
          const { config, drained } = await api.config.getConfig({});
          const cfg = config ?? Config.create();
          if (opts.output === 'json') out(JSON.stringify(Config.toJSON(cfg), null, 2));
          else out(`${drained ? '# drained: the weights below are restored by `retrace undrain`\n' : ''}${configToYaml(cfg)}`);
        });
      }),
    );

  serverOptions(program.command('drain'))
    .description('health NOT_SERVING and every real weight 0: new conns refused, existing ones finish')
    .action(
      action(async (opts: ServerOptions) => {
        await withApi(opts, async (api) => {
          const r = await api.config.drain({});
          out(`drained: ${r.realsDrained} real(s) set to weight 0 in ${r.virtualServices} virtual service(s); health NOT_SERVING`);
        });
      }),
    );

  serverOptions(program.command('health'))
    .description('grpc.health.v1 Check: prints the status; exit 0 SERVING, 4 otherwise (as grpc_health_probe)')
    .option('--service <name>', 'the health service ("" = the appliance: NOT_SERVING while starting, drained or stopping)', '')
    .option('--timeout-ms <ms>', 'deadline of the call', positiveInt, 2000)
    .action(
      action(async (opts: ServerOptions & { service: string; timeoutMs: number }) => {
        await withApi(opts, async (api) => {
          const status = await api.health(opts.service, opts.timeoutMs);
          out(status);
          if (status !== 'SERVING') process.exitCode = 4;
        });
      }),
    );

  serverOptions(program.command('undrain'))
    .description('restore the weights drain remembered and turn health back to SERVING')
    .action(
      action(async (opts: ServerOptions) => {
        await withApi(opts, async (api) => {
          const r = await api.config.undrain({});
          out(`undrained: ${r.realsRestored} real weight(s) restored in ${r.virtualServices} virtual service(s); health SERVING`);
        });
      }),
    );
}
