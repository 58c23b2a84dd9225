/**
 * Tests of guest.ts itself: how a guest that does not finish its test is reported, and that QEMU
 * does not outlive a run. (The normal path is covered by smoke_test.ts.)
 */

import assert from "node:assert/strict";
import { GuestError, runGuest } from "./guest.ts";

Deno.test("a kernel panic in the guest is reported as a panic", async () => {
  const err = await runGuest({
    name: "guest-panic",
    tools: false,
    script: "echo c > /proc/sysrq-trigger\nsleep 60",
    timeoutSec: 120,
  }).then(() => null, (e: unknown) => e);
  assert.ok(err instanceof GuestError, `expected a GuestError, got ${err}`);
  assert.equal(err.failure, "panic", err.message);
  assert.match(err.message, /Kernel panic - not syncing/);
});

Deno.test("a guest that overruns its timeout is killed and reported", async () => {
  const started = performance.now();
  const err = await runGuest({
    name: "guest-timeout",
    tools: false,
    script: "sleep 600",
    timeoutSec: 2,
  }).then(() => null, (e: unknown) => e);
  assert.ok(err instanceof GuestError, `expected a GuestError, got ${err}`);
  assert.equal(err.failure, "timeout", err.message);
  assert.ok(performance.now() - started < 30_000, "the kill took too long");
  const runDir = err.serialLog.replace(/\/serial\.log$/, "");
  assert.deepEqual(await processesMentioning(runDir), [], "QEMU outlived its run");
});

Deno.test("a QEMU that refuses its arguments is reported as a QEMU error", async () => {
  const err = await runGuest({
    name: "guest-qemu-error",
    tools: false,
    script: "exit 0",
    qemuArgs: ["-device", "no-such-device-model"],
    timeoutSec: 60,
  }).then(() => null, (e: unknown) => e);
  assert.ok(err instanceof GuestError, `expected a GuestError, got ${err}`);
  assert.equal(err.failure, "qemu-error", err.message);
  assert.match(err.qemuStderr, /no-such-device-model/);
});

Deno.test("a guest that does not reach /init in time is killed, with its CPU state saved", async () => {
  const err = await runGuest({
    name: "guest-boot-timeout",
    tools: false,
    script: "exit 0",
    bootTimeoutSec: 0.5, // a boot takes 2-5 s under TCG
    bootRetries: 0,
  }).then(() => null, (e: unknown) => e);
  assert.ok(err instanceof GuestError, `expected a GuestError, got ${err}`);
  assert.equal(err.failure, "boot-timeout", err.message);
  const hang = await Deno.readTextFile(err.serialLog.replace(/serial\.log$/, "hang.txt"));
  assert.match(hang, /RIP=/);
});

/** Pids of processes whose command line contains `needle`. */
async function processesMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const cmdline = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
    if (cmdline.includes(needle)) pids.push(Number(e.name));
  }
  return pids;
}
