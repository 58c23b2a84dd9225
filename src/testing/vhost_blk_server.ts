/**
 * sluice's vhost-user-blk back-end served in this process for tests: a
 * VhostUserServer at a socket path, a VhostBlkBackend per connection over
 * a bdev of the caller's registry, on a reactor of its own.
 * @module
 */
import type { BdevRegistry } from "../bdev/mod.ts";
import { VhostBlkBackend } from "../vhost_user/blk_backend.ts";
import { VhostUserServer } from "../vhost_user/server.ts";
import { startReactor } from "./reactor_thread.ts";

/** Options of {@link serveVhostBlk}. */
export interface VhostBlkServerOptions {
  /** The socket the server listens on. */
  path: string;
  registry: BdevRegistry;
  bdevName: string;
  numQueues: number;
}

/** A running server; `logs` collects the server's and the back-ends' lines. */
export interface VhostBlkServer {
  logs: string[];
  /** Closes the server, then stops the reactor (which checks no I/O is left in flight). */
  stop(): Promise<void>;
}

/** Starts a reactor and a vhost-user-blk server on it (read-write). */
export async function serveVhostBlk(o: VhostBlkServerOptions): Promise<VhostBlkServer> {
  const r = await startReactor();
  const logs: string[] = [];
  const server = new VhostUserServer(
    o.path,
    () =>
      new VhostBlkBackend({
        registry: o.registry,
        reactor: r.thread,
        bdevName: o.bdevName,
        numQueues: o.numQueues,
        readOnly: false,
        log: (m) => logs.push(m),
      }),
    (m) => logs.push(m),
  );
  return {
    logs,
    async stop() {
      await server.close();
      await r.stop();
    },
  };
}
