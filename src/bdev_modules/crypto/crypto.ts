/**
 * The crypto bdev: AES-256-XTS encryption at rest on top of any base bdev
 * (SPDK's vbdev_crypto). Writes are encrypted into bounce buffers and the
 * ciphertext goes to the base; reads bring ciphertext into bounce buffers
 * and decrypt it into the caller's vectors. The caller's buffers are never
 * changed by a write, and nothing is allocated per I/O: each channel owns a
 * fixed set of bounce buffers, made when the channel is created.
 *
 * Layout: data unit `n` of the volume (bytes `n * du .. (n+1) * du`, with
 * `du` the data-unit size, by default the block size) is IEEE 1619
 * AES-256-XTS with the tweak `n` as a 128-bit little-endian number, so with
 * the defaults each block is encrypted with its LBA. The base holds nothing
 * else: no header, no metadata; the key comes from the key store by name.
 *
 * Zeroes (docs/crypto.md): unmap and write_zeroes pass through to the base,
 * and a data unit whose ciphertext is all zeroes reads back as zeroes
 * (it was unmapped or zeroed below us, or never written). A real ciphertext
 * is all zeroes with probability 2^-(8*du), so no written data is lost by
 * this; what it costs is that the base shows which units are zero, as any
 * thin-provisioned volume shows which blocks are allocated. Writes of
 * zero-filled buffers are encrypted like any other data.
 * @module
 */
import {
  type BdevCompleter,
  BdevExistsError,
  BdevInvalidError,
  BdevIo,
  BdevIoStatus,
  BdevIoType,
  type BdevRegistry,
  type IoThread,
  type RpcCall,
} from "../../bdev/mod.ts";
import { Vbdev, VbdevChannel } from "../../bdev/vbdev.ts";
import type { KeyStore } from "../../crypto/keys.ts";
import type { XtsEngine, XtsKey } from "../../crypto/xts.ts";
import type { CryptoReplicaSpec } from "../../bdev/replica.ts";
import { createWasmXtsEngine } from "../../crypto/wasm_xts.ts";
import { loadNativeXtsEngine } from "../../crypto/engines.ts";

/** Parameters of bdev_crypto_create (SPDK's names, plus the data-unit size). */
export interface CryptoCreateParams {
  baseBdevName: string;
  name: string;
  keyName: string;
  /** Bytes per XTS data unit: a power of two from 512 to the block size (default: the block size). */
  dataUnitSize?: number;
  uuid?: string;
}

/** Bytes a bounce buffer holds (at least one block): larger I/Os go through in pieces. */
export const CRYPTO_BOUNCE_BYTES = 128 * 1024;
/** Bounce buffers per channel (at most the pool size): I/Os beyond that wait for one. */
export const CRYPTO_BOUNCE_COUNT = 32;

const NONE = -1;

/** A zeroed buffer of `bytes` whose start is aligned to `align` bytes. */
function alignedBuffer(bytes: number, align: number): Uint8Array {
  const raw = new Uint8Array(bytes + align);
  const addr = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(raw)));
  const skip = (align - (addr % align)) % align;
  return raw.subarray(skip, skip + bytes);
}

class CryptoChannel extends VbdevChannel {
  /** Block views of each bounce buffer by length: prefix[b][k] is its first k blocks. */
  readonly prefix: Uint8Array[][] = [];
  /** Data-unit views of each bounce buffer. */
  readonly units: Uint8Array[][] = [];
  readonly freeBounce: Int32Array;
  freeTop: number;
  waitHead: BdevIo | null = null;
  waitTail: BdevIo | null = null;
  // Per slot of the parent pool.
  readonly bounceOf: Int32Array;
  /** Blocks of the parent I/O finished so far. */
  readonly doneBlocks: Float64Array;
  /** Blocks of the piece in flight. */
  readonly pieceBlocks: Int32Array;
  /** Where the next piece starts in the parent's vectors. */
  readonly iovIdx: Int32Array;
  readonly iovOff: Int32Array;

  constructor(
    completer: BdevCompleter,
    thread: IoThread,
    vbdev: CryptoBdev,
    poolSize: number,
    onChild: (child: BdevIo) => void,
  ) {
    super(completer, thread, vbdev.baseDesc, poolSize, onChild);
    const bs = vbdev.blockSize, du = vbdev.dataUnitSize;
    const count = Math.min(poolSize, CRYPTO_BOUNCE_COUNT);
    const blocks = vbdev.pieceBlocks;
    const align = Math.max(vbdev.baseDesc.bdev.requiredAlignment, 64);
    const all = alignedBuffer(count * blocks * bs, align);
    for (let b = 0; b < count; b++) {
      const buf = all.subarray(b * blocks * bs, (b + 1) * blocks * bs);
      const prefix: Uint8Array[] = [buf.subarray(0, 0)];
      for (let k = 1; k <= blocks; k++) prefix.push(buf.subarray(0, k * bs));
      this.prefix.push(prefix);
      const units: Uint8Array[] = [];
      for (let off = 0; off < buf.byteLength; off += du) units.push(buf.subarray(off, off + du));
      this.units.push(units);
    }
    this.freeBounce = new Int32Array(count);
    for (let b = 0; b < count; b++) this.freeBounce[b] = b;
    this.freeTop = count;
    this.bounceOf = new Int32Array(poolSize).fill(NONE);
    this.doneBlocks = new Float64Array(poolSize);
    this.pieceBlocks = new Int32Array(poolSize);
    this.iovIdx = new Int32Array(poolSize);
    this.iovOff = new Int32Array(poolSize);
  }
}

class CryptoBdev extends Vbdev<CryptoChannel> {
  readonly #params: CryptoCreateParams;
  readonly #keys: KeyStore;
  readonly key: XtsKey;
  readonly blockSize: number;
  readonly dataUnitSize: number;
  readonly unitsPerBlock: number;
  readonly pieceBlocks: number;
  /** The engine `key` was loaded into (a replica loads its copy into the same kind). */
  readonly engineName: "wasm" | "native";

  /** Takes `key` (loaded for this bdev); claims and opens the base. */
  constructor(
    registry: BdevRegistry,
    keys: KeyStore,
    key: XtsKey,
    params: CryptoCreateParams & { dataUnitSize: number },
  ) {
    super(registry, "crypto", params.name, params.baseBdevName);
    this.#params = params;
    this.#keys = keys;
    this.key = key;
    this.engineName = keys.engineName();
    this.blockSize = this.baseDesc.bdev.blockSize;
    this.dataUnitSize = params.dataUnitSize;
    this.unitsPerBlock = this.blockSize / params.dataUnitSize;
    this.pieceBlocks = Math.max(1, Math.floor(CRYPTO_BOUNCE_BYTES / this.blockSize));
  }

  /** Everything the base does; write_zeroes and unmap pass through (see the module doc). */
  override ioTypes(): BdevIoType[] {
    return super.ioTypes();
  }

  getIoChannel(completer: BdevCompleter, thread: IoThread, poolSize: number): CryptoChannel {
    return new CryptoChannel(completer, thread, this, poolSize, this.onChild);
  }

  override submitRequest(ch: CryptoChannel, io: BdevIo): void {
    if (io.type !== BdevIoType.Read && io.type !== BdevIoType.Write) {
      this.forward(ch, io); // flush, unmap, write_zeroes
      return;
    }
    const s = io.slot;
    ch.doneBlocks[s] = 0;
    ch.iovIdx[s] = 0;
    ch.iovOff[s] = 0;
    if (ch.freeTop === 0) {
      io.next = null;
      if (ch.waitTail === null) ch.waitHead = io;
      else ch.waitTail.next = io;
      ch.waitTail = io;
      return;
    }
    ch.bounceOf[s] = ch.freeBounce[--ch.freeTop] as number;
    this.#nextPiece(ch, io);
  }

  /** Sends the next piece of a read or write down to the base. */
  #nextPiece(ch: CryptoChannel, io: BdevIo): void {
    const s = io.slot;
    const b = ch.bounceOf[s] as number;
    const done = ch.doneBlocks[s] as number;
    const n = Math.min(io.numBlocks - done, this.pieceBlocks);
    ch.pieceBlocks[s] = n;
    if (io.type === BdevIoType.Write) this.#encryptPiece(ch, io, b, done, n);
    const child = ch.children[s] as BdevIo;
    child.parent = io;
    child.setBuffer(ch.prefix[b]?.[n] as Uint8Array);
    child.type = io.type;
    child.offsetBlocks = io.offsetBlocks + done;
    child.numBlocks = n;
    ch.base.submit(child);
  }

  /** Encrypts blocks [done, done+n) of the parent's vectors into bounce buffer `b`. */
  #encryptPiece(ch: CryptoChannel, io: BdevIo, b: number, done: number, n: number): void {
    const du = this.dataUnitSize;
    const units = ch.units[b] as Uint8Array[];
    const first = (io.offsetBlocks + done) * this.unitsPerBlock;
    const count = n * this.unitsPerBlock;
    const s = io.slot;
    let idx = ch.iovIdx[s] as number, off = ch.iovOff[s] as number;
    for (let u = 0; u < count; u++) {
      const dst = units[u] as Uint8Array;
      let iov = io.iovs[idx] as Uint8Array;
      if (off + du <= iov.byteLength) {
        // The unit lies in one vector: encrypt straight from it.
        const src = off === 0 && iov.byteLength === du ? iov : iov.subarray(off, off + du);
        this.key.encrypt(src, dst, du, first + u);
        off += du;
      } else {
        // It straddles vectors: gather it into the bounce unit, then encrypt there.
        let got = 0;
        while (got < du) {
          const take = Math.min(du - got, iov.byteLength - off);
          dst.set(iov.subarray(off, off + take), got);
          got += take;
          off += take;
          if (off === iov.byteLength && got < du) {
            iov = io.iovs[++idx] as Uint8Array;
            off = 0;
          }
        }
        this.key.encrypt(dst, dst, du, first + u);
      }
      if (off === iov.byteLength && idx + 1 < io.iovcnt) {
        idx++;
        off = 0;
      }
    }
    ch.iovIdx[s] = idx;
    ch.iovOff[s] = off;
  }

  /** Decrypts the piece that just arrived in bounce buffer `b` into the parent's vectors. */
  #decryptPiece(ch: CryptoChannel, io: BdevIo, b: number, done: number, n: number): void {
    const du = this.dataUnitSize;
    const units = ch.units[b] as Uint8Array[];
    const first = (io.offsetBlocks + done) * this.unitsPerBlock;
    const count = n * this.unitsPerBlock;
    const s = io.slot;
    let idx = ch.iovIdx[s] as number, off = ch.iovOff[s] as number;
    for (let u = 0; u < count; u++) {
      const src = units[u] as Uint8Array;
      const hole = isZero(src);
      let iov = io.iovs[idx] as Uint8Array;
      if (off + du <= iov.byteLength) {
        const dst = off === 0 && iov.byteLength === du ? iov : iov.subarray(off, off + du);
        if (hole) dst.fill(0);
        else this.key.decrypt(src, dst, du, first + u);
        off += du;
      } else {
        // It straddles vectors: decrypt in the bounce unit, then scatter.
        if (!hole) this.key.decrypt(src, src, du, first + u);
        let put = 0;
        while (put < du) {
          const take = Math.min(du - put, iov.byteLength - off);
          iov.set(src.subarray(put, put + take), off);
          put += take;
          off += take;
          if (off === iov.byteLength && put < du) {
            iov = io.iovs[++idx] as Uint8Array;
            off = 0;
          }
        }
      }
      if (off === iov.byteLength && idx + 1 < io.iovcnt) {
        idx++;
        off = 0;
      }
    }
    ch.iovIdx[s] = idx;
    ch.iovOff[s] = off;
  }

  protected override childCompleted(ch: CryptoChannel, child: BdevIo): void {
    const io = child.parent as BdevIo;
    if (io.type !== BdevIoType.Read && io.type !== BdevIoType.Write) {
      this.finish(ch, child, child.status, child.errno);
      return;
    }
    const s = io.slot;
    if (child.status !== BdevIoStatus.Success) {
      this.#end(ch, child, child.status, child.errno);
      return;
    }
    const done = ch.doneBlocks[s] as number, n = ch.pieceBlocks[s] as number;
    if (io.type === BdevIoType.Read) {
      this.#decryptPiece(ch, io, ch.bounceOf[s] as number, done, n);
    }
    ch.doneBlocks[s] = done + n;
    if (done + n < io.numBlocks) {
      child.parent = null;
      this.#nextPiece(ch, io);
      return;
    }
    this.#end(ch, child, BdevIoStatus.Success, 0);
  }

  /** Completes a read or write, gives its bounce buffer to the next waiter or back. */
  #end(ch: CryptoChannel, child: BdevIo, status: BdevIoStatus, errno: number): void {
    const io = child.parent as BdevIo;
    const b = ch.bounceOf[io.slot] as number;
    ch.bounceOf[io.slot] = NONE;
    this.finish(ch, child, status, errno);
    const next = ch.waitHead;
    if (next !== null) {
      ch.waitHead = next.next;
      if (ch.waitHead === null) ch.waitTail = null;
      next.next = null;
      ch.bounceOf[next.slot] = b;
      this.#nextPiece(ch, next);
    } else {
      ch.freeBounce[ch.freeTop++] = b;
    }
  }

  override destruct(): void {
    super.destruct();
    this.key.destroy();
    this.#keys.release(this.#params.keyName, this.#params.name);
  }

  override dumpInfoJson(): Record<string, unknown> {
    return {
      base_bdev_name: this.baseDesc.bdev.name,
      name: this.#params.name,
      key_name: this.#params.keyName,
      data_unit_size: this.dataUnitSize,
      cipher: "AES_XTS",
    };
  }

  replicaSpec(): CryptoReplicaSpec | null {
    const base = this.baseDesc.bdev.fnTable.replicaSpec?.() ?? null;
    if (base === null) return null;
    const p = this.#params;
    return {
      module: "crypto",
      name: p.name,
      uuid: p.uuid ?? "",
      base,
      keyName: p.keyName,
      material: this.#keys.exportMaterial(p.keyName),
      dataUnitSize: this.dataUnitSize,
      engine: this.engineName,
    };
  }

  writeConfigJson(): RpcCall {
    const p = this.#params;
    return {
      method: "bdev_crypto_create",
      params: {
        base_bdev_name: p.baseBdevName,
        name: p.name,
        key_name: p.keyName,
        data_unit_size: p.dataUnitSize,
        uuid: p.uuid,
      },
    };
  }
}

/**
 * Is the data unit all zeroes? A ciphertext starts with 16 zero bytes with
 * probability 2^-128, so the first block decides almost always and the
 * check costs next to nothing for written data.
 */
function isZero(u: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (u[i] !== 0) return false;
  for (let i = 16; i < u.byteLength; i++) if (u[i] !== 0) return false;
  return true;
}

/** Creates a crypto bdev on `baseBdevName` with key `keyName` from `keys`. */
export function createCryptoBdev(
  registry: BdevRegistry,
  keys: KeyStore,
  params: CryptoCreateParams,
): string {
  // Refuse a taken name before the key and the base are taken.
  if (registry.has(params.name)) throw new BdevExistsError(params.name);
  const bs = registry.get(params.baseBdevName).blockSize;
  const du = params.dataUnitSize ?? bs;
  if (!Number.isInteger(du) || du < 512 || du > bs || (du & (du - 1)) !== 0) {
    throw new BdevInvalidError(
      `data_unit_size must be a power of two from 512 to the block size of "${params.baseBdevName}" (${bs}), got ${du}`,
    );
  }
  const key = keys.acquire(params.keyName, params.name);
  // Kept by the bdev for save_config; gets the uuid once registered.
  const saved = { ...params, dataUnitSize: du };
  let vbdev: CryptoBdev;
  try {
    vbdev = new CryptoBdev(registry, keys, key, saved);
  } catch (e) {
    key.destroy();
    keys.release(params.keyName, params.name);
    throw e;
  }
  const base = vbdev.baseDesc.bdev;
  try {
    const bdev = registry.register({
      name: params.name,
      module: "crypto",
      productName: "crypto",
      blockSize: base.blockSize,
      numBlocks: base.numBlocks,
      uuid: params.uuid,
      ioTypes: vbdev.ioTypes(),
      writeCache: base.writeCache,
      requiredAlignment: 1,
      fnTable: vbdev,
    });
    saved.uuid = bdev.uuid;
    return bdev.name;
  } catch (e) {
    vbdev.destruct();
    throw e;
  }
}

/**
 * Registers a replica of a crypto bdev over the replica of its base, with
 * its key (src/bdev/replica.ts): `keys` is the worker's own store, which
 * takes the key material the spec carries (or zeroes it when it has it).
 */
export async function createCryptoReplica(
  registry: BdevRegistry,
  keys: KeyStore,
  spec: CryptoReplicaSpec,
): Promise<void> {
  if (keys.has(spec.keyName)) spec.material.fill(0);
  else keys.adoptMaterial(spec.keyName, spec.material);
  let engine: XtsEngine = createWasmXtsEngine();
  if (spec.engine === "native") {
    const native = await loadNativeXtsEngine();
    if (native.engine === null) {
      throw new BdevInvalidError(`crypto replica "${spec.name}": ${native.why}`);
    }
    engine = native.engine;
  }
  keys.setEngine(engine);
  createCryptoBdev(registry, keys, {
    baseBdevName: spec.base.name,
    name: spec.name,
    keyName: spec.keyName,
    dataUnitSize: spec.dataUnitSize,
    uuid: spec.uuid,
  });
}

/** Deletes a crypto bdev; its base and its key stay. */
export async function deleteCryptoBdev(registry: BdevRegistry, name: string): Promise<void> {
  const bdev = registry.get(name);
  if (bdev.module !== "crypto") {
    throw new BdevInvalidError(`bdev "${name}" is a ${bdev.module} bdev, not a crypto bdev`);
  }
  await registry.unregister(name);
}
