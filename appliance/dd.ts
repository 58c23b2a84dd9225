/**
 * `sluice dd`: copies between a file and a bdev, or between two bdevs, with
 * the appliance offline (SPDK's spdk_dd). The bdevs come from a JSON config
 * (`--json`: only its "accel" and "bdev" sections are applied, so the
 * appliance's own config.json works and no export starts); crypto keys come
 * from a key file (`--key-file`, default keys.json beside the config, when
 * there is one) or from the config's accel section. It is how an operator
 * writes an OS image into an encrypted volume, and how tests read a bdev.
 *
 *   sluice dd --json cfg.json --if image.raw --ob Crypto0
 *   sluice dd --json cfg.json --ib Crypto0 --of back.raw --bs 4096 --count 256
 *
 * Exit status: 0 done, 1 the copy failed (message on stderr), 2 usage error.
 * @module
 */
import { dirname, resolve } from "node:path";
import { App } from "../src/app.ts";
import { type BdevChannel, type BdevDesc, BdevIoType, runIo } from "../src/bdev/mod.ts";
import { applyConfig, readConfigFile } from "../src/config/config.ts";
import { keyStoreOf } from "../src/crypto/crypto_rpc.ts";
import { loadKeyFile } from "../src/crypto/keys.ts";
import { exists, isServing } from "./fs.ts";

/** The usage text of `sluice dd --help`. */
export const DD_USAGE =
  `Usage: sluice dd --json FILE (--if FILE | --ib BDEV) (--of FILE | --ob BDEV) [options]

Copies data between a file and a bdev, or between two bdevs, with the appliance
stopped (like spdk_dd). The bdevs are built from the JSON config: only its
"accel" (crypto keys) and "bdev" sections are applied, so the appliance's own
<state-dir>/config.json can be used while it is not running.

Options:
  --json FILE       Config that defines the bdevs (save_config's format)
  --key-file FILE   Crypto keys for encrypted bdevs (default: keys.json beside
                    the config, when it exists; mode 0600 required; docs/crypto.md)
  --if FILE         Input file              --ib BDEV   Input bdev
  --of FILE         Output file             --ob BDEV   Output bdev
                    (created; truncated at the --seek offset, as dd(1) does)
  --bs N            Block size in bytes for --count, --skip and --seek (default 4096);
                    a multiple of the block size of the bdevs involved
  --count N         Copy at most N blocks (default: to the end of the input)
  --skip N          Skip N blocks at the start of the input
  --seek N          Skip N blocks at the start of the output
  --qd N            Transfers in flight (default 4, at most 64)
  -h, --help        Show this help

A file input that ends inside a block of an output bdev is padded with zeroes
to that block. A progress line is shown on a terminal; a summary (bytes, MB/s)
at the end.

Example: write an OS image into an encrypted volume
  sluice dd --json var/config.json --if debian.raw --ob Crypto0`;

/** A command-line mistake: exit status 2. */
class DdUsageError extends Error {}
/** The copy failed: exit status 1. */
class DdError extends Error {}

interface DdOptions {
  json?: string;
  keyFile?: string;
  inFile?: string;
  inBdev?: string;
  outFile?: string;
  outBdev?: string;
  bs: number;
  count?: number;
  skip: number;
  seek: number;
  qd: number;
}

const VALUE_OPTIONS = [
  "json",
  "key-file",
  "if",
  "ib",
  "of",
  "ob",
  "bs",
  "count",
  "skip",
  "seek",
  "qd",
];

function parseDdArgs(args: readonly string[]): DdOptions | null {
  const v = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === "-h" || a === "--help") return null;
    if (!a.startsWith("--")) throw new DdUsageError(`unexpected argument '${a}'`);
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (!VALUE_OPTIONS.includes(name)) throw new DdUsageError(`unknown option --${name}`);
    const value = eq > 0 ? a.slice(eq + 1) : args[++i];
    if (value === undefined || value === "") throw new DdUsageError(`--${name} needs a value`);
    if (v.has(name)) throw new DdUsageError(`--${name} given twice`);
    v.set(name, value);
  }
  const num = (name: string, min: number): number | undefined => {
    const s = v.get(name);
    if (s === undefined) return undefined;
    const n = Number(s);
    if (!/^\d+$/.test(s) || !Number.isSafeInteger(n) || n < min) {
      throw new DdUsageError(`--${name} must be an integer of at least ${min}, got '${s}'`);
    }
    return n;
  };
  const o: DdOptions = {
    json: v.get("json"),
    keyFile: v.get("key-file"),
    inFile: v.get("if"),
    inBdev: v.get("ib"),
    outFile: v.get("of"),
    outBdev: v.get("ob"),
    bs: num("bs", 1) ?? 4096,
    count: num("count", 0),
    skip: num("skip", 0) ?? 0,
    seek: num("seek", 0) ?? 0,
    qd: num("qd", 1) ?? 4,
  };
  if (o.qd > 64) throw new DdUsageError(`--qd must be at most 64, got ${o.qd}`);
  if ((o.inFile === undefined) === (o.inBdev === undefined)) {
    throw new DdUsageError("give exactly one input: --if FILE or --ib BDEV");
  }
  if ((o.outFile === undefined) === (o.outBdev === undefined)) {
    throw new DdUsageError("give exactly one output: --of FILE or --ob BDEV");
  }
  if (o.inBdev === undefined && o.outBdev === undefined) {
    throw new DdUsageError("one side must be a bdev (--ib or --ob); copy files with dd(1)");
  }
  if (o.json === undefined) throw new DdUsageError("--json FILE is needed to build the bdevs");
  return o;
}

/** Runs `sluice dd <args>`; returns the exit status. */
export async function dd(args: readonly string[]): Promise<number> {
  let o: DdOptions | null;
  try {
    o = parseDdArgs(args);
  } catch (e) {
    if (!(e instanceof DdUsageError)) throw e;
    console.error(`sluice dd: ${e.message}\nRun 'sluice dd --help' for usage.`);
    return 2;
  }
  if (o === null) {
    console.log(DD_USAGE);
    return 0;
  }
  try {
    await runDd(o);
    return 0;
  } catch (e) {
    console.error(`sluice dd: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

/** Bytes moved per I/O: large sequential transfers, a whole number of --bs blocks. */
const CHUNK_BYTES = 1024 * 1024;

function alignedBuffer(bytes: number, align: number): Uint8Array {
  const raw = new Uint8Array(bytes + align);
  const addr = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(raw)));
  const skip = (align - (addr % align)) % align;
  return raw.subarray(skip, skip + bytes);
}

/** One end of the copy. */
interface Endpoint {
  what: string;
  /** Bytes available from `base` (input) or room from `base` (output). */
  size: number;
  /** Bytes a transfer must be a multiple of (1 for files). */
  unit: number;
  align: number;
  read(buf: Uint8Array, pos: number): Promise<number>;
  write(buf: Uint8Array, pos: number): Promise<void>;
  finish(): Promise<void>;
  close(): void;
}

async function fileEndpoint(path: string, output: boolean, truncateAt: number): Promise<Endpoint> {
  let f: Deno.FsFile;
  try {
    f = output
      ? await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 })
      : await Deno.open(path, { read: true });
  } catch (e) {
    throw new DdError(`cannot open ${path}: ${e instanceof Error ? e.message : e}`);
  }
  if (output) {
    const st = await f.stat();
    if (st.isFile && st.size > truncateAt) await f.truncate(truncateAt);
  }
  const st = await f.stat();
  // A block device's stat size is 0: its end, found by seeking, is its size.
  const size = st.isFile ? st.size : await f.seek(0, Deno.SeekMode.End);
  // One seek-then-transfer at a time: the file position is shared.
  let lock: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = lock.then(fn);
    lock = run.catch(() => {});
    return run;
  };
  return {
    what: `file ${path}`,
    size: output ? Number.MAX_SAFE_INTEGER : size,
    unit: 1,
    align: 1,
    read: (buf, pos) =>
      serial(async () => {
        await f.seek(pos, Deno.SeekMode.Start);
        let got = 0;
        while (got < buf.byteLength) {
          const n = await f.read(buf.subarray(got));
          if (n === null) break;
          got += n;
        }
        return got;
      }),
    write: (buf, pos) =>
      serial(async () => {
        await f.seek(pos, Deno.SeekMode.Start);
        let put = 0;
        while (put < buf.byteLength) put += await f.write(buf.subarray(put));
      }),
    async finish() {
      if (output) await f.syncData();
    },
    close() {
      f.close();
    },
  };
}

function bdevEndpoint(app: App, name: string, output: boolean): Endpoint {
  if (!app.bdevs.has(name)) {
    const names = app.bdevs.list().map((b) => b.name).join(", ") || "none";
    throw new DdError(`no bdev named "${name}" in the config (bdevs: ${names})`);
  }
  const desc: BdevDesc = app.bdevs.open(name, output);
  const ch: BdevChannel = desc.getIoChannel(app.reactor);
  const bdev = desc.bdev;
  const bs = bdev.blockSize;
  return {
    what: `bdev ${name}`,
    size: bdev.sizeBytes,
    unit: bs,
    align: Math.max(bdev.requiredAlignment, 4096),
    async read(buf, pos) {
      await runIo(ch, (io) => ch.read(io, buf, pos / bs, buf.byteLength / bs));
      return buf.byteLength;
    },
    async write(buf, pos) {
      await runIo(ch, (io) => ch.write(io, buf, pos / bs, buf.byteLength / bs));
    },
    async finish() {
      if (output && bdev.ioTypeSupported(BdevIoType.Flush)) await runIo(ch, (io) => ch.flush(io));
    },
    close() {
      ch.close();
      desc.close();
    },
  };
}

function formatRate(bytes: number, ms: number): string {
  return `${(bytes / Math.max(ms, 1) / 1000).toFixed(1)} MB/s`;
}

async function runDd(o: DdOptions): Promise<void> {
  const json = resolve(o.json as string);
  // Two processes on one file bdev would corrupt it: refuse while an appliance serves this config.
  const sock = `${dirname(json)}/sluice.sock`;
  if (await isServing(sock)) {
    throw new DdError(
      `an appliance is serving ${dirname(json)} (${sock} answers): stop it before copying offline`,
    );
  }
  const app = new App();
  app.start();
  const ends: Endpoint[] = [];
  try {
    const keyFile = o.keyFile !== undefined
      ? resolve(o.keyFile)
      : (await exists(`${dirname(json)}/keys.json`))
      ? `${dirname(json)}/keys.json`
      : undefined;
    if (keyFile !== undefined) await loadKeyFile(keyStoreOf(app), keyFile);
    let cfg;
    try {
      cfg = await readConfigFile(json);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new DdError(`config ${json} does not exist`);
      throw e;
    }
    // Bdevs only: an offline copy must not open sockets or serve anyone.
    const subsystems = cfg.subsystems.filter((s) =>
      s.subsystem === "accel" || s.subsystem === "bdev"
    );
    await applyConfig(app.rpc, app, { subsystems }, json);

    const bs = o.bs;
    const input = o.inBdev !== undefined
      ? bdevEndpoint(app, o.inBdev, false)
      : await fileEndpoint(o.inFile as string, false, 0);
    ends.push(input);
    const output = o.outBdev !== undefined
      ? bdevEndpoint(app, o.outBdev, true)
      : await fileEndpoint(o.outFile as string, true, o.seek * bs);
    ends.push(output);
    for (const e of [input, output]) {
      if (bs % e.unit !== 0) {
        throw new DdUsageError(
          `--bs ${bs} is not a multiple of the block size of ${e.what} (${e.unit})`,
        );
      }
    }
    const inStart = o.skip * bs, outStart = o.seek * bs;
    if (inStart > input.size) {
      throw new DdError(
        `--skip ${o.skip} (${inStart} bytes) is beyond the end of ${input.what} (${input.size} bytes)`,
      );
    }
    if (outStart > output.size) {
      throw new DdError(
        `--seek ${o.seek} (${outStart} bytes) is beyond the end of ${output.what} (${output.size} bytes)`,
      );
    }
    let total = input.size - inStart;
    if (o.count !== undefined) total = Math.min(total, o.count * bs);
    // A file's last partial block is padded with zeroes for a bdev output.
    const padded = Math.ceil(total / output.unit) * output.unit;
    if (padded > output.size - outStart) {
      throw new DdError(
        `${output.what} has room for ${
          output.size - outStart
        } bytes after --seek ${o.seek}; the copy needs ${padded}`,
      );
    }
    const chunk = Math.max(bs, Math.floor(CHUNK_BYTES / bs) * bs);
    const align = Math.max(input.align, output.align);
    const tty = Deno.stderr.isTerminal();
    const started = performance.now();
    let lastShown = 0;
    let next = 0; // the next byte of the copy to hand to a worker
    let done = 0;
    let failed: unknown = null;
    const progress = async (): Promise<void> => {
      const now = performance.now();
      if (!tty || (now - lastShown < 250 && done < total)) return;
      lastShown = now;
      const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
      const line = `Copying: ${(done / 2 ** 20).toFixed(0)}/${
        (total / 2 ** 20).toFixed(0)
      } MiB (${pct}%) ${formatRate(done, now - started)}   `;
      await Deno.stderr.write(new TextEncoder().encode(`\r${line}`));
    };
    // --qd workers, each with its own buffer, take chunks in order. File
    // positions are shared state (seek, then read), so file operations are
    // serialised; bdev I/Os overlap.
    const worker = async (): Promise<void> => {
      const buf = alignedBuffer(chunk, align);
      while (next < total && failed === null) {
        const at = next;
        const n = Math.min(chunk, total - at);
        next += n;
        try {
          const got = await input.read(buf.subarray(0, n), inStart + at);
          if (got < n) {
            throw new DdError(`${input.what} ended early: ${got} of ${n} bytes at ${inStart + at}`);
          }
          const out = Math.ceil(n / output.unit) * output.unit;
          if (out > n) buf.fill(0, n, out);
          await output.write(buf.subarray(0, out), outStart + at);
        } catch (e) {
          failed ??= e;
          return;
        }
        done += n;
        await progress();
      }
    };
    await Promise.all(Array.from({ length: o.qd }, worker));
    if (failed !== null) throw failed;
    await output.finish();
    const ms = performance.now() - started;
    if (tty) await Deno.stderr.write(new TextEncoder().encode("\n"));
    const pad = padded > total ? ` (last block padded with ${padded - total} zero bytes)` : "";
    console.log(
      `Copied ${total} bytes (${
        (total / 2 ** 20).toFixed(1)
      } MiB) from ${input.what} to ${output.what} in ${(ms / 1000).toFixed(2)} s, ${
        formatRate(total, ms)
      }${pad}`,
    );
  } catch (e) {
    if (e instanceof DdUsageError) throw new DdError(`${e.message} (see sluice dd --help)`);
    throw e;
  } finally {
    for (const e of ends.reverse()) e.close();
    await app.shutdown();
  }
}
