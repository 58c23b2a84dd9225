import { assertEquals, assertThrows } from "../testing/assert.ts";
import { ensureIsal } from "../../ffi/isal.ts";
import { ensureWasmMemory, wasmAlloc } from "../../wasm/kernels.ts";
import { crc32c } from "../../wasm/crc32c.ts";
import { crc32cUpdate } from "./pdu.ts";
import { selectCrc32cEngine } from "./crc_engine.ts";

const skip = await ensureIsal();
if (skip !== null) console.log(`crc_engine_test: native engine tests skipped: ${skip}`);

Deno.test({
  name: "crc32c engine: ISA-L gives the WASM kernel's digests, whole views and pieces alike",
  ignore: skip !== null,
  fn: () => {
    const lines: string[] = [];
    assertEquals(selectCrc32cEngine("native", (l) => lines.push(l)), "native");
    try {
      ensureWasmMemory();
      const state = new Uint32Array(1);
      for (const len of [1, 100, 511, 512, 4096, 65536]) {
        // Whole views, in and out of wasm memory: the native path; a range inside: WASM.
        const inWasm = wasmAlloc(len, 64);
        crypto.getRandomValues(inWasm.subarray(0, Math.min(len, 65536)));
        const plain = inWasm.slice();
        for (const view of [inWasm, plain]) {
          for (const seed of [0, 0xdeadbeef]) {
            state[0] = seed;
            crc32cUpdate(state, 0, view, 0, len);
            assertEquals(state[0], crc32c(plain, seed), `len ${len} seed ${seed}`);
          }
        }
        if (len > 2) {
          state[0] = 0;
          crc32cUpdate(state, 0, inWasm, 1, len - 1);
          assertEquals(state[0], crc32c(plain.subarray(1, len - 1)));
        }
      }
      // Chained: a digest over two whole views equals one over both.
      const a = new Uint8Array(4096).fill(7), b = new Uint8Array(4096).fill(9);
      state[0] = 0;
      crc32cUpdate(state, 0, a, 0, 4096);
      crc32cUpdate(state, 0, b, 0, 4096);
      const both = new Uint8Array(8192);
      both.set(a);
      both.set(b, 4096);
      assertEquals(state[0], crc32c(both));
    } finally {
      selectCrc32cEngine("wasm", () => {});
    }
    assertEquals(lines, ["crc32c: engine native ISA-L (configured)"]);
  },
});

Deno.test("crc32c engine: auto logs its figures and its choice; wasm is always there", () => {
  const lines: string[] = [];
  const got = selectCrc32cEngine("auto", (l) => lines.push(l));
  selectCrc32cEngine("wasm", (l) => lines.push(l));
  assertEquals(lines.length, 2);
  assertEquals(lines[1], "crc32c: engine wasm (configured)");
  if (skip === null) {
    assertEquals(
      lines[0]?.startsWith(
        `crc32c: engine ${got === "native" ? "native ISA-L" : "wasm"} (auto: native `,
      ),
      true,
      lines[0],
    );
  } else {
    assertEquals(lines[0], "crc32c: engine wasm (auto: libisal2 missing)");
    assertThrows(() => selectCrc32cEngine("native", () => {}), Error, "libisal");
  }
});
