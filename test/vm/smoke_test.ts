/**
 * Smoke tests of the guest lab: real fio on a real guest block device, and Deno in a guest.
 * Run with `deno task test:vm smoke`.
 */

import assert from "node:assert/strict";
import { outputTail, runGuest } from "./guest.ts";
import { readLab } from "./lab.ts";

/** The parts of fio's JSON output these tests read. */
interface FioJob {
  jobname: string;
  error: number;
  read: { total_ios: number; io_bytes: number };
  write: { total_ios: number; io_bytes: number };
}

const DISK_MIB = 64;
const FIO_SIZE_MIB = 8;
const PATTERN_MIB = 32;
const PATTERN_BYTES = 1 << 20;

Deno.test("fio in a guest writes and verifies a virtio-blk disk backed by a host file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-vm-smoke-" });
  try {
    const disk = `${dir}/disk.raw`;
    await Deno.writeFile(disk, new Uint8Array(0));
    await Deno.truncate(disk, DISK_MIB << 20);
    const token = `sluice-smoke-${crypto.randomUUID()}`;

    const r = await runGuest({
      name: "smoke-fio",
      script: new URL("./guest/fio_virtio_blk.sh", import.meta.url),
      modules: ["virtio_pci", "virtio_blk"],
      qemuArgs: ["-drive", `file=${disk},if=virtio,format=raw,cache=writeback`],
      env: {
        TOKEN: token,
        PATTERN_MIB: String(PATTERN_MIB),
        FIO_SIZE_MIB: String(FIO_SIZE_MIB),
      },
      timeoutSec: 180,
    });
    assert.equal(r.exitCode, 0, outputTail(r.output));

    const report = JSON.parse(r.report) as { patternSha256: string; fio: { jobs: FioJob[] } };
    const job = report.fio.jobs[0];
    assert.ok(job !== undefined, `fio reported no job: ${r.report.slice(0, 500)}`);
    assert.equal(job.error, 0);
    // Every 4 KiB block of the region was written once, then read back by fio's verify pass.
    const blocks = (FIO_SIZE_MIB << 20) / 4096;
    assert.equal(job.write.total_ios, blocks);
    assert.ok(job.read.total_ios > 0, `fio read nothing back: ${JSON.stringify(job.read)}`);

    // What the guest wrote through virtio-blk must be in the host's file.
    using f = await Deno.open(disk, { read: true });
    await f.seek(PATTERN_MIB << 20, Deno.SeekMode.Start);
    const onHost = new Uint8Array(PATTERN_BYTES);
    let got = 0;
    while (got < onHost.length) {
      const n = await f.read(onHost.subarray(got));
      if (n === null) break;
      got += n;
    }
    assert.equal(got, PATTERN_BYTES);
    assert.equal(new TextDecoder().decode(onHost.subarray(0, token.length)), token);
    assert.equal(await sha256Hex(onHost), report.patternSha256);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno runs a TypeScript file in a guest, with the host's env and exit code", async () => {
  const lab = await readLab();
  const probe = `
    const report = {
      deno: Deno.version.deno,
      sum: [40, 2].reduce((a: number, b: number) => a + b, 0),
      greeting: Deno.env.get("GREETING"),
    };
    console.log(JSON.stringify(report));
    Deno.exit(Number(Deno.env.get("EXIT_CODE")));
  `;
  const r = await runGuest({
    name: "smoke-deno",
    deno: true,
    tools: false,
    memMiB: 512,
    files: { "/root/probe.ts": probe },
    env: { EXIT_CODE: "7", GREETING: 'it\'s "quoted" $HOME' },
    script: [
      `deno eval 'console.log("eval says", 6 * 7)'`,
      "deno run --allow-env /root/probe.ts > /dev/report",
    ].join("\n"),
    timeoutSec: 180,
  });
  assert.equal(r.exitCode, 7, outputTail(r.output));
  assert.ok(r.output.includes("eval says 42"), outputTail(r.output));
  const report = JSON.parse(r.report) as { deno: string; sum: number; greeting: string };
  assert.deepEqual(report, {
    deno: lab.denoVersion ?? "",
    sum: 42,
    greeting: 'it\'s "quoted" $HOME',
  });
});

async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
