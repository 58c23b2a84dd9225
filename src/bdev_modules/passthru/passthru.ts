/**
 * The passthru bdev: the smallest layered bdev (SPDK's vbdev_passthru). It
 * forwards every I/O to its base unchanged; it exists to prove and show the
 * layering machinery that crypto and clones build on.
 * @module
 */
import {
  type BdevCompleter,
  BdevInvalidError,
  type BdevRegistry,
  type IoThread,
  type RpcCall,
} from "../../bdev/mod.ts";
import { Vbdev, type VbdevChannel } from "../../bdev/vbdev.ts";
import type { PassthruReplicaSpec } from "../../bdev/replica.ts";

/** Parameters of bdev_passthru_create (SPDK's names). */
export interface PassthruCreateParams {
  baseBdevName: string;
  name: string;
  uuid?: string;
}

class PassthruBdev extends Vbdev {
  readonly #params: PassthruCreateParams;

  constructor(registry: BdevRegistry, params: PassthruCreateParams) {
    super(registry, "passthru", params.name, params.baseBdevName);
    this.#params = params;
  }

  getIoChannel(completer: BdevCompleter, thread: IoThread, poolSize: number): VbdevChannel {
    return this.makeChannel(completer, thread, poolSize);
  }

  replicaSpec(): PassthruReplicaSpec | null {
    const base = this.baseDesc.bdev.fnTable.replicaSpec?.() ?? null;
    if (base === null) return null;
    const p = this.#params;
    return { module: "passthru", name: p.name, uuid: p.uuid ?? "", base };
  }

  writeConfigJson(): RpcCall {
    const p = this.#params;
    return {
      method: "bdev_passthru_create",
      params: { base_bdev_name: p.baseBdevName, name: p.name, uuid: p.uuid },
    };
  }
}

/** Creates a passthru bdev on `baseBdevName`. */
export function createPassthruBdev(registry: BdevRegistry, params: PassthruCreateParams): string {
  const vbdev = new PassthruBdev(registry, params);
  const base = vbdev.baseDesc.bdev;
  try {
    const bdev = registry.register({
      name: params.name,
      module: "passthru",
      productName: "passthru",
      blockSize: base.blockSize,
      numBlocks: base.numBlocks,
      uuid: params.uuid,
      ioTypes: vbdev.ioTypes(),
      writeCache: base.writeCache,
      requiredAlignment: base.requiredAlignment,
      fnTable: vbdev,
    });
    params.uuid = bdev.uuid;
    return bdev.name;
  } catch (e) {
    vbdev.destruct();
    throw e;
  }
}

/** Deletes a passthru bdev; its base stays. */
export async function deletePassthruBdev(registry: BdevRegistry, name: string): Promise<void> {
  const bdev = registry.get(name);
  if (bdev.module !== "passthru") {
    throw new BdevInvalidError(`bdev "${name}" is a ${bdev.module} bdev, not a passthru bdev`);
  }
  await registry.unregister(name);
}
