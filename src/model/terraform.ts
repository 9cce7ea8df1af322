// The Terraform port. drsite's Terraform lives in constructs/, the only place that may import
// cdktf and the provider, and nothing in src/ imports constructs/ (not even through a computed
// URL). So src/ declares here what it needs of that module, and the program's entry point
// (bin/drsite.mjs, or a test) provides the module with provideTerraform(); the heavy provider loads
// only when Terraform is first written. constructs/synth.ts implements ConstructsModule, and
// test/constructs checks that it satisfies it.
import type { Diagnostic } from './diagnostics.ts';
import type { DesiredState, Resource } from './desired.ts';
import { TerminalError } from './errors.ts';

export type SynthTarget = 'azure-site-recovery' | 'manifests';

export type SynthResult =
  | { ok: true; target: 'manifests'; documents: Resource[]; yaml: string; diagnostics: Diagnostic[] }
  | { ok: true; target: 'azure-site-recovery'; file: string; resources: Record<string, number>; dataSources: Record<string, number>; diagnostics: Diagnostic[] }
  | { ok: false; diagnostics: Diagnostic[] };

export interface FailoverSynthRequest {
  desired: DesiredState;
  /** The ProtectedVM's name. */
  vm: string;
  test: boolean;
  /** Every replicated disk at the recovery point: the page blob's URL and the snapshot's time. */
  disks: { name: string; blobUrl: string; snapshotTime: string }[];
  /** The recovery point's time (RFC 3339), recorded as a tag. */
  time: string;
  /** The failover job's directory, `.drsite/azure/<job>`. */
  out: string;
}

export type FailoverSynthResult =
  | { ok: true; file: string; vmName: string; resources: Record<string, number> }
  | { ok: false; diagnostics: Diagnostic[] };

export interface ConstructsModule {
  synthDesiredState(desired: DesiredState, opts: { target: SynthTarget; out: string; vault?: object }): Promise<SynthResult>;
  synthFailover(req: FailoverSynthRequest): Promise<FailoverSynthResult>;
}

let provider: (() => Promise<ConstructsModule>) | undefined;

/** Called once by the entry point with the loader of constructs/synth.ts. */
export function provideTerraform(load: () => Promise<ConstructsModule>): void {
  provider = load;
}

export async function loadConstructs(): Promise<ConstructsModule> {
  if (!provider) throw new TerminalError('invalid-state', 'Terraform synthesis is not available in this process: run drsite through bin/drsite.mjs (npx drsite), which provides constructs/');
  return provider();
}
