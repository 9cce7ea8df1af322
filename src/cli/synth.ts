// `drsite synth`: the desired state as Azure Site Recovery Terraform (cdk.tf.json through cdktf),
// or as normalised drsite.dev/v1 YAML documents.
import { loadDesiredState } from '../config/index.ts';
import { formatDiagnostic, type Diagnostic } from '../model/diagnostics.ts';
import { loadConstructs, type SynthTarget } from '../model/terraform.ts';
import { printJson, renderTable, type Io } from './output.ts';

export interface SynthOptions {
  target: SynthTarget;
  /** Output directory for cdk.tf.json (azure-site-recovery). */
  out: string;
  /** Vault placement when no azure Site names it (otherwise Terraform variables). */
  resourceGroup?: string;
  location?: string;
  vaultName?: string;
}

/** Default --out. */
export const DEFAULT_SYNTH_OUT = '.drsite/synth/asr';

export async function synthCommand(paths: string[], opts: SynthOptions, g: { output: 'text' | 'json' }, io: Io): Promise<number> {
  const loaded = await loadDesiredState(paths);
  if (!loaded.ok) return invalid(loaded.diagnostics, g, io);

  const vault = { resourceGroup: opts.resourceGroup, location: opts.location, name: opts.vaultName };
  const { synthDesiredState } = await loadConstructs();
  const result = await synthDesiredState(loaded.state, { target: opts.target, out: opts.out || DEFAULT_SYNTH_OUT, vault });
  if (!result.ok) return invalid([...loaded.diagnostics, ...result.diagnostics], g, io);
  const warnings = [...loaded.diagnostics, ...result.diagnostics];

  if (result.target === 'manifests') {
    if (g.output === 'json') printJson(io, { ok: true, target: result.target, documents: result.documents, diagnostics: warnings });
    else {
      for (const d of warnings) io.err(formatDiagnostic(d));
      io.out(result.yaml);
    }
    return 0;
  }
  if (g.output === 'json') {
    printJson(io, { ok: true, target: result.target, file: result.file, resources: result.resources, dataSources: result.dataSources, diagnostics: warnings });
    return 0;
  }
  for (const d of warnings) io.err(formatDiagnostic(d));
  const rows = [
    ...Object.entries(result.resources).map(([type, n]): (string | number)[] => [type, n]),
    ...Object.entries(result.dataSources).map(([type, n]): (string | number)[] => [`data.${type}`, n]),
  ];
  io.out(renderTable(['Terraform type', 'Count'], rows));
  const total = Object.values(result.resources).reduce((a, b) => a + b, 0);
  io.out(`Wrote ${result.file}: ${total} resource${total === 1 ? '' : 's'} for Azure Site Recovery.`);
  return 0;
}

function invalid(diagnostics: Diagnostic[], g: { output: 'text' | 'json' }, io: Io): number {
  if (g.output === 'json') {
    printJson(io, { ok: false, diagnostics });
    return 1;
  }
  for (const d of diagnostics) io.err(formatDiagnostic(d));
  const errors = diagnostics.filter((d) => d.severity === 'error').length;
  io.err(`${errors} error${errors === 1 ? '' : 's'}: nothing synthesised.`);
  return 1;
}
