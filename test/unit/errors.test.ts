import { status } from '@grpc/grpc-js';
import pino from 'pino';
import { DataplaneError } from '../../src/dataplane';
import { toStatus, ValidationError } from '../../src/server/errors';

const log = pino({ level: 'silent' });

describe('toStatus', () => {
  it.each([
    ['ENOENT', status.NOT_FOUND],
    ['EEXIST', status.ALREADY_EXISTS],
    ['EINVAL', status.INVALID_ARGUMENT],
    ['E2BIG', status.INVALID_ARGUMENT],
    ['ENOSPC', status.RESOURCE_EXHAUSTED],
    ['ENOMEM', status.RESOURCE_EXHAUSTED],
    ['EUNAVAILABLE', status.UNAVAILABLE],
    ['EBUSY', status.FAILED_PRECONDITION],
    ['EPERM', status.FAILED_PRECONDITION],
  ])('maps a dataplane %s to status %d with its message', (code, want) => {
    const e = toStatus(new DataplaneError(code, 'local address 10.0.0.1: 3 conns still use this local address'), log, 'X');
    expect(e.code).toBe(want);
    expect(e.details).toContain('conns still use');
  });

  it('maps a ValidationError to INVALID_ARGUMENT starting with the field', () => {
    const e = toStatus(new ValidationError('reals[2].weight', 'must be 0..65535, got 70000'), log, 'SetReals');
    expect(e).toMatchObject({ code: status.INVALID_ARGUMENT, details: 'reals[2].weight: must be 0..65535, got 70000' });
  });

  it('maps anything else to INTERNAL without leaking the message', () => {
    const e = toStatus(new TypeError('addr is not an IPv4 address'), log, 'CreateAddress');
    expect(e).toMatchObject({ code: status.INTERNAL, details: 'internal error in CreateAddress' });
    expect(toStatus(new DataplaneError('EIO', 'x'), log, 'Y').code).toBe(status.INTERNAL);
  });
});
