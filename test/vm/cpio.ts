/**
 * A writer for "newc" cpio archives (the format the Linux kernel unpacks as an initramfs).
 *
 * The kernel unpacks several archives laid end to end, so the guest lab builds its initramfs from
 * pieces: each piece is one archive with its own trailer. Parent directories are emitted before
 * their children (the kernel does not create missing parents), entries carry mtime 0 so that the
 * same input gives the same bytes, and every file has one link (no hard-link bookkeeping).
 *
 * @example
 * ```ts
 * import { BufferSink, CpioWriter } from "./cpio.ts";
 * const sink = new BufferSink();
 * const cpio = new CpioWriter(sink);
 * await cpio.file("test.sh", new TextEncoder().encode("#!/bin/sh\nexit 0\n"), 0o755);
 * await cpio.finish();
 * console.log(sink.bytes().length);
 * ```
 *
 * @module
 */

/** Where a {@linkcode CpioWriter} puts its bytes; `Deno.FsFile` is one. */
export interface ByteSink {
  /** Writes some of `p` and resolves to the count written (may be short). */
  write(p: Uint8Array): Promise<number>;
}

/** A {@linkcode ByteSink} that keeps everything in memory. */
export class BufferSink implements ByteSink {
  #chunks: Uint8Array[] = [];
  #length = 0;

  write(p: Uint8Array): Promise<number> {
    this.#chunks.push(p.slice());
    this.#length += p.length;
    return Promise.resolve(p.length);
  }

  /** All bytes written so far, in one array. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.#length);
    let at = 0;
    for (const c of this.#chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const HEADER_BYTES = 110;
const MAGIC = "070701";
const FILE_BYTES_MAX = 0xffff_ffff;
const COPY_CHUNK_BYTES = 1 << 20;
const TRAILER = "TRAILER!!!";

/** Numbers of one newc header, in the order they appear. */
interface HeaderFields {
  ino: number;
  mode: number;
  nlink: number;
  fileBytes: number;
  rdevMajor: number;
  rdevMinor: number;
}

/** Writes one newc cpio archive entry by entry; call {@linkcode CpioWriter.finish} at the end. */
export class CpioWriter {
  readonly #sink: ByteSink;
  readonly #seen = new Map<string, "dir" | "other">();
  #ino = 1;
  #bytesWritten = 0;
  #finished = false;

  constructor(sink: ByteSink) {
    this.#sink = sink;
  }

  /** Bytes written to the sink so far. */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  /** Adds a directory (and any missing parents). Adding an existing directory again is a no-op. */
  async directory(path: string, mode = 0o755): Promise<void> {
    const name = normalize(path);
    if (name === ".") return;
    const seen = this.#seen.get(name);
    if (seen === "dir") return;
    if (seen === "other") throw new Error(`Cpio entry ${name} already exists as a non-directory.`);
    await this.#parents(name);
    this.#seen.set(name, "dir");
    await this.#header(name, { ...this.#base(), mode: S_IFDIR | (mode & 0o7777), nlink: 2 });
  }

  /** Adds a regular file with the given contents. */
  async file(path: string, data: Uint8Array, mode = 0o644): Promise<void> {
    const name = await this.#claim(path);
    checkSize(name, data.length);
    await this.#header(name, {
      ...this.#base(),
      mode: S_IFREG | (mode & 0o7777),
      fileBytes: data.length,
    });
    await this.#write(data);
    await this.#pad(data.length);
  }

  /** Adds a regular file copied from `hostPath` (streamed; mode taken from the host file unless given). */
  async fileFrom(path: string, hostPath: string, mode?: number): Promise<void> {
    using f = await Deno.open(hostPath, { read: true });
    const st = await f.stat();
    if (!st.isFile) throw new Error(`${hostPath} is not a regular file.`);
    const name = await this.#claim(path);
    checkSize(name, st.size);
    const perm = mode ?? (st.mode ?? 0o644);
    await this.#header(name, {
      ...this.#base(),
      mode: S_IFREG | (perm & 0o7777),
      fileBytes: st.size,
    });
    const buf = new Uint8Array(Math.min(COPY_CHUNK_BYTES, Math.max(st.size, 1)));
    let copied = 0;
    while (copied < st.size) {
      const n = await f.read(buf.subarray(0, Math.min(buf.length, st.size - copied)));
      if (n === null) break;
      await this.#write(buf.subarray(0, n));
      copied += n;
    }
    if (copied !== st.size) {
      throw new Error(`${hostPath} changed size while it was archived (${copied} of ${st.size}).`);
    }
    await this.#pad(st.size);
  }

  /** Adds a symbolic link at `path` pointing to `target`. */
  async symlink(path: string, target: string): Promise<void> {
    const name = await this.#claim(path);
    const data = new TextEncoder().encode(target);
    await this.#header(name, { ...this.#base(), mode: S_IFLNK | 0o777, fileBytes: data.length });
    await this.#write(data);
    await this.#pad(data.length);
  }

  /** Adds a character device node. */
  async charDevice(path: string, major: number, minor: number, mode = 0o600): Promise<void> {
    const name = await this.#claim(path);
    await this.#header(name, {
      ...this.#base(),
      mode: S_IFCHR | (mode & 0o7777),
      rdevMajor: major,
      rdevMinor: minor,
    });
  }

  /** Whether `path` was already added (as any kind of entry). */
  has(path: string): boolean {
    return this.#seen.has(normalize(path));
  }

  /** Writes the trailer; the writer cannot be used afterwards. */
  async finish(): Promise<void> {
    await this.#header(TRAILER, { ...this.#base(), ino: 0, mode: 0, nlink: 1 });
    // Pad the archive to a 512-byte block like cpio(1) does; the kernel skips zero padding.
    const tail = (512 - (this.#bytesWritten % 512)) % 512;
    if (tail > 0) await this.#write(new Uint8Array(tail));
    this.#finished = true;
  }

  #base(): HeaderFields {
    return { ino: this.#ino++, mode: 0, nlink: 1, fileBytes: 0, rdevMajor: 0, rdevMinor: 0 };
  }

  async #claim(path: string): Promise<string> {
    const name = normalize(path);
    if (name === ".") throw new Error("A cpio file entry needs a name.");
    if (this.#seen.has(name)) throw new Error(`Cpio entry ${name} was added twice.`);
    await this.#parents(name);
    this.#seen.set(name, "other");
    return name;
  }

  async #parents(name: string): Promise<void> {
    const parts = name.split("/");
    for (let i = 1; i < parts.length; i++) {
      await this.directory(parts.slice(0, i).join("/"));
    }
  }

  async #header(name: string, h: HeaderFields): Promise<void> {
    if (this.#finished) throw new Error("The cpio archive is already finished.");
    const nameBytes = new TextEncoder().encode(name + "\0");
    const fields = [
      h.ino,
      h.mode,
      0, // uid
      0, // gid
      h.nlink,
      0, // mtime
      h.fileBytes,
      0, // devmajor
      0, // devminor
      h.rdevMajor,
      h.rdevMinor,
      nameBytes.length,
      0, // check
    ];
    const text = MAGIC + fields.map((v) => v.toString(16).padStart(8, "0")).join("");
    const head = new TextEncoder().encode(text);
    if (head.length !== HEADER_BYTES) throw new Error(`Bad cpio header length ${head.length}.`);
    await this.#write(head);
    await this.#write(nameBytes);
    await this.#pad(HEADER_BYTES + nameBytes.length);
  }

  async #pad(length: number): Promise<void> {
    const pad = (4 - (length % 4)) % 4;
    if (pad > 0) await this.#write(new Uint8Array(pad));
  }

  async #write(p: Uint8Array): Promise<void> {
    let at = 0;
    while (at < p.length) {
      const n = await this.#sink.write(p.subarray(at));
      if (n <= 0) throw new Error("The cpio sink accepted no bytes.");
      at += n;
    }
    this.#bytesWritten += p.length;
  }
}

/** "/usr//bin/./x" -> "usr/bin/x"; rejects ".." so an entry cannot leave the archive root. */
function normalize(path: string): string {
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new Error(`Cpio path ${path} must not contain "..".`);
  return parts.length === 0 ? "." : parts.join("/");
}

function checkSize(name: string, bytes: number): void {
  if (bytes > FILE_BYTES_MAX) throw new Error(`Cpio entry ${name} is larger than 4 GiB.`);
}
