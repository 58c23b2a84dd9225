/**
 * The tests every {@linkcode XtsEngine} must pass: the known answers of
 * IEEE 1619 and NIST CAVP (both directions, in place and not), random
 * round trips against an independent XTS built on OpenSSL's AES for 512-
 * and 4096-byte data units, and the argument checks. Each engine's test
 * file calls {@linkcode xtsEngineSuite}.
 * @module
 */

import { assert, assertEquals, assertThrows } from "../../testing/assert.ts";
import type { XtsEngine } from "../xts.ts";
import { hasOpensslCli, referenceXts } from "../../testing/xts_reference.ts";
import { fromHex, toHex, tweakNumber, XTS_VECTORS } from "./xts_vectors.ts";

const haveOpenssl = await hasOpensslCli();

/**
 * Registers the suite for `engine`. `encryptAt` runs a vector with a
 * 128-bit tweak the engine API cannot express as a number (null: skip).
 */
export function xtsEngineSuite(
  label: string,
  engine: () => XtsEngine,
  encryptAt:
    | ((
      key: Uint8Array,
      tweak: Uint8Array,
      src: Uint8Array,
      du: number,
      decrypt: boolean,
    ) => Uint8Array)
    | null,
): void {
  Deno.test(`${label}: IEEE 1619 and NIST CAVP known answers, both directions`, () => {
    const e = engine();
    let ran = 0;
    for (const v of XTS_VECTORS) {
      const keyBytes = fromHex(v.key);
      const pt = fromHex(v.plaintext);
      const ct = fromHex(v.ciphertext);
      const unit = tweakNumber(v.tweak);
      // The XtsEngine contract: power-of-two data units, numbers as safe integers.
      const inContract = (v.dataUnit & (v.dataUnit - 1)) === 0;
      if (unit !== undefined && inContract) {
        const key = e.createKey(keyBytes);
        const out = new Uint8Array(pt.length);
        key.encrypt(pt, out, v.dataUnit, unit);
        assertEquals(toHex(out), v.ciphertext, `${v.name} encrypt`);
        key.decrypt(ct, out, v.dataUnit, unit);
        assertEquals(toHex(out), v.plaintext, `${v.name} decrypt`);
        // In place.
        const buf = pt.slice();
        key.encrypt(buf, buf, v.dataUnit, unit);
        assertEquals(toHex(buf), v.ciphertext, `${v.name} encrypt in place`);
        key.destroy();
        ran++;
      } else if (encryptAt) {
        const tweak = fromHex(v.tweak);
        assertEquals(
          toHex(encryptAt(keyBytes, tweak, pt, v.dataUnit, false)),
          v.ciphertext,
          v.name,
        );
        assertEquals(toHex(encryptAt(keyBytes, tweak, ct, v.dataUnit, true)), v.plaintext, v.name);
        ran++;
      }
    }
    // Every engine runs at least the IEEE vectors and the CAVP data-unit-number ones.
    assert(ran >= 5, `only ${ran} vectors ran`);
  });

  Deno.test({
    name: `${label}: random data against OpenSSL's AES with the IEEE 1619 chain (512, 4096)`,
    ignore: !haveOpenssl,
    fn: async () => {
      const e = engine();
      for (const du of [512, 4096]) {
        for (const first of [0, 1, 0xfffffffe, 2 ** 40 + 3]) {
          const keyBytes = crypto.getRandomValues(new Uint8Array(64));
          const pt = crypto.getRandomValues(new Uint8Array(du * 3));
          const key = e.createKey(keyBytes);
          const ct = new Uint8Array(pt.length);
          key.encrypt(pt, ct, du, first);
          const ref = await referenceXts(keyBytes, pt, du, first, false);
          assertEquals(ct, ref, `encrypt du=${du} first=${first}`);
          const back = new Uint8Array(pt.length);
          key.decrypt(ct, back, du, first);
          assertEquals(back, pt, `decrypt du=${du} first=${first}`);
          // A different unit number changes every block.
          key.encrypt(pt, back, du, first + 1);
          assert(toHex(back.subarray(0, 16)) !== toHex(ct.subarray(0, 16)));
          key.destroy();
        }
      }
    },
  });

  Deno.test(`${label}: argument checks`, () => {
    const e = engine();
    const good = crypto.getRandomValues(new Uint8Array(64));
    assertThrows(() => e.createKey(new Uint8Array(32)), RangeError, "64 bytes");
    const same = new Uint8Array(64).fill(7);
    assertThrows(() => e.createKey(same), RangeError, "differ");
    const key = e.createKey(good);
    const buf = new Uint8Array(1024);
    assertThrows(() => key.encrypt(buf.subarray(0, 520), buf.subarray(0, 520), 520, 0), RangeError);
    assertThrows(
      () => key.encrypt(buf.subarray(0, 1000), buf.subarray(0, 1000), 512, 0),
      RangeError,
    );
    assertThrows(() => key.encrypt(buf, buf.subarray(0, 512), 512, 0), RangeError);
    assertThrows(() => key.encrypt(buf, buf, 512, -1), RangeError);
    assertThrows(() => key.decrypt(buf, buf, 512, 0.5), RangeError);
    key.destroy();
    assertThrows(() => key.encrypt(buf, buf, 512, 0), Error); // used after destroy()
  });
}

/**
 * Asserts engines `a` and `b` encrypt and decrypt `data` (data units of
 * `du` bytes numbered from `first`) to the same bytes under `keyBytes`.
 */
export function assertEnginesAgree(
  a: XtsEngine,
  b: XtsEngine,
  keyBytes: Uint8Array,
  data: Uint8Array,
  du: number,
  first: number,
  what: string,
): void {
  const ka = a.createKey(keyBytes);
  const kb = b.createKey(keyBytes);
  const x = new Uint8Array(data.length);
  const y = new Uint8Array(data.length);
  ka.encrypt(data, x, du, first);
  kb.encrypt(data, y, du, first);
  assertEquals(x, y, `encrypt${what}`);
  ka.decrypt(data, x, du, first);
  kb.decrypt(data, y, du, first);
  assertEquals(x, y, `decrypt${what}`);
  ka.destroy();
  kb.destroy();
}
