/**
 * "Allocates nothing per I/O" as a test: a child script runs the hot loop
 * under `--v8-flags=--trace-gc` and brackets the measured stretch with
 * MEASURE-BEGIN / MEASURE-END lines ({@link gcMarker}); the test counts the
 * GC events V8 printed between them ({@link traceGc}).
 * @module
 */
import { assert } from "./assert.ts";

/** GC events in the measured stretch, and the child's stdout lines from MEASURE-END on. */
export interface GcTrace {
  events: number;
  after: string[];
}

/**
 * Runs `script ...args` with `-A --v8-flags=--trace-gc` (stderr inherited),
 * asserts it succeeded and printed both markers, and counts the scavenges
 * and mark-compacts V8 traced between them.
 */
export async function traceGc(script: string, args: string[]): Promise<GcTrace> {
  const out = await new Deno.Command(Deno.execPath(), {
    // --expose-gc: the child empties the heap just before MEASURE-BEGIN (gcMarker), so garbage
    // left by its warm-up (JIT tier-up, feedback) does not spill a scavenge into the window.
    args: ["run", "-A", "--v8-flags=--trace-gc,--expose-gc", script, ...args],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert(out.success, `${args.join(" ")} run failed`);
  const lines = new TextDecoder().decode(out.stdout).split("\n");
  const begin = lines.findIndex((l) => l.includes("MEASURE-BEGIN"));
  const end = lines.findIndex((l) => l.includes("MEASURE-END"));
  assert(begin >= 0 && end > begin, "markers missing");
  const events = lines.slice(begin, end).filter((l) => /Scavenge|Mark-Compact|Minor/.test(l));
  return { events: events.length, after: lines.slice(end) };
}

/** The child's side: {@link gcMarker}. */
export interface GcMarker {
  /** Prints `text` as one line on glibc's stdout, flushed before and after. */
  mark(text: string): void;
  /** Closes libc's handle. */
  close(): void;
}

/**
 * For the child: lines through glibc's stdout, the stream V8's GC trace
 * uses, flushed on both sides so the order is exact. Call it once at
 * start-up (it opens libc then, not in the measured stretch).
 */
export function gcMarker(): GcMarker {
  const stdio = Deno.dlopen("libc.so.6", {
    puts: { parameters: ["buffer"], result: "i32" },
    fflush: { parameters: ["pointer"], result: "i32" },
  });
  return {
    mark(text: string): void {
      const gc = (globalThis as { gc?: () => void }).gc;
      if (text.includes("MEASURE-BEGIN") && gc !== undefined) gc();
      stdio.symbols.fflush(null);
      stdio.symbols.puts(new TextEncoder().encode(`${text}\0`));
      stdio.symbols.fflush(null);
    },
    close: () => stdio.close(),
  };
}
