/**
 * The Discovery log page a host reads from the discovery controller: one
 * entry per (NVM subsystem that allows the host) × (that subsystem's
 * listeners), as NVMe over Fabrics 1.1 and SPDK's discovery.c lay it out.
 * @module
 */
import {
  discoveryLogBytes,
  NVME_CNTLID_DYNAMIC,
  NvmfAdrfam,
  NvmfSubtype,
  NvmfTcpSectype,
  NvmfTreq,
  NvmfTrtype,
  writeDiscoveryLogEntry,
  writeDiscoveryLogHeader,
} from "../nvme/mod.ts";
import type { NvmfSubsystem } from "./subsystem.ts";

/** What the log reports besides the subsystems. */
export interface DiscoveryLogContext {
  /** Generation counter: changes whenever the log's content may have. */
  genctr: number;
  /** Admin Max SQ Size the entries advertise (the transport's max_aq_depth). */
  asqsz: number;
}

/**
 * Builds the whole log page for `hostnqn`. A listener on a wildcard address
 * (0.0.0.0, ::) is reported with `localTraddr`, the address the host used
 * to reach the discovery controller: a host cannot connect to "any".
 */
export function buildDiscoveryLog(
  subsystems: Iterable<NvmfSubsystem>,
  hostnqn: string,
  localTraddr: string,
  ctx: DiscoveryLogContext,
): Uint8Array {
  const entries: { sub: NvmfSubsystem; index: number }[] = [];
  for (const sub of subsystems) {
    if (sub.isDiscovery || !sub.hostAllowed(hostnqn)) continue;
    for (let i = 0; i < sub.listeners.length; i++) entries.push({ sub, index: i });
  }
  const out = new Uint8Array(discoveryLogBytes(entries.length));
  writeDiscoveryLogHeader(out, ctx.genctr, entries.length);
  entries.forEach(({ sub, index }, i) => {
    const l = sub.listeners[index];
    if (l === undefined) return;
    const wildcard = l.traddr === "0.0.0.0" || l.traddr === "::";
    writeDiscoveryLogEntry(out, i, {
      trtype: NvmfTrtype.Tcp,
      adrfam: l.adrfam === "IPv6" ? NvmfAdrfam.Ipv6 : NvmfAdrfam.Ipv4,
      subtype: NvmfSubtype.Nvme,
      treq: NvmfTreq.SecureChannelNotRequired | NvmfTreq.DisableSqFlowControlSupported,
      portid: l.portid,
      cntlid: NVME_CNTLID_DYNAMIC,
      asqsz: ctx.asqsz,
      trsvcid: l.trsvcid,
      subnqn: sub.nqn,
      traddr: wildcard ? localTraddr : l.traddr,
      sectype: NvmfTcpSectype.None,
    });
  });
  return out;
}
