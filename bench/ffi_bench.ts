/**
 * The cost of a Deno FFI call by argument kind: the facts the data path is
 * designed around (addresses as Numbers into u32 halves, BigInts cached,
 * no nonblocking calls per I/O).
 * @module
 */

/** One measured call shape. */
export interface FfiCostRow {
  call: string;
  nsPerCall: number;
}

function time(n: number, fn: (i: number) => void): number {
  for (let i = 0; i < 10_000; i++) fn(i); // warm up the JIT and the fast-call path
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn(i);
  return ((performance.now() - t0) * 1e6) / n;
}

/** Measures synchronous calls with i32, BigInt i64 and Number i64 arguments, and a nonblocking call. */
export async function runFfiBench(n = 2_000_000): Promise<FfiCostRow[]> {
  const lib = Deno.dlopen("libc.so.6", {
    abs: { parameters: ["i32"], result: "i32" },
    labs: { parameters: ["i64"], result: "i64" },
    labs_i32: { name: "labs", parameters: ["i64"], result: "i32" },
    getpid_nb: { name: "getpid", parameters: [], result: "i32", nonblocking: true },
  });
  try {
    const big = 12345n;
    const rows: FfiCostRow[] = [
      { call: "abs(i32) -> i32", nsPerCall: time(n, (i) => lib.symbols.abs(i)) },
      { call: "labs(cached BigInt) -> i32", nsPerCall: time(n, () => lib.symbols.labs_i32(big)) },
      {
        call: "labs(Number as i64) -> i64",
        // Deno's types ask for a bigint here but accept a Number at run time:
        // this row measures exactly that slow conversion.
        nsPerCall: time(n, (i) => lib.symbols.labs(i as unknown as bigint)),
      },
    ];
    const m = 20_000;
    const t0 = performance.now();
    for (let i = 0; i < m; i++) await lib.symbols.getpid_nb();
    rows.push({
      call: "getpid nonblocking (await)",
      nsPerCall: ((performance.now() - t0) * 1e6) / m,
    });
    return rows;
  } finally {
    lib.close();
  }
}

if (import.meta.main) {
  for (const r of await runFfiBench()) {
    console.log(`${r.call.padEnd(32)} ${r.nsPerCall.toFixed(1)} ns`);
  }
}
