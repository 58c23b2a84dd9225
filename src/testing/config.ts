/**
 * Pieces of the SPDK-layout JSON config for tests and benches that start
 * `sluice serve` (./daemon.ts): a malloc bdev, an NVMe/TCP export, vhost-user-blk
 * controllers. Each returns one entry of `subsystems`.
 * @module
 */

/** The `bdev` subsystem with one malloc bdev. */
export function mallocBdevConfig(name: string, numBlocks: number, blockSize = 512) {
  return {
    subsystem: "bdev",
    config: [{
      method: "bdev_malloc_create",
      params: { name, num_blocks: numBlocks, block_size: blockSize },
    }],
  };
}

/** Options of {@link nvmfExportConfig}. */
export interface NvmfExport {
  nqn: string;
  serialNumber: string;
  modelNumber?: string;
  /** Exported as namespace 1. */
  bdevName: string;
  /** Listened on at 127.0.0.1. */
  port: number;
  /** nvmf_create_transport's params besides trtype. */
  transport?: Record<string, unknown>;
}

/** The `nvmf` subsystem: the TCP transport and one subsystem (any host) with one namespace. */
export function nvmfExportConfig(o: NvmfExport) {
  return {
    subsystem: "nvmf",
    config: [
      { method: "nvmf_create_transport", params: { trtype: "TCP", ...o.transport } },
      {
        method: "nvmf_create_subsystem",
        params: {
          nqn: o.nqn,
          allow_any_host: true,
          serial_number: o.serialNumber,
          ...(o.modelNumber === undefined ? {} : { model_number: o.modelNumber }),
        },
      },
      {
        method: "nvmf_subsystem_add_ns",
        params: { nqn: o.nqn, namespace: { bdev_name: o.bdevName } },
      },
      {
        method: "nvmf_subsystem_add_listener",
        params: {
          nqn: o.nqn,
          listen_address: {
            trtype: "TCP",
            adrfam: "IPv4",
            traddr: "127.0.0.1",
            trsvcid: String(o.port),
          },
        },
      },
    ],
  };
}

/** One vhost_create_blk_controller call. */
export interface VhostBlkController {
  ctrlr: string;
  devName: string;
  socket: string;
  /** Absent: the daemon's default. */
  numQueues?: number;
  /** Reactors it may be placed on (serve --cpumask); absent: any. */
  cpumask?: string;
}

/** The `vhost_blk` subsystem with these controllers. */
export function vhostBlkConfig(controllers: VhostBlkController[]) {
  return {
    subsystem: "vhost_blk",
    config: controllers.map((c) => ({
      method: "vhost_create_blk_controller",
      params: {
        ctrlr: c.ctrlr,
        dev_name: c.devName,
        socket: c.socket,
        ...(c.numQueues === undefined ? {} : { num_queues: c.numQueues }),
        ...(c.cpumask === undefined ? {} : { cpumask: c.cpumask }),
      },
    })),
  };
}
