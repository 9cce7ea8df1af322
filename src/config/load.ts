// The config pipeline: YAML with positions → schema → defaults → semantic rules → DesiredState.
// User input never throws: every problem is a diagnostic with file, line, column and field path.
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import type { Diagnostic } from '../model/diagnostics.ts';
import { hasErrors } from '../model/diagnostics.ts';
import {
  resourceKey,
  type DesiredState, type NetworkMapping, type ProtectedVM, type RecoveryAction, type RecoveryPlan,
  type ReplicationPolicy, type ResolvedReplicationPolicy, type Resource, type Site, type SourceRef,
} from '../model/desired.ts';
import { applyDefaults } from './defaults.ts';
import { formatPath, type Segment } from './field-path.ts';
import { readSources, type SourceText } from './files.ts';
import { checkRules, type Declared, type RuleInput } from './rules.ts';
import { schemaIssues } from './schema.ts';
import { parseYamlSource } from './yaml-source.ts';

export type LoadResult =
  | { ok: true; state: DesiredState; diagnostics: Diagnostic[] /* warnings only */ }
  | { ok: false; diagnostics: Diagnostic[] };

export interface LoadOptions {
  /** Directory relative paths are resolved against, and diagnostics' file names are relative to. @default process.cwd() */
  cwd?: string;
}

/** Loads files and directories (recursively, `*.yaml`/`*.yml`, sorted) into the desired state. */
export async function loadDesiredState(paths: string[], opts: LoadOptions = {}): Promise<LoadResult> {
  const cwd = resolve(opts.cwd ?? process.cwd());
  try {
    const read = await readSources(paths, cwd);
    const result = loadFromSources(read.sources);
    const extra = [...read.diagnostics];
    if (result.ok) extra.push(...(await scriptWarnings(result.declared)));
    return finish(result, extra);
  } catch (e) {
    // A bug here must still not throw at the user: report it like any other problem.
    return { ok: false, diagnostics: [internalError(e)] };
  }
}

/**
 * The same pipeline on texts already in memory (tests, generated manifests). A source's `dir`
 * makes relative script paths absolute; without it they stay as written.
 */
export function loadDesiredStateFromSources(sources: readonly SourceText[]): LoadResult {
  try {
    return finish(loadFromSources(sources), []);
  } catch (e) {
    return { ok: false, diagnostics: [internalError(e)] };
  }
}

type Inner =
  | { ok: true; state: DesiredState; declared: Declared[]; diagnostics: Diagnostic[] }
  | { ok: false; diagnostics: Diagnostic[] };

/** What survives parsing, schema and defaults, bucketed by kind: the input to the rules. */
export interface Declarations {
  input: RuleInput;
  /** Every declared resource, in load order. */
  all: Declared[];
  diagnostics: Diagnostic[];
}

/** Parse, validate and default every document; rules are not run yet. */
export function declareSources(sources: readonly SourceText[]): Declarations {
  const diagnostics: Diagnostic[] = [];
  const invalid = new Set<string>();
  const input: RuleInput = { sites: [], policies: [], networkMappings: [], protectedVms: [], recoveryPlans: [], invalid };
  const all: Declared[] = [];
  for (const src of sources) {
    const parsed = parseYamlSource(src.file, src.text);
    diagnostics.push(...parsed.diagnostics);
    for (const k of parsed.brokenKeys) invalid.add(k);
    for (const doc of parsed.documents) {
      const issues = schemaIssues(doc.value);
      if (issues.length > 0) {
        for (const i of issues) {
          const p = doc.locate(i.at, i.target);
          diagnostics.push({ severity: 'error', summary: i.summary, detail: i.detail, file: doc.file, line: p.line, column: p.column, path: formatPath(i.path) });
        }
        const v = doc.value as { kind?: unknown; metadata?: { name?: unknown } };
        if (typeof v.kind === 'string' && typeof v.metadata?.name === 'string') invalid.add(`${v.kind}/${v.metadata.name}`);
        continue;
      }
      const resource = applyDefaults(doc.value as Resource);
      if (src.dir !== undefined) resolveScriptPaths(resource, src.dir);
      const d: Declared = { resource, doc };
      all.push(d);
      switch (resource.kind) {
        case 'Site': input.sites.push(d as Declared<Site>); break;
        case 'ReplicationPolicy': input.policies.push(d as Declared<ReplicationPolicy>); break;
        case 'NetworkMapping': input.networkMappings.push(d as Declared<NetworkMapping>); break;
        case 'ProtectedVM': input.protectedVms.push(d as Declared<ProtectedVM>); break;
        case 'RecoveryPlan': input.recoveryPlans.push(d as Declared<RecoveryPlan>); break;
      }
    }
  }
  return { input, all, diagnostics };
}

function loadFromSources(sources: readonly SourceText[]): Inner {
  const { input, all, diagnostics } = declareSources(sources);
  diagnostics.push(...checkRules(input));
  if (hasErrors(diagnostics)) return { ok: false, diagnostics };

  const sorted = <R extends Resource>(list: Declared<R>[]): R[] =>
    list.map((d) => d.resource).sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  const sourcesByKey: Record<string, SourceRef> = {};
  for (const d of all) sourcesByKey[resourceKey(d.resource)] = { file: d.doc.file, ...d.doc.start };
  const state: DesiredState = {
    sites: sorted(input.sites),
    // The defaults step filled every defaulted field (config/defaults.ts).
    policies: sorted(input.policies) as ResolvedReplicationPolicy[],
    networkMappings: sorted(input.networkMappings),
    protectedVms: sorted(input.protectedVms),
    recoveryPlans: sorted(input.recoveryPlans),
    sources: sourcesByKey,
  };
  return { ok: true, state, declared: all, diagnostics };
}

function finish(inner: Inner, extra: Diagnostic[]): LoadResult {
  const diagnostics = sortDiagnostics([...extra, ...inner.diagnostics]);
  if (!inner.ok || hasErrors(diagnostics)) return { ok: false, diagnostics };
  return { ok: true, state: inner.state, diagnostics };
}

/** Stable order: by file in load order, then line and column; stage order breaks ties. */
function sortDiagnostics(ds: Diagnostic[]): Diagnostic[] {
  const fileOrder = new Map<string, number>();
  for (const d of ds) if (!fileOrder.has(d.file)) fileOrder.set(d.file, fileOrder.size);
  return ds
    .map((d, i) => ({ d, i }))
    .sort((a, b) => fileOrder.get(a.d.file)! - fileOrder.get(b.d.file)! || a.d.line - b.d.line || a.d.column - b.d.column || a.i - b.i)
    .map((x) => x.d);
}

const actionsOf = (plan: RecoveryPlan): { action: RecoveryAction; path: Segment[] }[] =>
  plan.spec.groups.flatMap((g, gi) => (['before', 'after'] as const).flatMap((when) =>
    (g[when] ?? []).map((action, ai) => ({ action, path: ['spec', 'groups', gi, when, ai, 'script', 'path'] as Segment[] }))));

/** Script paths are relative to the file that declares them, like includes in most tools. */
function resolveScriptPaths(resource: Resource, dir: string): void {
  if (resource.kind !== 'RecoveryPlan') return;
  for (const { action } of actionsOf(resource)) {
    if (action.script && !isAbsolute(action.script.path)) action.script.path = resolve(dir, action.script.path);
  }
}

/** A missing or non-executable script is a warning now rather than a failed plan later. */
async function scriptWarnings(declared: Declared[]): Promise<Diagnostic[]> {
  const out: Diagnostic[] = [];
  for (const d of declared) {
    if (d.resource.kind !== 'RecoveryPlan') continue;
    for (const { action, path } of actionsOf(d.resource)) {
      if (!action.script || !isAbsolute(action.script.path)) continue;
      const ok = await access(action.script.path, constants.X_OK).then(() => true, () => false);
      if (ok) continue;
      const p = d.doc.locate(path);
      out.push({
        severity: 'warning', summary: 'script not found or not executable', file: d.doc.file, line: p.line, column: p.column, path: formatPath(path),
        detail: `${action.script.path} must exist and be executable when the plan runs (paths are relative to the declaring file)`,
      });
    }
  }
  return out;
}

function internalError(e: unknown): Diagnostic {
  return {
    severity: 'error', summary: 'internal error while loading the configuration', file: '', line: 0, column: 0, path: '',
    detail: e instanceof Error ? e.message : String(e),
  };
}
