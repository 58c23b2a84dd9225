import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import {
  loadNativeXtsEngine,
  measureXtsEngine,
  parseXtsEngineSetting,
  selectXtsEngine,
} from "./engines.ts";
import { createWasmXtsEngine } from "./wasm_xts.ts";
import { assertThrows } from "../testing/assert.ts";
import { assertEnginesAgree, xtsEngineSuite } from "./testdata/xts_engine_suite.ts";

const native = await loadNativeXtsEngine();
if (native.engine === null) {
  console.log(`src/crypto/engines_test.ts: native cross-checks skipped: ${native.why}`);
} else {
  // The native engine passes the same known answers and OpenSSL-CLI cross-checks.
  const engine = native.engine;
  xtsEngineSuite("native engine", () => engine, null);
}

Deno.test("engines: settings parse; wasm is always available", async () => {
  assertEquals(parseXtsEngineSetting("auto"), "auto");
  assertThrows(() => parseXtsEngineSetting("fast"), RangeError, "wasm, native or auto");
  const lines: string[] = [];
  const c = await selectXtsEngine("wasm", (l) => lines.push(l));
  assertEquals(c.engine.name, "wasm");
  assertEquals(lines, ["crypto: AES-XTS engine wasm (configured)"]);
});

Deno.test("engines: auto logs its choice (native when faster and present, else wasm)", async () => {
  const lines: string[] = [];
  const c = await selectXtsEngine("auto", (l) => lines.push(l));
  assertEquals(lines.length, 1);
  assert(lines[0]?.startsWith(`crypto: AES-XTS engine ${c.engine.name} (auto: `), lines[0]);
  if (native.engine === null) {
    assertEquals(c.engine.name, "wasm");
    assert(lines[0]?.includes("native engine missing"));
  } else {
    assert(lines[0]?.includes("MB/s"));
  }
  assert(measureXtsEngine(createWasmXtsEngine(), 5) > 0);
});

Deno.test("engines: native setting fails clearly when the native engine is missing", async () => {
  if (native.engine !== null) {
    assertEquals((await selectXtsEngine("native", () => {})).engine.name, "native");
    return;
  }
  await assertRejects(() => selectXtsEngine("native", () => {}), Error, "unavailable");
});

Deno.test({
  name: "engines: WASM and native agree bit for bit (random keys, 512 and 4096, both directions)",
  ignore: native.engine === null,
  fn: () => {
    const n = native.engine;
    if (n === null) return;
    const w = createWasmXtsEngine();
    for (const du of [512, 4096]) {
      for (let round = 0; round < 10; round++) {
        const keyBytes = crypto.getRandomValues(new Uint8Array(64));
        const data = crypto.getRandomValues(new Uint8Array(du * 4));
        assertEnginesAgree(w, n, keyBytes, data, du, round * 0x1_0000_0001, ` du=${du}`);
      }
    }
  },
});
