/**
 * A virtio driver model for tests: lays out a split virtqueue in guest
 * memory, adds chains (direct and indirect), publishes them, reads the used
 * ring, and writes any raw ring state a hostile guest could (loops, bad
 * addresses, huge lengths, bad indices, nested indirect tables).
 * @module
 */
import { GuestMemory } from "../virtio/guest_memory.ts";
import {
  SplitVirtqueue,
  VIRTQ_DESC_BYTES,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../virtio/virtqueue.ts";

/** One buffer of a chain the model builds. */
export interface DriverBuffer {
  /** Guest physical address; allocated from the model's heap when absent. */
  gpa?: number;
  /** Length in bytes. */
  len: number;
  /** Device-writable. */
  writable: boolean;
  /** Bytes to place in the buffer (driver to device). */
  data?: Uint8Array;
}

/** A raw descriptor, any values a guest may write. */
export interface RawDescriptor {
  /** Address; a bigint to reach past 2^53. */
  addr: number | bigint;
  len: number;
  flags: number;
  next: number;
}

/** Options of {@linkcode VirtioDriver}. */
export interface VirtioDriverOptions {
  /** Queue size (the model does not check it). */
  queueSize: number;
  /** Guest memory in bytes (one region); default 4 MiB. */
  memoryBytes?: number;
  /** Guest physical address of the region; default 0x10_0000. */
  gpaBase?: number;
  /** Negotiate VIRTIO_F_EVENT_IDX. */
  eventIdx?: boolean;
  /** Negotiate VIRTIO_F_INDIRECT_DESC. */
  indirectDesc?: boolean;
  /**
   * Memory to lay the rings in (e.g. a vhost-user front-end's shared memfd, which
   * a backend maps too); zeroed here. Default a fresh array of `memoryBytes`.
   */
  bytes?: Uint8Array;
  /** Front-end virtual address of the first byte; default 0x7f00_0000_0000. */
  uva?: number;
}

/** A buffer placed by {@linkcode VirtioDriver.addChain}. */
export interface PlacedBuffer {
  gpa: number;
  len: number;
  writable: boolean;
}

/** The driver side of one split virtqueue. */
export class VirtioDriver {
  readonly size: number;
  readonly gpaBase: number;
  readonly bytes: Uint8Array;
  readonly memory: GuestMemory;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  readonly eventIdx: boolean;
  readonly indirectDesc: boolean;
  readonly #view: DataView;
  /** The memory as 16-bit words (when it starts 2-aligned), for #set16 / #get16. */
  readonly #u16: Uint16Array | null;
  #heap: number;
  #nextDesc = 0;
  #availIdx = 0;
  #lastUsed = 0;

  constructor(o: VirtioDriverOptions) {
    this.size = o.queueSize;
    this.gpaBase = o.gpaBase ?? 0x10_0000;
    const memoryBytes = o.bytes?.byteLength ?? o.memoryBytes ?? 4 << 20;
    this.bytes = o.bytes ?? new Uint8Array(memoryBytes);
    this.bytes.fill(0);
    this.#view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    this.#u16 = this.bytes.byteOffset % 2 === 0
      ? new Uint16Array(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength >>> 1)
      : null;
    this.memory = new GuestMemory([{
      gpa: this.gpaBase,
      size: memoryBytes,
      uva: o.uva ?? 0x7f00_0000_0000,
      bytes: this.bytes,
    }]);
    this.eventIdx = o.eventIdx ?? false;
    this.indirectDesc = o.indirectDesc ?? false;
    const align = (v: number, a: number) => Math.ceil(v / a) * a;
    this.descAddr = this.gpaBase;
    this.availAddr = this.descAddr + VIRTQ_DESC_BYTES * this.size;
    this.usedAddr = align(this.availAddr + 6 + 2 * this.size, 4096);
    this.#heap = align(this.usedAddr + 6 + 8 * this.size, 4096);
  }

  /** The device side over this model's rings. */
  queue(): SplitVirtqueue {
    return SplitVirtqueue.create({
      size: this.size,
      descAddr: this.descAddr,
      availAddr: this.availAddr,
      usedAddr: this.usedAddr,
      memory: this.memory,
      eventIdx: this.eventIdx,
      indirectDesc: this.indirectDesc,
    });
  }

  /** Takes `len` bytes of guest memory (8-aligned) and returns their address. */
  alloc(len: number): number {
    const gpa = this.#heap;
    this.#heap += Math.ceil(Math.max(len, 1) / 8) * 8;
    if (this.#heap > this.gpaBase + this.bytes.byteLength) {
      throw new RangeError("Driver model is out of guest memory");
    }
    return gpa;
  }

  /** Frees the whole heap (rings stay). */
  resetHeap(): void {
    this.#heap = Math.ceil((this.usedAddr + 6 + 8 * this.size) / 4096) * 4096;
  }

  /**
   * The ring indices and flags a device in another process reads or writes
   * concurrently: one aligned 16-bit access (a DataView access may be two
   * byte accesses, and the other side would see a torn value).
   */
  #set16(off: number, v: number): void {
    if (this.#u16 !== null && off % 2 === 0) this.#u16[off >>> 1] = v;
    else this.#view.setUint16(off, v, true);
  }

  #get16(off: number): number {
    if (this.#u16 !== null && off % 2 === 0) return this.#u16[off >>> 1] as number;
    return this.#view.getUint16(off, true);
  }

  #off(gpa: number): number {
    return gpa - this.gpaBase;
  }

  /** Copies bytes into guest memory. */
  write(gpa: number, data: Uint8Array): void {
    this.bytes.set(data, this.#off(gpa));
  }

  /** Copies bytes out of guest memory. */
  read(gpa: number, len: number): Uint8Array {
    return this.bytes.slice(this.#off(gpa), this.#off(gpa) + len);
  }

  /** Writes a raw descriptor at `gpa` (in the queue table or an indirect one). */
  writeDescAt(gpa: number, d: RawDescriptor): void {
    const off = this.#off(gpa);
    this.#view.setBigUint64(off, BigInt(d.addr), true);
    this.#view.setUint32(off + 8, d.len >>> 0, true);
    this.#view.setUint16(off + 12, d.flags, true);
    this.#view.setUint16(off + 14, d.next, true);
  }

  /** Writes raw descriptor `index` of the queue's table. */
  writeDesc(index: number, d: RawDescriptor): void {
    this.writeDescAt(this.descAddr + VIRTQ_DESC_BYTES * index, d);
  }

  /** Writes a raw indirect table into fresh memory; returns its address. */
  writeIndirectTable(entries: readonly RawDescriptor[]): number {
    const gpa = this.alloc(entries.length * VIRTQ_DESC_BYTES);
    entries.forEach((d, i) => this.writeDescAt(gpa + i * VIRTQ_DESC_BYTES, d));
    return gpa;
  }

  #place(buffers: readonly DriverBuffer[]): PlacedBuffer[] {
    return buffers.map((b) => {
      const gpa = b.gpa ?? this.alloc(b.len);
      if (b.data !== undefined) this.write(gpa, b.data);
      return { gpa, len: b.len, writable: b.writable };
    });
  }

  /**
   * Adds a chain (descriptors taken round-robin from the table) and makes it
   * available. With `indirect`, the buffers go into an indirect table that
   * one queue descriptor points to. Returns the head and the buffers placed.
   */
  addChain(
    buffers: readonly DriverBuffer[],
    indirect = false,
  ): { head: number; placed: PlacedBuffer[] } {
    const placed = this.#place(buffers);
    const flagsOf = (b: PlacedBuffer, last: boolean) =>
      (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT);
    let head: number;
    if (indirect) {
      const table = this.writeIndirectTable(placed.map((b, i) => ({
        addr: b.gpa,
        len: b.len,
        flags: flagsOf(b, i === placed.length - 1),
        next: i + 1,
      })));
      head = this.#takeDesc();
      this.writeDesc(head, {
        addr: table,
        len: placed.length * VIRTQ_DESC_BYTES,
        flags: VIRTQ_DESC_F_INDIRECT,
        next: 0,
      });
    } else {
      const ids = placed.map(() => this.#takeDesc());
      head = ids[0] ?? -1;
      placed.forEach((b, i) => {
        this.writeDesc(ids[i] ?? 0, {
          addr: b.gpa,
          len: b.len,
          flags: flagsOf(b, i === placed.length - 1),
          next: ids[i + 1] ?? 0,
        });
      });
    }
    this.publish(head);
    return { head, placed };
  }

  #takeDesc(): number {
    const id = this.#nextDesc;
    this.#nextDesc = (this.#nextDesc + 1) % this.size;
    return id;
  }

  /** Puts `head` in the next available-ring slot and bumps avail.idx. */
  publish(head: number): void {
    const slot = this.#availIdx % this.size;
    this.#view.setUint16(this.#off(this.availAddr) + 4 + 2 * slot, head, true);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    this.setAvailIdx(this.#availIdx);
  }

  /** Writes avail.idx raw (hostile tests may jump it). */
  setAvailIdx(idx: number): void {
    this.#set16(this.#off(this.availAddr) + 2, idx & 0xffff);
  }

  /** The driver's available index. */
  get availIdx(): number {
    return this.#availIdx;
  }

  /** Writes avail.flags (VIRTQ_AVAIL_F_NO_INTERRUPT). */
  setAvailFlags(flags: number): void {
    this.#set16(this.#off(this.availAddr), flags);
  }

  /** Writes used_event (the avail ring's trailing field). */
  setUsedEvent(idx: number): void {
    this.#set16(this.#off(this.availAddr) + 4 + 2 * this.size, idx & 0xffff);
  }

  /** Reads avail_event (the used ring's trailing field). */
  availEvent(): number {
    return this.#get16(this.#off(this.usedAddr) + 4 + 8 * this.size);
  }

  /** Reads used.flags. */
  usedFlags(): number {
    return this.#get16(this.#off(this.usedAddr));
  }

  /** Reads used.idx. */
  usedIdx(): number {
    return this.#get16(this.#off(this.usedAddr) + 2);
  }

  /** Reads the used elements published since the last call. */
  readUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const idx = this.usedIdx();
    while (this.#lastUsed !== idx) {
      const off = this.#off(this.usedAddr) + 4 + 8 * (this.#lastUsed % this.size);
      out.push({
        id: this.#view.getUint32(off, true),
        len: this.#view.getUint32(off + 4, true),
      });
      this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    }
    return out;
  }

  // Hostile rings: each writes one bad chain from descriptor 0 (or a bad
  // avail index), publishes it and returns the head. The comment names the
  // VirtqueueError kind a device should give.

  /** A chain of `n` descriptors whose last points back to the first ("chain-loop"). */
  addLoop(n = 2): number {
    const buf = this.alloc(8);
    for (let i = 0; i < n; i++) {
      this.writeDesc(i, { addr: buf, len: 8, flags: VIRTQ_DESC_F_NEXT, next: (i + 1) % n });
    }
    this.publish(0);
    return 0;
  }

  /** A buffer just past the end of guest memory ("desc-address"). */
  addOutOfRange(): number {
    const end = this.gpaBase + this.bytes.byteLength;
    this.writeDesc(0, { addr: end - 4, len: 8, flags: 0, next: 0 });
    this.publish(0);
    return 0;
  }

  /** A 4 GiB - 1 writable buffer ("desc-address": no guest region is that big here). */
  addHugeLength(): number {
    this.writeDesc(0, {
      addr: this.alloc(8),
      len: 0xffff_ffff,
      flags: VIRTQ_DESC_F_WRITE,
      next: 0,
    });
    this.publish(0);
    return 0;
  }

  /** An indirect table holding another indirect descriptor ("indirect-nested"). */
  addNestedIndirect(): number {
    const inner = this.writeIndirectTable([{ addr: this.alloc(8), len: 8, flags: 0, next: 0 }]);
    const outer = this.writeIndirectTable([
      { addr: inner, len: VIRTQ_DESC_BYTES, flags: VIRTQ_DESC_F_INDIRECT, next: 0 },
    ]);
    this.writeDesc(0, {
      addr: outer,
      len: VIRTQ_DESC_BYTES,
      flags: VIRTQ_DESC_F_INDIRECT,
      next: 0,
    });
    this.publish(0);
    return 0;
  }

  /** Moves avail.idx `by` entries past the driver's own index ("avail-idx" above the size). */
  jumpAvailIdx(by: number): void {
    this.setAvailIdx(this.#availIdx + by);
  }

  /**
   * Adds a virtio-blk request: a 16-byte header (type, reserved 0, sector),
   * the data buffers, and a 1-byte writable status (unless `noStatus`).
   * `writableHeader` marks the header device-writable (hostile).
   */
  addBlkRequest(
    o: {
      type: number;
      sector: number | bigint;
      data?: readonly DriverBuffer[];
      indirect?: boolean;
      noStatus?: boolean;
      writableHeader?: boolean;
      splitHeader?: boolean;
    },
  ): { head: number; header: number; status: number; data: PlacedBuffer[] } {
    const header = new Uint8Array(16);
    const hv = new DataView(header.buffer);
    hv.setUint32(0, o.type >>> 0, true);
    hv.setBigUint64(8, BigInt(o.sector), true);
    const writableHeader = o.writableHeader ?? false;
    const headerBufs: DriverBuffer[] = o.splitHeader
      ? [
        { len: 5, writable: writableHeader, data: header.subarray(0, 5) },
        { len: 11, writable: writableHeader, data: header.subarray(5) },
      ]
      : [{ len: 16, writable: writableHeader, data: header }];
    const bufs: DriverBuffer[] = [...headerBufs, ...(o.data ?? [])];
    if (!o.noStatus) bufs.push({ len: 1, writable: true, data: new Uint8Array([0xff]) });
    const { head, placed } = this.addChain(bufs, o.indirect ?? false);
    const first = placed[0];
    const last = placed[placed.length - 1];
    return {
      head,
      header: first?.gpa ?? -1,
      status: o.noStatus ? -1 : last?.gpa ?? -1,
      data: placed.slice(headerBufs.length, o.noStatus ? placed.length : placed.length - 1),
    };
  }
}
