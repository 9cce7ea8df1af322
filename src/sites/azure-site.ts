// An azure Site as the reconciler sees it: no agent runs there, so this driver reads the container
// (replica records, recovery points as blob snapshots, failover markers) and serves the replica
// side of the failover verbs in-process, through src/azure/failover.ts (which writes the failover
// Terraform for the operator's `terraform apply`); every other verb is the primary host's.
import { AzureBlobLink } from '../azure/blob-link.ts';
import { azureContainerFromSite } from '../azure/credentials.ts';
import { AzureReplicaSide, type AzureFailoverResult } from '../azure/failover.ts';
import { systemClock, type Clock } from '../model/clock.ts';
import type { DesiredState, Site as SiteResource } from '../model/desired.ts';
import { TerminalError } from '../model/errors.ts';
import type { SiteSpec } from '../model/types.generated.ts';
import type { FailoverRequest, RecoveryPointInfo, RelationshipView, TestFailoverRequest } from '../transport/agent-api.ts';
import { notOnThisSite, type FailoverContext, type Site, type SiteSnapshot, type SiteVm } from './site.ts';

export interface AzureSiteOptions {
  /** The declarations the failover Terraform is made from (network mappings, failover addresses). */
  desired: () => DesiredState;
  /** drsite's state directory: failover Terraform goes to `<stateDir>/azure/<job>/`. */
  stateDir: string;
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Time for views (lag), test-failover records and job names. @default systemClock */
  clock?: Clock;
}

export class AzureSite implements Site {
  readonly kind = 'azure';
  readonly name: string;
  readonly embedded = false;
  readonly endpoint = '';
  readonly azure: SiteSpec;
  readonly #resource: SiteResource;
  readonly #opts: AzureSiteOptions;
  #replicas: AzureReplicaSide | undefined;

  constructor(resource: SiteResource, opts: AzureSiteOptions) {
    if (resource.spec.type !== 'azure') throw new TerminalError('invalid-argument', `site ${resource.metadata.name} is not an azure site`);
    this.name = resource.metadata.name;
    this.azure = resource.spec;
    this.#resource = resource;
    this.#opts = opts;
  }

  /** The container's clients, made on first use: missing credentials make the site unreachable, not drsite unable to start. */
  #open(): AzureReplicaSide {
    if (!this.#replicas) {
      const link = new AzureBlobLink({ container: azureContainerFromSite(this.#resource, this.#opts.env ?? process.env, { maxTries: 2, retryDelayInMs: 200, tryTimeoutInMs: 15_000 }) });
      this.#replicas = new AzureReplicaSide(link, { site: this.name, desired: this.#opts.desired, stateDir: this.#opts.stateDir, clock: this.#opts.clock ?? systemClock });
    }
    return this.#replicas;
  }

  async snapshot(): Promise<SiteSnapshot> {
    try {
      const replicas = this.#open();
      const rels = await replicas.relationships();
      const now = (this.#opts.clock ?? systemClock).now();
      return { name: this.name, reachable: true, vms: rels.flatMap((r) => replicas.vms(r)), relationships: rels.map((r) => replicas.view(r, now)) };
    } catch (e) {
      return { name: this.name, reachable: false, error: (e as Error).message };
    }
  }

  vms = async (): Promise<SiteVm[]> => {
    const replicas = this.#open();
    return (await replicas.relationships()).flatMap((r) => replicas.vms(r));
  };
  relationships = async (): Promise<RelationshipView[]> => {
    const replicas = this.#open();
    return (await replicas.relationships()).map((r) => replicas.view(r));
  };
  recoveryPoints = async (id: string): Promise<RecoveryPointInfo[]> =>
    (await this.#open().relationship(id)).points.map((p) => ({ sequence: p.sequence, time: new Date(p.cutTime).toISOString(), consistency: p.consistency, cutId: p.cutId }));

  // The replica side of the failover family, served here; the rest is the primary host's.
  testFailover = (id: string, req: TestFailoverRequest & FailoverContext): Promise<AzureFailoverResult> => this.#open().testFailover(id, req);
  cleanupTestFailover = (id: string) => this.#open().cleanupTestFailover(id);
  failover = (id: string, req: FailoverRequest & FailoverContext): Promise<AzureFailoverResult> => this.#open().failover(id, req);
  commit = (id: string): Promise<RelationshipView> => this.#open().commit(id);
  cancel = (id: string) => this.#open().endFailover(id, 'cancel');
  endFailover = (id: string) => this.#open().endFailover(id, 'end-failover');

  #refuse(verb: string): never {
    return notOnThisSite(`an azure site`, verb, `${this.name} holds replicas only; the primary host's agent does the rest`);
  }
  pointDigest = async (): Promise<never> => this.#refuse('point-digest');
  createVm = async (): Promise<never> => this.#refuse('create-vm');
  setVmPower = async (): Promise<never> => this.#refuse('power');
  createRelationship = async (): Promise<never> => this.#refuse('create-relationship');
  removeRelationship = async (): Promise<never> => this.#refuse('remove-relationship');
  startReplication = async (): Promise<never> => this.#refuse('start-replication');
  replicateNow = async (): Promise<never> => this.#refuse('replicate-now');
  modifySettings = async (): Promise<never> => this.#refuse('settings');
  suspend = async (): Promise<never> => this.#refuse('suspend');
  resume = async (): Promise<never> => this.#refuse('resume');
  resync = async (): Promise<never> => this.#refuse('resync');
  moveStorage = async (): Promise<never> => this.#refuse('move-storage');
  extend = async (): Promise<never> => this.#refuse('extend');
  preparePlannedFailover = async (): Promise<never> => this.#refuse('prepare-planned-failover');
  reverse = async (): Promise<never> => this.#refuse('reverse');
  failbackFromAzure = async (): Promise<never> => this.#refuse('failback-from-azure');
  replicateToAzure = async (): Promise<never> => this.#refuse('replicate-to-azure');

  async close(): Promise<void> {}
}
