/**
 * The counter fields of retrace.v1.PathCounters and retrace.v1.DropCounters are the dataplane's
 * counter names verbatim and in the same order: read the names from the built addon
 * (counterLayout needs no EAL) and the fields from the descriptor set generated from proto/.
 */
import { fromBinary } from '@bufbuild/protobuf';
import { FieldDescriptorProto_Type, FileDescriptorSetSchema, type DescriptorProto } from '@bufbuild/protobuf/wkt';
import { loadNative, type NativeCounterLayout } from '../../src/dataplane/binding';
import { DESCRIPTOR_SET_BASE64 } from '../../src/gen/descriptors';
import { ConnTableCounters, DropCounters, PathCounters } from '../../src/gen/retrace/v1/path';

function message(name: string): DescriptorProto {
  const set = fromBinary(FileDescriptorSetSchema, Buffer.from(DESCRIPTOR_SET_BASE64, 'base64'));
  const file = set.file.find((f) => f.name === 'retrace/v1/path.proto');
  const msg = file?.messageType.find((m) => m.name === name);
  if (msg === undefined) throw new Error(`retrace.v1.${name} not in the descriptor set`);
  return msg;
}

const fieldNames = (name: string) => message(name).field.map((f) => f.name);
const camel = (s: string) => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

describe('counter names shared by the dataplane and the proto', () => {
  let layout: NativeCounterLayout;

  beforeAll(() => {
    layout = loadNative().counterLayout();
  });

  it('PathCounters has one field per path counter, named and ordered as the dataplane lists them', () => {
    expect(fieldNames('PathCounters')).toEqual(layout.pathCounters);
  });

  it('DropCounters has one field per drop reason, named and ordered as the dataplane lists them', () => {
    expect(fieldNames('DropCounters')).toEqual(layout.drops);
  });

  it('ConnTableCounters has one field per conn table counter, named and ordered as the dataplane lists them', () => {
    expect(fieldNames('ConnTableCounters')).toEqual(layout.connCounters);
  });

  it('every counter field is a uint64', () => {
    for (const name of ['PathCounters', 'DropCounters', 'ConnTableCounters']) {
      for (const f of message(name).field) expect([f.name, f.type]).toEqual([f.name, FieldDescriptorProto_Type.UINT64]);
    }
  });

  it('GetCountersResponse has one ProtocolCounters field per dataplane protocol, in order', () => {
    const fields = message('GetCountersResponse').field;
    expect(fields.slice(0, layout.protocols.length).map((f) => [f.name, f.typeName])).toEqual(layout.protocols.map((p) => [p, '.retrace.v1.ProtocolCounters']));
  });

  it('the generated TypeScript messages carry the same fields (camelCase)', () => {
    expect(Object.keys(PathCounters.create())).toEqual(layout.pathCounters.map(camel));
    expect(Object.keys(DropCounters.create())).toEqual(layout.drops.map(camel));
    expect(Object.keys(ConnTableCounters.create())).toEqual(layout.connCounters.map(camel));
  });
});
