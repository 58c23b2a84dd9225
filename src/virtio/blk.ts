/**
 * virtio-blk (virtio 1.2, section 5.2): request parsing over a validated
 * chain, the status byte, and the configuration space.
 *
 * A request is a device-readable 16-byte header (type, reserved, sector),
 * data, and a device-writable status byte at the very end. The header may be
 * split across descriptors (devices must not assume a framing), so it is
 * gathered into a scratch buffer. Nothing is allocated per request: a
 * {@linkcode BlkRequest} is made once per queue and reused.
 *
 * Leniency: the sector of FLUSH and GET_ID (which drivers must set to 0) is
 * ignored; GET_ID accepts more than 20 data bytes and fills the first 20.
 * @module
 */
import type { GuestMemory } from "./guest_memory.ts";
import type { SplitVirtqueue } from "./virtqueue.ts";

/** Read: data device-writable. */
export const VIRTIO_BLK_T_IN = 0;
/** Write: data device-readable. */
export const VIRTIO_BLK_T_OUT = 1;
/** Flush the volatile write cache. */
export const VIRTIO_BLK_T_FLUSH = 4;
/** Device ID string, 20 bytes. */
export const VIRTIO_BLK_T_GET_ID = 8;
/** Device lifetime (not supported here). */
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
/** Discard ranges. */
export const VIRTIO_BLK_T_DISCARD = 11;
/** Write zeroes to ranges. */
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
/** Secure erase (not supported here). */
export const VIRTIO_BLK_T_SECURE_ERASE = 14;

/** Success. */
export const VIRTIO_BLK_S_OK = 0;
/** Request or device error. */
export const VIRTIO_BLK_S_IOERR = 1;
/** Request not supported. */
export const VIRTIO_BLK_S_UNSUPP = 2;
/**
 * Not a spec status: the chain has no device-writable last byte, so no status
 * can be reported; return the head with used length 0.
 */
export const BLK_NO_STATUS = -1;

/** Feature bit numbers (device-specific). */
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;
export const VIRTIO_BLK_F_LIFETIME = 15;
export const VIRTIO_BLK_F_SECURE_ERASE = 16;
/** Feature bit numbers (transport, section 6). */
export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;

/** The feature mask with the given bit numbers set. */
export function featureMask(...bits: number[]): bigint {
  let m = 0n;
  for (const b of bits) m |= 1n << BigInt(b);
  return m;
}

/** Bytes per sector, whatever blk_size says. */
export const VIRTIO_BLK_SECTOR_SIZE = 512;
/** Length of the GET_ID string. */
export const VIRTIO_BLK_ID_BYTES = 20;
/** Bytes of the request header. */
export const VIRTIO_BLK_HEADER_BYTES = 16;
/** Bytes of one discard / write-zeroes segment. */
export const VIRTIO_BLK_RANGE_BYTES = 16;
/** Segment flag: write zeroes may deallocate. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

/** What the device offers; requests are checked against it. */
export interface BlkLimits {
  /** Capacity in 512-byte sectors. */
  capacitySectors: number;
  /** VIRTIO_BLK_F_RO offered: writes fail with IOERR. */
  readOnly: boolean;
  /** VIRTIO_BLK_F_FLUSH negotiated. */
  flush: boolean;
  /** VIRTIO_BLK_F_DISCARD negotiated. */
  discard: boolean;
  /** VIRTIO_BLK_F_WRITE_ZEROES negotiated. */
  writeZeroes: boolean;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
}

const TWO_32 = 0x1_0000_0000;

/**
 * One virtio-blk request, parsed in place from the chain just walked by a
 * {@linkcode SplitVirtqueue}. Make one per queue; {@linkcode BlkRequest.parse}
 * refills it.
 */
export class BlkRequest {
  /** Request type (VIRTIO_BLK_T_*). */
  type = 0;
  /** First sector (IN/OUT). */
  sector = 0;
  /** Why parsing failed (a constant string), or "". */
  reason = "";
  /** Where the status byte is: region and offset. */
  statusRegion = -1;
  statusOffset = 0;
  /** Data bytes (IN/OUT/GET_ID). */
  dataBytes = 0;
  /** Data pieces, `0..dataCount-1`: region, offset, length. */
  dataCount = 0;
  readonly dataRegion: Int32Array;
  readonly dataOffset: Float64Array;
  readonly dataLen: Uint32Array;
  /** DISCARD / WRITE_ZEROES ranges, `0..rangeCount-1`. */
  rangeCount = 0;
  readonly rangeSector: Float64Array;
  readonly rangeSectors: Uint32Array;
  readonly rangeFlags: Uint32Array;
  readonly #scratch = new Uint8Array(16);
  readonly #scratchView = new DataView(this.#scratch.buffer);

  /**
   * @param maxSegments the queue size (a chain has at most that many segments)
   * @param maxRanges the larger of max_discard_seg and max_write_zeroes_seg
   */
  constructor(maxSegments: number, maxRanges: number) {
    this.dataRegion = new Int32Array(maxSegments);
    this.dataOffset = new Float64Array(maxSegments);
    this.dataLen = new Uint32Array(maxSegments);
    this.rangeSector = new Float64Array(maxRanges);
    this.rangeSectors = new Uint32Array(maxRanges);
    this.rangeFlags = new Uint32Array(maxRanges);
  }

  /**
   * Parses the chain `q` last walked. Returns VIRTIO_BLK_S_OK when the
   * request should be carried out, VIRTIO_BLK_S_IOERR / UNSUPP when it must be
   * completed at once with that status (write it with
   * {@linkcode BlkRequest.writeStatus}), or {@linkcode BLK_NO_STATUS}.
   */
  parse(q: SplitVirtqueue, limits: BlkLimits): number {
    this.type = -1;
    this.sector = 0;
    this.reason = "";
    this.statusRegion = -1;
    this.statusOffset = 0;
    this.dataBytes = 0;
    this.dataCount = 0;
    this.rangeCount = 0;
    // The status byte: the last byte of the last non-empty segment, device-writable.
    let last = q.segCount - 1;
    while (last >= 0 && q.segLen[last] === 0) last--;
    if (last < 0 || q.segWritable[last] !== 1) {
      this.reason = "The chain does not end in a device-writable status byte";
      return BLK_NO_STATUS;
    }
    this.statusRegion = q.segRegion[last] ?? -1;
    this.statusOffset = (q.segOffset[last] ?? 0) + (q.segLen[last] ?? 1) - 1;
    if (q.readableBytes < VIRTIO_BLK_HEADER_BYTES) {
      this.reason = "The request header is not 16 device-readable bytes";
      return this.#fail(VIRTIO_BLK_S_IOERR);
    }
    const h = this.#scratchView;
    this.#gather(q, 0, VIRTIO_BLK_HEADER_BYTES);
    this.type = h.getUint32(0, true);
    const sectorLo = h.getUint32(8, true);
    const sectorHi = h.getUint32(12, true);
    const readableData = q.readableBytes - VIRTIO_BLK_HEADER_BYTES;
    const writableData = q.writableBytes - 1;
    switch (this.type) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT: {
        const isIn = this.type === VIRTIO_BLK_T_IN;
        if (!isIn && limits.readOnly) {
          this.reason = "The device is read-only";
          return this.#fail(VIRTIO_BLK_S_IOERR);
        }
        if ((isIn ? readableData : writableData) !== 0) {
          this.reason = "Data buffers have the wrong direction";
          return this.#fail(VIRTIO_BLK_S_IOERR);
        }
        const bytes = isIn ? writableData : readableData;
        if (bytes % VIRTIO_BLK_SECTOR_SIZE !== 0) {
          this.reason = "The data length is not a multiple of 512";
          return this.#fail(VIRTIO_BLK_S_IOERR);
        }
        const sectors = bytes / VIRTIO_BLK_SECTOR_SIZE;
        const cap = limits.capacitySectors;
        const sector = sectorHi * TWO_32 + sectorLo;
        if (sectorHi >= 0x20_0000 || sector > cap || sectors > cap - sector) {
          this.reason = "The request reaches past the capacity";
          return this.#fail(VIRTIO_BLK_S_IOERR);
        }
        this.sector = sector;
        this.#collect(q, isIn ? q.readableBytes : VIRTIO_BLK_HEADER_BYTES, bytes);
        return VIRTIO_BLK_S_OK;
      }
      case VIRTIO_BLK_T_FLUSH:
        if (!limits.flush) {
          this.reason = "VIRTIO_BLK_F_FLUSH was not negotiated";
          return this.#fail(VIRTIO_BLK_S_UNSUPP);
        }
        if (readableData !== 0 || writableData !== 0) {
          this.reason = "A flush carries data";
          return this.#fail(VIRTIO_BLK_S_IOERR);
        }
        return VIRTIO_BLK_S_OK;
      case VIRTIO_BLK_T_GET_ID:
        if (readableData !== 0 || writableData < VIRTIO_BLK_ID_BYTES) {
          this.reason = "GET_ID needs 20 device-writable data bytes";
          return this.#fail(VIRTIO_BLK_S_IOERR);
        }
        this.#collect(q, q.readableBytes, VIRTIO_BLK_ID_BYTES);
        return VIRTIO_BLK_S_OK;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        const isDiscard = this.type === VIRTIO_BLK_T_DISCARD;
        if (!(isDiscard ? limits.discard : limits.writeZeroes)) {
          this.reason = isDiscard
            ? "VIRTIO_BLK_F_DISCARD was not negotiated"
            : "VIRTIO_BLK_F_WRITE_ZEROES was not negotiated";
          return this.#fail(VIRTIO_BLK_S_UNSUPP);
        }
        if (writableData !== 0 || readableData === 0 || readableData % 16 !== 0) {
          this.reason = "The segments are not a multiple of 16 device-readable bytes";
          return this.#fail(VIRTIO_BLK_S_IOERR);
        }
        const count = readableData / VIRTIO_BLK_RANGE_BYTES;
        const maxSeg = isDiscard ? limits.maxDiscardSeg : limits.maxWriteZeroesSeg;
        if (count > maxSeg || count > this.rangeSector.length) {
          this.reason = "More segments than the device's maximum";
          return this.#fail(VIRTIO_BLK_S_UNSUPP);
        }
        const maxSectors = isDiscard ? limits.maxDiscardSectors : limits.maxWriteZeroesSectors;
        const cap = limits.capacitySectors;
        for (let i = 0; i < count; i++) {
          this.#gather(q, VIRTIO_BLK_HEADER_BYTES + i * VIRTIO_BLK_RANGE_BYTES, 16);
          const lo = h.getUint32(0, true);
          const hi = h.getUint32(4, true);
          const n = h.getUint32(8, true);
          const flags = h.getUint32(12, true);
          if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0) {
            this.reason = "A segment has unknown flags";
            return this.#fail(VIRTIO_BLK_S_UNSUPP);
          }
          if (isDiscard && flags !== 0) {
            this.reason = "A discard segment has the unmap flag";
            return this.#fail(VIRTIO_BLK_S_UNSUPP);
          }
          const sector = hi * TWO_32 + lo;
          if (n > maxSectors) {
            this.reason = "A segment has more sectors than the device's maximum";
            return this.#fail(VIRTIO_BLK_S_IOERR);
          }
          if (hi >= 0x20_0000 || sector > cap || n > cap - sector) {
            this.reason = "A segment reaches past the capacity";
            return this.#fail(VIRTIO_BLK_S_IOERR);
          }
          this.rangeSector[i] = sector;
          this.rangeSectors[i] = n;
          this.rangeFlags[i] = flags;
        }
        this.rangeCount = count;
        return VIRTIO_BLK_S_OK;
      }
      default:
        this.reason = "Unsupported request type";
        return this.#fail(VIRTIO_BLK_S_UNSUPP);
    }
  }

  #fail(status: number): number {
    this.dataCount = 0;
    this.dataBytes = 0;
    this.rangeCount = 0;
    return status;
  }

  /** Copies `len` (≤ 16) chain bytes from chain offset `start` into the scratch. */
  #gather(q: SplitVirtqueue, start: number, len: number): void {
    const mem = q.memory;
    let pos = 0; // chain offset of segment i
    let done = 0;
    for (let i = 0; i < q.segCount && done < len; i++) {
      const segLen = q.segLen[i] ?? 0;
      const end = pos + segLen;
      const want = start + done;
      if (want < end) {
        const inSeg = want - pos;
        const n = Math.min(segLen - inSeg, len - done);
        const src = mem.bytes(q.segRegion[i] ?? 0);
        const from = (q.segOffset[i] ?? 0) + inSeg;
        for (let k = 0; k < n; k++) this.#scratch[done + k] = src[from + k] ?? 0;
        done += n;
      }
      pos = end;
    }
  }

  /** Records chain bytes `[start, start + len)` as data pieces. */
  #collect(q: SplitVirtqueue, start: number, len: number): void {
    let pos = 0;
    let count = 0;
    let taken = 0;
    for (let i = 0; i < q.segCount && taken < len; i++) {
      const segLen = q.segLen[i] ?? 0;
      const end = pos + segLen;
      const want = start + taken;
      if (want < end) {
        const inSeg = want - pos;
        const n = Math.min(segLen - inSeg, len - taken);
        this.dataRegion[count] = q.segRegion[i] ?? 0;
        this.dataOffset[count] = (q.segOffset[i] ?? 0) + inSeg;
        this.dataLen[count] = n;
        count++;
        taken += n;
      }
      pos = end;
    }
    this.dataCount = count;
    this.dataBytes = taken;
  }

  /** Writes the status byte (no-op when there is none). */
  writeStatus(memory: GuestMemory, status: number): void {
    if (this.statusRegion < 0) return;
    memory.bytes(this.statusRegion)[this.statusOffset] = status;
  }

  /** The used length to report: device-written data (IN, GET_ID) plus the status byte. */
  usedLength(status: number): number {
    if (this.statusRegion < 0) return 0;
    if (
      status === VIRTIO_BLK_S_OK &&
      (this.type === VIRTIO_BLK_T_IN || this.type === VIRTIO_BLK_T_GET_ID)
    ) {
      return this.dataBytes + 1;
    }
    return 1;
  }

  /** GET_ID: writes `id` (at most 20 bytes, zero-padded) into the data pieces. */
  writeId(memory: GuestMemory, id: Uint8Array): void {
    let k = 0;
    for (let i = 0; i < this.dataCount; i++) {
      const dst = memory.bytes(this.dataRegion[i] ?? 0);
      const off = this.dataOffset[i] ?? 0;
      const n = this.dataLen[i] ?? 0;
      for (let j = 0; j < n; j++, k++) dst[off + j] = k < id.length ? id[k] ?? 0 : 0;
    }
  }
}

/** The configuration space values (section 5.2.4). */
export interface BlkConfig {
  capacitySectors: number;
  sizeMax: number;
  segMax: number;
  geometry: { cylinders: number; heads: number; sectors: number };
  blkSize: number;
  topology: {
    physicalBlockExp: number;
    alignmentOffset: number;
    minIoSize: number;
    optIoSize: number;
  };
  writeback: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  discardSectorAlignment: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  writeZeroesMayUnmap: number;
}

/** Bytes of the configuration space up to write_zeroes_may_unmap and its padding. */
export const VIRTIO_BLK_CONFIG_BYTES = 60;

/** Encodes the configuration space (little-endian, offsets as in the spec). */
export function encodeBlkConfig(c: BlkConfig): Uint8Array {
  const out = new Uint8Array(VIRTIO_BLK_CONFIG_BYTES);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, BigInt(c.capacitySectors), true);
  v.setUint32(8, c.sizeMax, true);
  v.setUint32(12, c.segMax, true);
  v.setUint16(16, c.geometry.cylinders, true);
  v.setUint8(18, c.geometry.heads);
  v.setUint8(19, c.geometry.sectors);
  v.setUint32(20, c.blkSize, true);
  v.setUint8(24, c.topology.physicalBlockExp);
  v.setUint8(25, c.topology.alignmentOffset);
  v.setUint16(26, c.topology.minIoSize, true);
  v.setUint32(28, c.topology.optIoSize, true);
  v.setUint8(32, c.writeback);
  v.setUint16(34, c.numQueues, true);
  v.setUint32(36, c.maxDiscardSectors, true);
  v.setUint32(40, c.maxDiscardSeg, true);
  v.setUint32(44, c.discardSectorAlignment, true);
  v.setUint32(48, c.maxWriteZeroesSectors, true);
  v.setUint32(52, c.maxWriteZeroesSeg, true);
  v.setUint8(56, c.writeZeroesMayUnmap);
  return out;
}
