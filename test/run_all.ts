/**
 * `deno task test`: the whole suite, in order: formatting, lint and types;
 * the committed WASM matches its source; unit and integration tests; the
 * guest (QEMU) tests. Each step installs what it needs itself. Runs every
 * step, prints a summary, and exits non-zero if any failed.
 * @module
 */

interface Step {
  name: string;
  args: string[];
}

const steps: Step[] = [
  { name: "check (fmt, lint, types)", args: ["task", "check"] },
  {
    name: "wasm rebuild matches the committed bytes",
    args: ["run", "-A", "wasm/build.ts", "--verify"],
  },
  { name: "unit and integration tests", args: ["task", "test:unit"] },
  { name: "guest tests (QEMU)", args: ["task", "test:vm"] },
];

const results: { name: string; ok: boolean; seconds: number }[] = [];
for (const step of steps) {
  console.log(`\n=== ${step.name}: deno ${step.args.join(" ")}`);
  const t0 = performance.now();
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: step.args,
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  results.push({ name: step.name, ok: code === 0, seconds: (performance.now() - t0) / 1000 });
}

console.log("\n=== summary");
for (const r of results) {
  console.log(`${r.ok ? "PASS" : "FAIL"}  ${r.name} (${r.seconds.toFixed(0)} s)`);
}
const failed = results.filter((r) => !r.ok).length;
console.log(`steps: ${results.length - failed} passed, ${failed} failed`);
Deno.exit(failed === 0 ? 0 : 1);
