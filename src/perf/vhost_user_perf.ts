/**
 * Bringing a vhost-user-blk back-end up for `sluice perf`, as a guest's
 * driver would: negotiate, read the config space, create the guest memory
 * (one memfd: rings, request headers, data buffers), share it, start one
 * virtqueue per perf queue, and build a {@link VhostUserPerfDevice} on each.
 * @module
 */
import { PAGE_SIZE } from "../../ffi/memory.ts";
import {
  FrontendMemory,
  splitRingBytes,
  splitRingLayout,
  VhostUserFrontend,
  VhostUserFrontendError,
} from "../vhost_user/frontend.ts";
import { featureBit, VhostUserProtocolFeature as P } from "../vhost_user/messages.ts";
import {
  featureMask,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
} from "../virtio/blk.ts";
import { VhostUserPerfDevice } from "./vhost_user_device.ts";

/** Largest queue size asked for: QEMU's and libvhost-user's limit (VIRTQUEUE_MAX_SIZE). */
export const VHOST_PERF_MAX_QUEUE_SIZE = 1024;

/** What the back-end told us. */
export interface VhostPerfInfo {
  /** Capacity in bytes. */
  capacityBytes: number;
  blockSize: number;
  /** Queues the device has. */
  deviceQueues: number;
  readOnly: boolean;
  eventIdx: boolean;
  indirect: boolean;
  queueSize: number;
}

/** A set-up vhost-user perf session. */
export interface VhostPerfSession {
  frontend: VhostUserFrontend;
  memory: FrontendMemory;
  info: VhostPerfInfo;
  devices: VhostUserPerfDevice[];
  /** Per queue, the job's buffers in guest memory (`depth` of `ioSize` bytes, in slot order). */
  buffers: Uint8Array[][];
  /** Resolves with a reason if the back-end goes away before {@link close}. */
  lost: Promise<string | null>;
  /**
   * Stops every ring with GET_VRING_BASE (returns, per queue, the back-end's
   * base and the driver's avail index, which match after a clean drain),
   * closes the connection, and frees the memory.
   */
  close(): Promise<{ base: number; avail: number }[]>;
}

/** Options of {@link openVhostPerf}. */
export interface VhostPerfOptions {
  path: string;
  queues: number;
  depth: number;
  ioSize: number;
  /** Slice the device per queue (verify): numBlocks per device is then a share. */
  verify: boolean;
  /** Needs write access (a write or mixed workload). */
  writes: boolean;
  reactor: { ioInFlight: number };
  /** Negotiate EVENT_IDX when offered (default true). */
  eventIdx?: boolean;
}

/** Connects and sets everything up; on any failure, what was made is undone. */
export async function openVhostPerf(o: VhostPerfOptions): Promise<VhostPerfSession> {
  const fe = VhostUserFrontend.connect(o.path);
  let memory: FrontendMemory | null = null;
  try {
    const want = featureMask(
      VIRTIO_F_VERSION_1,
      VIRTIO_BLK_F_BLK_SIZE,
      VIRTIO_BLK_F_MQ,
      VIRTIO_BLK_F_RO,
      VIRTIO_F_INDIRECT_DESC,
      ...(o.eventIdx === false ? [] : [VIRTIO_F_EVENT_IDX]),
    );
    const n = await fe.negotiate(want, undefined, featureMask(VIRTIO_F_VERSION_1));
    const has = (bit: number) => (n.features & (1n << BigInt(bit))) !== 0n;
    if ((n.protocolFeatures & featureBit(P.CONFIG)) === 0n) {
      throw new VhostUserFrontendError(
        `${o.path}: the back-end does not offer the CONFIG protocol feature, so its capacity is unknown`,
      );
    }
    const cfg = await fe.getConfig(0, 60);
    const cv = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength);
    const capacityBytes = Number(cv.getBigUint64(0, true)) * VIRTIO_BLK_SECTOR_SIZE;
    const blockSize = has(VIRTIO_BLK_F_BLK_SIZE) ? cv.getUint32(20, true) : 512;
    let deviceQueues = 1;
    if ((n.protocolFeatures & featureBit(P.MQ)) !== 0n) deviceQueues = await fe.getQueueNum();
    if (o.queues > deviceQueues) {
      throw new VhostUserFrontendError(
        `${o.path}: -c ${o.queues} asks for more queues than the device has (${deviceQueues})`,
      );
    }
    const readOnly = has(VIRTIO_BLK_F_RO);
    if (readOnly && o.writes) {
      throw new VhostUserFrontendError(`${o.path}: the device is read-only (VIRTIO_BLK_F_RO)`);
    }
    if (blockSize < 512 || blockSize % 512 !== 0 || o.ioSize % blockSize !== 0) {
      throw new VhostUserFrontendError(
        `-o ${o.ioSize} is not a multiple of the device's block size (${blockSize} B)`,
      );
    }
    // Direct chains when they fit a 1024-entry ring, else one indirect descriptor a request.
    let indirect = false;
    let queueSize = VhostUserPerfDevice.queueSize(o.depth, false);
    if (queueSize > VHOST_PERF_MAX_QUEUE_SIZE) {
      if (!has(VIRTIO_F_INDIRECT_DESC)) {
        throw new VhostUserFrontendError(
          `-q ${o.depth} needs ${
            3 * o.depth
          } descriptors, more than a ${VHOST_PERF_MAX_QUEUE_SIZE}-entry ` +
            "ring holds, and the back-end offers no indirect descriptors",
        );
      }
      indirect = true;
      queueSize = VhostUserPerfDevice.queueSize(o.depth, true);
    }
    const eventIdx = has(VIRTIO_F_EVENT_IDX);

    // One region: per queue, the rings, the scratch (headers, status, tables), the buffers.
    const stride = Math.ceil(o.ioSize / PAGE_SIZE) * PAGE_SIZE;
    const ringBytes = splitRingBytes(queueSize);
    const scratch = Math.ceil(VhostUserPerfDevice.scratchBytes(o.depth) / PAGE_SIZE) * PAGE_SIZE;
    const perQueue = ringBytes + scratch + o.depth * stride;
    memory = FrontendMemory.create(perQueue * o.queues);
    await fe.setMemTable([memory]);

    const bpi = o.ioSize / blockSize;
    const numBlocks = Math.floor(capacityBytes / blockSize);
    const slice = o.verify ? Math.floor(numBlocks / o.queues / bpi) * bpi : numBlocks;
    if (slice < bpi) {
      throw new VhostUserFrontendError(
        `the device (${numBlocks} x ${blockSize} B) is smaller than ` +
          (o.verify ? `one ${o.ioSize}-byte I/O per queue` : `one ${o.ioSize}-byte I/O`),
      );
    }
    const devices: VhostUserPerfDevice[] = [];
    const buffers: Uint8Array[][] = [];
    for (let i = 0; i < o.queues; i++) {
      const base = memory.gpaBase + i * perQueue;
      const layout = splitRingLayout(base, queueSize);
      // The rings are all zeroes (avail.idx 0): the back-end finds nothing to do until the
      // device below publishes requests.
      const q = await fe.setupQueue(i, memory, layout);
      const dev = new VhostUserPerfDevice({
        memory,
        layout,
        scratchGpa: base + ringBytes,
        kickFd: q.kickFd,
        eventIdx,
        indirect,
        blockSize,
        numBlocks: slice,
        firstLba: o.verify ? i * slice : 0,
        jobDepth: o.depth,
        reactor: o.reactor,
      });
      devices.push(dev);
      const bufs: Uint8Array[] = [];
      const first = base + ringBytes + scratch - memory.gpaBase;
      for (let s = 0; s < o.depth; s++) {
        bufs.push(memory.bytes.subarray(first + s * stride, first + s * stride + o.ioSize));
      }
      buffers.push(bufs);
    }
    const mem = memory;
    const watching = new AbortController();
    const lost = fe.watchClose(watching.signal);
    return {
      lost,
      frontend: fe,
      memory: mem,
      info: {
        capacityBytes,
        blockSize,
        deviceQueues,
        readOnly,
        eventIdx,
        indirect,
        queueSize,
      },
      devices,
      buffers,
      async close() {
        const out: { base: number; avail: number }[] = [];
        watching.abort();
        const gone = await lost;
        try {
          if (gone !== null) throw new VhostUserFrontendError(`${o.path}: ${gone}`);
          for (const [i, d] of devices.entries()) {
            out.push({ base: await fe.getVringBase(i), avail: d.availIdx });
          }
        } finally {
          fe.close();
          mem.close();
        }
        return out;
      },
    };
  } catch (e) {
    fe.close();
    memory?.close();
    throw e;
  }
}
