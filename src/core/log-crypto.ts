// Record encryption for replication logs: AES-256-GCM under a per-log subkey, with the record
// index as nonce. A fresh random salt per log gives a fresh subkey, so a (key, nonce) pair is never
// reused even when two logs share every header field; the associated data binds each record to
// its relationship, disk, sequence and place on the disk.
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, hkdfSync, randomBytes } from 'node:crypto';
import type { Hmac, KeyObject } from 'node:crypto';
import { TerminalError } from '../model/errors.ts';
import type { RelationshipKeys } from './types.ts';

export const SALT_BYTES = 32;
export const TAG_BYTES = 16;
const NONCE_BYTES = 12;
const AAD_LABEL = 'drsite-hrl-v1';

/** Where a log sits: what its subkey and every record's associated data are bound to. */
export interface LogBinding {
  readonly relationshipId: string;
  readonly diskId: string;
  readonly sequence: number;
}

export function newSalt(): Buffer {
  return randomBytes(SALT_BYTES);
}

export function checkKeys(keys: RelationshipKeys): void {
  if (keys.encryptionKey?.length !== 32 || keys.macKey?.length !== 32) {
    throw new TerminalError('invalid-argument', 'relationship keys must be 32-byte encryptionKey and macKey');
  }
}

/**
 * The per-log AES key: HKDF-SHA-256(encryptionKey, salt, info = [relationship, disk, sequence]),
 * as a KeyObject made once per log: a raw Buffer key would be re-imported by every cipher.
 */
export function deriveLogKey(keys: RelationshipKeys, salt: Buffer, b: LogBinding): KeyObject {
  // JSON of an array keeps the info unambiguous whatever characters the ids hold.
  const info = Buffer.from(JSON.stringify([AAD_LABEL, b.relationshipId, b.diskId, b.sequence]));
  return createSecretKey(Buffer.from(hkdfSync('sha256', keys.encryptionKey, salt, info, 32)));
}

function nonce(index: number): Buffer {
  const n = Buffer.alloc(NONCE_BYTES);
  n.writeUInt32BE(Math.floor(index / 0x1_0000_0000), 4);
  n.writeUInt32BE(index % 0x1_0000_0000, 8);
  return n;
}

/** The prefix of every record's associated data for one log; offset, length and flags follow. */
export function aadPrefix(b: LogBinding): Buffer {
  return Buffer.from(JSON.stringify([AAD_LABEL, b.relationshipId, b.diskId, b.sequence]));
}

function aad(prefix: Buffer, offset: number, length: number, flags: number): Buffer {
  const out = Buffer.allocUnsafe(prefix.length + 13);
  prefix.copy(out, 0);
  const at = prefix.length;
  out.writeUInt32LE(offset % 0x1_0000_0000, at);
  out.writeUInt32LE(Math.floor(offset / 0x1_0000_0000), at + 4);
  out.writeUInt32LE(length, at + 8);
  out.writeUInt8(flags, at + 12);
  return out;
}

export interface SealedRecord {
  readonly ciphertext: Buffer;
  readonly tag: Buffer;
}

export function sealRecord(
  key: KeyObject,
  prefix: Buffer,
  index: number,
  rec: { offset: number; length: number; flags: number },
  plaintext: Buffer,
): SealedRecord {
  const c = createCipheriv('aes-256-gcm', key, nonce(index));
  c.setAAD(aad(prefix, rec.offset, rec.length, rec.flags));
  const ciphertext = plaintext.length ? c.update(plaintext) : Buffer.alloc(0);
  c.final();
  return { ciphertext, tag: c.getAuthTag() };
}

/** The plaintext, or undefined when authentication fails (wrong place, wrong log, altered bytes). */
export function openRecord(
  key: KeyObject,
  prefix: Buffer,
  index: number,
  rec: { offset: number; length: number; flags: number },
  ciphertext: Buffer,
  tag: Buffer,
): Buffer | undefined {
  const d = createDecipheriv('aes-256-gcm', key, nonce(index));
  d.setAAD(aad(prefix, rec.offset, rec.length, rec.flags));
  d.setAuthTag(tag);
  try {
    const out = ciphertext.length ? d.update(ciphertext) : Buffer.alloc(0);
    d.final();
    return out;
  } catch {
    return undefined;
  }
}

export function logMac(keys: RelationshipKeys): Hmac {
  return createHmac('sha256', keys.macKey);
}
