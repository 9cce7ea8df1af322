// AES-256-XTS over 4 KiB data units, many units per call: byte-for-byte what one OpenSSL
// `aes-256-xts` cipher per unit (tweak = the unit's number, dm-crypt's plain64) produces, at a
// fraction of its cost. Creating a cipher object per 4 KiB unit is what cost 1.5-2 CPU-s per GiB,
// not AES; here a batch of units takes three OpenSSL ECB passes on long-lived cipher objects
// (ECB keeps no state between calls, so update() on whole blocks can run forever):
//   T0(u) = AES-enc(K2, u)                 one ECB call for every unit of the batch
//   Tj(u) = T0(u) * alpha^j                xts.wat, the only arithmetic OpenSSL has no batch call for
//   C = AES-enc(K1, P ^ Tj) ^ Tj            one ECB call for the batch, the masks XORed in xts.wat
// Decryption is the same with AES-dec(K1). bench/cases/at-rest-cipher.ts measures it against the
// per-unit cipher and OpenSSL's own XTS over 1 MiB units (the bound for AES-NI XTS here).
import { createCipheriv, createDecipheriv, type Cipheriv, type Decipheriv, type KeyObject, createSecretKey } from 'node:crypto';
import { XTS_WASM } from './xts-wasm.ts';

export const XTS_UNIT = 4096;
/** Units per batch: data, masks and their tweaks stay within L2. */
const BATCH_UNITS = 32;
const BATCH_BYTES = BATCH_UNITS * XTS_UNIT;
const DATA = 0;
const MASKS = BATCH_BYTES;
const TWEAKS = 2 * BATCH_BYTES;

interface XtsExports {
  memory: WebAssembly.Memory;
  pre(data: number, tweaks: number, units: number, masks: number): void;
  post(data: number, masks: number, len: number): void;
}

const wasmModule = new WebAssembly.Module(XTS_WASM);

export class BatchXts {
  readonly #x: XtsExports;
  readonly #mem: Uint8Array;
  readonly #tweakView: DataView;
  readonly #tweakKey: Cipheriv;
  readonly #enc: Cipheriv;
  readonly #dec: Decipheriv;

  /** `key`: 64 bytes, K1 (data) then K2 (tweak), as OpenSSL's aes-256-xts takes them. */
  constructor(key: Buffer) {
    this.#x = new WebAssembly.Instance(wasmModule).exports as unknown as XtsExports;
    this.#mem = new Uint8Array(this.#x.memory.buffer);
    if (this.#mem.length < TWEAKS + BATCH_UNITS * 16) throw new Error('xts.wat memory too small for a batch');
    this.#tweakView = new DataView(this.#x.memory.buffer, TWEAKS, BATCH_UNITS * 16);
    const k1: KeyObject = createSecretKey(key.subarray(0, 32));
    const k2: KeyObject = createSecretKey(key.subarray(32, 64));
    this.#tweakKey = createCipheriv('aes-256-ecb', k2, null).setAutoPadding(false);
    this.#enc = createCipheriv('aes-256-ecb', k1, null).setAutoPadding(false);
    this.#dec = createDecipheriv('aes-256-ecb', k1, null).setAutoPadding(false);
  }

  /** En- or decrypts `units` whole units of `buf` from `at` in place; the first is unit number `first`. */
  run(buf: Buffer, at: number, first: number, units: number, encrypt: boolean): void {
    for (let done = 0; done < units; done += BATCH_UNITS) {
      const n = Math.min(BATCH_UNITS, units - done);
      const len = n * XTS_UNIT;
      const from = at + done * XTS_UNIT;
      for (let i = 0; i < n; i++) {
        const u = first + done + i;
        this.#tweakView.setUint32(i * 16, u % 0x1_0000_0000, true);
        this.#tweakView.setUint32(i * 16 + 4, Math.floor(u / 0x1_0000_0000), true);
        this.#tweakView.setUint32(i * 16 + 8, 0, true);
        this.#tweakView.setUint32(i * 16 + 12, 0, true);
      }
      this.#mem.set(this.#tweakKey.update(this.#mem.subarray(TWEAKS, TWEAKS + n * 16)), TWEAKS);
      this.#mem.set(buf.subarray(from, from + len), DATA);
      this.#x.pre(DATA, TWEAKS, n, MASKS);
      const aes = encrypt ? this.#enc : this.#dec;
      this.#mem.set(aes.update(this.#mem.subarray(DATA, DATA + len)), DATA);
      this.#x.post(DATA, MASKS, len);
      buf.set(this.#mem.subarray(DATA, DATA + len), from);
    }
  }
}
