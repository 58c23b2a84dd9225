/**
 * The entry of a data-path worker: a Worker thread with its own reactor
 * (its own io_uring), its own WASM instance and guest window, and its own
 * bdev registry holding replicas of the main thread's bdevs
 * (src/bdev/replica.ts). The main thread places vhost-user-blk controllers
 * here by cpumask; the worker then serves them entirely: the vhost-user
 * socket, the rings, the bdev I/O and the completions. The main thread only
 * sends control requests (src/worker/protocol.ts) and reads counters.
 * @module
 */
/// <reference lib="deno.worker" />
import { BdevError, BdevIoStats, BdevRegistry } from "../bdev/mod.ts";
import { IO_STATS_WORDS, ioStatsToWords, ReplicaSet } from "../bdev/replica.ts";
import { KeyStore } from "../crypto/keys.ts";
import { Reactor } from "../reactor/mod.ts";
import type { VhostUserServer } from "../vhost_user/server.ts";
import { serveVhostBlk } from "../vhost_user/vhost_rpc.ts";
import { configureGuestWindow } from "../../wasm/kernels.ts";
import { pinThread } from "./cpumask.ts";
import { ShardHost } from "./shard_host.ts";
import type { ReplicaStatsList, WorkerEnvelope, WorkerMessage, WorkerRequest } from "./protocol.ts";

/** How often counters go to the main thread (when they changed). */
const STATS_INTERVAL_MS = 1000;

let reactor: Reactor | null = null;
let running: Promise<void> | null = null;
let statsTimer: ReturnType<typeof setInterval> | undefined;
const registry = new BdevRegistry();
const keys = new KeyStore();
const replicas = new ReplicaSet(registry, keys);
const controllers = new Map<string, VhostUserServer>();
/** Queue shards of devices whose session is on the main thread (src/vhost_user/sharded.ts). */
const shards = new Map<string, ShardHost>();
let index = 0;

function post(m: WorkerMessage): void {
  self.postMessage(m);
}

const log = (msg: string): void => post({ kind: "log", msg });

function theReactor(): Reactor {
  if (reactor === null) throw new Error("data-path worker: not initialised");
  return reactor;
}

function replicaStats(): ReplicaStatsList {
  const out: ReplicaStatsList = [];
  for (const b of registry.list()) {
    const s = new BdevIoStats();
    b.addStatsTo(s);
    const w = new Float64Array(IO_STATS_WORDS);
    ioStatsToWords(s, w);
    out.push([b.name, w]);
  }
  return out;
}

let lastSignature = -1;
/** Posts the counters when they moved since the last post: an idle worker stays quiet. */
function postStats(force = false): void {
  const r = reactor;
  if (r === null) return;
  const sig = r.stats.busyIterations + r.stats.idleParks + r.stats.cqesReaped;
  if (!force && sig === lastSignature) return;
  lastSignature = sig;
  post({ kind: "stats", reactor: { ...r.stats }, runningMs: r.runningMs, bdevs: replicaStats() });
}

async function handle(req: WorkerRequest): Promise<unknown> {
  switch (req.op) {
    case "init": {
      index = req.index;
      configureGuestWindow(req.guestWindowBytes);
      if (req.core !== null) pinThread(req.core);
      reactor = new Reactor();
      running = reactor.run();
      statsTimer = setInterval(postStats, STATS_INTERVAL_MS);
      return { index };
    }
    case "replica_open":
      // bdev_set_options may have run on the main thread after this worker started.
      if (registry.list().length === 0) registry.setOptions({ ioPoolSize: req.ioPoolSize });
      await replicas.open(req.spec);
      theReactor().wake();
      return true;
    case "replica_close": {
      const gone = await replicas.close(req.name);
      const out: ReplicaStatsList = [];
      for (const [name, s] of gone) {
        const w = new Float64Array(IO_STATS_WORDS);
        ioStatsToWords(s, w);
        out.push([name, w]);
      }
      return out;
    }
    case "vhost_create": {
      if (controllers.has(req.ctrlr)) {
        throw new BdevError(`vhost controller ${req.ctrlr} exists on reactor ${index}`, -17);
      }
      const server = serveVhostBlk({
        socket: req.socket,
        registry,
        reactor: theReactor(),
        bdevName: req.bdev,
        numQueues: req.numQueues,
        readOnly: req.readonly,
        log,
      });
      controllers.set(req.ctrlr, server);
      return true;
    }
    case "vhost_delete": {
      const server = controllers.get(req.ctrlr);
      if (server === undefined) return false;
      controllers.delete(req.ctrlr);
      await server.close();
      return true;
    }
    case "vhost_disconnect":
      return controllers.get(req.ctrlr)?.disconnect() ?? false;
    case "vhost_connected":
      return controllers.get(req.ctrlr)?.connected ?? false;
    case "shard": {
      const { shard: id, call } = req;
      if (call.m === "open") {
        if (shards.has(id)) throw new Error(`queue shard ${id} exists`);
        shards.set(id, new ShardHost(registry, theReactor(), call, log, index));
        return true;
      }
      const host = shards.get(id);
      if (host === undefined) throw new Error(`no queue shard ${id} on reactor ${index}`);
      try {
        return await host.apply(call);
      } finally {
        if (call.m === "close") shards.delete(id);
      }
    }
    case "shutdown": {
      await Promise.all([...controllers.values()].map((s) => s.close()));
      controllers.clear();
      await Promise.all([...shards.values()].map((h) => h.apply({ m: "close" })));
      shards.clear();
      await replicas.closeAll();
      keys.clear();
      clearInterval(statsTimer);
      postStats(true);
      if (reactor !== null) {
        await reactor.stop();
        await running;
        reactor.close();
        reactor = null;
      }
      return true;
    }
  }
}

self.onmessage = async (e: MessageEvent<WorkerEnvelope>) => {
  const { id, req } = e.data;
  try {
    post({ kind: "reply", id, ok: true, value: await handle(req) });
  } catch (err) {
    post({
      kind: "reply",
      id,
      ok: false,
      message: err instanceof Error ? err.message : String(err),
      code: err instanceof BdevError ? err.code : null,
    });
  }
};
