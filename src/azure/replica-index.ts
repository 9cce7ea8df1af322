// What an Azure replica says about itself in its container: the record `<id>/relationship.json`
// (disks, retention, applied point, key fingerprint) and its recovery points, found as the blob
// snapshots tagged with point metadata. A point is complete once every disk has both snapshots.
import { createHash, createHmac } from 'node:crypto';
import type { ContainerClient } from '@azure/storage-blob';
import type { RelationshipKeys } from '../core/types.ts';
import { TerminalError } from '../model/errors.ts';
import type { CreateReplicaRequest, DiskInfo } from '../transport/agent-api.ts';
import { pointFromMetadata, type PointMetadata } from './disk-blobs.ts';
import { azureCall, isBlobNotFound } from './errors.ts';
import type { TransferCount } from './page-io.ts';

/** `<relationshipId>/relationship.json`: what the replica side knows, keys excepted. */
export interface AzureReplicaRecord {
  id: string;
  vm: string;
  disks: DiskInfo[];
  /** Identifies the keys the sums are computed with, without revealing them. */
  keyFingerprint: string;
  retention: CreateReplicaRequest['retention'];
  /** Sequence of the latest complete point (every disk snapshotted); 0 before the initial copy. */
  applied: number;
  createdAt: string;
  /** The primary host that created it (the Azure site reports it as the relationship's peer). */
  primary?: string;
}

/** A retained recovery point of one disk: its two snapshots. */
export interface DiskPoint {
  readonly point: PointMetadata;
  /** Snapshot id of the VHD blob. */
  readonly disk: string;
  /** Snapshot id of the digest blob. */
  readonly sums: string;
}

/** Snapshots by sequence, then by disk id. */
export type SnapshotIndex = Map<number, Map<string, { point: PointMetadata; disk?: string; sums?: string }>>;

export function keyFingerprint(keys: RelationshipKeys): string {
  return createHmac('sha256', keys.macKey).update('drsite azure key fingerprint').update(createHash('sha256').update(keys.encryptionKey).digest()).digest('hex').slice(0, 32);
}

/** The relationship's VHD blobs' unique ids stay the same whoever creates them. */
export function diskUuid(relationshipId: string, diskId: string): string {
  return createHash('sha256').update(`${relationshipId}\0${diskId}`).digest('hex').slice(0, 32);
}

export async function readRecord(container: ContainerClient, id: string, count?: TransferCount): Promise<AzureReplicaRecord | undefined> {
  const blob = container.getBlobClient(`${id}/relationship.json`);
  let body: Buffer;
  try {
    body = await azureCall(`${container.containerName}/${blob.name}`, () => blob.downloadToBuffer());
  } catch (e) {
    if (isBlobNotFound(e)) return undefined;
    throw e;
  }
  if (count) count.downloaded += body.length;
  return JSON.parse(body.toString('utf8')) as AzureReplicaRecord;
}

export async function requireRecord(container: ContainerClient, id: string, count?: TransferCount): Promise<AzureReplicaRecord> {
  const rec = await readRecord(container, id, count);
  if (!rec) throw new TerminalError('not-found', `no replica of relationship ${id} in container ${container.containerName}`);
  return rec;
}

export async function saveRecord(container: ContainerClient, rec: AzureReplicaRecord, count: TransferCount): Promise<void> {
  const body = Buffer.from(JSON.stringify(rec, null, 2));
  const blob = container.getBlockBlobClient(`${rec.id}/relationship.json`);
  await azureCall(`${container.containerName}/${blob.name}`, () => blob.upload(body, body.length, { blobHTTPHeaders: { blobContentType: 'application/json' } }));
  count.uploaded += body.length;
}

/** Every disk's snapshots grouped by sequence (complete points and leftovers of a crashed apply). */
export async function snapshotIndex(container: ContainerClient, id: string): Promise<SnapshotIndex> {
  const out: SnapshotIndex = new Map();
  await azureCall(`${container.containerName}/${id}/`, async () => {
    for await (const b of container.listBlobsFlat({ prefix: `${id}/`, includeSnapshots: true, includeMetadata: true })) {
      if (!b.snapshot) continue;
      const m = /^.*\/(.+)\.(vhd|sums)$/.exec(b.name);
      const point = pointFromMetadata(b.metadata);
      if (!m || !point) continue;
      let bySeq = out.get(point.sequence);
      if (!bySeq) out.set(point.sequence, (bySeq = new Map()));
      const entry = bySeq.get(m[1]) ?? { point };
      if (m[2] === 'vhd') entry.disk = b.snapshot;
      else entry.sums = b.snapshot;
      bySeq.set(m[1], entry);
    }
  });
  return out;
}

/** The complete points up to the applied one, oldest first. */
export function completePoints(rec: AzureReplicaRecord, snaps: SnapshotIndex): PointMetadata[] {
  const out: PointMetadata[] = [];
  for (const [seq, disks] of [...snaps].sort((a, b) => a[0] - b[0])) {
    if (seq > rec.applied) continue;
    if (rec.disks.every((d) => disks.get(d.id)?.disk && disks.get(d.id)?.sums)) out.push(disks.get(rec.disks[0].id)!.point);
  }
  return out;
}

/** One disk's snapshots at each complete point, oldest first. */
export function diskPointsOf(rec: AzureReplicaRecord, snaps: SnapshotIndex, diskId: string): DiskPoint[] {
  return completePoints(rec, snaps).map((p) => {
    const e = snaps.get(p.sequence)!.get(diskId)!;
    return { point: e.point, disk: e.disk!, sums: e.sums! };
  });
}
