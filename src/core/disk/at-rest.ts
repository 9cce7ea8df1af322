// Encryption at rest for replica images and their undo segments: AES-256-XTS over 4 KiB data
// units, the unit's number as the tweak (dm-crypt's plain64; batched in xts.ts), so a unit's ciphertext sits where
// its plaintext would and every offset, undo range and sparse hole keeps its meaning.
//
// One rule keeps images sparse: a unit whose stored bytes are all zero reads as zeroes, and a unit
// of zeroes is stored as zero bytes (a hole or written zeroes). Which units hold zeroes is thus
// visible on disk, as with dm-crypt and BitLocker under TRIM; their content is not. A real unit's
// ciphertext being all zero has probability 2^-32768.
//
// XTS is not authenticated: it keeps data from being read off the replica's disks, not from being
// changed there. Integrity on the way in is the logs' AES-GCM; at rest the resync compare finds
// blocks that differ from the primary.
import { createHmac, randomBytes } from 'node:crypto';
import { BatchXts, XTS_UNIT } from './xts.ts';
import { TerminalError } from '../../model/errors.ts';

export const AT_REST_CIPHER = 'aes-256-xts';
/** Bytes per data unit (one tweak): the engine's block size. */
export const AT_REST_UNIT = XTS_UNIT;
/** XTS takes two AES-256 keys. */
export const AT_REST_KEY_BYTES = 64;

const ZERO_UNIT = Buffer.alloc(AT_REST_UNIT);

/** What a replica's journal records about its encryption, so the wrong key is refused on open. */
export interface AtRestInfo {
  readonly cipher: typeof AT_REST_CIPHER;
  readonly unit: typeof AT_REST_UNIT;
  /** HMAC-SHA-256 of a fixed label under the key, hex: identifies the key without revealing it. */
  readonly keyCheck: string;
}

/** A new key for one replica: two independent AES-256 keys. */
export function newAtRestKey(): Buffer {
  for (;;) {
    const k = randomBytes(AT_REST_KEY_BYTES);
    if (!k.subarray(0, 32).equals(k.subarray(32))) return k;
  }
}

export class ImageCipher {
  readonly unit = AT_REST_UNIT;
  readonly info: AtRestInfo;
  readonly #xts: BatchXts;

  constructor(key: Buffer) {
    if (key.length !== AT_REST_KEY_BYTES) throw new TerminalError('invalid-argument', `an at-rest key is ${AT_REST_KEY_BYTES} bytes, not ${key.length}`);
    // OpenSSL refuses XTS keys whose halves are equal (they would make the tweak predictable).
    if (key.subarray(0, 32).equals(key.subarray(32))) throw new TerminalError('invalid-argument', 'an at-rest key must have two different halves');
    this.#xts = new BatchXts(key);
    this.info = { cipher: AT_REST_CIPHER, unit: AT_REST_UNIT, keyCheck: createHmac('sha256', key).update('drsite at-rest key check').digest('hex').slice(0, 32) };
  }

  /** Encrypts whole units of `buf` in place; `offset` (the image offset of buf[0]) and the length are multiples of the unit. */
  encrypt(buf: Buffer, offset: number): void {
    this.#run(buf, offset, true);
  }

  /** Decrypts whole units of `buf` in place (see `encrypt`). */
  decrypt(buf: Buffer, offset: number): void {
    this.#run(buf, offset, false);
  }

  #run(buf: Buffer, offset: number, encrypt: boolean): void {
    const u = this.unit;
    if (offset % u !== 0 || buf.length % u !== 0) {
      throw new TerminalError('invalid-argument', `at-rest ${encrypt ? 'encryption' : 'decryption'} of ${buf.length} bytes at ${offset}: not whole ${u}-byte units`);
    }
    // Runs of units that are not all zero go through the batched XTS together.
    let start = -1;
    for (let at = 0; at <= buf.length; at += u) {
      const zero = at === buf.length || buf.subarray(at, at + u).equals(ZERO_UNIT);
      if (!zero && start < 0) start = at;
      if (zero && start >= 0) {
        this.#xts.run(buf, start, (offset + start) / u, (at - start) / u, encrypt);
        start = -1;
      }
    }
  }
}

/** The cipher a replica's journal asks for, checked against the key the replica site holds. */
export function cipherFor(info: AtRestInfo | undefined, key: Buffer | undefined, where: string): ImageCipher | undefined {
  if (!info) return undefined;
  if (info.cipher !== AT_REST_CIPHER || info.unit !== AT_REST_UNIT) {
    throw new TerminalError('invalid-state', `${where} is encrypted with ${info.cipher}/${info.unit}, which this drsite does not read`);
  }
  if (!key) throw new TerminalError('invalid-state', `${where} is encrypted at rest and its key is missing: restore the replica site's at-rest key (at-rest.key beside the relationship's record)`);
  const cipher = new ImageCipher(key);
  if (cipher.info.keyCheck !== info.keyCheck) throw new TerminalError('invalid-state', `${where} is encrypted at rest under another key than the one this site holds`);
  return cipher;
}
