import assert from "node:assert/strict";
import { BufferSink, CpioWriter } from "./cpio.ts";

const enc = new TextEncoder();

async function sampleArchive(): Promise<Uint8Array> {
  const sink = new BufferSink();
  const cpio = new CpioWriter(sink);
  await cpio.file("usr/bin/hello.sh", enc.encode("#!/bin/sh\necho hi\n"), 0o755);
  await cpio.symlink("bin/sh", "/bin/busybox");
  await cpio.directory("tmp", 0o1777);
  await cpio.file("/etc//odd.txt", enc.encode("12345"));
  await cpio.file("empty", new Uint8Array(0));
  await cpio.finish();
  return sink.bytes();
}

Deno.test("cpio: cpio(1) lists the entries, parents before children", async () => {
  const archive = await sampleArchive();
  assert.equal(archive.length % 512, 0);
  const out = await new Deno.Command("cpio", {
    args: ["-it", "--quiet"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = out.stdin.getWriter();
  await w.write(archive);
  await w.close();
  const res = await out.output();
  assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
  assert.deepEqual(new TextDecoder().decode(res.stdout).trim().split("\n"), [
    "usr",
    "usr/bin",
    "usr/bin/hello.sh",
    "bin",
    "bin/sh",
    "tmp",
    "etc",
    "etc/odd.txt",
    "empty",
  ]);
});

Deno.test("cpio: cpio(1) extracts the same contents, modes and links", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-cpio-" });
  try {
    const archive = await sampleArchive();
    const child = new Deno.Command("cpio", {
      args: ["-id", "--quiet", "--no-absolute-filenames"],
      cwd: dir,
      stdin: "piped",
      stderr: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(archive);
    await w.close();
    const res = await child.output();
    assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
    assert.equal(await Deno.readTextFile(`${dir}/usr/bin/hello.sh`), "#!/bin/sh\necho hi\n");
    assert.equal(((await Deno.stat(`${dir}/usr/bin/hello.sh`)).mode ?? 0) & 0o777, 0o755);
    assert.equal(await Deno.readTextFile(`${dir}/etc/odd.txt`), "12345");
    assert.equal((await Deno.stat(`${dir}/empty`)).size, 0);
    assert.equal(await Deno.readLink(`${dir}/bin/sh`), "/bin/busybox");
    assert.equal(((await Deno.stat(`${dir}/tmp`)).mode ?? 0) & 0o7777, 0o1777);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cpio: fileFrom streams a host file", async () => {
  const host = await Deno.makeTempFile();
  try {
    const data = new Uint8Array(3 * 1024 * 1024 + 5).map((_, i) => i * 7);
    await Deno.writeFile(host, data);
    const sink = new BufferSink();
    const cpio = new CpioWriter(sink);
    await cpio.fileFrom("big.bin", host, 0o600);
    await cpio.finish();
    const bytes = sink.bytes();
    const header = new TextDecoder().decode(bytes.subarray(0, 110));
    assert.equal(header.slice(0, 6), "070701");
    assert.equal(parseInt(header.slice(54, 62), 16), data.length); // c_filesize
    assert.equal(parseInt(header.slice(14, 22), 16), 0o100600); // c_mode
    const nameEnd = 110 + "big.bin\0".length;
    const dataStart = nameEnd + ((4 - (nameEnd % 4)) % 4);
    assert.deepEqual(bytes.subarray(dataStart, dataStart + data.length), data);
  } finally {
    await Deno.remove(host);
  }
});

Deno.test("cpio: rejects duplicate entries and paths that leave the root", async () => {
  const cpio = new CpioWriter(new BufferSink());
  await cpio.file("a", new Uint8Array(1));
  await assert.rejects(() => cpio.file("a", new Uint8Array(1)), /added twice/);
  await assert.rejects(() => cpio.directory("a"), /non-directory/);
  await assert.rejects(() => cpio.file("../x", new Uint8Array(1)), /must not contain/);
  await cpio.finish();
  await assert.rejects(() => cpio.file("b", new Uint8Array(1)), /already finished/);
});
