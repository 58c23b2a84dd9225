/**
 * Operator actions on live NVMe-oF connections (sluice's own method; SPDK
 * has no equivalent): end one controller's association, e.g. a host that
 * misbehaves or must move. The host may connect again if it is allowed.
 * @module
 */
import type { AppContext } from "../rpc/context.ts";
import { RpcError } from "../rpc/errors.ts";
import type { RpcTable } from "../rpc/rpc.ts";
import { nvmfTarget } from "./nvmf_rpc.ts";

/** Registers nvmf_subsystem_disconnect_controller. */
export function registerNvmfConnectionRpcs(table: RpcTable<AppContext>): void {
  table.register("nvmf_subsystem_disconnect_controller", {
    help:
      "Disconnect a host's controller and all its queues (params: nqn, cntlid); the host may reconnect",
  }, (p, ctx) => {
    const nqn = p.str("nqn");
    const cntlid = p.int("cntlid", { min: 1, max: 0xffef });
    p.done();
    const c = nvmfTarget(ctx).subsystem(nqn).controllers.get(cntlid);
    if (c === undefined) throw new RpcError(-19, `no controller ${cntlid} on ${nqn}`);
    ctx.log(`nvmf: ${nqn}: disconnecting controller ${cntlid} (host ${c.hostnqn}) on request`);
    c.destroy("disconnected by the operator");
  });
}
