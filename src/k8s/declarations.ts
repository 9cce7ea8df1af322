// Custom resources → the same declarations a YAML file holds, loaded by the same config pipeline
// (schema, rules, defaults): one model whichever front end the user picked. Each object becomes
// one source named `<plural>/<name>`, so a diagnostic points at the object it is about.
import { loadDesiredStateFromSources, type LoadResult, type SourceText } from '../config/index.ts';
import type { Diagnostic } from '../model/diagnostics.ts';
import { KINDS, type Kind } from '../model/desired.ts';
import { namesOf, PROTECTION_FINALIZER, SITE_FINALIZER } from './api-group.ts';
import type { CustomObject } from './kube-api.ts';

export interface CachedObjects {
  byKind: ReadonlyMap<Kind, readonly CustomObject[]>;
}

export interface Declarations {
  result: LoadResult;
  /** Diagnostics by `${kind}/${name}`. */
  diagnostics: Map<string, Diagnostic[]>;
  /** metadata.generation of every object the declarations were built from, by `${kind}/${name}`. */
  generations: Map<string, number>;
}

export const keyOf = (o: CustomObject): string => `${o.kind}/${o.metadata.name}`;
const deleting = (o: CustomObject) => o.metadata.deletionTimestamp !== undefined;

/** Sites a ProtectedVM (live or being deleted) still needs: its primary, replica and extended replica. */
export function sitesInUse(pvms: readonly CustomObject[]): Set<string> {
  const used = new Set<string>();
  for (const p of pvms) {
    const s = (p.spec ?? {}) as { primary?: string; replica?: string; extendedReplica?: { site?: string } };
    for (const n of [s.primary, s.replica, s.extendedReplica?.site]) if (typeof n === 'string') used.add(n);
  }
  return used;
}

/**
 * Which objects take part: a ProtectedVM being deleted is left out (so the reconciler disables
 * its protection, as for a VM removed from a file); a Site being deleted stays while a
 * ProtectedVM still needs it to be reached. Other kinds being deleted are left out.
 */
export function participating(objects: CachedObjects): CustomObject[] {
  const pvms = objects.byKind.get('ProtectedVM') ?? [];
  const used = sitesInUse(pvms.filter((p) => p.metadata.finalizers?.includes(PROTECTION_FINALIZER) || !deleting(p)));
  const out: CustomObject[] = [];
  for (const kind of KINDS) {
    for (const o of objects.byKind.get(kind) ?? []) {
      if (!deleting(o)) out.push(o);
      else if (kind === 'Site' && o.metadata.finalizers?.includes(SITE_FINALIZER) && used.has(o.metadata.name)) out.push(o);
    }
  }
  return out;
}

export const sourceName = (o: CustomObject): string => `${namesOf(o.kind as Kind).plural}/${o.metadata.name}`;

function toSource(o: CustomObject): SourceText {
  const labels = o.metadata.labels && Object.keys(o.metadata.labels).length > 0 ? { labels: o.metadata.labels } : {};
  const doc = { apiVersion: o.apiVersion, kind: o.kind, metadata: { name: o.metadata.name, ...labels }, spec: o.spec ?? {} };
  // JSON is YAML: positions in diagnostics refer to this rendering of the object.
  return { file: sourceName(o), text: `${JSON.stringify(doc, null, 2)}\n` };
}

export function declarationsOf(objects: readonly CustomObject[]): Declarations {
  const result = loadDesiredStateFromSources(objects.map(toSource));
  const byFile = new Map(objects.map((o) => [sourceName(o), keyOf(o)]));
  const diagnostics = new Map<string, Diagnostic[]>();
  for (const d of result.diagnostics) {
    const key = byFile.get(d.file);
    if (!key) continue;
    diagnostics.set(key, [...(diagnostics.get(key) ?? []), d]);
  }
  const generations = new Map(objects.map((o) => [keyOf(o), o.metadata.generation ?? 0]));
  return { result, diagnostics, generations };
}
