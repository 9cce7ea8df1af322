// Network mapping and Failover TCP/IP for a failed-over (or test) VM: per adapter, the target
// network the NetworkMapping gives for the adapter's source network, and the static addresses the
// ProtectedVM declares for its failover site.
import type { DesiredState, ProtectedVM } from '../model/desired.ts';
import type { FailoverAdapterSettings } from '../transport/agent-api.ts';

export interface AdapterInput {
  name: string;
  network?: string;
}

/**
 * `test`: the adapter joins the mapping's testNetwork, or none (disconnected, Hyper-V's default).
 * Static addresses apply when the VM lands on the ProtectedVM's declared replica site; going home
 * (failback) the VM keeps the addresses it had there.
 */
export function failoverAdapters(
  desired: DesiredState,
  pvm: ProtectedVM | undefined,
  vmAdapters: readonly AdapterInput[] | undefined,
  from: string,
  to: string,
  test: boolean,
): FailoverAdapterSettings[] {
  const declared = pvm?.spec.failoverNetwork?.adapters ?? [];
  const names = [...new Set([...(vmAdapters ?? []).map((a) => a.name), ...declared.map((a) => a.name)])];
  const mappings = [...desired.networkMappings]
    .sort((a, z) => (a.metadata.name < z.metadata.name ? -1 : 1))
    .filter((m) => m.spec.source.site === from && m.spec.target.site === to);
  return names.map((name) => {
    const source = vmAdapters?.find((a) => a.name === name)?.network;
    const m = mappings.find((x) => source === undefined || x.spec.source.network === source);
    const network = test ? (m?.spec.testNetwork ?? null) : (m?.spec.target.network ?? null);
    const ip = to === pvm?.spec.replica ? declared.find((a) => a.name === name) : undefined;
    return { name, network, ...(ip?.ipv4 && { ipv4: ip.ipv4 }), ...(ip?.ipv6 && { ipv6: ip.ipv6 }) };
  });
}
