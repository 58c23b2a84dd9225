/**
 * `deno task test:vm [FILTER] [-- deno test flags...]`: sets the guest lab up (cached), then runs
 * `deno test -A` over `test/vm/*_test.ts`. FILTER, when given, is passed as `--filter`; any
 * further arguments go to `deno test` unchanged. Exits with the exit code of `deno test`.
 *
 * @module
 */

import { setupLab } from "./setup.ts";

async function main(args: string[]): Promise<number> {
  const [first, ...rest] = args;
  const filter = first !== undefined && !first.startsWith("-") ? first : undefined;
  const passThrough = (filter === undefined ? args : rest).filter((a) => a !== "--");

  await setupLab();

  const dir = new URL(".", import.meta.url);
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith("_test.ts")) files.push(new URL(e.name, dir).pathname);
  }
  files.sort();
  const testArgs = [
    "test",
    "-A",
    ...(filter ? ["--filter", filter] : []),
    ...passThrough,
    ...files,
  ];
  console.error(`[vm-lab] deno ${testArgs.join(" ")}`);
  const status = await new Deno.Command(Deno.execPath(), {
    args: testArgs,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  return status.code;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
