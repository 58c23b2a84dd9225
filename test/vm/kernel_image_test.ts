import assert from "node:assert/strict";
import { bzImagePayload, extractVmlinux, hasPvhEntry } from "./kernel_image.ts";

/** A minimal ELF64 file with one PT_NOTE segment holding `noteType` under the name "Xen". */
function fakeElf(noteType: number): Uint8Array<ArrayBuffer> {
  const elf = new Uint8Array(160);
  const v = new DataView(elf.buffer);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setBigUint64(0x20, 64n, true); // e_phoff
  v.setUint16(0x36, 56, true); // e_phentsize
  v.setUint16(0x38, 1, true); // e_phnum
  v.setUint32(64, 4, true); // p_type = PT_NOTE
  v.setBigUint64(64 + 8, 120n, true); // p_offset
  v.setBigUint64(64 + 32, 20n, true); // p_filesz
  v.setUint32(120, 4, true); // namesz
  v.setUint32(124, 4, true); // descsz
  v.setUint32(128, noteType, true);
  elf.set(new TextEncoder().encode("Xen\0"), 132);
  v.setUint32(136, 0x1000000, true); // entry address
  return elf;
}

/** A bzImage-shaped file: one setup sector after the boot sector, then `payload`. */
function fakeBzImage(payload: Uint8Array): Uint8Array {
  const setupSects = 1;
  const start = (setupSects + 1) * 512;
  const image = new Uint8Array(start + 64 + payload.length);
  const v = new DataView(image.buffer);
  image[0x1f1] = setupSects;
  v.setUint32(0x202, 0x53726448, true); // "HdrS"
  v.setUint16(0x206, 0x020f, true);
  v.setUint32(0x248, 64, true); // payload_offset
  v.setUint32(0x24c, payload.length, true); // payload_length
  image.set(payload, start + 64);
  return image;
}

async function gzip(data: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  const stream = new Blob([data]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function xzWithSize(data: Uint8Array): Promise<Uint8Array> {
  const child = new Deno.Command("xz", {
    args: ["--format=xz", "--check=crc32", "--stdout"],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(data);
  await w.close();
  const out = await child.output();
  assert.equal(out.code, 0);
  const withSize = new Uint8Array(out.stdout.length + 4);
  withSize.set(out.stdout);
  new DataView(withSize.buffer).setUint32(out.stdout.length, data.length, true);
  return withSize;
}

Deno.test("kernel image: a gzip payload comes out as the ELF that went in", async () => {
  const elf = fakeElf(18);
  const out = await extractVmlinux(fakeBzImage(await gzip(elf)));
  assert.deepEqual(out, elf);
  assert.equal(hasPvhEntry(out), true);
});

Deno.test("kernel image: an xz payload with its appended size is checked and decompressed", async () => {
  const elf = fakeElf(18);
  const image = fakeBzImage(await xzWithSize(elf));
  const payload = bzImagePayload(image);
  assert.equal(payload.compression, "xz");
  assert.equal(payload.uncompressedBytes, elf.length);
  assert.deepEqual(await extractVmlinux(image), elf);
});

Deno.test("kernel image: a wrong appended size is an error", async () => {
  const payload = await xzWithSize(fakeElf(18));
  new DataView(payload.buffer).setUint32(payload.length - 4, 12345, true);
  await assert.rejects(() => extractVmlinux(fakeBzImage(payload)), /states 12345/);
});

Deno.test("kernel image: other notes are not a PVH entry", () => {
  assert.equal(hasPvhEntry(fakeElf(17)), false);
  assert.equal(hasPvhEntry(new Uint8Array(64)), false);
});

Deno.test("kernel image: a file without a setup header is rejected", () => {
  assert.throws(() => bzImagePayload(new Uint8Array(4096)), /no HdrS/);
});
