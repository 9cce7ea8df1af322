// The failover state of an Azure replica, kept beside its record in the container: a failover to
// Azure in `<id>/failover.json`, a test failover in `<id>/test-failover.json`. The Azure replica
// side (src/azure/failover.ts) writes them when it synthesises the failover Terraform; the link reads
// the first before every change, because once a VM has failed over to Azure its replica blobs are
// what failback downloads, and a primary that comes back must not overwrite them.
import type { ContainerClient } from '@azure/storage-blob';
import { TerminalError } from '../model/errors.ts';
import { azureCall, isBlobNotFound } from './errors.ts';

/** A planned or unplanned failover of one relationship to Azure. */
export interface AzureFailoverRecord {
  kind: 'planned' | 'unplanned';
  /** FailoverWaitingCompletion until committed, then FailedOver (until failback ends it). */
  state: 'FailoverWaitingCompletion' | 'FailedOver';
  /** The Azure VM's name. */
  vm: string;
  /** The recovery point its managed disks are imported from. */
  sequence: number;
  /** The drsite job that wrote its Terraform, and where (`.drsite/azure/<job>`). */
  job: string;
  terraformDir: string;
  at: string;
}

/** An active test failover: `<vm>-Test` on the test network, from one recovery point. */
export interface AzureTestFailoverRecord {
  vm: string;
  sequence: number;
  job: string;
  terraformDir: string;
  at: string;
}

const FAILOVER = 'failover.json';
const TEST = 'test-failover.json';

export class AzureFailoverState {
  readonly container: ContainerClient;

  constructor(container: ContainerClient) {
    this.container = container;
  }

  failover(id: string): Promise<AzureFailoverRecord | undefined> {
    return this.#read<AzureFailoverRecord>(id, FAILOVER);
  }

  test(id: string): Promise<AzureTestFailoverRecord | undefined> {
    return this.#read<AzureTestFailoverRecord>(id, TEST);
  }

  setFailover(id: string, rec: AzureFailoverRecord): Promise<void> {
    return this.#write(id, FAILOVER, rec);
  }

  setTest(id: string, rec: AzureTestFailoverRecord): Promise<void> {
    return this.#write(id, TEST, rec);
  }

  clearFailover(id: string): Promise<void> {
    return this.#delete(id, FAILOVER);
  }

  clearTest(id: string): Promise<void> {
    return this.#delete(id, TEST);
  }

  /** Refuses any change to the replica of a relationship that has failed over to Azure. */
  async assertNotFailedOver(id: string): Promise<void> {
    const f = await this.failover(id);
    if (f) {
      throw new TerminalError('invalid-state', `relationship ${id} has failed over to Azure (${f.vm} from point ${f.sequence}, ${f.state}): its replica blobs do not change until failback ends the failover`);
    }
  }

  async #read<T>(id: string, file: string): Promise<T | undefined> {
    const blob = this.container.getBlobClient(`${id}/${file}`);
    try {
      const body = await azureCall(`${this.container.containerName}/${blob.name}`, () => blob.downloadToBuffer());
      return JSON.parse(body.toString('utf8')) as T;
    } catch (e) {
      if (isBlobNotFound(e)) return undefined;
      throw e;
    }
  }

  async #write(id: string, file: string, rec: object): Promise<void> {
    const body = Buffer.from(JSON.stringify(rec, null, 2));
    const blob = this.container.getBlockBlobClient(`${id}/${file}`);
    await azureCall(`${this.container.containerName}/${blob.name}`, () => blob.upload(body, body.length, { blobHTTPHeaders: { blobContentType: 'application/json' } }));
  }

  async #delete(id: string, file: string): Promise<void> {
    const blob = this.container.getBlobClient(`${id}/${file}`);
    await azureCall(`${this.container.containerName}/${blob.name}`, () => blob.deleteIfExists());
  }
}
