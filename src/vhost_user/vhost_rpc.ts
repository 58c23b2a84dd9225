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
import { VhostBlkBackend } from "./blk_backend.ts";
import { VhostUserServer } from "./server.ts";

interface Controller {
  ctrlr: string;
  devName: string;
  socket: string;
  numQueues: number;
  readonly: boolean;
  server: VhostUserServer;
}

const controllers = new WeakMap<AppContext, Map<string, Controller>>();

function table(ctx: AppContext): Map<string, Controller> {
  let m = controllers.get(ctx);
  if (m === undefined) controllers.set(ctx, m = new Map());
  return m;
}

const NAME_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Registers the vhost methods. */
export function registerVhostRpcs(t: RpcTable<AppContext>): void {
  t.register("vhost_create_blk_controller", {
    help:
      "Serve a bdev to VMs on a vhost-user-blk socket (params: ctrlr, dev_name, socket, num_queues, readonly, cpumask)",
    mutating: true,
  }, (p, ctx) => {
    const ctrlr = p.str("ctrlr", NAME_RE, "1-64 letters, digits and _ . : -");
    const devName = p.str("dev_name");
    const socket = resolve(p.optStr("socket") ?? `var/${ctrlr}.sock`);
    const numQueues = p.optInt("num_queues", { min: 1, max: 64 }) ?? 1;
    const readonly = p.optBool("readonly") ?? false;
    p.neutral("cpumask", ["0x1", "1", "0x3", "3"], "one data-path reactor serves every controller");
    p.neutral("packed_ring", [false], "split rings only");
    p.done();
    const m = table(ctx);
    if (m.has(ctrlr)) throw new BdevExistsError(`vhost controller ${ctrlr}`);
    ctx.bdevs.get(devName); // a clear "no bdev" error before anything is opened
    const server = new VhostUserServer(
      socket,
      () =>
        new VhostBlkBackend({
          registry: ctx.bdevs,
          reactor: ctx.reactor,
          bdevName: devName,
          numQueues,
          readOnly: readonly,
          log: ctx.log,
        }),
      ctx.log,
    );
    m.set(ctrlr, { ctrlr, devName, socket, numQueues, readonly, server });
    ctx.log(`vhost-user-blk ${ctrlr}: bdev ${devName} on ${socket} (${numQueues} queue(s))`);
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
    return all.map((c) => ({
      ctrlr: c.ctrlr,
      socket: c.socket,
      // sluice's addition to SPDK's reply: whether a front-end is connected now.
      connected: c.server.connected,
      backend_specific: {
        block: { bdev: c.devName, readonly: c.readonly, num_queues: c.numQueues },
      },
    }));
  });

  t.register("vhost_controller_disconnect", {
    help: "Drop the VM front-end connected to a vhost controller; the socket stays (params: ctrlr)",
  }, (p, ctx) => {
    const ctrlr = p.str("ctrlr");
    p.done();
    const c = table(ctx).get(ctrlr);
    if (c === undefined) throw new BdevNotFoundError(`vhost controller ${ctrlr}`);
    if (!c.server.disconnect()) {
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
    await c.server.close();
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
    },
  }));
}

/** Stops every controller of the appliance. */
export async function shutdownVhost(ctx: AppContext): Promise<void> {
  const m = controllers.get(ctx);
  if (m === undefined) return;
  controllers.delete(ctx);
  await Promise.all([...m.values()].map((c) => c.server.close()));
}
