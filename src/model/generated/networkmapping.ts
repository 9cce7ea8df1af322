// Generated from schemas/networkmapping.schema.json by `npm run gen:types`. Do not edit by hand:
// test/model/types-drift.test.ts fails when this file and the schemas disagree.

import type { ApiVersion, DnsLabel, ObjectMeta } from './site.ts';

/**
 * Which network a failed-over VM joins on the target site.
 */
export interface NetworkMapping {
  apiVersion: ApiVersion;
  kind: 'NetworkMapping';
  metadata: ObjectMeta;
  spec: NetworkMappingSpec;
}

export interface NetworkMappingSpec {
  source: SiteNetwork;
  target: SiteNetwork;
  /**
   * Network for test failover VMs on the target site. @default none: test VMs get no network
   */
  testNetwork?: string;
}

export interface SiteNetwork {
  site: DnsLabel;
  network: string;
}
