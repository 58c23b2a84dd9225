/**
 * Assembles the engine: the bdev registry, the data-path reactor and the
 * RPC table with every subsystem's methods. The daemon and tests build an
 * App the same way.
 * @module
 */
import { BdevRegistry } from "./bdev/mod.ts";
import { registerBdevRpcs } from "./bdev/bdev_rpc.ts";
import { registerErrorRpcs } from "./bdev_modules/error/error_rpc.ts";
import { registerFileRpcs } from "./bdev_modules/file/file_rpc.ts";
import { registerMallocRpcs } from "./bdev_modules/malloc/malloc_rpc.ts";
import { registerNvmeRpcs, shutdownNvme } from "./bdev_modules/nvme/nvme_rpc.ts";
import { registerNvmfRpcs, shutdownNvmfTarget } from "./nvmf_tcp/nvmf_rpc.ts";
import { registerVhostRpcs, shutdownVhost } from "./vhost_user/vhost_rpc.ts";
import { registerPassthruRpcs } from "./bdev_modules/passthru/passthru_rpc.ts";
import { registerCryptoRpcs } from "./bdev_modules/crypto/crypto_rpc.ts";
import { registerCryptoKeyRpcs, shutdownCryptoKeys } from "./crypto/crypto_rpc.ts";
import { registerConfigRpcs } from "./config/config.ts";
import { Reactor } from "./reactor/mod.ts";
import type { AppContext } from "./rpc/context.ts";
import { registerCoreRpcs } from "./rpc/core_rpc.ts";
import { RpcTable } from "./rpc/rpc.ts";
import { registerStatsRpcs } from "./stats/stats.ts";
import { registerNvmfConnectionRpcs } from "./nvmf_tcp/nvmf_connections_rpc.ts";
import { VERSION } from "./version.ts";
import { DataPathWorker } from "./worker/workers.ts";

/** The engine of one appliance process. */
export class App implements AppContext {
  readonly bdevs: BdevRegistry = new BdevRegistry();
  readonly reactor: Reactor;
  readonly rpc: RpcTable<AppContext> = new RpcTable();
  readonly startedAtMs: number = Date.now();
  readonly version: string = VERSION;
  reactorCores: number[] = [0];
  readonly workers: DataPathWorker[] = [];
  #running: Promise<void> | null = null;
  readonly #log: (msg: string) => void;

  constructor(reactor: Reactor = new Reactor(), log: (msg: string) => void = () => {}) {
    this.reactor = reactor;
    this.#log = log;
    registerCoreRpcs(this.rpc);
    registerConfigRpcs(this.rpc);
    registerBdevRpcs(this.rpc);
    registerMallocRpcs(this.rpc);
    registerFileRpcs(this.rpc);
    registerNvmeRpcs(this.rpc);
    registerPassthruRpcs(this.rpc);
    registerErrorRpcs(this.rpc);
    registerCryptoKeyRpcs(this.rpc);
    registerCryptoRpcs(this.rpc);
    registerNvmfRpcs(this.rpc);
    registerVhostRpcs(this.rpc);
    registerStatsRpcs(this.rpc);
    registerNvmfConnectionRpcs(this.rpc);
  }

  /** Operational messages; the daemon prints them. Safe to pass around unbound. */
  readonly log = (msg: string): void => {
    this.#log(msg);
  };

  /** Starts the data-path loop (returns at once). */
  start(): void {
    this.#running ??= this.reactor.run();
  }

  /**
   * Runs reactors on `cores`: the first is the main thread's, each further
   * one gets a data-path worker (pinned to its core when `pin`). Call once,
   * before any controller is created.
   */
  async startWorkers(
    cores: readonly number[],
    o: { pin: boolean; guestWindowBytes: number },
  ): Promise<void> {
    if (this.workers.length > 0) throw new Error("data-path workers are already running");
    this.reactorCores = [cores[0] ?? 0];
    for (let i = 1; i < cores.length; i++) {
      const core = cores[i] as number;
      this.workers.push(
        await DataPathWorker.start({
          index: i,
          core,
          pin: o.pin,
          guestWindowBytes: o.guestWindowBytes,
          registry: this.bdevs,
          log: this.log,
        }),
      );
      this.reactorCores.push(core);
    }
  }

  /** Calls an RPC method in-process (what the CLI and web admin do through sockets). */
  call(method: string, params?: unknown): Promise<unknown> {
    return this.rpc.call(method, params, this);
  }

  /** Deletes every bdev (top layers first) and stops the reactor. */
  async shutdown(): Promise<void> {
    await shutdownVhost(this);
    await Promise.all(this.workers.map((w) => w.shutdown()));
    this.workers.length = 0;
    await shutdownNvmfTarget(this);
    for (const b of this.bdevs.list().reverse()) {
      try {
        await this.bdevs.unregister(b.name);
      } catch {
        // Still open by a user that is shutting down too: its memory goes with the process.
      }
    }
    // Controllers whose bdevs are gone get their shutdown notification (CC.SHN).
    await shutdownNvme(this);
    shutdownCryptoKeys(this);
    if (this.#running !== null) {
      await this.reactor.stop();
      await this.#running;
      this.#running = null;
    }
    this.reactor.close();
  }
}
