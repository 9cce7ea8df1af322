;; The part of AES-XTS (IEEE 1619) that OpenSSL cannot batch for us: the tweak masks. For data unit
;; u the tweak T0 = AES-enc(K2, u) arrives encrypted (one ECB call for a batch of units); block j of
;; the unit is masked with Tj = T0 * alpha^j in GF(2^128) (alpha = x, modulus x^128 + x^7 + x^2 + x + 1,
;; little-endian, as 1619 and OpenSSL have it). The AES passes themselves are OpenSSL's ECB, over the
;; whole batch at once. scripts/build-xts-wasm.ts compiles this file into src/core/disk/xts-wasm.ts.
;;
;; Memory: the caller lays out [data][masks][tweaks]; lengths are whole 4096-byte units.
(module
  (memory (export "memory") 16)

  ;; For each of `units` units: writes its 256 masks to `masks` and XORs them into `data`.
  (func (export "pre") (param $data i32) (param $tweaks i32) (param $units i32) (param $masks i32)
    (local $lo i64) (local $hi i64) (local $carry i64) (local $end i32) (local $unitEnd i32)
    (local.set $end (i32.add (local.get $data) (i32.shl (local.get $units) (i32.const 12))))
    (block $done
      (loop $unit
        (br_if $done (i32.ge_u (local.get $data) (local.get $end)))
        (local.set $lo (i64.load (local.get $tweaks)))
        (local.set $hi (i64.load offset=8 (local.get $tweaks)))
        (local.set $unitEnd (i32.add (local.get $data) (i32.const 4096)))
        (loop $block
          (i64.store (local.get $masks) (local.get $lo))
          (i64.store offset=8 (local.get $masks) (local.get $hi))
          (i64.store (local.get $data) (i64.xor (i64.load (local.get $data)) (local.get $lo)))
          (i64.store offset=8 (local.get $data) (i64.xor (i64.load offset=8 (local.get $data)) (local.get $hi)))
          ;; T <- T * alpha
          (local.set $carry (i64.shr_u (local.get $hi) (i64.const 63)))
          (local.set $hi (i64.or (i64.shl (local.get $hi) (i64.const 1)) (i64.shr_u (local.get $lo) (i64.const 63))))
          (local.set $lo (i64.xor (i64.shl (local.get $lo) (i64.const 1)) (i64.mul (local.get $carry) (i64.const 0x87))))
          (local.set $data (i32.add (local.get $data) (i32.const 16)))
          (local.set $masks (i32.add (local.get $masks) (i32.const 16)))
          (br_if $block (i32.lt_u (local.get $data) (local.get $unitEnd))))
        (local.set $tweaks (i32.add (local.get $tweaks) (i32.const 16)))
        (br $unit))))

  ;; data ^= masks over `len` bytes (a multiple of 16).
  (func (export "post") (param $data i32) (param $masks i32) (param $len i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $data) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $data) (local.get $end)))
        (v128.store (local.get $data) (v128.xor (v128.load (local.get $data)) (v128.load (local.get $masks))))
        (local.set $data (i32.add (local.get $data) (i32.const 16)))
        (local.set $masks (i32.add (local.get $masks) (i32.const 16)))
        (br $next))))
)
