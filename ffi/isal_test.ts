import { assertEquals } from "../src/testing/assert.ts";
import { crc32c } from "../wasm/crc32c.ts";
import { ensureIsal, loadIsalCrc32c } from "./isal.ts";

const missing = await ensureIsal();
if (missing !== null) console.log(`ffi/isal_test.ts: skipped: ${missing}`);

Deno.test({
  name:
    "isal: crc32_iscsi agrees with the WASM crc32c (check value, seeds, every length to 300, 128 KiB)",
  ignore: missing !== null,
  fn: () => {
    const native = loadIsalCrc32c();
    if (native === null) throw new Error("libisal.so.2 vanished");
    assertEquals(native(new TextEncoder().encode("123456789")), 0xe3069283);
    assertEquals(native(new Uint8Array(0), 0x1234), 0x1234);
    const data = crypto.getRandomValues(new Uint8Array(65536));
    for (let n = 0; n <= 300; n++) {
      assertEquals(native(data.subarray(0, n)), crc32c(data.subarray(0, n)), `length ${n}`);
    }
    const big = new Uint8Array(131072);
    big.set(data);
    big.set(data, 65536);
    assertEquals(native(big), crc32c(big));
    // Continuation: crc32c(b, crc32c(a)) === crc32c(a ++ b), as the WASM one.
    const a = big.subarray(0, 1000);
    const b = big.subarray(1000);
    assertEquals(native(b, native(a)), crc32c(big));
    assertEquals(native(b, crc32c(a)), crc32c(big));
  },
});
