import { assert, assertEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import { JsonStreamSplitter, JsonTooLargeError } from "./json_stream.ts";
import { Params } from "./params.ts";
import { RpcParamsError } from "./errors.ts";
import { RpcTable } from "./rpc.ts";
import { rpcCall, RpcClientError, RpcServer } from "./server.ts";

const enc = new TextEncoder();

Deno.test("json splitter: pretty-printed unframed requests, fed one byte at a time", () => {
  const reqs = [
    {
      jsonrpc: "2.0",
      method: "a",
      id: 1,
      params: { s: 'brace } in "string" {', n: [1, { x: 2 }] },
    },
    { jsonrpc: "2.0", method: "b", id: 2 },
  ];
  const text = reqs.map((r) => JSON.stringify(r, null, 2)).join("\n");
  const bytes = enc.encode(text);
  // Every split point: feed byte by byte.
  const s = new JsonStreamSplitter();
  const out: string[] = [];
  for (const b of bytes) out.push(...s.push(new Uint8Array([b])));
  assertEquals(out.map((t) => JSON.parse(t)), reqs);
  // And all at once, with a newline-delimited tail.
  const s2 = new JsonStreamSplitter();
  assertEquals(s2.push(enc.encode(text + "\n" + JSON.stringify(reqs[0]) + "\n")).length, 3);
});

Deno.test("json splitter: multi-byte UTF-8 split across chunks", () => {
  const text = JSON.stringify({ name: "disque-éè-€" });
  const bytes = enc.encode(text);
  for (let cut = 1; cut < bytes.length; cut++) {
    const s = new JsonStreamSplitter();
    const out = [...s.push(bytes.subarray(0, cut)), ...s.push(bytes.subarray(cut))];
    assertEquals(out.map((t) => JSON.parse(t)), [{ name: "disque-éè-€" }]);
  }
});

Deno.test("json splitter: an oversized request is refused", () => {
  const s = new JsonStreamSplitter(100);
  assertThrows(() => s.push(enc.encode(`{"a":"${"x".repeat(200)}`)), JsonTooLargeError);
});

Deno.test("params: types, ranges and unknown names give clear errors", () => {
  const p = new Params({ num_blocks: 0, name: "x", extra: 1 });
  assertThrows(
    () => p.int("num_blocks", { min: 1 }),
    RpcParamsError,
    '"num_blocks" must be an integer from 1',
  );
  assertEquals(p.str("name"), "x");
  assertThrows(() => p.done(), RpcParamsError, 'unknown parameter "extra"');
  assertThrows(() => new Params([1]), RpcParamsError, "params must be an object");
  assertThrows(() => new Params({}).str("name"), RpcParamsError, '"name" is required');
  assertThrows(() => new Params({ b: "yes" }).optBool("b"), RpcParamsError, "true or false");
  assertThrows(() => new Params({ u: "nope" }).optUuid("u"), RpcParamsError, "UUID");
});

function table(): RpcTable<{ hits: number }> {
  const t = new RpcTable<{ hits: number }>();
  t.register("echo", { help: "echo" }, (p) => p.raw());
  t.register("bump", { help: "bump", mutating: true }, (p, ctx) => {
    p.done();
    return ++ctx.hits;
  });
  t.register("boom", { help: "boom" }, () => {
    throw new Error("kaput");
  });
  return t;
}

Deno.test("rpc table: JSON-RPC 2.0 envelope, errors, notifications, batches", async () => {
  const t = table();
  const ctx = { hits: 0 };
  let mutated = 0;
  const on = () => {
    mutated++;
  };
  assertEquals(await t.handle({ jsonrpc: "2.0", id: 7, method: "bump" }, ctx, on), {
    jsonrpc: "2.0",
    id: 7,
    result: 1,
  });
  assertEquals(mutated, 1);
  const nf = await t.handle({ jsonrpc: "2.0", id: 1, method: "nope" }, ctx);
  assertEquals((nf as { error: { code: number } }).error.code, -32601);
  const bad = await t.handle({ jsonrpc: "2.0", id: 1, method: "bump", params: { x: 1 } }, ctx);
  assertEquals((bad as { error: { code: number } }).error.code, -32602);
  const internal = await t.handle({ jsonrpc: "2.0", id: 1, method: "boom" }, ctx);
  assertEquals((internal as { error: { message: string } }).error.message, "Internal error: kaput");
  assertEquals(await t.handle({ jsonrpc: "2.0", method: "bump" }, ctx), null);
  const batch = await t.handle([{ jsonrpc: "2.0", id: 1, method: "bump" }, { bogus: true }], ctx);
  assert(Array.isArray(batch) && batch.length === 2);
  const v1 = await t.handle({ jsonrpc: "1.0", id: 1, method: "bump" }, ctx);
  assertEquals((v1 as { error: { code: number } }).error.code, -32600);
});

Deno.test("rpc server: rpc.py-style requests over a Unix socket; garbage drops only that client", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/rpc.sock`;
  const ctx = { hits: 0 };
  const server = new RpcServer({ path, table: table(), ctx });
  try {
    assertEquals((Deno.statSync(path).mode ?? 0) & 0o777, 0o600);
    // Two pretty-printed requests in one write, no framing, as rpc.py sends them.
    const conn = await Deno.connect({ transport: "unix", path });
    const reqs = [1, 2].map((id) =>
      JSON.stringify({ jsonrpc: "2.0", method: "bump", id }, null, 2)
    );
    await conn.write(enc.encode(reqs.join("\n")));
    const splitter = new JsonStreamSplitter();
    const got: unknown[] = [];
    const buf = new Uint8Array(4096);
    while (got.length < 2) {
      const n = await conn.read(buf);
      assert(n !== null);
      got.push(...splitter.push(buf.subarray(0, n)).map((t) => JSON.parse(t)));
    }
    assertEquals(got, [{ jsonrpc: "2.0", id: 1, result: 1 }, { jsonrpc: "2.0", id: 2, result: 2 }]);
    conn.close();
    // A client sending garbage gets a parse error and is dropped...
    const evil = await Deno.connect({ transport: "unix", path });
    await evil.write(enc.encode("{ not json }"));
    const n = await evil.read(buf);
    assert(n !== null);
    assertEquals(JSON.parse(new TextDecoder().decode(buf.subarray(0, n))).error.code, -32700);
    assertEquals(await evil.read(buf), null);
    evil.close();
    // ...and everyone else is still served.
    assertEquals(await rpcCall(path, "echo", { a: [1] }), { a: [1] });
    const err = await assertRejects(() => rpcCall(path, "boom"), RpcClientError);
    assertEquals(err.code, -32603);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
  const gone = await assertRejects(() => rpcCall(path, "echo"), RpcClientError);
  assert(gone.message.includes("Is sluice running?"), gone.message);
});
