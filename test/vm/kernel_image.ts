/**
 * Gets the uncompressed `vmlinux` ELF out of an x86 bzImage, so QEMU can boot it through the PVH
 * entry point (`-kernel vmlinux`) and skip the firmware and the in-guest decompressor (about 3 s
 * under TCG).
 *
 * The bzImage's setup header (Documentation/arch/x86/boot.rst) says where the compressed payload
 * is: protected-mode code starts at `(setup_sects + 1) * 512`, the payload at `payload_offset`
 * bytes after that, `payload_length` bytes long. xz and zstd payloads end with the uncompressed
 * size (4 bytes, little endian), which is checked. gzip is decompressed in-process; xz and zstd
 * with the `xz` and `zstd` tools.
 *
 * @module
 */

/** Compressions of the bzImage payload that {@linkcode extractVmlinux} handles. */
export type KernelCompression = "gzip" | "xz" | "zstd";

/** The compressed payload of a bzImage. */
export interface BzImagePayload {
  compression: KernelCompression;
  /** Compressed bytes, without the appended size. */
  data: Uint8Array;
  /** Uncompressed size stated after the payload (xz, zstd), else null. */
  uncompressedBytes: number | null;
}

const SETUP_SECTS_OFFSET = 0x1f1;
const HEADER_MAGIC_OFFSET = 0x202;
const HEADER_MAGIC = 0x53726448; // "HdrS"
const VERSION_OFFSET = 0x206;
const PAYLOAD_VERSION_MIN = 0x0208;
const PAYLOAD_OFFSET_OFFSET = 0x248;
const PAYLOAD_LENGTH_OFFSET = 0x24c;
const SECTOR_BYTES = 512;

const PT_NOTE = 4;
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** Finds and describes the compressed payload of a bzImage; throws if `image` is not one. */
export function bzImagePayload(image: Uint8Array): BzImagePayload {
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (image.length < PAYLOAD_LENGTH_OFFSET + 4) throw new Error("File is too short for a bzImage.");
  if (view.getUint32(HEADER_MAGIC_OFFSET, true) !== HEADER_MAGIC) {
    throw new Error("Not a bzImage: no HdrS setup header.");
  }
  const version = view.getUint16(VERSION_OFFSET, true);
  if (version < PAYLOAD_VERSION_MIN) {
    throw new Error(`Boot protocol ${version.toString(16)} predates payload_offset (2.08).`);
  }
  const setupSects = view.getUint8(SETUP_SECTS_OFFSET) || 4;
  const start = (setupSects + 1) * SECTOR_BYTES + view.getUint32(PAYLOAD_OFFSET_OFFSET, true);
  const length = view.getUint32(PAYLOAD_LENGTH_OFFSET, true);
  if (length < 8 || start + length > image.length) {
    throw new Error(
      `Payload at ${start} (+${length}) lies outside the ${image.length}-byte image.`,
    );
  }
  const payload = image.subarray(start, start + length);
  const compression = detectCompression(payload);
  if (compression === "gzip") return { compression, data: payload, uncompressedBytes: null };
  const tail = new DataView(payload.buffer, payload.byteOffset + length - 4, 4);
  return {
    compression,
    data: payload.subarray(0, length - 4),
    uncompressedBytes: tail.getUint32(0, true),
  };
}

/** Decompresses the payload of the bzImage `image`; the result must be an ELF file. */
export async function extractVmlinux(image: Uint8Array): Promise<Uint8Array> {
  const payload = bzImagePayload(image);
  const elf = await decompress(payload);
  if (
    payload.uncompressedBytes !== null && payload.uncompressedBytes !== (elf.length >>> 0)
  ) {
    throw new Error(
      `Decompressed ${elf.length} bytes, but the bzImage states ${payload.uncompressedBytes}.`,
    );
  }
  if (!(elf[0] === 0x7f && elf[1] === 0x45 && elf[2] === 0x4c && elf[3] === 0x46)) {
    throw new Error("The decompressed bzImage payload is not an ELF file.");
  }
  return elf;
}

/** Whether the ELF64 image has a PVH entry note (Xen note type 18), so QEMU can boot it directly. */
export function hasPvhEntry(elf: Uint8Array): boolean {
  const view = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (elf.length < 64 || view.getUint32(0, false) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(view.getBigUint64(0x20, true));
  const phentsize = view.getUint16(0x36, true);
  const phnum = view.getUint16(0x38, true);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length) return false;
    if (view.getUint32(ph, true) !== PT_NOTE) continue;
    const offset = Number(view.getBigUint64(ph + 8, true));
    const size = Number(view.getBigUint64(ph + 32, true));
    if (offset + size > elf.length) return false;
    if (notesHavePvh(view, offset, offset + size)) return true;
  }
  return false;
}

function notesHavePvh(view: DataView, start: number, end: number): boolean {
  let at = start;
  while (at + 12 <= end) {
    const nameBytes = view.getUint32(at, true);
    const descBytes = view.getUint32(at + 4, true);
    const type = view.getUint32(at + 8, true);
    const name = new TextDecoder().decode(
      new Uint8Array(view.buffer, view.byteOffset + at + 12, Math.min(nameBytes, end - at - 12)),
    );
    if (name.replace(/\0+$/, "") === "Xen" && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
    at += 12 + align4(nameBytes) + align4(descBytes);
  }
  return false;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function detectCompression(p: Uint8Array): KernelCompression {
  if (p[0] === 0x1f && p[1] === 0x8b) return "gzip";
  if (
    p[0] === 0xfd && p[1] === 0x37 && p[2] === 0x7a && p[3] === 0x58 && p[4] === 0x5a &&
    p[5] === 0x00
  ) return "xz";
  if (p[0] === 0x28 && p[1] === 0xb5 && p[2] === 0x2f && p[3] === 0xfd) return "zstd";
  const magic = Array.from(p.subarray(0, 6), (b) => b.toString(16).padStart(2, "0")).join(" ");
  throw new Error(`Unsupported kernel payload compression (magic ${magic}).`);
}

async function decompress(p: BzImagePayload): Promise<Uint8Array> {
  if (p.compression === "gzip") {
    const stream = new Blob([p.data.slice()]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  const argv = p.compression === "xz"
    ? ["xz", "--decompress", "--stdout", "--single-stream"]
    : ["zstd", "--decompress", "--stdout", "--quiet"];
  return await runBytes(argv, p.data);
}

async function runBytes(argv: string[], input: Uint8Array): Promise<Uint8Array> {
  const [program, ...args] = argv;
  if (program === undefined) throw new TypeError("Command is empty.");
  const child = new Deno.Command(program, {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const feed = async () => {
    const w = child.stdin.getWriter();
    try {
      await w.write(input);
      await w.close();
    } catch {
      // the tool stopped reading; its exit code says why
    }
  };
  const [out] = await Promise.all([child.output(), feed()]);
  if (out.code !== 0) {
    throw new Error(
      `${argv.join(" ")} failed (exit ${out.code}): ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return out.stdout;
}
