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

export function toPort(p: PortInfo, device: string): Port {
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
  };
}

export function portService(dp: Dataplane, log: Logger): PortServiceServer {
  const device = (name: string) => dp.config.ports.find((p) => p.name === name)?.device ?? '';
  return {
    listPorts: unary(log, 'ListPorts', () => ({ ports: dp.ports().map((p) => toPort(p, device(p.name))) })),
    getPort: unary(log, 'GetPort', (req) => {
      if (req.name === '') throw new ValidationError('name', 'must not be empty');
      const p = dp.port(req.name);
      return { port: toPort(p, device(p.name)) };
    }),
  };
}
