// Site construct: a host with an agent, or an Azure storage account that receives replicas.
import type { Construct } from 'constructs';
import type { AzureCredentials, AzureNetwork, ReplicaServer, Site as SiteDocument } from '../src/model/desired.ts';
import { DrResource, type ResourceMetaProps } from './dr-resource.ts';

export interface SiteProps extends ResourceMetaProps {
  /** host: a hypervisor host running the drsite agent; azure: an Azure storage account (replica only). */
  readonly type: 'host' | 'azure';
  /**
   * https URL of the site's agent (host sites).
   * @default embedded: run inside the drsite process
   */
  readonly endpoint?: string;
  /**
   * How VMs are found and started (host sites).
   * @default 'files'
   */
  readonly hypervisor?: 'files' | 'qemu';
  /**
   * Where the embedded agent keeps VMs and replicas (host sites).
   * @default '.drsite/sites/<name>' for an embedded site
   */
  readonly dataPath?: string;
  /**
   * Hyper-V's "Enable this computer as a Replica server" (host sites).
   * @default not a Replica server
   */
  readonly replicaServer?: ReplicaServer;
  /**
   * Storage account name (azure sites; required there).
   * @default none
   */
  readonly storageAccount?: string;
  /**
   * Blob container (azure sites; required there).
   * @default none
   */
  readonly container?: string;
  /**
   * Names of environment variables holding the secrets (azure sites; required there).
   * @default none
   */
  readonly credentials?: AzureCredentials;
  /**
   * Resource group of the storage account and of failed-over VMs (azure sites; required there).
   * @default none
   */
  readonly resourceGroup?: string;
  /**
   * Azure region, e.g. westeurope (azure sites; required there).
   * @default none
   */
  readonly location?: string;
  /**
   * Virtual network failed-over VMs join when no NetworkMapping says otherwise (azure sites).
   * @default none
   */
  readonly network?: AzureNetwork;
}

export class Site extends DrResource<SiteDocument> {
  constructor(scope: Construct, id: string, props: SiteProps) {
    const { name, labels, annotations, ...spec } = props;
    super(scope, id, 'Site', { name, labels, annotations }, spec);
  }
}
