/**
 * The JSON that src/lab/client.ts prints (one line per run) and LabTopology's tcpEcho/udpEcho/who
 * helpers return. Every item is reported, successful or not; a failure carries a short reason
 * such as `ECONNREFUSED`, `ECONNRESET`, `timeout after 3000 ms (echo: 512/1024 bytes)` or
 * `mismatch at byte 17`.
 */

/** One TCP connection or one UDP socket. */
export interface ItemResult {
  index: number;
  ok: boolean;
  /** Why it failed (absent when ok). */
  reason?: string;
  /** Local (source) port the kernel chose; absent if the socket never got one. */
  localPort?: number;
  /** Wall time of the whole item in milliseconds (connect to close for TCP). */
  ms: number;
}

export interface TcpItemResult extends ItemResult {
  /** Rounds fully echoed byte-exact. */
  rounds: number;
  /** Bytes received back in total. */
  echoed: number;
  /** Connect time in milliseconds (SYN to established). */
  connectMs?: number;
  /** The connection was closed cleanly (FIN both ways) after the echo. */
  closed: boolean;
}

export interface UdpItemResult extends ItemResult {
  /** Datagrams echoed byte-exact. */
  rounds: number;
  /** Where the last reply came from (`addr:port`): the address the client talked to if all is well. */
  from?: string;
}

export interface WhoItemResult extends ItemResult {
  /** The real server's name (`rs1`...) when ok. */
  name?: string;
}

interface ReportBase<T extends ItemResult> {
  host: string;
  port: number;
  /** Items that succeeded. */
  ok: number;
  /** Items that failed. */
  failed: number;
  /** Wall time of the run in milliseconds. */
  durationMs: number;
  /** One entry per item, in index order. */
  results: T[];
  /** The failed entries only (same objects as in results). */
  failures: T[];
}

export interface TcpEchoReport extends ReportBase<TcpItemResult> {
  mode: 'tcp';
  bytes: number;
  rounds: number;
}

export interface UdpEchoReport extends ReportBase<UdpItemResult> {
  mode: 'udp';
  bytes: number;
  rounds: number;
}

export interface WhoReport extends ReportBase<WhoItemResult> {
  mode: 'who';
  proto: 'tcp' | 'udp';
  /** Names of the successful answers, in index order. */
  names: string[];
  /** How many answers each name gave. */
  counts: Record<string, number>;
}

/** A line printed by src/lab/echo-server.ts on stdout. */
export type EchoServerEvent =
  | { event: 'ready'; name: string; host: string; tcp: number; udp: number; who: number }
  | { event: 'conn'; name: string; proto: 'tcp' | 'udp'; service: 'echo' | 'who'; port: number; peer: string; peerPort: number; t: number };
