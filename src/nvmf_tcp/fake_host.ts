/**
 * Test support: a queue pair that records completions and disconnects
 * (what the TCP transport does for real), and a minimal host that builds
 * commands the way Linux's nvme-fabrics and nvme-core do and drives the
 * target core through `execute`. Used by tests only.
 * @module
 */
import {
  buildCc,
  cqeDw0,
  cqeDw1,
  cqeSqhd,
  cqeSqid,
  cqeStatus,
  NVME_FABRICS_OPCODE,
  NvmeAdminOpcode,
  nvmeDataDirection,
  NvmeReg,
  NVMF_CONNECT_DATA_BYTES,
  NvmfConnectData,
  NvmfFabricsType,
  putUtf8,
  viewOf,
} from "../nvme/mod.ts";
import { type NvmfQpair, NvmfRequest } from "./request.ts";
import type { NvmfTarget } from "./target.ts";

/** What one completion carried. */
export interface Completion {
  cid: number;
  status: number;
  dw0: number;
  dw1: number;
  sqhd: number;
  sqid: number;
  /** The command's data buffer (controller-to-host data is there). */
  data: Uint8Array;
}

/** A queue pair that records what the core does with it. */
export class FakeQpair implements NvmfQpair {
  qid = 0;
  sqSize = 0;
  ctrlr: unknown = null;
  readonly peer = "192.0.2.10:51000";
  readonly local: { traddr: string; trsvcid: string };
  readonly completions: Completion[] = [];
  disconnectReason: string | null = null;
  readonly #waiting = new Map<NvmfRequest, (c: Completion) => void>();
  /** Completed requests are reused, as a transport's request pool does. */
  readonly #free: NvmfRequest[] = [];
  #nextCid = 1;

  constructor(traddr = "127.0.0.1", trsvcid = "4420") {
    this.local = { traddr, trsvcid };
  }

  complete(req: NvmfRequest): void {
    const v = req.cqeView;
    const c: Completion = {
      cid: req.cid,
      status: cqeStatus(v),
      dw0: cqeDw0(v),
      dw1: cqeDw1(v),
      sqhd: cqeSqhd(v),
      sqid: cqeSqid(v),
      data: req.iovs[0] ?? new Uint8Array(0),
    };
    this.completions.push(c);
    const w = this.#waiting.get(req);
    if (w === undefined) throw new Error(`completion of CID ${req.cid} nobody waits for`);
    this.#waiting.delete(req);
    this.#free.push(req);
    w(c);
  }

  disconnect(reason: string): void {
    this.disconnectReason ??= reason;
  }

  /** Requests the core holds (AERs, I/O in flight). */
  get outstanding(): number {
    return this.#waiting.size;
  }

  /**
   * Submits one command: `build` fills the SQE (the CID is set here), `data`
   * is the host-to-controller data or, as a number, the size of the
   * controller-to-host buffer. `iovSplit` cuts the data into vectors.
   */
  submit(
    target: NvmfTarget,
    build: (v: DataView, sqe: Uint8Array) => void,
    data: Uint8Array | number = 0,
    iovSplit?: number,
  ): Promise<Completion> {
    const req = this.#free.pop() ?? new NvmfRequest(this, this.#nextCid);
    req.sqe.fill(0);
    build(req.sqeView, req.sqe);
    req.sqeView.setUint16(2, this.#nextCid++ & 0xffff, true);
    const buf = typeof data === "number" ? new Uint8Array(data).fill(0xa5) : data;
    if (iovSplit !== undefined && iovSplit < buf.byteLength) {
      req.iovs = [buf.subarray(0, iovSplit), buf.subarray(iovSplit)];
      req.iovcnt = 2;
    } else {
      req.iovs = [buf];
      req.iovcnt = buf.byteLength > 0 ? 1 : 0;
    }
    req.length = buf.byteLength;
    req.dir = nvmeDataDirection(req.sqe);
    const done = new Promise<Completion>((resolve) => this.#waiting.set(req, resolve));
    target.execute(req);
    return done.then((c) => ({ ...c, data: buf }));
  }
}

/** Connect command + data, as nvmf_connect_admin_queue/io_queue build them. */
export function connect(
  target: NvmfTarget,
  qp: FakeQpair,
  o: {
    subnqn: string;
    hostnqn: string;
    qid?: number;
    sqsize?: number;
    cntlid?: number;
    katoMs?: number;
    hostid?: Uint8Array;
  },
): Promise<Completion> {
  const data = new Uint8Array(NVMF_CONNECT_DATA_BYTES);
  data.set(o.hostid ?? Uint8Array.from({ length: 16 }, (_, i) => i + 1), NvmfConnectData.HOSTID);
  viewOf(data).setUint16(NvmfConnectData.CNTLID, o.cntlid ?? 0xffff, true);
  putUtf8(data, NvmfConnectData.SUBNQN, 256, o.subnqn);
  putUtf8(data, NvmfConnectData.HOSTNQN, 256, o.hostnqn);
  return qp.submit(target, (v) => {
    v.setUint8(0, NVME_FABRICS_OPCODE);
    v.setUint8(4, NvmfFabricsType.Connect);
    v.setUint16(42, o.qid ?? 0, true);
    v.setUint16(44, o.sqsize ?? 31, true);
    v.setUint32(48, o.katoMs ?? 0, true);
  }, data);
}

/** Property Get of `size` (4 or 8) bytes at `offset`. */
export function propertyGet(
  target: NvmfTarget,
  qp: FakeQpair,
  offset: number,
  size = 4,
): Promise<Completion> {
  return qp.submit(target, (v) => {
    v.setUint8(0, NVME_FABRICS_OPCODE);
    v.setUint8(4, NvmfFabricsType.PropertyGet);
    v.setUint8(40, size === 8 ? 1 : 0);
    v.setUint32(44, offset, true);
  });
}

/** Property Set of a 4-byte property. */
export function propertySet(
  target: NvmfTarget,
  qp: FakeQpair,
  offset: number,
  value: number,
): Promise<Completion> {
  return qp.submit(target, (v) => {
    v.setUint8(0, NVME_FABRICS_OPCODE);
    v.setUint8(4, NvmfFabricsType.PropertySet);
    v.setUint8(40, 0);
    v.setUint32(44, offset, true);
    v.setUint32(48, value, true);
  });
}

/** Connects an admin queue and enables the controller as nvme_enable_ctrl does; returns the CNTLID. */
export async function connectAndEnable(
  target: NvmfTarget,
  qp: FakeQpair,
  subnqn: string,
  hostnqn: string,
  katoMs = 0,
): Promise<number> {
  const c = await connect(target, qp, { subnqn, hostnqn, katoMs });
  if (c.status !== 0) throw new Error(`Connect failed with status ${c.status.toString(16)}`);
  const cc = buildCc({ en: false, iosqes: 6, iocqes: 4 });
  await propertySet(target, qp, NvmeReg.CC, cc);
  await propertySet(target, qp, NvmeReg.CC, cc | 1);
  return c.dw0 & 0xffff;
}

/** Identify with CNS/CSI/NSID into a 4096-byte buffer. */
export function identify(
  target: NvmfTarget,
  qp: FakeQpair,
  cns: number,
  nsid = 0,
  csi = 0,
): Promise<Completion> {
  return qp.submit(target, (v) => {
    v.setUint8(0, NvmeAdminOpcode.Identify);
    v.setUint32(4, nsid, true);
    v.setUint32(40, cns, true);
    v.setUint32(44, csi << 24, true);
  }, 4096);
}

/** Get Log Page of `bytes` bytes at `offset`. */
export function getLogPage(
  target: NvmfTarget,
  qp: FakeQpair,
  lid: number,
  bytes: number,
  o: { offset?: number; rae?: boolean; nsid?: number; csi?: number } = {},
): Promise<Completion> {
  const numd = bytes / 4 - 1;
  return qp.submit(target, (v) => {
    v.setUint8(0, NvmeAdminOpcode.GetLogPage);
    v.setUint32(4, o.nsid ?? 0xffffffff, true);
    v.setUint32(40, (lid | (o.rae ? 1 << 15 : 0) | (numd & 0xffff) << 16) >>> 0, true);
    v.setUint32(44, numd >>> 16, true);
    v.setUint32(48, (o.offset ?? 0) >>> 0, true);
    v.setUint32(56, (o.csi ?? 0) << 24, true);
  }, bytes);
}

/** Set Features `fid` with CDW11. */
export function setFeatures(
  target: NvmfTarget,
  qp: FakeQpair,
  fid: number,
  cdw11: number,
): Promise<Completion> {
  return qp.submit(target, (v) => {
    v.setUint8(0, NvmeAdminOpcode.SetFeatures);
    v.setUint32(40, fid, true);
    v.setUint32(44, cdw11 >>> 0, true);
  });
}

/** Get Features `fid` (current value) with CDW11. */
export function getFeatures(
  target: NvmfTarget,
  qp: FakeQpair,
  fid: number,
  cdw11 = 0,
  sel = 0,
  dataBytes = 0,
): Promise<Completion> {
  return qp.submit(target, (v) => {
    v.setUint8(0, NvmeAdminOpcode.GetFeatures);
    v.setUint32(40, fid | sel << 8, true);
    v.setUint32(44, cdw11 >>> 0, true);
  }, dataBytes);
}

/** Read or Write of `nlb` blocks at `slba`. */
export function readWrite(
  target: NvmfTarget,
  qp: FakeQpair,
  write: boolean,
  nsid: number,
  slba: number,
  nlb: number,
  data: Uint8Array,
  o: { fua?: boolean; iovSplit?: number } = {},
): Promise<Completion> {
  return qp.submit(
    target,
    (v) => {
      v.setUint8(0, write ? 0x01 : 0x02);
      v.setUint32(4, nsid, true);
      v.setUint32(40, slba >>> 0, true);
      v.setUint32(44, Math.floor(slba / 0x1_0000_0000), true);
      v.setUint32(48, ((nlb - 1) | (o.fua ? 1 << 30 : 0)) >>> 0, true);
    },
    data,
    o.iovSplit,
  );
}
