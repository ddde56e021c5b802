/**
 * ConnService's pure parts: request validation (filters, page tokens, DeleteConns' empty-filter
 * rule, GetConn's required tuple, WatchConnEvents' forbidden combinations) and ListConns paging over a fake dataplane whose
 * workers hand out their tables the way dumpConns does (a cursor after the last conn returned).
 */
import type { ConnView } from '../../src/dataplane';
import { ConnEventType, ConnState, DeleteConnsRequest, GetConnRequest, ListConnsRequest, WatchConnEventsRequest } from '../../src/gen/retrace/v1/conn';
import { Protocol } from '../../src/gen/retrace/v1/types';
import { listConnsPage } from '../../src/server/conn-service';
import { ValidationError } from '../../src/server/errors';
import * as v from '../../src/server/validate';

const invalid = (fn: () => unknown, field: string) => {
  expect(fn).toThrow(ValidationError);
  expect(fn).toThrow(new RegExp(`^${field.replace(/[[\]]/g, '\\$&')}: `));
};

function conn(worker: number, i: number, client: string): ConnView {
  const side = { packets: 1n, bytes: 1n };
  return {
    type: 'snapshot',
    protocol: 'udp',
    state: 'established',
    local: false,
    client,
    clientPort: 1000 + i,
    vip: '198.19.0.1',
    vipPort: 80,
    localAddress: '198.18.30.100',
    localPort: 2000 + i,
    real: '198.18.30.11',
    realPort: 8080,
    client_side: side,
    server_side: side,
    worker,
    timeNs: 0n,
    createdNs: 0n,
    lastNs: 0n,
  };
}

/** Workers with fixed tables; dumpConns returns up to max conns from cursor (an index here). */
function fakeDataplane(tables: ConnView[][]) {
  const calls: [number, number, number][] = [];
  return {
    calls,
    workers: tables.length,
    dumpConns: async (worker: number, cursor: number, max: number) => {
      calls.push([worker, cursor, max]);
      const conns = tables[worker].slice(cursor, cursor + max);
      const next = cursor + conns.length;
      return { conns, cursor: next, done: next >= tables[worker].length };
    },
  };
}

describe('ListConns validation', () => {
  it('defaults and caps page_size', () => {
    expect(v.listConns(ListConnsRequest.fromPartial({})).pageSize).toBe(100);
    expect(v.listConns(ListConnsRequest.fromPartial({ pageSize: 7 })).pageSize).toBe(7);
    expect(v.listConns(ListConnsRequest.fromPartial({ pageSize: 50000 })).pageSize).toBe(10000);
  });

  it('names the bad filter entry', () => {
    invalid(() => v.listConns(ListConnsRequest.fromPartial({ filter: { vips: ['198.19.0.1', '1.2.3'] } })), 'filter.vips[1]');
    invalid(() => v.listConns(ListConnsRequest.fromPartial({ filter: { protocols: [Protocol.PROTOCOL_UNSPECIFIED] } })), 'filter.protocols[0]');
    invalid(() => v.listConns(ListConnsRequest.fromPartial({ filter: { states: [ConnState.CONN_STATE_UNSPECIFIED] } })), 'filter.states[0]');
  });

  it('round-trips a page token for the same filter only', () => {
    const filter = { clients: ['198.18.2.2', '198.18.1.2'], protocols: [Protocol.PROTOCOL_UDP] };
    const q = v.listConns(ListConnsRequest.fromPartial({ filter })).query;
    const token = v.encodePageToken({ worker: 3, cursor: 4242 }, q);
    // The same filter in another order is the same filter.
    const same = { ...filter, clients: ['198.18.1.2', '198.18.2.2'] };
    expect(v.listConns(ListConnsRequest.fromPartial({ filter: same, pageToken: token })).start).toEqual({ worker: 3, cursor: 4242 });
    invalid(() => v.listConns(ListConnsRequest.fromPartial({ filter: { clients: ['198.18.2.2'] }, pageToken: token })), 'page_token');
    invalid(() => v.listConns(ListConnsRequest.fromPartial({ pageToken: 'not-a-token' })), 'page_token');
    invalid(() => v.listConns(ListConnsRequest.fromPartial({ pageToken: Buffer.from('c1.0.99999999999.AAAAAAAAAAA').toString('base64url') })), 'page_token');
  });

  it('matches OR within a list and AND across lists; empty lists match all', () => {
    const q = v.connFilter({ protocols: [], clients: ['198.18.2.2', '198.18.1.2'], vips: [], reals: ['198.18.30.11'], states: [] }, 'filter');
    expect(v.matchConn(q, conn(0, 0, '198.18.1.2'))).toBe(true);
    expect(v.matchConn(q, conn(0, 0, '198.18.9.9'))).toBe(false);
    expect(v.matchConn(q, { ...conn(0, 0, '198.18.1.2'), real: '198.18.30.12' })).toBe(false);
    expect(v.matchConn(v.connFilter(undefined, 'filter'), conn(0, 0, '198.18.9.9'))).toBe(true);
  });
});

describe('listConnsPage', () => {
  const A = '198.18.1.2';
  const B = '198.18.2.2';
  const tables = [Array.from({ length: 10 }, (_, i) => conn(0, i, i % 3 === 0 ? A : B)), [], Array.from({ length: 7 }, (_, i) => conn(2, i, i === 6 ? A : B))];
  const all = v.connFilter(undefined, 'filter');
  const onlyA = v.connFilter({ protocols: [], clients: [A], vips: [], reals: [], states: [] }, 'filter');

  async function walk(q: v.ConnQuery, pageSize: number) {
    const dp = fakeDataplane(tables);
    const pages: ConnView[][] = [];
    let pos: v.PagePosition | undefined = { worker: 0, cursor: 0 };
    while (pos !== undefined) {
      const p: { conns: ConnView[]; next: v.PagePosition | undefined } = await listConnsPage(dp, q, pageSize, pos);
      pages.push(p.conns);
      pos = p.next;
    }
    return { pages, calls: dp.calls };
  }

  it('walks every worker, empty ones included, in pages of at most page_size', async () => {
    const { pages } = await walk(all, 4);
    expect(pages.map((p) => p.length)).toEqual([4, 4, 4, 4, 1]);
    expect(pages.flat().map((c) => `${c.worker}/${c.clientPort}`)).toEqual([...tables[0], ...tables[2]].map((c) => `${c.worker}/${c.clientPort}`));
  });

  it('asks for exactly what is missing without a filter', async () => {
    const { calls } = await walk(all, 4);
    expect(calls[0]).toEqual([0, 0, 4]);
    expect(calls.every(([, , max]) => max <= 4)).toBe(true);
  });

  it('with a filter, ends each page right after its last match, so nothing is skipped or repeated', async () => {
    const { pages } = await walk(onlyA, 2);
    // A is at 0, 3, 6, 9 on worker 0 and 6 on worker 2.
    expect(pages.flat().map((c) => `${c.worker}/${c.clientPort - 1000}`)).toEqual(['0/0', '0/3', '0/6', '0/9', '2/6']);
    expect(pages.every((p) => p.length <= 2)).toBe(true);
  });

  it('rejects a token naming a worker that does not exist', async () => {
    await expect(listConnsPage(fakeDataplane(tables), all, 10, { worker: 3, cursor: 0 })).rejects.toThrow(/^page_token: /);
  });
});

describe('DeleteConns validation', () => {
  it('refuses an empty filter unless all is set, and all together with a filter', () => {
    invalid(() => v.deleteConns(DeleteConnsRequest.fromPartial({})), 'all');
    expect(v.deleteConns(DeleteConnsRequest.fromPartial({ all: true }))).toEqual({});
    invalid(() => v.deleteConns(DeleteConnsRequest.fromPartial({ all: true, clientPort: 5 })), 'all');
  });

  it('maps set fields to the dataplane filter and checks each', () => {
    expect(v.deleteConns(DeleteConnsRequest.fromPartial({ protocol: Protocol.PROTOCOL_TCP, vip: '198.19.0.1', vipPort: 80 }))).toEqual({
      protocol: 'tcp',
      vip: '198.19.0.1',
      vipPort: 80,
    });
    expect(v.deleteConns(DeleteConnsRequest.fromPartial({ protocol: Protocol.PROTOCOL_ICMP, clientPort: 7 }))).toEqual({ protocol: 'icmp', clientPort: 7 });
    invalid(() => v.deleteConns(DeleteConnsRequest.fromPartial({ protocol: Protocol.PROTOCOL_UNSPECIFIED, vip: '198.19.0.1' })), 'protocol');
    invalid(() => v.deleteConns(DeleteConnsRequest.fromPartial({ protocol: Protocol.PROTOCOL_ICMP, realPort: 80 })), 'real_port');
    invalid(() => v.deleteConns(DeleteConnsRequest.fromPartial({ clientPort: 70000 })), 'client_port');
    invalid(() => v.deleteConns(DeleteConnsRequest.fromPartial({ real: '0.0.0.0' })), 'real');
  });
});

describe('GetConn validation', () => {
  const tcp = { protocol: Protocol.PROTOCOL_TCP, client: '198.18.2.2', clientPort: 40000, vip: '198.19.0.1', vipPort: 80 };
  const icmp = { protocol: Protocol.PROTOCOL_ICMP, client: '198.18.2.2', clientPort: 4242, vip: '198.19.0.1', vipPort: 0 };
  const req = (r: Parameters<typeof GetConnRequest.fromPartial>[0]) => v.getConn(GetConnRequest.fromPartial(r));

  it('maps the tuple to the dataplane key, ICMP with its echo id and vip_port 0', () => {
    expect(req(tcp)).toEqual({ protocol: 'tcp', client: '198.18.2.2', clientPort: 40000, vip: '198.19.0.1', vipPort: 80 });
    expect(req({ ...tcp, protocol: Protocol.PROTOCOL_UDP, clientPort: 65535, vipPort: 1 })).toMatchObject({ protocol: 'udp', clientPort: 65535, vipPort: 1 });
    expect(req(icmp)).toEqual({ protocol: 'icmp', client: '198.18.2.2', clientPort: 4242, vip: '198.19.0.1', vipPort: 0 });
    // Echo id 0 is a legal id on the wire (ping -e 0): an exact key, not "any".
    expect(req({ ...icmp, clientPort: 0 })).toMatchObject({ protocol: 'icmp', clientPort: 0 });
  });

  it('requires every field', () => {
    expect(() => req({})).toThrow(/^protocol: required/);
    invalid(() => req({ ...tcp, client: '' }), 'client');
    invalid(() => req({ ...tcp, clientPort: 0 }), 'client_port');
    invalid(() => req({ ...tcp, vip: '' }), 'vip');
    invalid(() => req({ ...tcp, vipPort: 0 }), 'vip_port');
  });

  it('names the bad field', () => {
    invalid(() => req({ ...tcp, protocol: Protocol.PROTOCOL_UNSPECIFIED }), 'protocol');
    invalid(() => req({ ...tcp, protocol: 99 as Protocol }), 'protocol');
    invalid(() => req({ ...tcp, client: '198.18.2.256' }), 'client');
    invalid(() => req({ ...tcp, client: '0.0.0.0' }), 'client');
    invalid(() => req({ ...tcp, clientPort: 65536 }), 'client_port');
    invalid(() => req({ ...icmp, clientPort: 65536 }), 'client_port');
    invalid(() => req({ ...tcp, vip: 'vip' }), 'vip');
    invalid(() => req({ ...tcp, vipPort: 70000 }), 'vip_port');
    expect(() => req({ ...icmp, vipPort: 80 })).toThrow('vip_port: must be 0 for ICMP, got 80');
  });
});

describe('WatchConnEvents validation', () => {
  const req = (r: Parameters<typeof WatchConnEventsRequest.fromPartial>[0]) => v.watchConnEvents(WatchConnEventsRequest.fromPartial(r));

  it('needs something to send', () => {
    invalid(() => req({}), 'follow');
    expect(req({ follow: true }).follow).toBe(true);
    expect(req({ sinceSeq: 0n }).sinceSeq).toBe(0n);
    expect(req({ initialState: true }).initialState).toBe(true);
  });

  it('refuses initial_state with since_seq, with or without follow', () => {
    invalid(() => req({ initialState: true, sinceSeq: 5n }), 'initial_state');
    invalid(() => req({ follow: true, initialState: true, sinceSeq: 0n }), 'initial_state');
  });

  it('maps types and refuses CONN_EVENT_TYPE_UNSPECIFIED', () => {
    expect([...req({ follow: true, types: [ConnEventType.CONN_EVENT_TYPE_CLOSED, ConnEventType.CONN_EVENT_TYPE_PATH_CHANGED] }).types]).toEqual([
      'closed',
      'path_changed',
    ]);
    invalid(() => req({ follow: true, types: [ConnEventType.CONN_EVENT_TYPE_CREATED, ConnEventType.CONN_EVENT_TYPE_UNSPECIFIED] }), 'types[1]');
  });
});
