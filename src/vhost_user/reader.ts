/**
 * MessageReader: turns the bytes and file descriptors received on a
 * vhost-user socket into validated front-end messages.
 *
 * File descriptors travel with the first byte of the sendmsg that carried
 * them, and Linux ends a read right after the data of a send that carried
 * fds. So the fds of one read belong to the last message whose header begins
 * in that read; a read with fds in which no message begins is refused.
 * @module
 */

import { VhostUserError } from "./errors.ts";
import {
  CONFIG_HEADER_SIZE,
  type ConfigSpace,
  decodeConfig,
  decodeHeader,
  decodeInflight,
  decodeLog,
  decodeMemoryTable,
  decodeSingleMemoryRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFd,
  decodeVringState,
  HEADER_SIZE,
  INFLIGHT_SIZE,
  type InflightDescription,
  LOG_SIZE,
  type LogDescription,
  MAX_CONFIG_SIZE,
  MAX_MEM_REGIONS,
  MAX_PAYLOAD_SIZE,
  MEMORY_REGION_SIZE,
  MEMORY_TABLE_HEADER_SIZE,
  type MemoryRegion,
  type MessageHeader,
  requestName,
  SINGLE_MEMORY_REGION_SIZE,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VHOST_USER_VERSION_MASK,
  VhostUserRequest as R,
  VRING_ADDR_SIZE,
  VRING_STATE_SIZE,
  type VringAddr,
  type VringState,
} from "./messages.ts";

/** The decoded payload of a message, by payload layout. */
export type MessageBody =
  | { type: "none" }
  | { type: "u64"; value: bigint }
  | { type: "vringState"; state: VringState }
  | { type: "vringAddr"; addr: VringAddr }
  | { type: "vringFd"; index: number; noFd: boolean }
  | { type: "memoryTable"; regions: MemoryRegion[] }
  | { type: "memoryRegion"; region: MemoryRegion }
  | { type: "log"; log: LogDescription }
  | { type: "config"; config: ConfigSpace }
  | { type: "inflight"; inflight: InflightDescription };

/** A validated message from the front-end. */
export interface VhostUserMessage {
  /** Request number ({@link R}). */
  request: number;
  /** Header flags as received. */
  flags: number;
  /** The NEED_REPLY flag was set. */
  needReply: boolean;
  /** The decoded payload. */
  body: MessageBody;
  /**
   * File descriptors that came with it, now owned by the caller: a memory
   * table's are in region order. REM_MEM_REG may carry one, which the
   * caller must close unused.
   */
  fds: number[];
}

type BodyType = MessageBody["type"];
type FdRule = "none" | "one" | "perRegion" | "unlessNoFd" | "atMostOne";

interface RequestSpec {
  body: BodyType;
  fds: FdRule;
}

/** Payload layout and fd rule of each request this back-end accepts. */
const SPECS: ReadonlyMap<number, RequestSpec> = new Map<number, RequestSpec>([
  [R.GET_FEATURES, { body: "none", fds: "none" }],
  [R.SET_FEATURES, { body: "u64", fds: "none" }],
  [R.SET_OWNER, { body: "none", fds: "none" }],
  [R.RESET_OWNER, { body: "none", fds: "none" }],
  [R.SET_MEM_TABLE, { body: "memoryTable", fds: "perRegion" }],
  [R.SET_LOG_BASE, { body: "log", fds: "one" }],
  [R.SET_LOG_FD, { body: "none", fds: "one" }],
  [R.SET_VRING_NUM, { body: "vringState", fds: "none" }],
  [R.SET_VRING_ADDR, { body: "vringAddr", fds: "none" }],
  [R.SET_VRING_BASE, { body: "vringState", fds: "none" }],
  [R.GET_VRING_BASE, { body: "vringState", fds: "none" }],
  [R.SET_VRING_KICK, { body: "vringFd", fds: "unlessNoFd" }],
  [R.SET_VRING_CALL, { body: "vringFd", fds: "unlessNoFd" }],
  [R.SET_VRING_ERR, { body: "vringFd", fds: "unlessNoFd" }],
  [R.GET_PROTOCOL_FEATURES, { body: "none", fds: "none" }],
  [R.SET_PROTOCOL_FEATURES, { body: "u64", fds: "none" }],
  [R.GET_QUEUE_NUM, { body: "none", fds: "none" }],
  [R.SET_VRING_ENABLE, { body: "vringState", fds: "none" }],
  [R.SEND_RARP, { body: "u64", fds: "none" }],
  [R.NET_SET_MTU, { body: "u64", fds: "none" }],
  [R.SET_BACKEND_REQ_FD, { body: "none", fds: "one" }],
  [R.SET_VRING_ENDIAN, { body: "vringState", fds: "none" }],
  [R.GET_CONFIG, { body: "config", fds: "none" }],
  [R.SET_CONFIG, { body: "config", fds: "none" }],
  [R.POSTCOPY_ADVISE, { body: "none", fds: "none" }],
  [R.POSTCOPY_LISTEN, { body: "none", fds: "none" }],
  [R.POSTCOPY_END, { body: "none", fds: "none" }],
  [R.GET_INFLIGHT_FD, { body: "inflight", fds: "none" }],
  [R.SET_INFLIGHT_FD, { body: "inflight", fds: "one" }],
  [R.RESET_DEVICE, { body: "none", fds: "none" }],
  [R.VRING_KICK, { body: "vringState", fds: "none" }],
  [R.GET_MAX_MEM_SLOTS, { body: "none", fds: "none" }],
  [R.ADD_MEM_REG, { body: "memoryRegion", fds: "one" }],
  [R.REM_MEM_REG, { body: "memoryRegion", fds: "atMostOne" }],
  [R.SET_STATUS, { body: "u64", fds: "none" }],
  [R.GET_STATUS, { body: "none", fds: "none" }],
]);

const FIXED_SIZES: Partial<Record<BodyType, number>> = {
  none: 0,
  u64: 8,
  vringFd: 8,
  vringState: VRING_STATE_SIZE,
  vringAddr: VRING_ADDR_SIZE,
  memoryRegion: SINGLE_MEMORY_REGION_SIZE,
  log: LOG_SIZE,
  inflight: INFLIGHT_SIZE,
};

const U64_LIMIT = 1n << 64n;
const DEFINED_FLAGS = VHOST_USER_VERSION_MASK | VHOST_USER_REPLY_MASK |
  VHOST_USER_NEED_REPLY_MASK;

/** Options of a {@link MessageReader}. */
export interface MessageReaderOptions {
  /** Most regions a SET_MEM_TABLE may list, 1..8 (default 8). */
  maxRegions?: number;
}

function nameOf(request: number): string {
  return requestName(request) ?? `request ${request}`;
}

/**
 * Validates the header of a message: known request, version 1 with no reply
 * bit, and a size the request allows (the exact size of a fixed payload, or
 * the bound of a variable one).
 */
function checkHeader(h: MessageHeader, maxRegions: number): RequestSpec {
  const spec = SPECS.get(h.request);
  if (spec === undefined) {
    const name = requestName(h.request);
    if (name === undefined) {
      throw new VhostUserError("unknownRequest", `Unknown request number ${h.request}`);
    }
    throw new VhostUserError("unsupportedRequest", `Request ${name} is not supported`);
  }
  const name = nameOf(h.request);
  if (
    (h.flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION ||
    (h.flags & VHOST_USER_REPLY_MASK) !== 0 || (h.flags & ~DEFINED_FLAGS) !== 0
  ) {
    throw new VhostUserError(
      "badFlags",
      `${name} has flags 0x${h.flags.toString(16)}: expected version 1 and no reply bit`,
    );
  }
  const fixed = FIXED_SIZES[spec.body];
  if (fixed !== undefined) {
    if (h.size !== fixed) {
      throw new VhostUserError("badSize", `${name} must carry ${fixed} bytes, not ${h.size}`);
    }
  } else if (spec.body === "memoryTable") {
    if (h.size < MEMORY_TABLE_HEADER_SIZE) {
      throw new VhostUserError("badSize", `${name} of ${h.size} bytes is too short`);
    }
    if (h.size > MEMORY_TABLE_HEADER_SIZE + maxRegions * MEMORY_REGION_SIZE) {
      throw new VhostUserError(
        "tooManyRegions",
        `${name} of ${h.size} bytes holds more than ${maxRegions} regions`,
      );
    }
  } else if (h.size < CONFIG_HEADER_SIZE || h.size > MAX_PAYLOAD_SIZE) {
    throw new VhostUserError(
      "badSize",
      `${name} must carry ${CONFIG_HEADER_SIZE} to ${MAX_PAYLOAD_SIZE} bytes, not ${h.size}`,
    );
  }
  return spec;
}

function checkRegion(name: string, r: MemoryRegion, i: number): void {
  if (r.memorySize === 0n) {
    throw new VhostUserError("zeroSizedRegion", `${name} region ${i} has size 0`);
  }
  if (
    r.guestPhysAddr + r.memorySize > U64_LIMIT || r.userspaceAddr + r.memorySize > U64_LIMIT ||
    r.mmapOffset + r.memorySize > U64_LIMIT
  ) {
    throw new VhostUserError(
      "regionOverflow",
      `${name} region ${i} of 0x${r.memorySize.toString(16)} bytes wraps past 2^64`,
    );
  }
}

function decodeBody(h: MessageHeader, spec: RequestSpec, payload: Uint8Array): MessageBody {
  const name = nameOf(h.request);
  switch (spec.body) {
    case "none":
      return { type: "none" };
    case "u64":
      return { type: "u64", value: decodeU64(payload) };
    case "vringState": {
      const state = decodeVringState(payload);
      if (h.request === R.VRING_KICK && state.num !== 0) {
        throw new VhostUserError("badPayload", `${name} has num ${state.num}, reserved as 0`);
      }
      return { type: "vringState", state };
    }
    case "vringAddr":
      return { type: "vringAddr", addr: decodeVringAddr(payload) };
    case "vringFd": {
      const f = decodeVringFd(payload);
      if (f.reserved !== 0n) {
        throw new VhostUserError(
          "badPayload",
          `${name} sets reserved bits 0x${f.reserved.toString(16)}`,
        );
      }
      return { type: "vringFd", index: f.index, noFd: f.noFd };
    }
    case "memoryTable": {
      const n = new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, true);
      if (n > MAX_MEM_REGIONS) {
        throw new VhostUserError("tooManyRegions", `${name} lists ${n} regions`);
      }
      if (h.size !== MEMORY_TABLE_HEADER_SIZE + n * MEMORY_REGION_SIZE) {
        throw new VhostUserError(
          "badSize",
          `${name} of ${h.size} bytes does not hold ${n} regions`,
        );
      }
      const regions = decodeMemoryTable(payload);
      regions.forEach((r, i) => checkRegion(name, r, i));
      for (let i = 0; i < regions.length; i++) {
        for (let j = i + 1; j < regions.length; j++) {
          const a = regions[i];
          const b = regions[j];
          if (a === undefined || b === undefined) continue;
          if (
            a.guestPhysAddr < b.guestPhysAddr + b.memorySize &&
            b.guestPhysAddr < a.guestPhysAddr + a.memorySize
          ) {
            throw new VhostUserError(
              "overlappingRegions",
              `${name} regions ${i} and ${j} overlap in guest physical addresses`,
            );
          }
        }
      }
      return { type: "memoryTable", regions };
    }
    case "memoryRegion": {
      const region = decodeSingleMemoryRegion(payload);
      checkRegion(name, region, 0);
      return { type: "memoryRegion", region };
    }
    case "log":
      return { type: "log", log: decodeLog(payload) };
    case "config": {
      const size = new DataView(payload.buffer, payload.byteOffset, 12).getUint32(4, true);
      if (size > MAX_CONFIG_SIZE || CONFIG_HEADER_SIZE + size !== h.size) {
        throw new VhostUserError(
          "badConfig",
          `${name} says ${size} config bytes in a payload of ${h.size} bytes ` +
            `(at most ${MAX_CONFIG_SIZE})`,
        );
      }
      return { type: "config", config: decodeConfig(payload) };
    }
    case "inflight":
      return { type: "inflight", inflight: decodeInflight(payload) };
  }
}

function checkFds(
  h: MessageHeader,
  spec: RequestSpec,
  body: MessageBody,
  count: number,
): void {
  let min: number;
  let max: number;
  switch (spec.fds) {
    case "none":
      min = max = 0;
      break;
    case "one":
      min = max = 1;
      break;
    case "atMostOne":
      min = 0;
      max = 1;
      break;
    case "perRegion":
      min = max = body.type === "memoryTable" ? body.regions.length : 0;
      break;
    case "unlessNoFd":
      min = max = body.type === "vringFd" && body.noFd ? 0 : 1;
      break;
  }
  if (count < min || count > max) {
    const want = min === max ? `${min}` : `${min} to ${max}`;
    throw new VhostUserError(
      "badFdCount",
      `${nameOf(h.request)} came with ${count} file descriptor(s), expected ${want}`,
    );
  }
}

/**
 * Validates one complete message (header and payload) with the fds that came
 * with it.
 * @throws {VhostUserError} without fds; the caller attaches them
 */
function validate(
  h: MessageHeader,
  payload: Uint8Array,
  fds: number[],
  maxRegions: number,
): VhostUserMessage {
  const spec = checkHeader(h, maxRegions);
  const body = decodeBody(h, spec, payload);
  if (body.type === "memoryTable" && body.regions.length > maxRegions) {
    throw new VhostUserError(
      "tooManyRegions",
      `${nameOf(h.request)} lists ${body.regions.length} regions, at most ${maxRegions}`,
    );
  }
  checkFds(h, spec, body, fds.length);
  return {
    request: h.request,
    flags: h.flags,
    needReply: (h.flags & VHOST_USER_NEED_REPLY_MASK) !== 0,
    body,
    fds,
  };
}

/**
 * A cursor over received reads. Call {@link push} with each read, then
 * {@link next} until it returns null, then push the next read.
 *
 * @example
 * ```ts
 * const reader = new MessageReader();
 * reader.push(bytes, fds);
 * for (let m = reader.next(); m !== null; m = reader.next()) handle(m);
 * ```
 */
export class MessageReader {
  readonly #maxRegions: number;
  /** Holds a message that straddles reads. */
  readonly #staging = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD_SIZE);
  #staged = 0;
  /** fds of the message in #staging. */
  #stagedFds: number[] = [];
  #chunk: Uint8Array = new Uint8Array(0);
  #pos = 0;
  /** fds of the current read not yet given to a message. */
  #chunkFds: number[] = [];
  #failed = false;

  constructor(options: MessageReaderOptions = {}) {
    const maxRegions = options.maxRegions ?? MAX_MEM_REGIONS;
    if (!Number.isInteger(maxRegions) || maxRegions < 1 || maxRegions > MAX_MEM_REGIONS) {
      throw new RangeError(`maxRegions must be 1..${MAX_MEM_REGIONS}, got ${maxRegions}`);
    }
    this.#maxRegions = maxRegions;
  }

  /**
   * Hands the reader one read. `bytes` is viewed, not copied, until
   * {@link next} returns null; the reader owns `fds` from now on.
   * @throws {Error} if the previous read was not fully consumed (a programming error)
   */
  push(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.#pos < this.#chunk.byteLength || this.#chunkFds.length > 0) {
      throw new Error("MessageReader.push before next() returned null");
    }
    this.#chunk = bytes;
    this.#pos = 0;
    this.#chunkFds = [...fds];
    if (this.#failed) {
      const held = this.close();
      throw new VhostUserError("readerFailed", "The reader has already failed", held);
    }
  }

  /**
   * The next complete, validated message, or null when more bytes are needed.
   * @throws {VhostUserError} on a malformed message; its `fds` (those of the
   *   message and any others the reader held) must be closed by the caller,
   *   and the connection dropped: the reader stays failed.
   */
  next(): VhostUserMessage | null {
    if (this.#failed) {
      throw new VhostUserError("readerFailed", "The reader has already failed", this.close());
    }
    try {
      return this.#next();
    } catch (e) {
      if (!(e instanceof VhostUserError)) throw e;
      this.#failed = true;
      throw new VhostUserError(e.kind, e.message, this.close());
    }
  }

  /** Gives back every fd the reader still holds (to close, with the connection). */
  close(): number[] {
    const held = [...this.#stagedFds, ...this.#chunkFds];
    this.#stagedFds = [];
    this.#chunkFds = [];
    this.#staged = 0;
    this.#pos = this.#chunk.byteLength;
    return held;
  }

  #next(): VhostUserMessage | null {
    const chunk = this.#chunk;
    const end = chunk.byteLength;
    if (this.#staged === 0) {
      if (this.#pos >= end) {
        if (this.#chunkFds.length > 0) {
          throw new VhostUserError(
            "strayFds",
            `${this.#chunkFds.length} file descriptor(s) arrived with no message`,
          );
        }
        return null;
      }
      // A message begins here: it takes this read's fds if it is the last to begin in it.
      const start = this.#pos;
      let fds: number[] = [];
      if (start + HEADER_SIZE <= end) {
        const h = decodeHeader(chunk.subarray(start, start + HEADER_SIZE));
        checkHeader(h, this.#maxRegions);
        const msgEnd = start + HEADER_SIZE + h.size;
        if (msgEnd >= end) {
          fds = this.#chunkFds;
          this.#chunkFds = [];
        }
        if (msgEnd <= end) {
          this.#pos = msgEnd;
          try {
            return validate(h, chunk.subarray(start + HEADER_SIZE, msgEnd), fds, this.#maxRegions);
          } catch (e) {
            this.#stagedFds = fds;
            throw e;
          }
        }
      } else {
        fds = this.#chunkFds;
        this.#chunkFds = [];
      }
      this.#stagedFds = fds;
    }
    // Fill the staging buffer: first the header, then the payload it announces.
    if (this.#staged < HEADER_SIZE) {
      this.#stage(HEADER_SIZE);
      if (this.#staged < HEADER_SIZE) return this.#exhausted();
    }
    const h = decodeHeader(this.#staging);
    checkHeader(h, this.#maxRegions);
    this.#stage(HEADER_SIZE + h.size);
    if (this.#staged < HEADER_SIZE + h.size) return this.#exhausted();
    const fds = this.#stagedFds;
    const message = validate(
      h,
      this.#staging.slice(HEADER_SIZE, HEADER_SIZE + h.size),
      fds,
      this.#maxRegions,
    );
    this.#stagedFds = [];
    this.#staged = 0;
    return message;
  }

  /** Copies bytes of the current read into staging until it holds `want` bytes. */
  #stage(want: number): void {
    const n = Math.min(want - this.#staged, this.#chunk.byteLength - this.#pos);
    if (n <= 0) return;
    this.#staging.set(this.#chunk.subarray(this.#pos, this.#pos + n), this.#staged);
    this.#staged += n;
    this.#pos += n;
  }

  /** The read ran out inside a message: fds of a read that began none are stray. */
  #exhausted(): null {
    if (this.#chunkFds.length > 0) {
      throw new VhostUserError(
        "strayFds",
        `${this.#chunkFds.length} file descriptor(s) arrived with no message`,
      );
    }
    return null;
  }
}
