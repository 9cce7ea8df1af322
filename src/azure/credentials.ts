// Resolves an Azure Site's container client from the environment variables its `credentials` name:
// secrets never live in YAML, and no message here ever prints a variable's value.
import { AnonymousCredential, BlobServiceClient, StorageSharedKeyCredential, type ContainerClient, type StoragePipelineOptions } from '@azure/storage-blob';
import { TerminalError } from '../model/errors.ts';
import type { Site } from '../model/types.generated.ts';

/** Storage SDK retries stay short: the engine's own schedule (1, 2, 4… minutes) does the long waits. */
export interface AzureRetryOptions {
  /** @default 3 */
  readonly maxTries?: number;
  /** @default 500 */
  readonly retryDelayInMs?: number;
  /** Per-try timeout. @default 60000 */
  readonly tryTimeoutInMs?: number;
}

export function pipelineOptions(retry: AzureRetryOptions = {}): StoragePipelineOptions {
  return {
    retryOptions: {
      maxTries: retry.maxTries ?? 3,
      retryDelayInMs: retry.retryDelayInMs ?? 500,
      maxRetryDelayInMs: Math.max(retry.retryDelayInMs ?? 500, 4000),
      tryTimeoutInMs: retry.tryTimeoutInMs ?? 60_000,
    },
  };
}

/**
 * The container of an Azure Site. Credentials, in order of preference: a connection string; an
 * account key (with the blob endpoint from `blobEndpointEnv` or the public cloud's); a SAS token.
 * A variable named in the Site but unset is TerminalError('authentication') naming it.
 */
export function azureContainerFromSite(site: Site, env: NodeJS.ProcessEnv = process.env, retry?: AzureRetryOptions): ContainerClient {
  const name = site.metadata.name;
  const spec = site.spec;
  if (spec.type !== 'azure') throw new TerminalError('invalid-argument', `site ${name} is of type ${spec.type}, not azure`);
  if (!spec.container) throw new TerminalError('invalid-argument', `site ${name}: spec.container is required for Azure Blob replication`);
  const creds = spec.credentials ?? {};
  const read = (field: keyof NonNullable<typeof spec.credentials>): string | undefined => {
    const variable = creds[field];
    if (variable === undefined) return undefined;
    const value = env[variable];
    if (value === undefined || value === '') {
      throw new TerminalError('authentication', `site ${name}: environment variable ${variable} (named by spec.credentials.${field}) is not set`);
    }
    return value;
  };
  const options = pipelineOptions(retry);
  const connectionString = read('connectionStringEnv');
  if (connectionString) {
    try {
      return BlobServiceClient.fromConnectionString(connectionString, options).getContainerClient(spec.container);
    } catch {
      // The SDK's message may quote the string, key included: say only where it came from.
      throw new TerminalError('authentication', `site ${name}: the connection string in ${creds.connectionStringEnv} is malformed`);
    }
  }
  const account = spec.storageAccount;
  const endpoint = (read('blobEndpointEnv') ?? (account ? `https://${account}.blob.core.windows.net` : undefined))?.replace(/\/+$/, '');
  if (!endpoint) throw new TerminalError('invalid-argument', `site ${name}: spec.storageAccount or spec.credentials.blobEndpointEnv is required`);
  const key = read('accountKeyEnv');
  if (key) {
    if (!account) throw new TerminalError('invalid-argument', `site ${name}: spec.storageAccount is required with an account key`);
    let credential: StorageSharedKeyCredential;
    try {
      credential = new StorageSharedKeyCredential(account, key);
    } catch {
      throw new TerminalError('authentication', `site ${name}: the account key in ${creds.accountKeyEnv} is malformed`);
    }
    return new BlobServiceClient(endpoint, credential, options).getContainerClient(spec.container);
  }
  const sas = read('sasTokenEnv');
  if (sas) {
    return new BlobServiceClient(`${endpoint}?${sas.replace(/^\?/, '')}`, new AnonymousCredential(), options).getContainerClient(spec.container);
  }
  throw new TerminalError(
    'authentication',
    `site ${name}: spec.credentials names no connectionStringEnv, accountKeyEnv or sasTokenEnv; set one to the NAME of an environment variable holding the secret`,
  );
}
