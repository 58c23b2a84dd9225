import { assertEquals } from "../../src/testing/assert.ts";
import { LogRing } from "./log_ring.ts";

Deno.test("log ring: keeps the last lines oldest first, filters case-insensitively", () => {
  const r = new LogRing(3);
  for (const m of ["a one", "b two", "c three", "d FOUR", "e five"]) r.push(m, 1);
  assertEquals(r.lines().map((l) => l.msg), ["c three", "d FOUR", "e five"]);
  assertEquals(r.lines("four").map((l) => l.msg), ["d FOUR"]);
  assertEquals(r.lines("zzz"), []);
  const short = new LogRing(10);
  short.push("x".repeat(5000));
  assertEquals(short.lines()[0]?.msg.length, 2001);
});
