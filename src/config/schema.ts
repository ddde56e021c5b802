/**
 * The configuration schema (zod, strict objects: an unknown key is an error) with every field's
 * meaning and default, the cross-field checks, and the built-in default configuration.
 */
import * as fs from 'node:fs';
import { z } from 'zod';
import { EAL_LOG_LEVELS, LOG_LEVELS, MAC_RE, deviceKind, deviceName, intIn, listenAddressProblem, parseLcores } from './fields';

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

const portSchema = z.strictObject({
  /** Logical port name used by the API, logs and counters: ^[a-z][a-z0-9-]{0,30}$. */
  name: z.string().regex(/^[a-z][a-z0-9-]{0,30}$/, {
    error: 'must match ^[a-z][a-z0-9-]{0,30}$ (lower-case letter, then letters, digits, "-"; at most 31 chars)',
  }),
  /**
   * The DPDK device: a vdev (`net_<driver><n>[,key=value...]`, e.g. `net_af_packet0,iface=veth0`,
   * `net_ring0`, `net_tap1,iface=rtr1`, `net_pcap0,rx_pcap=/x.pcap`) passed with --vdev, or a PCI
   * address (`[dddd:]bb:dd.f[,key=value...]`) passed with -a.
   */
  device: z.string().refine((d) => deviceKind(d) !== undefined, {
    error: 'not a vdev (net_<driver><n>[,key=value...], e.g. net_af_packet0,iface=veth0) ' + 'or PCI address ([dddd:]bb:dd.f[,key=value...])',
  }),
  /** Port MAC to set (unicast, non-zero); omitted → keep the device's own MAC. Normalised to lower case. */
  mac: z
    .string()
    .regex(MAC_RE, { error: 'must be a MAC address like 02:00:00:00:00:01', abort: true })
    .refine((m) => (parseInt(m.slice(0, 2), 16) & 1) === 0, { error: 'must be a unicast MAC (multicast bit set)', abort: true })
    .refine((m) => !/^(00:){5}00$/.test(m), { error: 'must not be the zero MAC' })
    .transform((m) => m.toLowerCase())
    .optional(),
  /** L3 MTU in bytes. */
  mtu: intIn(68, 9600).default(1500),
  /** RX descriptors per queue; power of two. */
  rx_desc: intIn(64, 16384)
    .refine((n) => (n & (n - 1)) === 0, { error: 'must be a power of two' })
    .default(1024),
  /** TX descriptors per queue; power of two. */
  tx_desc: intIn(64, 16384)
    .refine((n) => (n & (n - 1)) === 0, { error: 'must be a power of two' })
    .default(1024),
  /** Receive frames not addressed to the port's MAC. */
  promiscuous: z.boolean().default(false),
  /**
   * A kernel interface for this port (omitted = none): a Linux interface (net_tap) with the port's
   * MAC, MTU and addresses, through which the host's own traffic uses the port: frames for a port
   * address that the dataplane does not answer go up to it, ARP is mirrored, and what the kernel
   * sends through it leaves by this port (docs/design.md, "Kernel interface").
   */
  kernel: z
    .strictObject({
      /** Interface name (Linux: at most 15 characters). */
      name: z
        .string()
        .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/, { error: 'must be a Linux interface name: 1-15 of A-Z a-z 0-9 _ . - (not starting with . or -)' }),
      /** Named network namespace (ip netns) to move it to; "" = the appliance's namespace. Must exist. */
      netns: z
        .string()
        .regex(/^([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?$/, { error: 'must be "" or a network namespace name (A-Z a-z 0-9 _ . -, at most 64)', abort: true })
        .refine((ns) => ns === '' || fs.existsSync(`/run/netns/${ns}`), {
          error: 'network namespace not found (no /run/netns/<name>; create it with ip netns add)',
        })
        .default(''),
      /** Frames that may wait to go up to the kernel (a ring; power of two). */
      queue: intIn(16, 65536)
        .refine((n) => (n & (n - 1)) === 0, { error: 'must be a power of two' })
        .default(1024),
      /** Frames per second each way between the port and the kernel; 0 = no limit. */
      rate: intIn(0, 100000000).default(10000),
      /** Burst allowance of rate, in frames. */
      burst: intIn(1, 100000000).default(1000),
    })
    .optional(),
});

const baseSchema = z.strictObject({
  /** Control API. */
  grpc: z
    .strictObject({
      /** host:port, [v6]:port, unix:/path/to.sock or unix:///abs/path. Port 0 = any free port. */
      listen: z
        .string()
        .superRefine((s, ctx) => {
          const problem = listenAddressProblem(s);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        })
        .default('127.0.0.1:50051'),
      /** Conn events kept in memory for WatchConnEvents since_seq replays. */
      event_history: intIn(0, 16777216).default(65536),
      /** Events buffered per WatchConnEvents stream before it is told it lost some. */
      subscriber_buffer: intIn(16, 1048576).default(4096),
      /**
       * TLS for the control API (the health-only listener stays plaintext for probes). All ""
       * = plaintext. cert_file + key_file = TLS; client_ca_file too = mutual TLS (clients must
       * present a certificate signed by that CA).
       */
      tls: z
        .strictObject({
          /** PEM certificate chain of the server. */
          cert_file: z.string().default(''),
          /** PEM private key of the server. */
          key_file: z.string().default(''),
          /** PEM CA bundle that client certificates must chain to; "" = no client certificates. */
          client_ca_file: z.string().default(''),
        })
        .superRefine((t, ctx) => {
          if ((t.cert_file === '') !== (t.key_file === '')) {
            ctx.addIssue({ code: 'custom', path: [t.cert_file === '' ? 'cert_file' : 'key_file'], message: 'cert_file and key_file go together' });
          }
          if (t.client_ca_file !== '' && t.cert_file === '') {
            ctx.addIssue({ code: 'custom', path: ['client_ca_file'], message: 'mutual TLS needs cert_file and key_file too' });
          }
          for (const k of ['cert_file', 'key_file', 'client_ca_file'] as const) {
            if (t[k] !== '' && !fs.existsSync(t[k])) ctx.addIssue({ code: 'custom', path: [k], message: `file not found: ${t[k]}` });
          }
        })
        .prefault({}),
    })
    .prefault({}),
  /**
   * A second, plaintext gRPC listener that serves only grpc.health.v1 (for Kubernetes probes).
   * Service "" is readiness (NOT_SERVING while starting, drained or stopping); service "liveness"
   * stays SERVING while the dataplane runs, drained or not.
   */
  health: z
    .strictObject({
      /** host:port or unix:/path; "" = off (health is still served on grpc.listen). */
      listen: z
        .string()
        .superRefine((s, ctx) => {
          if (s === '') return;
          const problem = listenAddressProblem(s);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        })
        .default(''),
    })
    .prefault({}),
  /** Persistence of the configuration applied over the API. */
  state: z
    .strictObject({
      /**
       * File holding the applied configuration (GetConfig's document, plus the drain flag),
       * rewritten atomically after every change and applied at start. "" = not persisted.
       */
      file: z.string().default(''),
    })
    .prefault({}),
  /** Prometheus metrics over plain HTTP (GET /metrics). */
  metrics: z
    .strictObject({
      /** host:port to serve /metrics on; "" = off. */
      listen: z
        .string()
        .superRefine((s, ctx) => {
          if (s === '') return;
          const problem = s.startsWith('unix:') ? 'must be host:port' : listenAddressProblem(s);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        })
        .default(''),
    })
    .prefault({}),
  /**
   * The health check prober (virtual services' health_check): a child process that probes reals
   * with kernel sockets.
   */
  health_checks: z
    .strictObject({
      /**
       * Network namespace of the prober (`ip netns exec`) for reals behind a port without a kernel
       * interface; "" = the appliance's own. Reals behind a port with one (ports[].kernel) are
       * probed from that interface's namespace, from the port's address, through the port.
       */
      netns: z
        .string()
        .regex(/^([A-Za-z0-9_.-]{1,64})?$/, { error: 'must be "" or a namespace name ([A-Za-z0-9_.-], at most 64)' })
        .default(''),
      /** Probes in flight at once, over every real of every service. */
      max_in_flight: intIn(1, 4096).default(256),
    })
    .prefault({}),
  /** Node-side logging (pino). */
  log: z
    .strictObject({
      /** pino level: fatal error warn info debug trace silent. */
      level: z.enum(LOG_LEVELS).default('info'),
    })
    .prefault({}),
  /** DPDK EAL (rte_eal_init) settings. */
  eal: z
    .strictObject({
      /** Memory for DPDK in MB (-m). */
      memory_mb: intIn(64, 65536).default(256),
      /** Use hugepages; false → --no-huge (anonymous memory, no setup needed, no PCI DMA). */
      hugepages: z.boolean().default(false),
      /**
       * --huge-dir: the hugetlbfs mount EAL takes its hugepages from; "" → EAL's own choice (the
       * first hugetlbfs mount of the default page size). Only with hugepages. Whether it is a
       * hugetlbfs mount is checked by `retrace serve` at start (hugeDirProblem), not here.
       */
      huge_dir: z
        .string()
        .regex(/^(\/[^\0\s,]{0,4094})?$/, { error: 'must be "" or an absolute path (no spaces or commas)' })
        .default(''),
      /** --file-prefix; "" → "retrace-<pid>" so that several instances never collide. */
      file_prefix: z
        .string()
        .regex(/^([A-Za-z0-9_-]{1,32})?$/, { error: 'must be "" or match [A-Za-z0-9_-]{1,32}' })
        .default(''),
      /** Raw --lcores value; "" → computed from dataplane.workers (main lcore 0, workers 1..N). */
      lcores: z.string().default(''),
      /** EAL --log-level: emerg alert crit error warning notice info debug. */
      log_level: z.enum(EAL_LOG_LEVELS).default('notice'),
      /** Enable DPDK telemetry socket; false → --no-telemetry. */
      telemetry: z.boolean().default(false),
      /** Extra EAL arguments, appended verbatim after the generated ones. */
      extra_args: z.array(z.string()).default([]),
    })
    .prefault({}),
  /** Packet path. */
  dataplane: z
    .strictObject({
      /** Worker lcores (lcore ids 1..workers). */
      workers: intIn(1, 64).default(1),
      /** mbuf pool size (2^q - 1 is optimal for the mempool). */
      mbufs: intIn(1023, 16777215).default(16383),
      /** Per-lcore mempool cache. */
      mbuf_cache: intIn(0, 512).default(256),
      /** RX/TX burst size. */
      burst: intIn(1, 256).default(32),
      /** Conns each worker can hold (its conn table and record pool are sized by this). */
      max_conns: intIn(1024, 67108864).default(131072),
      /** ICMP the appliance originates (echo replies, errors), per port per second; 0 = unlimited. */
      icmp_rate: intIn(0, 100000000).default(1000),
      /** Burst allowance for icmp_rate, in messages. */
      icmp_burst: intIn(1, 100000000).default(100),
      /** Conn events each worker can queue for the control plane before dropping (power of two). */
      event_ring: intIn(64, 16777216)
        .refine((v) => (v & (v - 1)) === 0, { error: 'must be a power of two' })
        .default(65536),
      /**
       * Table pressure: when a worker's conn table or its TCP source ports (over every LIP) are
       * nearly full, embryonic TCP conns (SYN_SENT, SYN_RECV) are evicted, oldest first, to make
       * room; established conns never are. docs/design.md, "Table pressure".
       */
      table_pressure: z
        .strictObject({
          /** false: a full table or port pool refuses new conns (conn_table_full, no_lip_port). */
          evict_embryonic: z.boolean().default(true),
          /** Conns, in % of max_conns, from which a new conn first evicts an embryonic conn at
           * least min_age_ms old; 0 = only when the table is full. */
          conns_percent: intIn(0, 100).default(90),
          /** The same for TCP source ports in use, in % of this worker's ports over every LIP. */
          ports_percent: intIn(0, 100).default(90),
          /** Below full, embryonic conns younger than this stay (a handshake in progress). */
          min_age_ms: intIn(0, 3600000).default(1000),
        })
        .prefault({}),
      /** Idle back-off of a worker that finds nothing to do. */
      idle: z
        .strictObject({
          /** Empty polls before rte_pause() between polls; 0 = never pause. */
          pause_after: z.int().min(0, { error: 'must be an integer >= 0' }).default(64),
          /** Empty polls before sleeping; 0 = never sleep (busy-poll, for benchmarks). */
          sleep_after: z.int().min(0, { error: 'must be an integer >= 0' }).default(1024),
          /** Sleep length in microseconds once sleeping. */
          sleep_us: intIn(1, 100000).default(100),
        })
        .prefault({}),
    })
    .prefault({}),
  /** DPDK ports, in port-id order of declaration. Names and devices are unique. */
  ports: z.array(portSchema).min(1, { error: 'must list at least one port' }).max(32, { error: 'at most 32 ports' }),
  /** Idle timeouts of conns, in seconds, by protocol and TCP state. */
  timeouts: z
    .strictObject({
      /** TCP while the handshake is in progress (SYN sent, SYN-ACK sent). */
      tcp_syn: intIn(1, 604800).default(30),
      /** TCP once established. */
      tcp_established: intIn(1, 604800).default(900),
      /** TCP after the first FIN. */
      tcp_fin: intIn(1, 604800).default(60),
      /** TCP after both FINs or an RST (TIME_WAIT, CLOSE). */
      tcp_close: intIn(1, 604800).default(10),
      /** UDP since the last datagram either way. */
      udp: intIn(1, 604800).default(300),
      /** ICMP echo conns since the last echo request or reply. */
      icmp: intIn(1, 604800).default(60),
    })
    .prefault({}),
  /** Source-in, source-out per protocol: replies leave by the port/MAC the peer's packets came from. */
  symmetric: z
    .strictObject({
      /** TCP conns reply via the recorded port/MAC; false → route lookup (counted as routed). */
      tcp: z.boolean().default(true),
      /** UDP conns, same rule. */
      udp: z.boolean().default(true),
      /** ICMP echo (local and FNAT) and ICMP errors, same rule. */
      icmp: z.boolean().default(true),
    })
    .prefault({}),
});

type BaseConfig = z.output<typeof baseSchema>;

/** Checks that span several fields; run only once every field is individually valid. */
function crossCheck(cfg: BaseConfig, ctx: z.RefinementCtx): void {
  const names = new Map<string, number>();
  const devices = new Map<string, number>();
  const kernelNames = new Map<string, number>();
  cfg.ports.forEach((p, i) => {
    if (p.kernel !== undefined) {
      const prev = kernelNames.get(p.kernel.name);
      if (prev !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['ports', i, 'kernel', 'name'],
          message: `duplicate kernel interface "${p.kernel.name}" (also ports[${prev}].kernel.name)`,
        });
      } else {
        kernelNames.set(p.kernel.name, i);
      }
    }
    const prevName = names.get(p.name);
    if (prevName !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['ports', i, 'name'], message: `duplicate port name "${p.name}" (also ports[${prevName}].name)` });
    } else {
      names.set(p.name, i);
    }
    const dev = deviceName(p.device);
    if (/^net_tap_kni\d+$/.test(dev)) {
      ctx.addIssue({
        code: 'custom',
        path: ['ports', i, 'device'],
        message: `device name "${dev}" is reserved for kernel interfaces (ports[].kernel); use another net_tap<n>`,
      });
    }
    const prevDev = devices.get(dev);
    if (prevDev !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['ports', i, 'device'], message: `duplicate device "${dev}" (also ports[${prevDev}].device)` });
    } else {
      devices.set(dev, i);
    }
  });
  // Every kernel interface is an ethdev too, and DPDK (Debian's build) has 32 of them.
  const ethdevs = cfg.ports.length + kernelNames.size;
  if (ethdevs > 32) {
    ctx.addIssue({
      code: 'custom',
      path: ['ports'],
      message: `${cfg.ports.length} ports and ${kernelNames.size} kernel interfaces need ${ethdevs} DPDK ports; at most 32`,
    });
  }
  if (!cfg.eal.hugepages && cfg.eal.huge_dir !== '') {
    ctx.addIssue({
      code: 'custom',
      path: ['eal', 'huge_dir'],
      message: 'needs eal.hugepages: true (without hugepages EAL runs --no-huge and has no huge dir)',
    });
  }
  if (!cfg.eal.hugepages) {
    cfg.eal.extra_args.forEach((a, i) => {
      if (a === '--in-memory') {
        ctx.addIssue({
          code: 'custom',
          path: ['eal', 'extra_args', i],
          message: 'DPDK rejects --in-memory together with --no-huge (eal.hugepages is false); --no-shconf is already passed',
        });
      }
    });
  }
  if (cfg.eal.lcores !== '') {
    let ids: number[];
    try {
      ids = parseLcores(cfg.eal.lcores);
    } catch (e) {
      ctx.addIssue({ code: 'custom', path: ['eal', 'lcores'], message: `not a valid --lcores value: ${(e as Error).message}` });
      return;
    }
    const workers = ids.filter((id) => id !== 0);
    if (!ids.includes(0)) {
      ctx.addIssue({ code: 'custom', path: ['eal', 'lcores'], message: 'must include lcore 0 (the main lcore, --main-lcore 0)' });
    } else if (workers.length !== cfg.dataplane.workers) {
      ctx.addIssue({
        code: 'custom',
        path: ['eal', 'lcores'],
        message: `names ${workers.length} worker lcore(s) besides main lcore 0, but dataplane.workers is ${cfg.dataplane.workers}`,
      });
    }
  }
}

/** The full configuration schema (per-field validation, defaults, then cross-field checks). */
export const configSchema = baseSchema.superRefine(crossCheck, { when: (payload) => payload.issues.length === 0 });

/** A validated configuration with every default applied. */
export type Config = z.output<typeof configSchema>;
export type PortConfig = Config['ports'][number];

// ---------------------------------------------------------------------------------------------
// Default config
// ---------------------------------------------------------------------------------------------

/** Built-in configuration: runs anywhere (no NIC, no hugepages) with one ring-backed port. */
export const DEFAULT_CONFIG_YAML = `# retrace default configuration: runs without a NIC or hugepages.
grpc:
  listen: "127.0.0.1:50051"   # host:port, [v6]:port, unix:/path/to.sock or unix:///abs/path
log:
  level: info                 # fatal error warn info debug trace silent
eal:
  memory_mb: 256              # -m
  hugepages: false            # false -> --no-huge
  huge_dir: ""                # hugetlbfs mount for --huge-dir; "" -> EAL's choice
  file_prefix: ""             # "" -> retrace-<pid>
  lcores: ""                  # "" -> main lcore 0 on all CPUs, workers pinned to the last CPUs
  log_level: notice           # emerg alert crit error warning notice info debug
  telemetry: false            # false -> --no-telemetry
  extra_args: []
dataplane:
  workers: 1
  mbufs: 16383
  mbuf_cache: 256
  burst: 32
  idle:
    pause_after: 64           # empty polls before rte_pause() between polls; 0 = never
    sleep_after: 1024         # empty polls before sleeping; 0 = never (benchmarks)
    sleep_us: 100
ports:
  - name: virt0
    device: net_ring0
symmetric:
  tcp: true
  udp: true
  icmp: true
`;
