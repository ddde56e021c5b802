/**
 * The case registry: name (what --case takes, and the key in the JSON report) -> title and run.
 * The order is the report's.
 */
import type { Ctx, Figure } from '../harness';
import { caseApi } from './api';
import { caseConnEvents } from './conn-events';
import { caseConnScale } from './conn-scale';
import { caseControlLoad } from './control-load';
import { caseFnat, caseFnatProxy, caseIcmpFnat, caseIcmpLocal } from './forwarding';
import { caseLimits, caseTablePressure } from './limits';
import { caseMemory } from './memory';
import { caseNewConns } from './new-conns';
import { caseSynProxy } from './synproxy';

export const CASES: Record<string, { title: string; run: (ctx: Ctx) => Promise<Figure[]> }> = {
  fnat: { title: '(1) FNAT forwarding, TCP and UDP', run: caseFnat },
  'fnat-proxy': { title: '(1b) FNAT TCP forwarding with PROXY protocol v2 beside without', run: caseFnatProxy },
  'icmp-local': { title: '(2) ICMP echo to a local address', run: caseIcmpLocal },
  'icmp-fnat': { title: '(3) ICMP echo through FNAT', run: caseIcmpFnat },
  'new-conns': { title: '(4) New conns per second', run: caseNewConns },
  'conn-scale': { title: '(5) Forwarding with many live conns', run: caseConnScale },
  memory: { title: '(5) Memory per conn', run: caseMemory },
  'conn-events': { title: '(6) Conn events to one subscriber', run: caseConnEvents },
  api: { title: '(7) Unary API latency under load, ApplyConfig with 10,000 reals', run: caseApi },
  'control-load': { title: '(8) Control plane under counter streams and metric scrapes', run: caseControlLoad },
  limits: { title: '(9) Cost of the admission limits of a service', run: caseLimits },
  'table-pressure': { title: '(10) New conns per second under table pressure', run: caseTablePressure },
  synproxy: { title: '(11) SYN proxy: cookies, new conns and forwarding, on against off', run: caseSynProxy },
};
