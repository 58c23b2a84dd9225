/**
 * spdk_nvme_perf's `-r` transport ID: space-separated `key:value` pairs,
 * e.g. `trtype:TCP traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2026-11.dev.sluice:default`.
 * @module
 */

/** A parsed transport ID. Keys are lower-case; trtype is upper-case. */
export interface TransportId {
  trtype: "TCP" | "VHOST-USER";
  traddr?: string;
  trsvcid?: string;
  subnqn?: string;
  hostnqn?: string;
  /** vhost-user socket path. */
  path?: string;
  /** NVMe/TCP digests: "hdgst:1 ddgst:1". */
  hdgst: boolean;
  ddgst: boolean;
  /** `ns:N`: the namespace to use, when given. */
  ns?: number;
}

const KEYS = [
  "trtype",
  "adrfam",
  "traddr",
  "trsvcid",
  "subnqn",
  "hostnqn",
  "path",
  "hdgst",
  "ddgst",
  "ns",
];

/** Parses `-r`; throws a RangeError naming the bad part. */
export function parseTransportId(s: string): TransportId {
  const kv = new Map<string, string>();
  for (const part of s.trim().split(/\s+/)) {
    const i = part.indexOf(":");
    if (i <= 0) throw new RangeError(`-r: "${part}" is not key:value`);
    const key = part.slice(0, i).toLowerCase();
    if (!KEYS.includes(key)) {
      throw new RangeError(`-r: unknown key "${key}" (known: ${KEYS.join(", ")})`);
    }
    kv.set(key, part.slice(i + 1));
  }
  const trtype = (kv.get("trtype") ?? "").toUpperCase();
  const flag = (k: string) => {
    const v = kv.get(k);
    if (v === undefined) return false;
    if (v !== "0" && v !== "1") throw new RangeError(`-r: ${k} must be 0 or 1, got "${v}"`);
    return v === "1";
  };
  const nsText = kv.get("ns");
  let ns: number | undefined;
  if (nsText !== undefined) {
    ns = Number(nsText);
    if (!/^\d+$/.test(nsText) || ns < 1 || ns > 0xfffffffe) {
      throw new RangeError(`-r: ns must be a namespace ID from 1 to 4294967294, got "${nsText}"`);
    }
  }
  if (trtype === "TCP") {
    for (const k of ["traddr", "trsvcid", "subnqn"]) {
      if (!kv.get(k)) throw new RangeError(`-r: trtype:TCP needs ${k}`);
    }
    const port = Number(kv.get("trsvcid"));
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(`-r: trsvcid must be a TCP port, got "${kv.get("trsvcid")}"`);
    }
    return {
      trtype: "TCP",
      traddr: kv.get("traddr"),
      trsvcid: kv.get("trsvcid"),
      subnqn: kv.get("subnqn"),
      hostnqn: kv.get("hostnqn"),
      hdgst: flag("hdgst"),
      ddgst: flag("ddgst"),
      ...(ns !== undefined ? { ns } : {}),
    };
  }
  if (trtype === "VHOST-USER") {
    if (!kv.get("path")) throw new RangeError("-r: trtype:vhost-user needs path");
    return { trtype: "VHOST-USER", path: kv.get("path"), hdgst: false, ddgst: false };
  }
  throw new RangeError(`-r: trtype must be TCP or vhost-user, got "${kv.get("trtype") ?? ""}"`);
}
