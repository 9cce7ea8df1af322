// Failures against Azure Storage map to typed errors and change nothing: unreachable storage is
// retried, bad credentials and a missing container need an operator, secrets come only from the
// environment variables a Site names. Azurite stands in for Azure Storage, which cannot be reached from here.
import { createHash } from 'node:crypto';
import { writeFile, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AccountSASPermissions, AccountSASResourceTypes, AccountSASServices, BlobServiceClient, StorageSharedKeyCredential, generateAccountSASQueryParameters, type ContainerClient,
} from '@azure/storage-blob';
import { AzureBlobLink, azureLinkFromSite } from '../../src/azure/blob-link.ts';
import { diskBlobName } from '../../src/azure/disk-blobs.ts';
import { RetryableError, TerminalError } from '../../src/model/errors.ts';
import type { Site } from '../../src/model/types.generated.ts';
import { ManualClock } from '../../src/model/clock.ts';
import { prng } from '../core/helpers.ts';
import { ACCOUNT, ACCOUNT_KEY, startAzurite, type Azurite } from './azurite.ts';
import { TestVm, createRequest } from './driver.ts';

const MiB = 1 << 20;
const WRONG_KEY = Buffer.alloc(64, 7).toString('base64');

function site(credentials: NonNullable<Site['spec']['credentials']>, container = 'errors'): Site {
  return { apiVersion: 'drsite.dev/v1', kind: 'Site', metadata: { name: 'azure-west' }, spec: { type: 'azure', storageAccount: ACCOUNT, container, credentials } };
}

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

describe('Azure link failures', () => {
  let az: Azurite;
  let vm: TestVm;
  let link: AzureBlobLink;
  let container: ContainerClient;
  const clock = new ManualClock(Date.UTC(2026, 0, 8, 9, 0));
  beforeAll(async () => {
    az = await startAzurite();
    container = az.container('errors');
    await container.create();
    vm = await TestVm.create('rel-err1', { a: 2 * MiB, b: MiB });
    link = new AzureBlobLink({ container, clock });
    await link.createReplica(createRequest(vm.id, 'err1', [{ id: 'a', size: 2 * MiB }, { id: 'b', size: MiB }], vm.keys, 0));
    await vm.scribble(0, prng(5), true);
    await vm.cycle(link, { full: true, time: clock.now() });
  });
  afterAll(async () => {
    await vm?.close();
    await az?.cleanup();
  });

  /**
   * A valid sealed log for the next sequence of each disk, with the replica left as it was: the
   * cycle ships it, discardPending drops it again, and the VM's sequence steps back.
   */
  async function pendingLogs(seed: number): Promise<string[]> {
    await clock.advance(60_000);
    await vm.scribble(10, prng(seed));
    const { logs } = await vm.cycle(link, { time: clock.now(), applyToo: false });
    await link.discardPending(vm.id);
    vm.sequence--;
    const copies: string[] = [];
    for (const l of logs) {
      await writeFile(`${l}.copy`, await readFile(l));
      copies.push(`${l}.copy`);
    }
    return copies;
  }

  /** Content of both live blobs and the list of snapshots: what must not change on a failure. */
  async function fingerprint(): Promise<string> {
    const h = createHash('sha256');
    for await (const b of container.listBlobsFlat({ prefix: `${vm.id}/`, includeSnapshots: true, includeMetadata: true })) {
      h.update(`${b.name}@${b.snapshot ?? ''}:${JSON.stringify(b.metadata)}\n`);
    }
    for (const [d, size] of [['a', 2 * MiB], ['b', MiB]] as const) h.update(await container.getPageBlobClient(diskBlobName(vm.id, d)).downloadToBuffer(0, size));
    return h.digest('hex');
  }

  it('unreachable storage is RetryableError("network"), and nothing changes', async () => {
    const logs = await pendingLogs(6);
    const next = vm.sequence + 1;
    const before = await fingerprint();
    // Nothing listens on this port.
    const port = await closedPort();
    const dead = new AzureBlobLink({
      container: new BlobServiceClient(`http://127.0.0.1:${port}/${ACCOUNT}`, new StorageSharedKeyCredential(ACCOUNT, ACCOUNT_KEY), { retryOptions: { maxTries: 1 } }).getContainerClient('errors'),
      keys: vm.keys,
    });
    const err = await dead.status(vm.id).catch((e: unknown) => e);
    expect(RetryableError.is(err)).toBe(true);
    expect(err).toMatchObject({ code: 'network' });
    // Azurite stopped mid-relationship: upload and apply fail as network errors.
    await az.stop();
    try {
      const up = await link.upload(vm.id, next, 'a', logs[0]).catch((e: unknown) => e);
      expect(RetryableError.is(up)).toBe(true);
      expect(up).toMatchObject({ code: 'network' });
      await expect(link.apply(vm.id)).rejects.toMatchObject({ code: 'network' });
    } finally {
      await az.restart();
    }
    expect(await fingerprint()).toBe(before);
    // Back up, the same log goes through.
    await link.upload(vm.id, next, 'a', logs[0]);
    await link.upload(vm.id, next, 'b', logs[1]);
    expect((await link.apply(vm.id)).applied).toBe(next);
    vm.sequence = next;
  });

  it('a wrong account key is TerminalError("authentication"), never shows the key, and nothing changes', async () => {
    const before = await fingerprint();
    const bad = azureLinkFromSite(site({ accountKeyEnv: 'AZ_KEY', blobEndpointEnv: 'AZ_BLOB' }), { AZ_KEY: WRONG_KEY, AZ_BLOB: az.endpoint }, { keys: vm.keys, retry: { maxTries: 1 } });
    for (const op of [() => bad.status(vm.id), () => bad.apply(vm.id), () => bad.checksums(vm.id, 'a'), () => bad.remove(vm.id)]) {
      const e = await op().catch((x: unknown) => x);
      expect(TerminalError.is(e), String(e)).toBe(true);
      expect(e).toMatchObject({ code: 'authentication' });
      expect((e as Error).message).not.toContain(WRONG_KEY);
    }
    // An upload of a valid log with bad credentials writes nothing either.
    const logs = await pendingLogs(8);
    const settled = await fingerprint();
    await expect(bad.upload(vm.id, vm.sequence + 1, 'a', logs[0])).rejects.toMatchObject({ code: 'authentication' });
    expect(await fingerprint()).toBe(settled);
  });

  it('a tampered log is rejected (integrity) before any page changes', async () => {
    const logs = await pendingLogs(9);
    const before = await fingerprint();
    const buf = await readFile(logs[0]);
    buf[buf.length >> 1] ^= 0x40;
    await writeFile(logs[0], buf);
    await expect(link.upload(vm.id, vm.sequence + 1, 'a', logs[0])).rejects.toMatchObject({ code: 'integrity' });
    expect(await fingerprint()).toBe(before);
  });

  it('a missing container is TerminalError("not-found")', async () => {
    const l = azureLinkFromSite(site({ connectionStringEnv: 'AZ_CONN' }, 'no-such-container'), { AZ_CONN: az.connectionString }, { retry: { maxTries: 1 } });
    const e = await l.createReplica(createRequest('rel-x', 'x', [{ id: 'a', size: MiB }], vm.keys)).catch((x: unknown) => x);
    expect(TerminalError.is(e)).toBe(true);
    expect(e).toMatchObject({ code: 'not-found' });
    expect((e as Error).message).toMatch(/container/);
  });

  it('credentials come only from the environment variables the Site names; a missing one is named', async () => {
    const s = site({ accountKeyEnv: 'DRSITE_TEST_AZ_KEY', blobEndpointEnv: 'DRSITE_TEST_AZ_BLOB' });
    expect(() => azureLinkFromSite(s, { DRSITE_TEST_AZ_BLOB: az.endpoint })).toThrow(TerminalError);
    try {
      azureLinkFromSite(s, { DRSITE_TEST_AZ_BLOB: az.endpoint });
    } catch (e) {
      expect(e).toMatchObject({ code: 'authentication' });
      expect((e as Error).message).toContain('DRSITE_TEST_AZ_KEY');
      expect((e as Error).message).toContain('azure-west');
    }
    expect(() => azureLinkFromSite(site({}), {})).toThrow(/connectionStringEnv, accountKeyEnv or sasTokenEnv/);
    // With the variables set, the same Site works (key from AZ_KEY, endpoint from AZ_BLOB).
    const ok = azureLinkFromSite(s, { DRSITE_TEST_AZ_KEY: ACCOUNT_KEY, DRSITE_TEST_AZ_BLOB: az.endpoint }, { keys: vm.keys });
    expect((await ok.status(vm.id)).applied).toBe(vm.sequence);
    // A SAS token from its variable works too.
    const cred = new StorageSharedKeyCredential(ACCOUNT, ACCOUNT_KEY);
    const sas = generateAccountSASQueryParameters(
      { expiresOn: new Date(Date.now() + 3_600_000), permissions: AccountSASPermissions.parse('rl'), resourceTypes: AccountSASResourceTypes.parse('sco').toString(), services: AccountSASServices.parse('b').toString() },
      cred,
    ).toString();
    const viaSas = azureLinkFromSite(site({ sasTokenEnv: 'AZ_SAS', blobEndpointEnv: 'AZ_BLOB' }), { AZ_SAS: sas, AZ_BLOB: az.endpoint }, { keys: vm.keys });
    const st = await viaSas.status(vm.id);
    expect(st.storagePath).not.toContain('sig=');
  });
});
