import { assert } from "../testing/assert.ts";
import { traceGc } from "../testing/gc_trace.ts";

Deno.test("virtio: popping, walking and parsing allocate nothing per request (V8 GC trace)", async () => {
  // A child serves 1M virtio-blk requests (direct and indirect, split headers) under
  // --trace-gc and marks the measured stretch; the control allocates per request.
  const script = new URL("./testdata/virtio_alloc.ts", import.meta.url).pathname;
  async function gcEvents(mode: string): Promise<number> {
    return (await traceGc(script, [mode])).events;
  }
  const control = await gcEvents("copy");
  assert(control >= 5, `the control should show allocation (got ${control} GC events)`);
  const n = await gcEvents("steady");
  assert(n <= 1, `${n} GC events in 1M requests (control: ${control})`);
});
