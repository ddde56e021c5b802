/**
 * Descriptors for server reflection, taken from the FileDescriptorSet that scripts/gen-proto.sh
 * builds with protoc next to the TypeScript code: real file names, import lists and comments.
 *
 * Why not proto-loader: it merges files per package under synthetic names with no imports, and
 * grpcurl then cannot resolve google.protobuf.Timestamp (grpc-node issue 2958). And health comes
 * from the classic grpc/health/v1/health.proto in proto/: grpc-health-check's bundled copy makes
 * grpcurl reject the reflected descriptors ("incorrect implicit map entry name").
 */
import type { PackageDefinition } from '@grpc/proto-loader';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import { DESCRIPTOR_SET_BASE64 } from '../gen/descriptors';

/** The encoded FileDescriptorProtos (field 1 of FileDescriptorSet), one per .proto file. */
export function fileDescriptorProtos(): Uint8Array[] {
  const reader = new BinaryReader(Buffer.from(DESCRIPTOR_SET_BASE64, 'base64'));
  const files: Uint8Array[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === 2) files.push(reader.bytes());
    else reader.skip(wireType);
  }
  return files;
}

/**
 * A PackageDefinition in the shape @grpc/reflection reads (it only looks at each entry's
 * fileDescriptorProtos). Not usable for anything else.
 */
export function reflectionPackageDefinition(): PackageDefinition {
  return { 'retrace.descriptors': { fileDescriptorProtos: fileDescriptorProtos() } } as unknown as PackageDefinition;
}
