// Output (a) of the constructs: the drsite.dev/v1 documents of a construct tree, validated by the
// same config pipeline as YAML (schema, rules, defaults), so the two front ends share one set of
// rules and produce one model.
import type { IConstruct } from 'constructs';
import { stringify } from 'yaml';
import { loadDesiredStateFromSources, type SourceText } from '../src/config/index.ts';
import type { Diagnostic } from '../src/model/diagnostics.ts';
import type { DesiredState, Resource } from '../src/model/desired.ts';
import { DrResource } from './dr-resource.ts';
import { ConstructValidationError } from './errors.ts';

type TreeResult = { ok: true; state: DesiredState; diagnostics: Diagnostic[] } | { ok: false; diagnostics: Diagnostic[] };

/**
 * Validates every drsite construct under `scope` together (references, frequencies, conflicts)
 * and returns the desired state or the diagnostics, each naming the construct path in `file`.
 */
export function validateTree(scope: IConstruct): TreeResult {
  const resources = scope.node.findAll().filter(DrResource.isDrResource);
  // Each construct is its own "file" named by its path: the config pipeline then reports every
  // problem against the construct that declared it. JSON is YAML, so no second parser is needed.
  const sources: SourceText[] = resources.map((r) => ({ file: r.node.path, text: JSON.stringify(r.toDocument()) }));
  const result = loadDesiredStateFromSources(sources);
  // Lines and columns point into the generated text, which nobody sees: line 0 marks "the
  // construct itself" (the convention Diagnostic uses for a whole file).
  const diagnostics = result.diagnostics.map((d) => ({ ...d, line: 0, column: 0 }));
  if (!result.ok) return { ok: false, diagnostics };
  const sourcesByKey: DesiredState['sources'] = {};
  for (const [key, ref] of Object.entries(result.state.sources)) sourcesByKey[key] = { file: ref.file, line: 0, column: 0 };
  return { ok: true, state: { ...result.state, sources: sourcesByKey }, diagnostics };
}

/** The desired state of a construct tree; throws ConstructValidationError on any error. */
export function desiredStateOf(scope: IConstruct): DesiredState {
  const result = validateTree(scope);
  if (!result.ok) throw new ConstructValidationError(result.diagnostics);
  return result.state;
}

/** The documents of a desired state in a stable order: by kind, then by name. */
export function manifestsOf(desired: DesiredState): Resource[] {
  return structuredClone([...desired.sites, ...desired.policies, ...desired.networkMappings, ...desired.protectedVms, ...desired.recoveryPlans]);
}

/**
 * The drsite.dev/v1 documents of a construct tree, normalised (defaults applied), exactly as the
 * YAML front end would load them. Throws ConstructValidationError on any error.
 */
export function synthManifests(scope: IConstruct): Resource[] {
  return manifestsOf(desiredStateOf(scope));
}

/** Documents as one multi-document YAML stream. */
export function manifestsToYaml(documents: readonly Resource[]): string {
  return documents.map((d) => stringify(d, { lineWidth: 0 })).join('---\n');
}
