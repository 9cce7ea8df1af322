// Starts Azurite's blob service from node_modules on a free loopback port with a temporary
// workspace. Azurite stands in for Azure Storage, which cannot be reached from here.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { BlobServiceClient, StorageSharedKeyCredential, type ContainerClient } from '@azure/storage-blob';

/** Azurite's well-known development account (public, documented; not a secret). */
export const ACCOUNT = 'devstoreaccount1';
export const ACCOUNT_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface Azurite {
  readonly port: number;
  /** Blob endpoint, account in the path: http://127.0.0.1:<port>/devstoreaccount1 */
  readonly endpoint: string;
  readonly location: string;
  readonly connectionString: string;
  container(name: string): ContainerClient;
  /** Stops the server; the workspace stays until `cleanup`. */
  stop(): Promise<void>;
  /** Starts it again on the same port and workspace. */
  restart(): Promise<void>;
  cleanup(): Promise<void>;
}

const main = join(dirname(createRequire(import.meta.url).resolve('azurite/package.json')), 'dist/src/blob/main.js');

function launch(location: string, port: number): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(
    process.execPath,
    [main, '--blobHost', '127.0.0.1', '--blobPort', String(port), '--location', location, '--loose', '--skipApiVersionCheck', '--disableTelemetry', '--silent'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /listens on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        child.stdout!.off('data', onData);
        child.stdout!.resume();
        resolve({ child, port: Number(m[1]) });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => reject(new Error(`azurite exited with ${code}: ${out}`)));
  });
}

export async function startAzurite(): Promise<Azurite> {
  const location = await mkdtemp(join(tmpdir(), 'drsite-azurite-'));
  // Port 0: the kernel picks a free port and Azurite prints it.
  let { child, port } = await launch(location, 0);
  const endpoint = `http://127.0.0.1:${port}/${ACCOUNT}`;
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  // The tests' own reads retry a dropped connection (a keep-alive socket Azurite closed while the
  // client reused it shows as "socket hang up" on a busy machine); tests of failures build their own.
  const service = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(ACCOUNT, ACCOUNT_KEY), { retryOptions: { maxTries: 3, retryDelayInMs: 100 } });
  return {
    port,
    endpoint,
    location,
    connectionString: `DefaultEndpointsProtocol=http;AccountName=${ACCOUNT};AccountKey=${ACCOUNT_KEY};BlobEndpoint=${endpoint};`,
    container: (name) => service.getContainerClient(name),
    stop,
    restart: async () => {
      await stop();
      ({ child } = await launch(location, port));
    },
    cleanup: async () => {
      await stop();
      await rm(location, { recursive: true, force: true });
    },
  };
}
