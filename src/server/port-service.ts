import type { Dataplane, PortInfo } from '../dataplane';
import { LinkState, type Port, type PortServiceServer } from '../gen/retrace/v1/port';
import type { Logger } from '../log';
import { ValidationError } from './errors';
import { unary } from './unary';

const LINK: Record<PortInfo['link'], LinkState> = {
  up: LinkState.LINK_STATE_UP,
  down: LinkState.LINK_STATE_DOWN,
  unknown: LinkState.LINK_STATE_UNSPECIFIED,
};

export function toPort(p: PortInfo, device: string, kernel?: Port['kernel']): Port {
  return {
    name: p.name,
    id: p.portId,
    device,
    driver: p.driver,
    mac: p.mac,
    mtu: p.mtu,
    linkState: LINK[p.link],
    linkSpeedMbps: p.speedMbps,
    rxQueues: p.rxQueues,
    txQueues: p.txQueues,
    stats: { ...p.stats },
    kernel,
  };
}

export function portService(dp: Dataplane, log: Logger): PortServiceServer {
  const conf = (name: string) => dp.config.ports.find((p) => p.name === name);
  const device = (name: string) => conf(name)?.device ?? '';
  const kernel = (name: string): Port['kernel'] => {
    const k = conf(name)?.kernel;
    return k && { name: k.name, netns: k.netns, queue: k.queue, rate: k.rate, burst: k.burst };
  };
  return {
    listPorts: unary(log, 'ListPorts', () => ({ ports: dp.ports().map((p) => toPort(p, device(p.name), kernel(p.name))) })),
    getPort: unary(log, 'GetPort', (req) => {
      if (req.name === '') throw new ValidationError('name', 'must not be empty');
      const p = dp.port(req.name);
      return { port: toPort(p, device(p.name), kernel(p.name)) };
    }),
  };
}
