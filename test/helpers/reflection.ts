/** A minimal server-reflection client (v1 or v1alpha) built from @grpc/reflection's own protos. */
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const PROTO_ROOT = path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');

type Version = 'v1' | 'v1alpha';

interface ReflectionResponse {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
}

export async function reflect(address: string, version: Version, request: Record<string, unknown>): Promise<ReflectionResponse> {
  const def = protoLoader.loadSync(`grpc/reflection/${version}/reflection.proto`, { includeDirs: [PROTO_ROOT], keepCase: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    grpc: { reflection: Record<Version, { ServerReflection: grpc.ServiceClientConstructor }> };
  };
  const client = new pkg.grpc.reflection[version].ServerReflection(address, grpc.credentials.createInsecure());
  try {
    return await new Promise<ReflectionResponse>((resolve, reject) => {
      const stream = client.ServerReflectionInfo({ deadline: Date.now() + 5000 });
      stream.on('data', (res: ReflectionResponse) => {
        resolve(res);
        stream.end();
      });
      stream.on('error', reject);
      stream.write(request);
    });
  } finally {
    client.close();
  }
}

export async function listServices(address: string, version: Version): Promise<string[]> {
  const res = await reflect(address, version, { list_services: '' });
  return (res.list_services_response?.service ?? []).map((s) => s.name).sort();
}
