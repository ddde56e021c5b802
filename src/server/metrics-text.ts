/**
 * The per-service and per-real families of /metrics, written as Prometheus text directly rather
 * than through prom-client (why: below), in slices that leave the event loop free.
 */
import { CLIENT_ADDRESS_MODES, DataplaneError, serviceKeyString, type Dataplane, type RealView, type ServiceView } from '../dataplane';
import { serviceClientAddress, serviceTraffic, type ServiceTraffic } from './balancer-service';

/**
 * The per-service and per-real families are most of a scrape (1500 services of 4 reals: ~80k
 * lines, 5 MB). Through prom-client they cost ~250 ms of one event-loop turn (a labels object,
 * its hash and a map entry per series, then formatting); written straight to text they cost a
 * few ms, in slices of SERVICES_PER_SLICE services with the event loop free in between, so unary
 * calls and health probes are answered while a scrape renders.
 */
const SERVICES_PER_SLICE = 100;

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  lines: string[];
}

type ServiceFamily = Family & { value: (s: ServiceView) => number | bigint };
type RealFamily = Family & { value: (r: RealView) => number | bigint };

const TRAFFIC_HELP = {
  service: (unit: string, to: boolean) =>
    `${unit} of a virtual service's conns forwarded ${to ? 'toward its reals' : 'from its reals'}: the sum over its current reals, each counted since it was added (a removed real's counts leave the sum).`,
  real: (unit: string, to: boolean) => `${unit} of a real's conns forwarded ${to ? 'toward it' : 'from it'} since it was added.`,
};

const CA_HELP = (what: string) => `${what} a virtual service's reals: the sum over its current reals, like the traffic counters.`;

function serviceFamilies(): ServiceFamily[] {
  const f = (name: string, type: Family['type'], help: string, value: ServiceFamily['value']): ServiceFamily => ({ name, type, help, value, lines: [] });
  const ca = (field: keyof ReturnType<typeof serviceClientAddress>) => (s: ServiceView) => serviceClientAddress(s)[field];
  const traffic = (field: keyof ServiceTraffic) => (s: ServiceView) => serviceTraffic(s)[field];
  return [
    f('retrace_service_reals', 'gauge', 'Reals of a virtual service (any weight).', (s) => s.reals.length),
    f('retrace_service_conns_total', 'counter', 'Conns created for a virtual service since it was created.', (s) => s.connsTotal),
    f('retrace_service_packets_to_reals_total', 'counter', TRAFFIC_HELP.service('Packets', true), traffic('packetsToReals')),
    f('retrace_service_packets_from_reals_total', 'counter', TRAFFIC_HELP.service('Packets', false), traffic('packetsFromReals')),
    f('retrace_service_bytes_to_reals_total', 'counter', TRAFFIC_HELP.service('Bytes', true), traffic('bytesToReals')),
    f('retrace_service_bytes_from_reals_total', 'counter', TRAFFIC_HELP.service('Bytes', false), traffic('bytesFromReals')),
    f('retrace_service_active_conns', 'gauge', "Conns currently on a virtual service's reals (what max_conns is checked against).", (s) => s.activeConns),
    f('retrace_service_max_conns', 'gauge', 'Most conns a virtual service holds at once (0 = no limit).', (s) => s.limits.maxConns),
    f('retrace_service_refused_max_conns_total', 'counter', 'New conns a virtual service refused because it was at max_conns.', (s) => s.refusedMaxConns),
    f(
      'retrace_service_refused_denied_total',
      'counter',
      'New conns a virtual service refused because the client matched its deny list.',
      (s) => s.refusedDenied,
    ),
    f(
      'retrace_service_refused_not_allowed_total',
      'counter',
      'New conns a virtual service refused because the client matched no prefix of its (non-empty) allow list.',
      (s) => s.refusedNotAllowed,
    ),
    f(
      'retrace_service_refused_rate_limited_total',
      'counter',
      'New conns a virtual service refused because the client was over its conn_rate.',
      (s) => s.refusedRateLimited,
    ),
    f('retrace_service_syn_cookies_sent_total', 'counter', "SYNs a virtual service's SYN proxy answered with a cookie.", (s) => s.synCookiesSent),
    f(
      'retrace_service_syn_cookies_valid_total',
      'counter',
      "ACKs whose SYN cookie verified at a virtual service's SYN proxy (each opens a conn unless a limit refuses it).",
      (s) => s.synCookiesValid,
    ),
    f(
      'retrace_service_syn_cookies_invalid_total',
      'counter',
      "ACKs for no conn whose SYN cookie did not verify at a virtual service's SYN proxy (dropped).",
      (s) => s.synCookiesInvalid,
    ),
    f(
      'retrace_service_client_address_mode',
      'gauge',
      "How a virtual service passes the client's address to its reals: 0 none, 1 PROXY protocol v2, 2 PROXY protocol v1, 3 TOA.",
      (s) => CLIENT_ADDRESS_MODES.indexOf(s.clientAddress),
    ),
    f('retrace_service_proxy_headers_total', 'counter', CA_HELP('PROXY headers sent toward'), ca('proxyHeaders')),
    f(
      'retrace_service_segments_shifted_total',
      'counter',
      CA_HELP('TCP segments (both ways) whose seq or ack was shifted by a PROXY header, of'),
      ca('segmentsShifted'),
    ),
    f('retrace_service_toa_added_total', 'counter', CA_HELP('TOA options added to segments toward'), ca('toaAdded')),
    f('retrace_service_toa_no_room_total', 'counter', CA_HELP('Segments that were to carry TOA but had no room (sent without), toward'), ca('toaNoRoom')),
  ];
}

function realFamilies(): RealFamily[] {
  const f = (name: string, type: Family['type'], help: string, value: RealFamily['value']): RealFamily => ({ name, type, help, value, lines: [] });
  return [
    f('retrace_real_weight', 'gauge', 'Weight of a real in its virtual service (0 = drained: no new conns).', (r) => r.weight),
    f('retrace_real_active_conns', 'gauge', 'Conns currently on a real.', (r) => r.activeConns),
    f('retrace_real_conns_total', 'counter', 'Conns sent to a real since it was added to its virtual service.', (r) => r.connsTotal),
    f('retrace_real_packets_to_real_total', 'counter', TRAFFIC_HELP.real('Packets', true), (r) => r.packetsToReal),
    f('retrace_real_packets_from_real_total', 'counter', TRAFFIC_HELP.real('Packets', false), (r) => r.packetsFromReal),
    f('retrace_real_bytes_to_real_total', 'counter', TRAFFIC_HELP.real('Bytes', true), (r) => r.bytesToReal),
    f('retrace_real_bytes_from_real_total', 'counter', TRAFFIC_HELP.real('Bytes', false), (r) => r.bytesFromReal),
  ];
}

/** A label value in the text format: backslash, double quote and newline escaped. */
export function escapeLabel(v: string): string {
  return /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v;
}

/** A sample value as prom-client writes it (uint64 counters through Number(), see above). */
function sampleValue(v: number | bigint): string {
  const n = Number(v);
  return Number.isFinite(n) ? String(n) : Number.isNaN(n) ? 'NaN' : n > 0 ? '+Inf' : '-Inf';
}

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * The per-service and per-real families as Prometheus text. Each service is read on its own
 * (GetVirtualService's read), SERVICES_PER_SLICE per event-loop turn; a service deleted
 * meanwhile is left out. Absent (headers only) while the dataplane is not running.
 */
export async function renderServiceSeries(
  dp: Dataplane,
  health: (service: string, real: string) => { state: 'unknown' | 'up' | 'down'; transitions: number } | undefined = () => undefined,
): Promise<Buffer[]> {
  const svc = serviceFamilies();
  const real = realFamilies();
  const healthState: Family = {
    name: 'retrace_real_health',
    type: 'gauge',
    help: "Health check verdict of a real, one series per state (1 = the real's current state): unknown (no verdict yet, not inhibited), up, down (inhibited: no new conns). Only reals of services with a health_check.",
    lines: [],
  };
  const healthTransitions: Family = {
    name: 'retrace_real_health_transitions_total',
    type: 'counter',
    help: 'Health state changes of a real since its check started (the real added or its check configured).',
    lines: [],
  };
  const keys = dp.state === 'running' ? dp.serviceKeys() : [];
  for (let i = 0; i < keys.length; i++) {
    if (i > 0 && i % SERVICES_PER_SLICE === 0) {
      await yieldToLoop();
      if (dp.state !== 'running') break;
    }
    let s: ServiceView;
    try {
      s = dp.getService(keys[i]);
    } catch (e) {
      if (e instanceof DataplaneError && e.code === 'ENOENT') continue; // deleted since the keys were taken
      throw e;
    }
    const labels = `protocol="${escapeLabel(s.protocol)}",vip="${escapeLabel(s.vip)}",vport="${s.port}"`;
    for (const f of svc) f.lines.push(`${f.name}{${labels}} ${sampleValue(f.value(s))}`);
    for (const r of s.reals) {
      const rl = `${labels},real="${escapeLabel(`${r.address}:${r.port}`)}"`;
      for (const f of real) f.lines.push(`${f.name}{${rl}} ${sampleValue(f.value(r))}`);
      const h = s.healthCheck === undefined ? undefined : health(serviceKeyString(s), `${r.address}:${r.port}`);
      if (h !== undefined) {
        for (const st of ['unknown', 'up', 'down'] as const) healthState.lines.push(`${healthState.name}{${rl},state="${st}"} ${h.state === st ? 1 : 0}`);
        healthTransitions.lines.push(`${healthTransitions.name}{${rl}} ${h.transitions}`);
      }
    }
  }
  // One Buffer per family, a turn each: joining and encoding all 5 MB at once took ~15 ms.
  const out: Buffer[] = [];
  for (const f of [...svc, ...real, healthState, healthTransitions]) {
    await yieldToLoop();
    const head = `# HELP ${f.name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${f.name} ${f.type}\n`;
    out.push(Buffer.from(f.lines.length > 0 ? `${head}${f.lines.join('\n')}\n` : head));
  }
  return out;
}
