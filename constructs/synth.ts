// The entry point of `drsite synth` and of failovers to Azure: the adapter of src/'s Terraform port
// (src/model/terraform.ts), provided by bin/drsite.mjs, because nothing in src/ may import
// constructs/ and because cdktf and the provider should load only when needed.
import { mkdir, readFile } from 'node:fs/promises';
import type { Diagnostic } from '../src/model/diagnostics.ts';
import type { DesiredState } from '../src/model/desired.ts';
import type { FailoverSynthRequest, FailoverSynthResult, SynthResult, SynthTarget } from '../src/model/terraform.ts';
import type { AsrVaultProps } from './asr-stack.ts';
import { ConstructValidationError } from './errors.ts';
import { manifestsOf, manifestsToYaml } from './manifests.ts';

// The interface src/ loads this module through: one definition for both sides.
export type { FailoverSynthRequest, FailoverSynthResult, SynthResult, SynthTarget };

/** Synthesises a loaded desired state; invalid input becomes diagnostics, never an exception. */
export async function synthDesiredState(desired: DesiredState, opts: { target: SynthTarget; out: string; vault?: AsrVaultProps }): Promise<SynthResult> {
  if (opts.target === 'manifests') {
    const documents = manifestsOf(desired);
    return { ok: true, target: 'manifests', documents, yaml: manifestsToYaml(documents), diagnostics: [] };
  }
  // Loaded here rather than at the top: the manifests target then never loads cdktf.
  const { AsrStack, checkAsr } = await import('./asr-stack.ts');
  const { App } = await import('cdktf');
  const { join } = await import('node:path');
  const problems = checkAsr('azure-site-recovery', desired, opts.vault);
  // Nothing is written for invalid input: App creates its output directory as soon as it exists.
  if (problems.some((d) => d.severity === 'error')) return { ok: false, diagnostics: problems };
  try {
    // cdktf's App creates only the last directory of outdir; the default (.drsite/synth/asr) is nested.
    await mkdir(opts.out, { recursive: true });
    const app = new App({ outdir: opts.out });
    const stack = new AsrStack(app, 'azure-site-recovery', { desired, vault: opts.vault });
    app.synth();
    const file = join(opts.out, 'stacks', 'azure-site-recovery', 'cdk.tf.json');
    return { ok: true, target: 'azure-site-recovery', file, ...(await countTerraform(file)), diagnostics: [...stack.warnings] };
  } catch (e) {
    if (e instanceof ConstructValidationError) return { ok: false, diagnostics: [...e.diagnostics] };
    throw e;
  }
}

/** Resources and data sources in a cdk.tf.json, counted by type. */
export async function countTerraform(file: string): Promise<{ resources: Record<string, number>; dataSources: Record<string, number> }> {
  const json = JSON.parse(await readFile(file, 'utf8')) as { resource?: Record<string, object>; data?: Record<string, object> };
  const count = (block: Record<string, object> | undefined) =>
    Object.fromEntries(Object.entries(block ?? {}).map(([type, byName]) => [type, Object.keys(byName).length]));
  return { resources: count(json.resource), dataSources: count(json.data) };
}

/** The failover (or test failover) of one VM to Azure as Terraform; invalid input becomes diagnostics. */
export async function synthFailover(req: FailoverSynthRequest): Promise<FailoverSynthResult> {
  const { synthAzureFailover } = await import('./failover-stack.ts');
  try {
    // Only the parent: cdktf makes the last directory itself, once the input is valid.
    await mkdir((await import('node:path')).dirname(req.out), { recursive: true });
    const file = synthAzureFailover({ desired: req.desired, vm: req.vm, test: req.test, outdir: req.out, recoveryPoint: { disks: req.disks, time: req.time } });
    const vm = req.desired.protectedVms.find((p) => p.metadata.name === req.vm)!.spec.vm;
    return { ok: true, file, vmName: req.test ? `${vm}-Test` : vm, resources: (await countTerraform(file)).resources };
  } catch (e) {
    if (e instanceof ConstructValidationError) return { ok: false, diagnostics: [...e.diagnostics] };
    throw e;
  }
}
