// Deterministic replication relationship ids, so a killed reconciler that retries a create never
// makes a second relationship: `rel-<protectedvm>` for the declared direction, and
// `rel-<protectedvm>.r<k>` for the k-th reverse replication after it (odd k replicates the declared
// replica -> primary, even k the declared direction again).
// A dot cannot appear in a ProtectedVM name (a DNS label), so the parse is unambiguous.

export function relationshipId(protectedVm: string, k = 0): string {
  return k === 0 ? `rel-${protectedVm}` : `rel-${protectedVm}.r${k}`;
}

const ID = /^rel-([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)(?:\.r([1-9][0-9]{0,5}))?$/;
const EXTENDED = /^rel-([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)\.x$/;

/** The ProtectedVM name and generation k of an id drsite made; undefined for any other id. */
export function parseRelationshipId(id: string): { protectedVm: string; k: number } | undefined {
  const m = ID.exec(id);
  return m ? { protectedVm: m[1], k: m[2] === undefined ? 0 : Number(m[2]) } : undefined;
}

/** The extended hop (replica -> extended replica) of a ProtectedVM's declared relationship. */
export function extendedRelationshipId(protectedVm: string): string {
  return `rel-${protectedVm}.x`;
}

/** The ProtectedVM of an extended hop's id; undefined for any other id. */
export function parseExtendedId(id: string): string | undefined {
  return EXTENDED.exec(id)?.[1];
}
