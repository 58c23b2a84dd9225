import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { ensureWasmMemory, kernels, wasmAlloc, wasmMemoryBytes } from "../../wasm/kernels.ts";
import { XTS_SLOT_BYTES, xtsKeyLoad, xtsKeyWipe, xtsRun } from "../../wasm/aes_xts.ts";
import { createWasmXtsEngine } from "./wasm_xts.ts";
import { assertEnginesAgree, xtsEngineSuite } from "./testdata/xts_engine_suite.ts";

function encryptAt(
  key: Uint8Array,
  tweak: Uint8Array,
  src: Uint8Array,
  du: number,
  decrypt: boolean,
): Uint8Array {
  const slot = xtsKeyLoad(key);
  try {
    const out = new Uint8Array(src.length);
    xtsRun(slot, decrypt, src, out, du, tweak);
    return out;
  } finally {
    xtsKeyWipe(slot);
  }
}

xtsEngineSuite("wasm engine", () => createWasmXtsEngine(), encryptAt);
xtsEngineSuite("wasm engine, strict swizzles", () => createWasmXtsEngine("strict"), null);

Deno.test("wasm engine: relaxed and strict kernels agree on random keys and data", () => {
  const relaxed = createWasmXtsEngine();
  const strict = createWasmXtsEngine("strict");
  for (let round = 0; round < 20; round++) {
    const keyBytes = crypto.getRandomValues(new Uint8Array(64));
    const du = round % 2 === 0 ? 512 : 4096;
    const data = crypto.getRandomValues(new Uint8Array(du * 2));
    assertEnginesAgree(relaxed, strict, keyBytes, data, du, round, "");
  }
});

Deno.test("wasm engine: the kernel rejects bad lengths itself (negative codes)", () => {
  const slot = xtsKeyLoad(crypto.getRandomValues(new Uint8Array(64)));
  try {
    const unit = slot + 832;
    assertEquals(kernels.xts_encrypt(slot, 0, 0, 24, 16, unit), -2);
    assertEquals(kernels.xts_encrypt(slot, 0, 0, 32, 24, unit), -3);
    assertEquals(kernels.xts_decrypt(slot, 0, 0, 48, 32, unit), -4);
  } finally {
    xtsKeyWipe(slot);
  }
});

Deno.test("wasm engine: key schedules live in a wasm slot, zeroed on destroy, and the slot is reused", () => {
  const e = createWasmXtsEngine();
  const keyBytes = crypto.getRandomValues(new Uint8Array(64));
  const slot = xtsKeyLoad(keyBytes);
  const mem = wasmMemoryBytes();
  const schedules = mem.subarray(slot, slot + XTS_SLOT_BYTES);
  assert(schedules.some((b) => b !== 0), "schedules written");
  // The raw key copy is gone as soon as the schedules exist.
  assert(mem.subarray(slot + 768, slot + 832).every((b) => b === 0), "raw key zeroed");
  xtsKeyWipe(slot);
  assert(wasmMemoryBytes().subarray(slot, slot + XTS_SLOT_BYTES).every((b) => b === 0));
  // Pool: the next key takes the freed slot (wasm memory is never freed).
  const again = xtsKeyLoad(keyBytes);
  assertEquals(again, slot);
  xtsKeyWipe(again);
  // Through the engine: 100 create/destroy cycles use no new memory.
  const before = kernels.heap_used();
  for (let i = 0; i < 100; i++) e.createKey(keyBytes).destroy();
  assertEquals(kernels.heap_used(), before);
});

Deno.test("wasm engine: data outside wasm memory is staged in whole units; many units per call", () => {
  const e = createWasmXtsEngine();
  const keyBytes = crypto.getRandomValues(new Uint8Array(64));
  const key = e.createKey(keyBytes);
  // 160 KiB: more than the 64 KiB scratch, so three staged pieces.
  const data = new Uint8Array(160 * 1024);
  for (let off = 0; off < data.length; off += 65536) {
    crypto.getRandomValues(data.subarray(off, off + 65536));
  }
  const whole = new Uint8Array(data.length);
  key.encrypt(data, whole, 4096, 1000);
  // The same bytes unit by unit give the same ciphertext.
  for (let u = 0; u < data.length / 4096; u++) {
    const piece = new Uint8Array(4096);
    key.encrypt(data.subarray(u * 4096, (u + 1) * 4096), piece, 4096, 1000 + u);
    assertEquals(piece, whole.subarray(u * 4096, (u + 1) * 4096), `unit ${u}`);
  }
  // The scratch area keeps no plaintext or ciphertext.
  const scratch = wasmMemoryBytes().subarray(kernels.scratch_ptr(), kernels.scratch_ptr() + 65536);
  assert(scratch.every((b) => b === 0), "scratch zeroed");
  key.destroy();
});

Deno.test("wasm engine: data units over 64 KiB run in wasm memory, and are refused outside it", () => {
  ensureWasmMemory();
  const e = createWasmXtsEngine();
  const keyBytes = crypto.getRandomValues(new Uint8Array(64));
  const key = e.createKey(keyBytes);
  const du = 128 * 1024;
  assertThrows(
    () => key.encrypt(new Uint8Array(du), new Uint8Array(du), du, 0),
    RangeError,
    "wasm memory",
  );
  const buf = wasmAlloc(du, 64);
  for (let off = 0; off < du; off += 65536) crypto.getRandomValues(buf.subarray(off, off + 65536));
  const plain = buf.slice();
  key.encrypt(buf, buf, du, 5);
  assert(buf.subarray(0, 16).some((b, i) => b !== plain[i]));
  key.decrypt(buf, buf, du, 5);
  assertEquals(buf, plain);
  key.destroy();
});

Deno.test("wasm kernel: 11 units in one call equal 11 one-unit calls, across the 2^64 carry", () => {
  const slot = xtsKeyLoad(crypto.getRandomValues(new Uint8Array(64)));
  try {
    const du = 512;
    const data = crypto.getRandomValues(new Uint8Array(11 * du));
    // First unit 2^64 - 3: units 3.. of the call carry into the high half.
    const first = new Uint8Array(16);
    first.fill(0xff, 0, 8);
    first[0] = 0xfd;
    for (const decrypt of [false, true]) {
      const whole = new Uint8Array(data.length);
      xtsRun(slot, decrypt, data, whole, du, first);
      for (let u = 0; u < 11; u++) {
        const unit = new Uint8Array(16);
        let carry = u;
        for (let i = 0; i < 16; i++) {
          const v = (first[i] ?? 0) + (carry & 0xff);
          unit[i] = v & 0xff;
          carry = (carry >> 8) + (v >> 8);
        }
        const one = new Uint8Array(du);
        xtsRun(slot, decrypt, data.subarray(u * du, (u + 1) * du), one, du, unit);
        assertEquals(one, whole.subarray(u * du, (u + 1) * du), `unit ${u} decrypt=${decrypt}`);
      }
      if (!decrypt) {
        // And it decrypts back.
        const back = new Uint8Array(data.length);
        xtsRun(slot, true, whole, back, du, first);
        assertEquals(back, data);
      }
    }
  } finally {
    xtsKeyWipe(slot);
  }
});
