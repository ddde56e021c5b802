#!/usr/bin/env node
/**
 * The `retrace` command.
 *   retrace serve [--config FILE] [flags]   run the appliance (dataplane + gRPC server)
 *   retrace lab demo                        the namespace lab demo (README's main command)
 *   retrace services|reals|conns|counters|ports|top|apply|get-config|drain|undrain
 *                                           clients of a running appliance (src/cli/commands.ts)
 * Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration or usage.
 */
import { Command, InvalidArgumentError } from 'commander';
import { addClientCommands } from './cli/commands';
import { ConfigError, hugeDirProblem, loadConfig, stateFileProblem, type Overrides } from './config';
import { VERSION } from './version';

function positiveInt(v: string): string {
  if (!/^[0-9]+$/.test(v)) throw new InvalidArgumentError('must be a whole number');
  return v;
}

export function buildProgram(): Command {
  const program = new Command('retrace')
    .description('DPDK L4 load balancer whose replies retrace the request path (source-in, source-out)')
    .version(VERSION)
    .exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });

  program
    .command('serve')
    .description('run the appliance: DPDK dataplane plus the gRPC control API')
    .option('-c, --config <file>', 'YAML configuration file (default: built-in config with a virtual port)')
    .option('-l, --listen <address>', 'gRPC listen address (host:port or unix:/path), overrides grpc.listen')
    .option('-w, --workers <n>', 'worker lcores, overrides dataplane.workers', positiveInt)
    .option('-m, --memory-mb <n>', 'EAL memory in MB, overrides eal.memory_mb', positiveInt)
    .option('--file-prefix <prefix>', 'EAL file prefix, overrides eal.file_prefix')
    .option('--log-level <level>', 'log level, overrides log.level')
    .action(async (opts: { config?: string } & Partial<Overrides>) => {
      const overrides: Partial<Overrides> = {
        listen: opts.listen,
        workers: opts.workers,
        memoryMb: opts.memoryMb,
        filePrefix: opts.filePrefix,
        logLevel: opts.logLevel,
      };
      let cfg;
      try {
        cfg = loadConfig({ file: opts.config, overrides });
        const stateProblem = cfg.state.file === '' ? undefined : stateFileProblem(cfg.state.file);
        if (stateProblem !== undefined) throw new ConfigError('state.file', stateProblem);
        const hugeProblem = cfg.eal.huge_dir === '' ? undefined : hugeDirProblem(cfg.eal.huge_dir);
        if (hugeProblem !== undefined) throw new ConfigError('eal.huge_dir', hugeProblem);
      } catch (e) {
        if (e instanceof ConfigError) {
          process.stderr.write(`retrace: ${e.message}\n`);
          process.exit(2);
        }
        throw e;
      }
      // Loaded lazily: a config error must not need (or load) DPDK.
      const { serve } = await import('./serve');
      process.exitCode = await serve(cfg);
    });

  const lab = program.command('lab').description('the network-namespace lab (needs root, iproute2, tcpdump)');
  lab
    .command('demo')
    .description('build the lab, run TCP/UDP/ping through the appliance with symmetric return on and off, print the paths taken')
    .action(async () => {
      const { runDemo } = await import('./lab/demo');
      process.exitCode = await runDemo();
    });

  addClientCommands(program);
  return program;
}

if (require.main === module) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((e: unknown) => {
      process.stderr.write(`retrace: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    });
}
