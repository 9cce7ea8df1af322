// What every semantic rule is made of: its input (validated resources, defaults applied, with the
// documents they came from), its type, and the diagnostic it returns at the offending field.
import type { Diagnostic, Severity } from '../../model/diagnostics.ts';
import type { NetworkMapping, ProtectedVM, RecoveryPlan, ReplicationPolicy, Resource, Site } from '../../model/desired.ts';
import { formatPath, type Segment } from '../field-path.ts';
import type { SourceDocument } from '../yaml-source.ts';

/** A validated resource (defaults applied) and the document it came from. */
export interface Declared<R extends Resource = Resource> {
  resource: R;
  doc: SourceDocument;
}

export interface RuleInput {
  sites: Declared<Site>[];
  policies: Declared<ReplicationPolicy>[];
  networkMappings: Declared<NetworkMapping>[];
  protectedVms: Declared<ProtectedVM>[];
  recoveryPlans: Declared<RecoveryPlan>[];
  /**
   * `Kind/name` of documents that declare a name but failed earlier checks: a reference to them
   * is not reported as dangling, so one mistake does not cascade into many.
   */
  invalid: ReadonlySet<string>;
}

export type Rule = (input: RuleInput) => Diagnostic[];

/** A diagnostic at `path` of the document `d` came from. */
export function diag(d: Declared, path: Segment[], summary: string, detail: string, severity: Severity = 'error', target: 'key' | 'value' = 'value'): Diagnostic {
  const p = d.doc.locate(path, target);
  return { severity, summary, detail, file: d.doc.file, line: p.line, column: p.column, path: formatPath(path) };
}

/** Where a resource is declared, `file:line:column` of its name, for messages that point back at it. */
export const where = (d: Declared): string => {
  const p = d.doc.locate(['metadata', 'name']);
  return `${d.doc.file}:${p.line}:${p.column}`;
};

/** The first of each name (a duplicate is reported by its own rule). */
export const byName = <R extends Resource>(list: Declared<R>[]): Map<string, Declared<R>> => {
  const m = new Map<string, Declared<R>>();
  for (const d of list) if (!m.has(d.resource.metadata.name)) m.set(d.resource.metadata.name, d);
  return m;
};
