/**
 * ApplyConfig's first step, pure: the whole document, each entry and then the whole (invariants.ts,
 * the rules every unary call obeys too). INVALID_ARGUMENT naming `config.<path>`, or
 * RESOURCE_EXHAUSTED naming the entry beyond a table size; nothing is changed.
 */
import { status } from '@grpc/grpc-js';
import { tableLimits, type TableLimits } from '../../dataplane';
import { type Config } from '../../gen/retrace/v1/config';
import { echo, StatusError, ValidationError } from '../errors';
import { checkState, refPath, StateViolation } from '../invariants';
import * as v from '../validate';
import type { DesiredConfig } from './state';

/** Runs a request validator and re-roots the field it names: `address.port` → `config.addresses[3].port`. */
function at<T>(from: string, to: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ValidationError && (e.field === from || e.field.startsWith(`${from}.`) || e.field.startsWith(`${from}[`))) {
      throw new ValidationError(to + e.field.slice(from.length), e.message.slice(e.field.length + 2));
    }
    throw e;
  }
}

/**
 * Validates a whole ApplyConfig document against the appliance's port names and table sizes:
 * every entry with the request validators of the unary calls, then the whole with checkState, the
 * rules every unary call is checked against too. Throws ValidationError (INVALID_ARGUMENT) naming
 * the first bad field as `config.<list>[i].<field>`, or StatusError RESOURCE_EXHAUSTED naming the
 * first entry beyond a table's size; returns the desired state in dataplane terms.
 */
export function validateConfig(
  cfg: Config | undefined,
  portNames: readonly string[],
  limits: TableLimits = tableLimits(),
  connCapacity?: number,
): DesiredConfig {
  if (cfg === undefined || cfg === null) throw new ValidationError('config', 'required');
  const knownPort = (name: string, field: string): void => {
    if (!portNames.includes(name)) throw new ValidationError(field, `no port named ${echo(name)} (ports: ${portNames.join(', ')})`);
  };

  const addresses = cfg.addresses.map((a, i) => {
    const f = `config.addresses[${i}]`;
    const spec = at('address', f, () => v.createAddress({ address: a }));
    knownPort(spec.port, `${f}.port`);
    return spec;
  });

  const routes = cfg.routes.map((r, i) => {
    const f = `config.routes[${i}]`;
    const spec = at('route', f, () => v.createRoute({ route: r }));
    if (r.connected) throw new ValidationError(`${f}.connected`, 'must be false: connected routes come from the addresses');
    knownPort(spec.port, `${f}.port`);
    return spec;
  });

  const neighbors = cfg.neighbors.map((n, i) => {
    const f = `config.neighbors[${i}]`;
    const spec = at('neighbor', f, () => v.createNeighbor({ neighbor: n }));
    knownPort(spec.port, `${f}.port`);
    return spec;
  });

  const localAddresses = cfg.localAddresses.map((l, i) => {
    const f = `config.local_addresses[${i}]`;
    const spec = at('local_address', f, () => v.createLocalAddress({ localAddress: l }));
    knownPort(spec.port, `${f}.port`);
    return spec;
  });

  const services = cfg.virtualServices.map((s, i) => {
    const f = `config.virtual_services[${i}]`;
    const spec = at('virtual_service', f, () => v.createVirtualService({ virtualService: { ...s, reals: [] } }, connCapacity));
    // Before validating each real: a million of them would take a while to refuse.
    if (s.reals.length > limits.realsPerService) throw new ValidationError(`${f}.reals`, `at most ${limits.realsPerService} reals, got ${s.reals.length}`);
    const { reals } = at('reals', `${f}.reals`, () => v.setReals({ key: { protocol: s.protocol, vip: s.vip, port: s.port }, reals: s.reals }));
    return { ...spec, reals };
  });

  try {
    checkState({ addresses, routes, neighbors, localAddresses, services }, limits);
  } catch (e) {
    if (!(e instanceof StateViolation)) throw e;
    const field = `config.${refPath(e.at)}`;
    const reason = e.reason(e.other === undefined ? '' : `config.${refPath(e.other)}`);
    throw e.kind === 'limit' ? new StatusError(status.RESOURCE_EXHAUSTED, field, reason) : new ValidationError(field, reason);
  }

  const timeouts = cfg.timeouts === undefined ? undefined : at('timeouts', 'config.timeouts', () => v.setTimeouts({ timeouts: cfg.timeouts }));
  const symmetric = cfg.symmetric === undefined ? undefined : { tcp: cfg.symmetric.tcp, udp: cfg.symmetric.udp, icmp: cfg.symmetric.icmp };
  return { addresses, routes, neighbors, localAddresses, services, symmetric, timeouts };
}
