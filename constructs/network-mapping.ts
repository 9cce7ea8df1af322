// NetworkMapping construct: which network a failed-over VM joins on the target site.
import type { Construct } from 'constructs';
import type { NetworkMapping as NetworkMappingDocument } from '../src/model/desired.ts';
import { DrResource, refName, type Ref, type ResourceMetaProps } from './dr-resource.ts';
import type { Site } from './site.ts';

/** A network on a site. */
export interface SiteNetworkProps {
  /** The Site (construct or name). */
  readonly site: Ref<Site>;
  /** The network's name on that site (an Azure virtual network on an azure site). */
  readonly network: string;
}

export interface NetworkMappingProps extends ResourceMetaProps {
  /** Where the VM's network is before failover. */
  readonly source: SiteNetworkProps;
  /** The network the VM joins after failover. */
  readonly target: SiteNetworkProps;
  /**
   * Network for test failover VMs on the target site.
   * @default none: test VMs get no network
   */
  readonly testNetwork?: string;
}

export class NetworkMapping extends DrResource<NetworkMappingDocument> {
  constructor(scope: Construct, id: string, props: NetworkMappingProps) {
    const { name, labels, annotations, source, target, testNetwork } = props;
    super(scope, id, 'NetworkMapping', { name, labels, annotations }, {
      source: { site: refName(source.site), network: source.network },
      target: { site: refName(target.site), network: target.network },
      testNetwork,
    });
  }
}
