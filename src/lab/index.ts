// The namespace lab (see topology.ts for the picture).
export * from './topology';
export { parsePcap, tcpFlagString } from './pcap';
export { readCapture } from './capture';
