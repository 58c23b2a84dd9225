/**
 * An NVMe controller in memory, for the driver's unit tests: registers
 * behind {@link NvmeMmio}, an IOMMU behind {@link DmaSpace} (IOVAs are
 * translated to the mapped bytes; anything else is a DMA fault), queues
 * processed when their doorbell is written, data read and written through
 * the PRPs the driver built (so PRP mistakes show as wrong data or a
 * status), and fault knobs: stall commands (timeouts), controller fatal
 * status, surprise removal.
 *
 * Deliberately strict where the spec says "shall": PRP offsets, queue
 * sizes, doorbell values, CC while enabled.
 * @module
 */
import {
  buildActiveNamespaceList,
  buildCap,
  buildIdentifyController,
  buildIdentifyNamespace,
  NvmeAdminOpcode,
  NvmeCc,
  NvmeCns,
  NvmeControllerType,
  NvmeCsts,
  NvmeFid,
  NvmeGenericSc,
  NvmeIoOpcode,
  NvmeOncs,
  NvmeReg,
  NvmeShst,
  nvmeStatus,
  nvmeVersion,
} from "../nvme/mod.ts";
import type { Mapping } from "../../ffi/memory.ts";
import { sym } from "../../ffi/libc.ts";

const ONE = new BigUint64Array([1n]);
import type { DmaSpace } from "./dma.ts";
import type { NvmeMmio } from "./mmio.ts";

const PAGE = 4096;
const SCT_GENERIC = 0;
const SCT_COMMAND_SPECIFIC = 1;
const SC_INVALID_QUEUE_ID = 0x01;

interface Sq {
  iova: number;
  size: number;
  head: number;
  tail: number;
  cqid: number;
}
interface Cq {
  iova: number;
  size: number;
  tail: number;
  head: number;
  phase: number;
  /** Interrupts enabled (Create I/O CQ IEN). */
  ien: boolean;
}

/** Options of a {@link FakeNvmeController}. */
export interface FakeNvmeOptions {
  blockSize?: number;
  numBlocks?: number;
  /** MDTS as a power of two of 4 KiB pages (0: no limit). */
  mdts?: number;
  oncs?: number;
  /** DLFEAT byte of the namespace. */
  dlfeat?: number;
  /** CAP.DSTRD. */
  dstrd?: number;
  /** CAP.MQES (0's based). */
  mqes?: number;
  /** Identify SGLS (0: PRPs only). */
  sgls?: number;
}

/** A stalled command: what the test may complete later. */
interface Stalled {
  sqid: number;
  cid: number;
  opc: number;
}

export class FakeNvmeController implements NvmeMmio, DmaSpace {
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly storage: Uint8Array;
  readonly #opts: Required<FakeNvmeOptions>;
  #cc = 0;
  #csts = 0;
  #aqa = 0;
  #asq = 0;
  #acq = 0;
  readonly #cap: bigint;
  #sqs = new Map<number, Sq>();
  #cqs = new Map<number, Cq>();
  #regions: { iova: number; bytes: Uint8Array }[] = [];
  #nextIova = 0x4000_0000;
  /** Commands seen, by "admin:<opc>" / "io:<opc>". */
  readonly counts = new Map<string, number>();
  /** I/O commands whose PRP2 pointed at a PRP list. */
  prpListsUsed = 0;
  /** I/O commands whose data came through an SGL descriptor. */
  sglsUsed = 0;
  /** When it returns true for an I/O command, the command is held, never completed. */
  stall: ((opc: number) => boolean) | null = null;
  readonly stalled: Stalled[] = [];
  removed = false;
  /** An eventfd written on each completion posted to a CQ with interrupts enabled (MSI-X). */
  irqFd = -1;
  interrupts = 0;
  /** Doorbell writes (for the idle test). */
  doorbells = 0;
  shutdowns = 0;
  dmaFaults = 0;

  constructor(opts: FakeNvmeOptions = {}) {
    this.#opts = {
      blockSize: opts.blockSize ?? 512,
      numBlocks: opts.numBlocks ?? 16384,
      mdts: opts.mdts ?? 5,
      oncs: opts.oncs ?? (NvmeOncs.WriteZeroes | NvmeOncs.DatasetManagement),
      dlfeat: opts.dlfeat ?? 1,
      dstrd: opts.dstrd ?? 0,
      mqes: opts.mqes ?? 1023,
      sgls: opts.sgls ?? 0,
    };
    this.blockSize = this.#opts.blockSize;
    this.numBlocks = this.#opts.numBlocks;
    this.storage = new Uint8Array(this.blockSize * this.numBlocks);
    this.#cap = buildCap({
      mqes: this.#opts.mqes,
      cqr: true,
      ams: 0,
      to: 4,
      dstrd: this.#opts.dstrd,
      nssrs: false,
      css: 1,
      bps: false,
      mpsmin: 0,
      mpsmax: 4,
      crms: 0,
    });
  }

  // --- DmaSpace

  map(m: Mapping): number {
    const iova = this.#nextIova;
    this.#regions.push({ iova, bytes: m.bytes() });
    this.#nextIova += Math.ceil(m.length / PAGE) * PAGE + PAGE;
    return iova;
  }

  unmap(iova: number): void {
    this.#regions = this.#regions.filter((r) => r.iova !== iova);
  }

  /** The bytes at [iova, +len); throws (a DMA fault) when unmapped. */
  dma(iova: number, len: number): Uint8Array {
    for (const r of this.#regions) {
      if (iova >= r.iova && iova + len <= r.iova + r.bytes.byteLength) {
        return r.bytes.subarray(iova - r.iova, iova - r.iova + len);
      }
    }
    this.dmaFaults++;
    throw new Error(`DMA fault at iova 0x${iova.toString(16)} (+${len})`);
  }

  /** Number of mapped DMA regions (0 after a clean detach). */
  get mappedRegions(): number {
    return this.#regions.length;
  }

  // --- NvmeMmio

  read32(off: number): number {
    if (this.removed) return 0xffffffff;
    switch (off) {
      case NvmeReg.CAP:
        return Number(this.#cap & 0xffffffffn);
      case NvmeReg.CAP + 4:
        return Number(this.#cap >> 32n);
      case NvmeReg.VS:
        return nvmeVersion(1, 4);
      case NvmeReg.CC:
        return this.#cc;
      case NvmeReg.CSTS:
        return this.#csts;
      case NvmeReg.AQA:
        return this.#aqa;
    }
    return 0;
  }

  write32(off: number, v: number): void {
    if (this.removed) return;
    v >>>= 0;
    if (off >= 0x1000) {
      this.doorbells++;
      const stride = 4 << this.#opts.dstrd;
      const idx = (off - 0x1000) / stride;
      const qid = idx >> 1;
      if (idx % 2 === 0) this.#sqDoorbell(qid, v);
      else {
        const cq = this.#cqs.get(qid);
        if (cq !== undefined) cq.head = v;
      }
      return;
    }
    switch (off) {
      case NvmeReg.CC:
        this.#writeCc(v);
        return;
      case NvmeReg.AQA:
        this.#aqa = v;
        return;
      case NvmeReg.ASQ:
        this.#asq = (this.#asq - (this.#asq % 0x1_0000_0000)) + v;
        return;
      case NvmeReg.ASQ + 4:
        this.#asq = (this.#asq % 0x1_0000_0000) + v * 0x1_0000_0000;
        return;
      case NvmeReg.ACQ:
        this.#acq = (this.#acq - (this.#acq % 0x1_0000_0000)) + v;
        return;
      case NvmeReg.ACQ + 4:
        this.#acq = (this.#acq % 0x1_0000_0000) + v * 0x1_0000_0000;
        return;
    }
  }

  #writeCc(v: number): void {
    const wasEn = (this.#cc & NvmeCc.EN) !== 0;
    const en = (v & NvmeCc.EN) !== 0;
    this.#cc = v;
    const shn = (v >> NvmeCc.SHN_SHIFT) & 3;
    if (shn !== 0 && en) {
      this.shutdowns++;
      this.#csts = (this.#csts & ~NvmeCsts.SHST_MASK) |
        (NvmeShst.Complete << NvmeCsts.SHST_SHIFT);
    }
    if (wasEn && !en) {
      // Controller reset: queues gone, status clear.
      this.#sqs.clear();
      this.#cqs.clear();
      this.stalled.length = 0;
      this.#csts = 0;
    } else if (!wasEn && en) {
      const asqs = (this.#aqa & 0xfff) + 1, acqs = ((this.#aqa >> 16) & 0xfff) + 1;
      this.#sqs.set(0, { iova: this.#asq, size: asqs, head: 0, tail: 0, cqid: 0 });
      this.#cqs.set(0, { iova: this.#acq, size: acqs, tail: 0, head: 0, phase: 1, ien: false });
      this.#csts |= NvmeCsts.RDY;
    }
  }

  /** Sets CSTS.CFS, as a controller that hit an internal error does. */
  setFatal(): void {
    this.#csts |= NvmeCsts.CFS;
  }

  /** Completes every stalled command with `status` (0 = success, data untouched). */
  releaseStalled(status = 0): void {
    for (const s of this.stalled.splice(0)) {
      this.#post(s.sqid, s.cid, status, 0);
    }
  }

  #count(k: string): void {
    this.counts.set(k, (this.counts.get(k) ?? 0) + 1);
  }

  #sqDoorbell(qid: number, tail: number): void {
    const sq = this.#sqs.get(qid);
    if (sq === undefined || tail >= sq.size) return;
    sq.tail = tail;
    while (sq.head !== sq.tail) {
      const sqe = this.dma(sq.iova + sq.head * 64, 64);
      sq.head = (sq.head + 1) % sq.size;
      const v = new DataView(sqe.buffer, sqe.byteOffset, 64);
      const opc = v.getUint8(0);
      const cid = v.getUint16(2, true);
      if (qid === 0) {
        this.#count(`admin:${opc}`);
        const [st, dw0] = this.#admin(v);
        this.#post(0, cid, st, dw0);
      } else {
        this.#count(`io:${opc}`);
        if (this.stall?.(opc) === true) {
          this.stalled.push({ sqid: qid, cid, opc });
          continue;
        }
        const st = this.#io(v);
        this.#post(qid, cid, st, 0);
      }
    }
  }

  #post(sqid: number, cid: number, status: number, dw0: number): void {
    const sq = this.#sqs.get(sqid);
    if (sq === undefined) return;
    const cq = this.#cqs.get(sq.cqid);
    if (cq === undefined) return;
    if ((cq.tail + 1) % cq.size === cq.head) throw new Error(`fake nvme: CQ ${sq.cqid} overflow`);
    const e = this.dma(cq.iova + cq.tail * 16, 16);
    const v = new DataView(e.buffer, e.byteOffset, 16);
    v.setUint32(0, dw0 >>> 0, true);
    v.setUint32(4, 0, true);
    v.setUint16(8, sq.head, true);
    v.setUint16(10, sqid, true);
    v.setUint16(12, cid, true);
    v.setUint16(14, ((status & 0x7fff) << 1) | cq.phase, true);
    if (++cq.tail === cq.size) {
      cq.tail = 0;
      cq.phase ^= 1;
    }
    if (cq.ien && this.irqFd >= 0) {
      this.interrupts++;
      sym.write(this.irqFd, ONE, 8n);
    }
  }

  #admin(v: DataView): [number, number] {
    const opc = v.getUint8(0);
    const cdw10 = v.getUint32(40, true), cdw11 = v.getUint32(44, true);
    const prp1 = v.getUint32(24, true) + v.getUint32(28, true) * 0x1_0000_0000;
    switch (opc) {
      case NvmeAdminOpcode.Identify: {
        const out = this.dma(prp1, PAGE);
        const cns = cdw10 & 0xff;
        const nsid = v.getUint32(4, true);
        if (cns === NvmeCns.Controller) {
          buildIdentifyController(out, {
            vid: 0x1b36,
            serialNumber: "FAKE0001",
            modelNumber: "sluice fake NVMe",
            firmwareRevision: "1.0",
            mdts: this.#opts.mdts,
            cntlid: 1,
            ver: nvmeVersion(1, 4),
            cntrltype: NvmeControllerType.Io,
            sqes: 0x66,
            cqes: 0x44,
            nn: 1,
            oncs: this.#opts.oncs,
            vwc: 1,
            sgls: this.#opts.sgls,
            subnqn: "nqn.2019-08.org.qemu:FAKE0001",
          });
        } else if (cns === NvmeCns.Namespace) {
          if (nsid !== 1) {
            out.fill(0);
          } else {
            buildIdentifyNamespace(out, {
              nsze: this.numBlocks,
              ncap: this.numBlocks,
              nuse: this.numBlocks,
              dlfeat: this.#opts.dlfeat,
              lbaf0Lbads: Math.log2(this.blockSize),
            });
          }
        } else if (cns === NvmeCns.ActiveNamespaceList) {
          buildActiveNamespaceList(out, [1], nsid);
        } else {
          return [nvmeStatus(SCT_GENERIC, NvmeGenericSc.InvalidField, true), 0];
        }
        return [0, 0];
      }
      case NvmeAdminOpcode.SetFeatures:
        if ((cdw10 & 0xff) === NvmeFid.NumberOfQueues) return [0, 0x003f003f];
        return [0, 0];
      case NvmeAdminOpcode.CreateIoCq: {
        const qid = cdw10 & 0xffff, size = (cdw10 >>> 16) + 1;
        if (qid === 0 || this.#cqs.has(qid) || size > this.#opts.mqes + 1 || (cdw11 & 1) === 0) {
          return [nvmeStatus(SCT_COMMAND_SPECIFIC, SC_INVALID_QUEUE_ID, true), 0];
        }
        this.dma(prp1, size * 16);
        this.#cqs.set(qid, {
          iova: prp1,
          size,
          tail: 0,
          head: 0,
          phase: 1,
          ien: (cdw11 & 2) !== 0,
        });
        return [0, 0];
      }
      case NvmeAdminOpcode.CreateIoSq: {
        const qid = cdw10 & 0xffff, size = (cdw10 >>> 16) + 1, cqid = cdw11 >>> 16;
        if (qid === 0 || this.#sqs.has(qid) || !this.#cqs.has(cqid)) {
          return [nvmeStatus(SCT_COMMAND_SPECIFIC, SC_INVALID_QUEUE_ID, true), 0];
        }
        this.dma(prp1, size * 64);
        this.#sqs.set(qid, { iova: prp1, size, head: 0, tail: 0, cqid });
        return [0, 0];
      }
      case NvmeAdminOpcode.DeleteIoSq:
        this.#sqs.delete(cdw10 & 0xffff);
        return [0, 0];
      case NvmeAdminOpcode.DeleteIoCq:
        this.#cqs.delete(cdw10 & 0xffff);
        return [0, 0];
      case NvmeAdminOpcode.Abort:
        // Like QEMU: the abort is acknowledged, the command not aborted (DW0 bit 0 = 1).
        return [0, 1];
    }
    return [nvmeStatus(SCT_GENERIC, NvmeGenericSc.InvalidOpcode, true), 0];
  }

  /** The data pages of a command per its PRPs; status on a PRP rule violation. */
  #prpPages(v: DataView, len: number): { iova: number; len: number }[] | number {
    const psdt = v.getUint8(1) >> 6;
    if (psdt !== 0) {
      if ((this.#opts.sgls & 3) === 0 || psdt !== 1) {
        return nvmeStatus(SCT_GENERIC, NvmeGenericSc.InvalidField, true);
      }
      // One Data Block descriptor (type 0, address subtype) of exactly the transfer.
      if (v.getUint8(39) !== 0) {
        return nvmeStatus(SCT_GENERIC, NvmeGenericSc.SglDescriptorTypeInvalid, true);
      }
      if (v.getUint32(32, true) !== len) {
        return nvmeStatus(SCT_GENERIC, NvmeGenericSc.DataSglLengthInvalid, true);
      }
      this.sglsUsed++;
      return [{ iova: v.getUint32(24, true) + v.getUint32(28, true) * 0x1_0000_0000, len }];
    }
    const prp1 = v.getUint32(24, true) + v.getUint32(28, true) * 0x1_0000_0000;
    const prp2 = v.getUint32(32, true) + v.getUint32(36, true) * 0x1_0000_0000;
    const out: { iova: number; len: number }[] = [];
    const first = Math.min(len, PAGE - (prp1 % PAGE));
    out.push({ iova: prp1, len: first });
    let rest = len - first;
    if (rest === 0) return out;
    if (rest <= PAGE) {
      if (prp2 % PAGE !== 0) return nvmeStatus(SCT_GENERIC, NvmeGenericSc.PrpOffsetInvalid, true);
      out.push({ iova: prp2, len: rest });
      return out;
    }
    this.prpListsUsed++;
    if (prp2 % 8 !== 0) return nvmeStatus(SCT_GENERIC, NvmeGenericSc.PrpOffsetInvalid, true);
    const n = Math.ceil(rest / PAGE);
    const list = this.dma(prp2, n * 8);
    const lv = new DataView(list.buffer, list.byteOffset, n * 8);
    for (let i = 0; i < n; i++) {
      const e = lv.getUint32(i * 8, true) + lv.getUint32(i * 8 + 4, true) * 0x1_0000_0000;
      if (e % PAGE !== 0) return nvmeStatus(SCT_GENERIC, NvmeGenericSc.PrpOffsetInvalid, true);
      const l = Math.min(rest, PAGE);
      out.push({ iova: e, len: l });
      rest -= l;
    }
    return out;
  }

  #io(v: DataView): number {
    const opc = v.getUint8(0);
    const nsid = v.getUint32(4, true);
    if (nsid !== 1) {
      return nvmeStatus(SCT_GENERIC, NvmeGenericSc.InvalidNamespaceOrFormat, true);
    }
    const slba = v.getUint32(40, true) + v.getUint32(44, true) * 0x1_0000_0000;
    const cdw12 = v.getUint32(48, true);
    const nlb = (cdw12 & 0xffff) + 1;
    const bs = this.blockSize;
    const inRange = slba + nlb <= this.numBlocks;
    switch (opc) {
      case NvmeIoOpcode.Flush:
        return 0;
      case NvmeIoOpcode.Read:
      case NvmeIoOpcode.Write: {
        if (!inRange) return nvmeStatus(SCT_GENERIC, NvmeGenericSc.LbaOutOfRange, true);
        const len = nlb * bs;
        if (this.#opts.mdts > 0 && len > (1 << this.#opts.mdts) * PAGE) {
          return nvmeStatus(SCT_GENERIC, NvmeGenericSc.InvalidField, true);
        }
        const pages = this.#prpPages(v, len);
        if (typeof pages === "number") return pages;
        let pos = slba * bs;
        for (const p of pages) {
          const mem = this.dma(p.iova, p.len);
          if (opc === NvmeIoOpcode.Read) mem.set(this.storage.subarray(pos, pos + p.len));
          else this.storage.set(mem, pos);
          pos += p.len;
        }
        return 0;
      }
      case NvmeIoOpcode.WriteZeroes:
        if ((this.#opts.oncs & NvmeOncs.WriteZeroes) === 0) {
          return nvmeStatus(SCT_GENERIC, NvmeGenericSc.InvalidOpcode, true);
        }
        if (!inRange) return nvmeStatus(SCT_GENERIC, NvmeGenericSc.LbaOutOfRange, true);
        this.storage.fill(0, slba * bs, (slba + nlb) * bs);
        return 0;
      case NvmeIoOpcode.DatasetManagement: {
        const nr = (v.getUint32(40, true) & 0xff) + 1;
        const ad = (v.getUint32(44, true) & 4) !== 0;
        const prp1 = v.getUint32(24, true) + v.getUint32(28, true) * 0x1_0000_0000;
        const r = this.dma(prp1, nr * 16);
        const rv = new DataView(r.buffer, r.byteOffset, nr * 16);
        for (let i = 0; i < nr; i++) {
          const len = rv.getUint32(i * 16 + 4, true);
          const lba = rv.getUint32(i * 16 + 8, true) + rv.getUint32(i * 16 + 12, true) * 2 ** 32;
          if (lba + len > this.numBlocks) {
            return nvmeStatus(SCT_GENERIC, NvmeGenericSc.LbaOutOfRange, true);
          }
          if (ad && (this.#opts.dlfeat & 7) === 1) {
            this.storage.fill(0, lba * bs, (lba + len) * bs);
          }
        }
        return 0;
      }
    }
    return nvmeStatus(SCT_GENERIC, NvmeGenericSc.InvalidOpcode, true);
  }
}
