import { assert } from "../testing/assert.ts";

Deno.test("virtio: popping, walking and parsing allocate nothing per request (V8 GC trace)", async () => {
  // A child serves 1M virtio-blk requests (direct and indirect, split headers) under
  // --trace-gc and marks the measured stretch; the control allocates per request.
  const script = new URL("./testdata/virtio_alloc.ts", import.meta.url).pathname;
  async function gcEvents(mode: string): Promise<number> {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--v8-flags=--trace-gc", script, mode],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert(out.success, `${mode} run failed`);
    const lines = new TextDecoder().decode(out.stdout).split("\n");
    const begin = lines.findIndex((l) => l.includes("MEASURE-BEGIN"));
    const end = lines.findIndex((l) => l.includes("MEASURE-END"));
    assert(begin >= 0 && end > begin, "markers missing");
    return lines.slice(begin, end).filter((l) => /Scavenge|Mark-Compact|Minor/.test(l)).length;
  }
  const control = await gcEvents("copy");
  assert(control >= 5, `the control should show allocation (got ${control} GC events)`);
  const n = await gcEvents("steady");
  assert(n <= 1, `${n} GC events in 1M requests (control: ${control})`);
});
