// Relationship keys (AES-256-GCM encryption key and HMAC key) as an agent keeps them: created once
// by the primary, sent to the Replica server over mutual TLS, stored beside each relationship.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { readJsonIfExists, writeJsonAtomic } from '../core/atomic-file.ts';
import type { RelationshipKeys } from '../core/types.ts';
import { TerminalError } from '../model/errors.ts';

/** The keys as they cross the wire and lie on disk: base64. */
export interface WireKeys {
  encryptionKey: string;
  macKey: string;
}

export function newRelationshipKeys(): RelationshipKeys {
  return { encryptionKey: randomBytes(32), macKey: randomBytes(32) };
}

export function keysToWire(keys: RelationshipKeys): WireKeys {
  return { encryptionKey: keys.encryptionKey.toString('base64'), macKey: keys.macKey.toString('base64') };
}

export function keysFromWire(k: WireKeys): RelationshipKeys {
  const keys = { encryptionKey: Buffer.from(k.encryptionKey, 'base64'), macKey: Buffer.from(k.macKey, 'base64') };
  if (keys.encryptionKey.length !== 32 || keys.macKey.length !== 32) throw new TerminalError('invalid-argument', 'relationship keys must be 32 bytes each');
  return keys;
}

export async function readKeys(dir: string): Promise<RelationshipKeys | undefined> {
  const k = await readJsonIfExists<WireKeys>(join(dir, 'keys.json'));
  return k && { encryptionKey: Buffer.from(k.encryptionKey, 'base64'), macKey: Buffer.from(k.macKey, 'base64') };
}

export async function writeKeys(dir: string, keys: RelationshipKeys): Promise<void> {
  await writeJsonAtomic(join(dir, 'keys.json'), keysToWire(keys));
}
