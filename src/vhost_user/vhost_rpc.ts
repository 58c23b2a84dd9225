/**
 * RPCs of the vhost-user-blk target (SPDK's names): vhost_create_blk_controller,
 * vhost_get_controllers, vhost_delete_controller; saved as subsystem "vhost_blk".
 * @module
 */
import { resolve } from "node:path";
import type { RpcCall } from "../bdev/bdev_module.ts";
import { BdevExistsError, BdevInvalidError, BdevNotFoundError } from "../bdev/errors.ts";
import type { AppContext } from "../rpc/context.ts";
import type { RpcTable } from "../rpc/rpc.ts";
import { VhostBlkBackend, type VhostBlkOptions } from "./blk_backend.ts";
import { ShardedVhostBackend } from "./sharded.ts";
import { VhostUserServer } from "./server.ts";
import type { BdevDesc } from "../bdev/mod.ts";
import { replicaSpecOf, wipeReplicaSpec } from "../bdev/replica.ts";
import type { DataPathWorker } from "../worker/workers.ts";
import { formatCpumask, parseCpumask } from "../worker/cpumask.ts";

/** A worker serving a replica of the controller's bdev, and the original held open meanwhile. */
interface WorkerHold {
  worker: DataPathWorker;
  desc: BdevDesc;
}

/**
 * Where a controller runs: wholly on a worker, or with its socket and
 * session on the main thread, its queues on the main reactor and (spread)
 * on workers through queue shards (src/vhost_user/sharded.ts).
 */
type Placement =
  | { kind: "main"; server: VhostUserServer; holds: WorkerHold[] }
  | { kind: "worker"; server: null; holds: [WorkerHold] };

interface Controller {
  ctrlr: string;
  devName: string;
  socket: string;
  numQueues: number;
  readonly: boolean;
  /** The cpumask the operator gave (saved as given), or null. */
  cpumask: string | null;
  /** Reactor index of its socket and session (0: the main thread). */
  reactor: number;
  /** Reactor index of each queue. */
  queueReactors: number[];
  placement: Placement;
}

const controllers = new WeakMap<AppContext, Map<string, Controller>>();

function table(ctx: AppContext): Map<string, Controller> {
  let m = controllers.get(ctx);
  if (m === undefined) controllers.set(ctx, m = new Map());
  return m;
}

const NAME_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

/**
 * Serves bdev `bdevName` of `registry` on a vhost-user-blk socket from
 * `reactor`: what a controller is, on the main thread or in a worker.
 */
export function serveVhostBlk(o: VhostBlkOptions & { socket: string }): VhostUserServer {
  return new VhostUserServer(o.socket, () => new VhostBlkBackend(o), o.log);
}

/** Registers the vhost methods. */
export function registerVhostRpcs(t: RpcTable<AppContext>): void {
  t.register("vhost_create_blk_controller", {
    help:
      "Serve a bdev to VMs on a vhost-user-blk socket (params: ctrlr, dev_name, socket, num_queues, readonly, cpumask)",
    mutating: true,
  }, async (p, ctx) => {
    const ctrlr = p.str("ctrlr", NAME_RE, "1-64 letters, digits and _ . : -");
    const devName = p.str("dev_name");
    const socket = resolve(p.optStr("socket") ?? `var/${ctrlr}.sock`);
    const numQueues = p.optInt("num_queues", { min: 1, max: 64 }) ?? 1;
    const readonly = p.optBool("readonly") ?? false;
    const cpumask = p.optStr("cpumask") ?? null;
    p.neutral("packed_ring", [false], "split rings only");
    p.done();
    const m = table(ctx);
    if (m.has(ctrlr)) throw new BdevExistsError(`vhost controller ${ctrlr}`);
    const bdev = ctx.bdevs.get(devName); // a clear "no bdev" error before anything is opened
    const queueReactors = chooseQueueReactors(ctx, [...m.values()], cpumask, numQueues);
    const used = [...new Set(queueReactors)];
    const onWorkers = used.filter((r) => r !== 0);
    // Replicas first: nothing listens until every reactor involved can serve the bdev.
    const holds: WorkerHold[] = [];
    try {
      for (const r of onWorkers) {
        const worker = ctx.workers[r - 1] as DataPathWorker;
        const spec = replicaSpecOf(bdev);
        const desc = ctx.bdevs.open(devName, !readonly);
        try {
          await worker.openReplica(spec);
        } catch (e) {
          wipeReplicaSpec(spec);
          desc.close();
          throw e;
        }
        holds.push({ worker, desc });
      }
    } catch (e) {
      await releaseHolds(holds, devName);
      throw e;
    }
    let placement: Placement;
    let reactor = 0;
    try {
      if (used.length === 1 && onWorkers.length === 1) {
        // Every queue on one worker: the worker serves the whole controller.
        reactor = used[0] as number;
        await (holds[0] as WorkerHold).worker.request({
          op: "vhost_create",
          ctrlr,
          socket,
          bdev: devName,
          numQueues,
          readonly,
        });
        placement = { kind: "worker", server: null, holds: [holds[0] as WorkerHold] };
      } else {
        const o = {
          registry: ctx.bdevs,
          reactor: ctx.reactor,
          bdevName: devName,
          numQueues,
          readOnly: readonly,
          log: ctx.log,
        };
        const workers = new Map(holds.map((h) => [h.worker.index, h.worker]));
        const server = new VhostUserServer(
          socket,
          () =>
            workers.size === 0 ? new VhostBlkBackend(o) : new ShardedVhostBackend({
              primary: new VhostBlkBackend(o),
              queueReactors,
              workers,
              ctrlr,
              bdevName: devName,
              readOnly: readonly,
              log: ctx.log,
            }),
          ctx.log,
        );
        placement = { kind: "main", server, holds };
      }
    } catch (e) {
      await releaseHolds(holds, devName);
      throw e;
    }
    m.set(ctrlr, {
      ctrlr,
      devName,
      socket,
      numQueues,
      readonly,
      cpumask,
      reactor,
      queueReactors,
      placement,
    });
    const where = used.length === 1
      ? `reactor ${reactor} on core ${ctx.reactorCores[reactor]}`
      : `queues on reactors ${queueReactors.join(",")}`;
    ctx.log(
      `vhost-user-blk ${ctrlr}: bdev ${devName} on ${socket} (${numQueues} queue(s), ${where})`,
    );
    return true;
  });

  t.register("vhost_get_controllers", {
    help: "List vhost controllers (params: name)",
  }, (p, ctx) => {
    const name = p.optStr("name");
    p.done();
    const all = [...table(ctx).values()].filter((c) => name === undefined || c.ctrlr === name);
    if (name !== undefined && all.length === 0) {
      throw new BdevNotFoundError(`vhost controller ${name}`);
    }
    return Promise.all(all.map(async (c) => ({
      ctrlr: c.ctrlr,
      cpumask: formatCpumask(c.queueReactors.map((r) => ctx.reactorCores[r] ?? 0)),
      socket: c.socket,
      // sluice's additions to SPDK's reply: the reactor of its socket (0: the main
      // thread), the reactor of each queue, and whether a front-end is connected now.
      reactor: c.reactor,
      queue_reactors: c.queueReactors,
      connected: await isConnected(c),
      backend_specific: {
        block: { bdev: c.devName, readonly: c.readonly, num_queues: c.numQueues },
      },
    })));
  });

  t.register("vhost_controller_disconnect", {
    help: "Drop the VM front-end connected to a vhost controller; the socket stays (params: ctrlr)",
  }, async (p, ctx) => {
    const ctrlr = p.str("ctrlr");
    p.done();
    const c = table(ctx).get(ctrlr);
    if (c === undefined) throw new BdevNotFoundError(`vhost controller ${ctrlr}`);
    const dropped = c.placement.kind === "main"
      ? c.placement.server.disconnect()
      : await c.placement.holds[0].worker.request({ op: "vhost_disconnect", ctrlr }) === true;
    if (!dropped) {
      throw new BdevInvalidError(`no VM is connected to vhost controller ${ctrlr}`);
    }
    ctx.log(`vhost controller ${ctrlr}: front-end disconnected by the operator`);
    return true;
  });

  t.register("vhost_delete_controller", {
    help: "Stop serving a vhost controller (params: ctrlr)",
    mutating: true,
  }, async (p, ctx) => {
    const ctrlr = p.str("ctrlr");
    p.done();
    const c = table(ctx).get(ctrlr);
    if (c === undefined) throw new BdevNotFoundError(`vhost controller ${ctrlr}`);
    table(ctx).delete(ctrlr);
    await stopController(c);
  });
}

/** The config calls that rebuild the vhost controllers. */
export function vhostConfigCalls(ctx: AppContext): RpcCall[] {
  return [...table(ctx).values()].map((c) => ({
    method: "vhost_create_blk_controller",
    params: {
      ctrlr: c.ctrlr,
      dev_name: c.devName,
      socket: c.socket,
      num_queues: c.numQueues,
      readonly: c.readonly,
      ...(c.cpumask === null ? {} : { cpumask: c.cpumask }),
    },
  }));
}

async function isConnected(c: Controller): Promise<boolean> {
  if (c.placement.kind === "main") return c.placement.server.connected;
  try {
    return await c.placement.holds[0].worker.request({ op: "vhost_connected", ctrlr: c.ctrlr }) ===
      true;
  } catch {
    return false; // the worker is gone: nothing is connected to it
  }
}

/** Stops serving a controller (draining its rings) and lets go of what it held. */
async function stopController(c: Controller): Promise<void> {
  try {
    if (c.placement.kind === "main") await c.placement.server.close();
    else await c.placement.holds[0].worker.request({ op: "vhost_delete", ctrlr: c.ctrlr });
  } finally {
    await releaseHolds(c.placement.holds, c.devName);
  }
}

/** Closes the replicas on workers and the descriptors held for them. */
async function releaseHolds(holds: readonly WorkerHold[], devName: string): Promise<void> {
  for (const h of holds) {
    try {
      await h.worker.closeReplica(devName);
    } catch {
      // The worker is gone: so is its replica.
    } finally {
      h.desc.close();
    }
  }
}

/**
 * The reactor of each queue of a new controller: among those `cpumask`
 * names (all when absent), each queue goes to the one serving the fewest
 * queues so far; on a tie a worker before the main thread, which also runs
 * the control plane and the NVMe/TCP target. A multiqueue controller whose
 * mask names several reactors is so spread over them.
 * @throws {BdevInvalidError} when the mask names no reactor of this appliance
 */
function chooseQueueReactors(
  ctx: AppContext,
  existing: Controller[],
  cpumask: string | null,
  numQueues: number,
): number[] {
  const cores = cpumask === null ? null : new Set(parseCpumask(cpumask));
  const candidates: number[] = [];
  ctx.reactorCores.forEach((core, i) => {
    if (cores === null || cores.has(core)) candidates.push(i);
  });
  if (candidates.length === 0) {
    throw new BdevInvalidError(
      `cpumask ${cpumask} names no core with a reactor; this appliance runs reactors on ${
        formatCpumask(ctx.reactorCores)
      } (serve --cpumask)`,
    );
  }
  const load = new Map<number, number>();
  for (const c of existing) for (const r of c.queueReactors) load.set(r, (load.get(r) ?? 0) + 1);
  const out: number[] = [];
  for (let q = 0; q < numQueues; q++) {
    let best = candidates[0] as number;
    for (const i of candidates) {
      const li = load.get(i) ?? 0, lb = load.get(best) ?? 0;
      if (li < lb || (li === lb && best === 0 && i !== 0)) best = i;
    }
    load.set(best, (load.get(best) ?? 0) + 1);
    out.push(best);
  }
  return out;
}

/** Stops every controller of the appliance. */
export async function shutdownVhost(ctx: AppContext): Promise<void> {
  const m = controllers.get(ctx);
  if (m === undefined) return;
  controllers.delete(ctx);
  await Promise.all([...m.values()].map(stopController));
}
