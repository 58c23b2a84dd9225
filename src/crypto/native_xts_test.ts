import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import {
  fromHex,
  hasOpensslCli,
  IEEE1619_VECTOR_10,
  referenceXts,
  toHex,
} from "../testing/xts_reference.ts";
import { createNativeXtsEngine } from "./native_xts.ts";
import type { XtsEngine } from "./xts.ts";

const native = createNativeXtsEngine();
const skip = native === null;

function engine(): XtsEngine {
  if (native === null) throw new Error("no libcrypto");
  return native;
}

Deno.test({
  name: "native xts: IEEE 1619 vector 10 (AES-256, 512-byte unit) both ways",
  ignore: skip,
  fn() {
    const v = IEEE1619_VECTOR_10;
    const keyBytes = fromHex(v.key);
    const key = engine().createKey(keyBytes);
    const pt = fromHex(v.plaintext);
    const ct = new Uint8Array(512);
    key.encrypt(pt, ct, 512, v.dataUnit);
    assertEquals(toHex(ct), v.ciphertext);
    const back = new Uint8Array(512);
    key.decrypt(ct, back, 512, v.dataUnit);
    assertEquals(back, pt);
    // In place works too.
    key.encrypt(back, back, 512, v.dataUnit);
    assertEquals(back, ct);
    key.destroy();
    assertThrows(() => key.encrypt(pt, ct, 512, 0), Error, "after destroy");
  },
});

Deno.test({
  name:
    "native xts: matches the openssl-CLI reference for 512 and 4096-byte units, tweaks past 2^32",
  ignore: skip || !(await hasOpensslCli()),
  async fn() {
    const keyBytes = crypto.getRandomValues(new Uint8Array(64));
    const key = engine().createKey(keyBytes);
    for (const du of [512, 4096]) {
      for (const first of [0, 7, 2 ** 32 - 1, 2 ** 40 + 3]) {
        const pt = crypto.getRandomValues(new Uint8Array(du * 3));
        const ct = new Uint8Array(pt.length);
        key.encrypt(pt, ct, du, first);
        assertEquals(ct, await referenceXts(keyBytes, pt, du, first), `du ${du} first ${first}`);
        const back = new Uint8Array(pt.length);
        key.decrypt(ct, back, du, first);
        assertEquals(back, pt);
      }
    }
    key.destroy();
  },
});

Deno.test({
  name: "native xts: bad keys and buffers are refused",
  ignore: skip,
  fn() {
    const same = new Uint8Array(64).fill(7);
    assertThrows(() => engine().createKey(same), RangeError, "must differ");
    assertThrows(() => engine().createKey(new Uint8Array(32)), RangeError, "64 bytes");
    const k = engine().createKey(crypto.getRandomValues(new Uint8Array(64)));
    const b = new Uint8Array(1024);
    assertThrows(() => k.encrypt(b, new Uint8Array(512), 512, 0), RangeError, "same length");
    assertThrows(() => k.encrypt(b, b, 500, 0), RangeError, "power of two");
    assertThrows(() => k.encrypt(b.subarray(0, 700), b.subarray(0, 700), 512, 0), RangeError);
    assertThrows(() => k.encrypt(b, b, 512, -1), RangeError, "non-negative");
    k.destroy();
    assert(true);
  },
});
