// Relationship keys (AES-256-GCM encryption key and HMAC key) as an agent keeps them: created once
// by the primary, sent to the Replica server over mutual TLS, stored beside each relationship.
// A Replica server also holds its own key for encryption at rest (AES-256-XTS), made when it
// creates the replica and never sent anywhere: the primary cannot read the replica's disks.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readJsonIfExists, writeFileAtomic } from '../core/atomic-file.ts';
import { AT_REST_KEY_BYTES, newAtRestKey } from '../core/disk/at-rest.ts';
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
  await writeFileAtomic(join(dir, 'keys.json'), `${JSON.stringify(keysToWire(keys), null, 2)}\n`, 0o600);
}

const AT_REST_FILE = 'at-rest.key';

/** Makes and stores (0600, beside the replica's record) a new at-rest key. */
export async function createAtRestKey(dir: string): Promise<Buffer> {
  const key = newAtRestKey();
  await writeFileAtomic(join(dir, AT_REST_FILE), `${key.toString('base64')}\n`, 0o600);
  return key;
}

/** The replica's at-rest key; undefined for a replica made before encryption at rest. */
export async function readAtRestKey(dir: string): Promise<Buffer | undefined> {
  const path = join(dir, AT_REST_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const key = Buffer.from(text.trim(), 'base64');
  if (key.length !== AT_REST_KEY_BYTES) throw new TerminalError('invalid-state', `${path}: an at-rest key is ${AT_REST_KEY_BYTES} bytes base64, this holds ${key.length}`);
  return key;
}
