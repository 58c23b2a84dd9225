/**
 * An NVM subsystem of the target: its NQN, serial and model numbers, who
 * may connect (allowed host NQNs or any host), where (listeners), what it
 * exports (namespaces backed by bdevs) and the controllers hosts hold on
 * it. The discovery subsystem is a subsystem too, with no namespaces.
 * @module
 */
import {
  type Bdev,
  type BdevChannel,
  type BdevDesc,
  BdevIoType,
  type BdevRegistry,
  type IoThread,
} from "../bdev/mod.ts";
import {
  bytesHex,
  hexBytes,
  nqnProblem,
  NVME_CNTLID_MAX,
  NVME_DISCOVERY_NQN,
  uuidBytes,
} from "../nvme/mod.ts";
import type { NvmfController } from "./ctrlr.ts";
import { NvmfError, type NvmfListener, type NvmfTarget } from "./target.ts";

/** Most namespaces (NSIDs) one subsystem may have. */
export const NVMF_MAX_NAMESPACES = 1024;
/** Namespaces of a subsystem created without `max_namespaces` (SPDK's default). */
export const NVMF_DEFAULT_MAX_NAMESPACES = 32;
/** Most controllers one subsystem may have at once. */
export const NVMF_MAX_CONTROLLERS_PER_SUBSYSTEM = 1024;
/** Most allowed host NQNs per subsystem. */
export const NVMF_MAX_HOSTS_PER_SUBSYSTEM = 1024;
/** How long removing a namespace waits for its in-flight I/O. */
const DRAIN_TIMEOUT_MS = 60_000;

const SERIAL_MAX = 20;
const MODEL_MAX = 40;
const DEFAULT_MODEL = "sluice NVMe-oF Controller";

/** Options of `nvmf_create_subsystem` (SPDK's names in camelCase). */
export interface NvmfSubsystemOptions {
  nqn: string;
  serialNumber?: string;
  modelNumber?: string;
  allowAnyHost?: boolean;
  maxNamespaces?: number;
  minCntlid?: number;
  maxCntlid?: number;
}

/** Options of `nvmf_subsystem_add_ns`'s namespace object. */
export interface NvmfNamespaceOptions {
  bdevName: string;
  /** 1..max_namespaces; the lowest free NSID when absent. */
  nsid?: number;
  /** RFC 4122 UUID; the bdev's UUID when absent. */
  uuid?: string;
  /** 32 hex digits; the UUID's bytes when absent. */
  nguid?: string;
  /** 16 hex digits; none when absent. */
  eui64?: string;
  /** Refuse writes (Namespace is Write Protected); forced for bdevs that cannot write. */
  readOnly?: boolean;
}

/** One exported namespace: a bdev opened for I/O on the target's thread. */
export class NvmfNamespace {
  readonly nsid: number;
  readonly bdev: Bdev;
  readonly desc: BdevDesc;
  /** The one channel of this namespace on the target's thread. */
  readonly channel: BdevChannel;
  readonly readOnly: boolean;
  readonly uuid: string;
  readonly uuidBytes: Uint8Array;
  readonly nguid: Uint8Array;
  readonly eui64: Uint8Array | null;
  readonly blockSize: number;
  readonly numBlocks: number;
  /** Set when the namespace left its subsystem; in-flight I/O then drains. */
  removed = false;
  /** The options it was added with, for save_config. */
  readonly options: NvmfNamespaceOptions;

  constructor(init: {
    nsid: number;
    bdev: Bdev;
    desc: BdevDesc;
    channel: BdevChannel;
    readOnly: boolean;
    uuid: string;
    nguid: Uint8Array;
    eui64: Uint8Array | null;
    options: NvmfNamespaceOptions;
  }) {
    this.nsid = init.nsid;
    this.bdev = init.bdev;
    this.desc = init.desc;
    this.channel = init.channel;
    this.readOnly = init.readOnly;
    this.uuid = init.uuid;
    this.uuidBytes = uuidBytes(init.uuid);
    this.nguid = init.nguid;
    this.eui64 = init.eui64;
    this.blockSize = init.bdev.blockSize;
    this.numBlocks = init.bdev.numBlocks;
    this.options = init.options;
  }

  /** The `nvmf_get_subsystems` view (SPDK's fields). */
  toJSON(): Record<string, unknown> {
    return {
      nsid: this.nsid,
      bdev_name: this.bdev.name,
      name: this.bdev.name,
      nguid: bytesHex(this.nguid),
      ...(this.eui64 !== null ? { eui64: bytesHex(this.eui64) } : {}),
      uuid: this.uuid,
      ...(this.readOnly ? { read_only: true } : {}),
    };
  }
}

/** Checks an NQN; throws {@link NvmfError} (EINVAL) naming the problem. */
export function validateNqn(nqn: string, what = "NQN"): void {
  const problem = nqnProblem(nqn);
  if (problem !== null) throw new NvmfError(`${what} "${nqn}" is invalid: ${problem}`, 22);
}

function validateAscii(value: string, max: number, what: string): void {
  if (value.length === 0 || value.length > max || !/^[\x20-\x7e]+$/.test(value)) {
    throw new NvmfError(
      `${what} must be 1-${max} printable ASCII characters, got ${JSON.stringify(value)}`,
      22,
    );
  }
}

function randomSerial(): string {
  const b = crypto.getRandomValues(new Uint8Array(SERIAL_MAX / 2));
  return bytesHex(b);
}

/** An NVM (or the discovery) subsystem. */
export class NvmfSubsystem {
  readonly nqn: string;
  readonly isDiscovery: boolean;
  readonly serialNumber: string;
  readonly modelNumber: string;
  allowAnyHost: boolean;
  readonly maxNamespaces: number;
  readonly minCntlid: number;
  readonly maxCntlid: number;
  /** Allowed host NQNs, in the order they were added. */
  readonly hosts: Set<string> = new Set();
  /** The target's listeners this subsystem is reachable on. */
  readonly listeners: NvmfListener[] = [];
  /** Namespaces by NSID (index 0 unused); length maxNamespaces + 1. */
  readonly nsById: (NvmfNamespace | undefined)[];
  readonly controllers: Map<number, NvmfController> = new Map();
  readonly #target: NvmfTarget;
  #nextCntlid: number;
  #nsCount = 0;

  /** @internal Use {@link NvmfTarget.createSubsystem}. */
  constructor(target: NvmfTarget, opts: NvmfSubsystemOptions, isDiscovery = false) {
    validateNqn(opts.nqn, "subsystem NQN");
    this.#target = target;
    this.nqn = opts.nqn;
    this.isDiscovery = isDiscovery;
    if (!isDiscovery && opts.nqn === NVME_DISCOVERY_NQN) {
      throw new NvmfError(`"${NVME_DISCOVERY_NQN}" is the discovery subsystem's NQN`, 17);
    }
    this.serialNumber = opts.serialNumber ?? randomSerial();
    validateAscii(this.serialNumber, SERIAL_MAX, "serial_number");
    this.modelNumber = opts.modelNumber ?? DEFAULT_MODEL;
    validateAscii(this.modelNumber, MODEL_MAX, "model_number");
    this.allowAnyHost = isDiscovery ? true : opts.allowAnyHost ?? false;
    const maxNs = isDiscovery ? 0 : (opts.maxNamespaces || NVMF_DEFAULT_MAX_NAMESPACES);
    if (!Number.isInteger(maxNs) || maxNs < 0 || maxNs > NVMF_MAX_NAMESPACES) {
      throw new NvmfError(`max_namespaces must be 1-${NVMF_MAX_NAMESPACES}, got ${maxNs}`, 22);
    }
    this.maxNamespaces = maxNs;
    this.nsById = new Array(maxNs + 1);
    this.minCntlid = opts.minCntlid ?? 1;
    this.maxCntlid = opts.maxCntlid ?? NVME_CNTLID_MAX;
    if (
      !Number.isInteger(this.minCntlid) || !Number.isInteger(this.maxCntlid) ||
      this.minCntlid < 1 || this.maxCntlid > NVME_CNTLID_MAX || this.minCntlid > this.maxCntlid
    ) {
      throw new NvmfError(
        `min_cntlid and max_cntlid must satisfy 1 <= min <= max <= ${NVME_CNTLID_MAX}`,
        22,
      );
    }
    this.#nextCntlid = this.minCntlid;
  }

  /** The NSIDs in use, ascending. */
  *activeNsids(): Generator<number> {
    for (let i = 1; i < this.nsById.length; i++) if (this.nsById[i] !== undefined) yield i;
  }

  /** The namespaces, by ascending NSID. */
  namespaces(): NvmfNamespace[] {
    const out: NvmfNamespace[] = [];
    for (const ns of this.nsById) if (ns !== undefined) out.push(ns);
    return out;
  }

  /** May `hostnqn` connect? */
  hostAllowed(hostnqn: string): boolean {
    return this.allowAnyHost || this.hosts.has(hostnqn);
  }

  /** Is the address a host connected to one of this subsystem's listeners? */
  listenerAllowed(local: { traddr: string; trsvcid: string }): boolean {
    return this.listeners.some((l) => listenerMatches(l, local));
  }

  // ---- hosts ----

  /** Adds an allowed host NQN. */
  addHost(hostnqn: string): void {
    validateNqn(hostnqn, "host NQN");
    if (this.hosts.has(hostnqn)) {
      throw new NvmfError(`host "${hostnqn}" is already allowed on "${this.nqn}"`, 17);
    }
    if (this.hosts.size >= NVMF_MAX_HOSTS_PER_SUBSYSTEM) {
      throw new NvmfError(`"${this.nqn}" has the most hosts allowed`, 28);
    }
    this.hosts.add(hostnqn);
    this.#target.discoveryChanged();
  }

  /** Removes an allowed host NQN and disconnects its controllers (unless any host may connect). */
  removeHost(hostnqn: string): void {
    if (!this.hosts.delete(hostnqn)) {
      throw new NvmfError(`host "${hostnqn}" is not allowed on "${this.nqn}"`, 2);
    }
    this.#dropDisallowedHosts();
    this.#target.discoveryChanged();
  }

  /** Lets any host connect, or only the allowed list (disconnecting the others). */
  setAllowAnyHost(allow: boolean): void {
    if (this.isDiscovery) throw new NvmfError("the discovery subsystem allows any host", 22);
    if (this.allowAnyHost === allow) return;
    this.allowAnyHost = allow;
    this.#dropDisallowedHosts();
    this.#target.discoveryChanged();
  }

  #dropDisallowedHosts(): void {
    for (const c of [...this.controllers.values()]) {
      if (!this.hostAllowed(c.hostnqn)) c.destroy("host no longer allowed");
    }
  }

  // ---- controllers ----

  /** A free controller ID (next-fit from the last one, so IDs are not reused at once); -1 when none. */
  allocateCntlid(): number {
    if (this.controllers.size >= NVMF_MAX_CONTROLLERS_PER_SUBSYSTEM) return -1;
    const span = this.maxCntlid - this.minCntlid + 1;
    for (let i = 0; i < span; i++) {
      const id = this.#nextCntlid;
      this.#nextCntlid = id === this.maxCntlid ? this.minCntlid : id + 1;
      if (!this.controllers.has(id)) return id;
    }
    return -1;
  }

  /** @internal */
  controllerAdded(c: NvmfController): void {
    this.controllers.set(c.cntlid, c);
  }

  /** @internal */
  controllerGone(c: NvmfController): void {
    if (this.controllers.get(c.cntlid) === c) this.controllers.delete(c.cntlid);
  }

  // ---- namespaces ----

  /**
   * Exports bdev `opts.bdevName` as a namespace: claims it (so it cannot be
   * deleted or layered upon while exported), opens it, gets its channel,
   * and tells connected hosts (Changed Namespace List, AER). Returns the NSID.
   */
  addNamespace(registry: BdevRegistry, thread: IoThread, opts: NvmfNamespaceOptions): number {
    if (this.isDiscovery) throw new NvmfError("the discovery subsystem has no namespaces", 22);
    let nsid = opts.nsid ?? 0;
    if (nsid === 0) {
      nsid = this.nsById.findIndex((ns, i) => i > 0 && ns === undefined);
      if (nsid < 1) {
        throw new NvmfError(`"${this.nqn}" has all ${this.maxNamespaces} NSIDs in use`, 28);
      }
    } else if (!Number.isInteger(nsid) || nsid < 1 || nsid > this.maxNamespaces) {
      throw new NvmfError(`nsid must be 1-${this.maxNamespaces} on "${this.nqn}", got ${nsid}`, 22);
    } else if (this.nsById[nsid] !== undefined) {
      throw new NvmfError(`NSID ${nsid} is already in use on "${this.nqn}"`, 17);
    }
    const bdev = registry.get(opts.bdevName);
    const uuid = (opts.uuid ?? bdev.uuid).toLowerCase();
    const nguid = opts.nguid !== undefined ? parseHexId(opts.nguid, 16, "nguid") : uuidBytes(uuid);
    const eui64 = opts.eui64 !== undefined ? parseHexId(opts.eui64, 8, "eui64") : null;
    for (const other of this.namespaces()) {
      if (other.uuid === uuid) {
        throw new NvmfError(`UUID ${uuid} is already used by NSID ${other.nsid}`, 17);
      }
      if (bytesHex(other.nguid) === bytesHex(nguid)) {
        throw new NvmfError(`NGUID ${bytesHex(nguid)} is already used by NSID ${other.nsid}`, 17);
      }
    }
    const readOnly = opts.readOnly === true || !bdev.ioTypeSupported(BdevIoType.Write);
    const claimant = claimName(this.nqn, nsid);
    registry.claim(bdev, "nvmf", claimant);
    let desc: BdevDesc | null = null;
    try {
      desc = registry.open(bdev.name, !readOnly);
      const channel = desc.getIoChannel(thread);
      const ns = new NvmfNamespace({
        nsid,
        bdev,
        desc,
        channel,
        readOnly,
        uuid,
        nguid,
        eui64,
        options: { ...opts, nsid },
      });
      this.nsById[nsid] = ns;
      this.#nsCount++;
    } catch (e) {
      desc?.close();
      registry.releaseClaim(bdev, claimant);
      throw e;
    }
    for (const c of this.controllers.values()) c.namespaceChanged(nsid);
    return nsid;
  }

  /**
   * Removes a namespace: new commands to its NSID fail at once (Invalid
   * Namespace), hosts are told, and when its in-flight I/O has drained the
   * bdev is closed and released.
   */
  async removeNamespace(registry: BdevRegistry, nsid: number): Promise<void> {
    const ns = Number.isInteger(nsid) && nsid > 0 ? this.nsById[nsid] : undefined;
    if (ns === undefined) throw new NvmfError(`"${this.nqn}" has no namespace ${nsid}`, 2);
    this.nsById[nsid] = undefined;
    this.#nsCount--;
    ns.removed = true;
    for (const c of this.controllers.values()) c.namespaceChanged(nsid);
    const start = performance.now();
    while (ns.channel.inFlight > 0) {
      if (performance.now() - start > DRAIN_TIMEOUT_MS) {
        throw new NvmfError(
          `namespace ${nsid} of "${this.nqn}" still has ${ns.channel.inFlight} I/O(s) in flight ` +
            `after ${DRAIN_TIMEOUT_MS} ms; bdev "${ns.bdev.name}" stays open`,
          16,
        );
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    ns.channel.close();
    ns.desc.close();
    registry.releaseClaim(ns.bdev, claimName(this.nqn, nsid));
  }

  /** Namespaces in use. */
  get namespaceCount(): number {
    return this.#nsCount;
  }

  /** The `nvmf_get_subsystems` view (SPDK's fields and order). */
  toJSON(): Record<string, unknown> {
    const base = {
      nqn: this.nqn,
      subtype: this.isDiscovery ? "Discovery" : "NVMe",
      listen_addresses: this.listeners.map((l) => ({
        trtype: l.trtype,
        adrfam: l.adrfam,
        traddr: l.traddr,
        trsvcid: l.trsvcid,
      })),
      allow_any_host: this.allowAnyHost,
      hosts: [...this.hosts].map((nqn) => ({ nqn })),
    };
    if (this.isDiscovery) return base;
    return {
      ...base,
      serial_number: this.serialNumber,
      model_number: this.modelNumber,
      max_namespaces: this.maxNamespaces,
      min_cntlid: this.minCntlid,
      max_cntlid: this.maxCntlid,
      namespaces: this.namespaces().map((ns) => ns.toJSON()),
    };
  }
}

/** Does listener `l` accept connections made to `local` (a wildcard address takes any)? */
export function listenerMatches(
  l: { traddr: string; trsvcid: string },
  local: { traddr: string; trsvcid: string },
): boolean {
  if (l.trsvcid !== local.trsvcid) return false;
  return l.traddr === local.traddr || l.traddr === "0.0.0.0" || l.traddr === "::";
}

function claimName(nqn: string, nsid: number): string {
  return `${nqn} nsid ${nsid}`;
}

function parseHexId(hex: string, bytes: number, what: string): Uint8Array {
  const clean = hex.replaceAll("-", "");
  if (!new RegExp(`^[0-9a-fA-F]{${bytes * 2}}$`).test(clean)) {
    throw new NvmfError(`${what} must be ${bytes * 2} hex digits, got ${JSON.stringify(hex)}`, 22);
  }
  const b = hexBytes(clean);
  if (b.every((x) => x === 0)) throw new NvmfError(`${what} must not be all zeroes`, 22);
  return b;
}
