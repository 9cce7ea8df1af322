// The Kubernetes names of drsite's kinds: one API group and version (the same `drsite.dev/v1` the
// YAML declarations use, so the files in examples/ apply with kubectl as they are), plurals,
// short names and the finalizers the controller owns.
import { API_VERSION, KINDS, type Kind } from '../model/desired.ts';

export const GROUP = API_VERSION.split('/')[0]!;
export const VERSION = API_VERSION.split('/')[1]!;

export interface KindNames {
  kind: Kind;
  plural: string;
  singular: string;
  shortNames: string[];
  /** The file in schemas/ that declares the kind. */
  schemaFile: string;
}

export const KIND_NAMES: readonly KindNames[] = KINDS.map((kind) => {
  const singular = kind.toLowerCase();
  const short: Record<Kind, string[]> = {
    Site: ['dsite'],
    ReplicationPolicy: ['rpol'],
    NetworkMapping: ['netmap'],
    ProtectedVM: ['pvm'],
    RecoveryPlan: ['rplan'],
  };
  const plural = singular.endsWith('y') ? `${singular.slice(0, -1)}ies` : `${singular}s`;
  return { kind, singular, plural, shortNames: short[kind], schemaFile: `${singular}.schema.json` };
});

export const namesOf = (kind: Kind): KindNames => KIND_NAMES.find((k) => k.kind === kind)!;

/** On a ProtectedVM: deleting it first disables protection (the reconciler's removal of a VM). */
export const PROTECTION_FINALIZER = `${GROUP}/protection`;
/** On a Site: kept while a ProtectedVM (live or being deleted) still needs the site to be reached. */
export const SITE_FINALIZER = `${GROUP}/site-in-use`;
