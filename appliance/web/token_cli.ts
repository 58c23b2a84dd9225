/**
 * `sluice admin-token`: bearer tokens for scripts without a browser. Works
 * on `<state-dir>/admin.json` directly (as its owner), with the appliance
 * running or not; a running one takes the change in at its next request.
 * @module
 */
import { resolve } from "node:path";
import { AdminAuth, AdminFileError } from "./auth.ts";

export const ADMIN_TOKEN_USAGE =
  `Usage: sluice admin-token <create NAME | list | revoke ID> [options]

Manages the web admin's bearer tokens (docs/admin.md) in <state-dir>/admin.json.
'create' prints the new token once: it is stored only as a hash.

Options:
  --state-dir DIR   Where the appliance keeps its state (default ./var)
  -h, --help        Show this help

Example:
  TOKEN=$(sluice admin-token create prometheus)
  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/metrics`;

/** Runs `sluice admin-token <args>`; returns the exit status. */
export async function adminToken(args: readonly string[]): Promise<number> {
  const rest: string[] = [];
  let stateDir = "./var";
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === "-h" || a === "--help") {
      console.log(ADMIN_TOKEN_USAGE);
      return 0;
    }
    if (a === "--state-dir") {
      const v = args[++i];
      if (v === undefined) return usage("--state-dir needs a directory");
      stateDir = v;
    } else if (a.startsWith("-")) return usage(`unknown option ${a}`);
    else rest.push(a);
  }
  const [verb, arg, extra] = rest;
  if (extra !== undefined) return usage(`unexpected argument '${extra}'`);
  let auth: AdminAuth;
  try {
    ({ auth } = await AdminAuth.open(resolve(stateDir, "admin.json"), { create: false }));
  } catch (e) {
    if (!(e instanceof AdminFileError)) throw e;
    console.error(`sluice admin-token: ${e.message}`);
    return 1;
  }
  switch (verb) {
    case "create": {
      if (arg === undefined) return usage("create needs a NAME");
      try {
        const { token } = await auth.createToken(arg);
        // Only the token on stdout, so TOKEN=$(sluice admin-token create x) works.
        console.log(token);
        return 0;
      } catch (e) {
        console.error(`sluice admin-token: ${e instanceof Error ? e.message : e}`);
        return 1;
      }
    }
    case "list":
      if (arg !== undefined) return usage(`unexpected argument '${arg}'`);
      for (const t of auth.listTokens()) console.log(`${t.id}  ${t.created}  ${t.name}`);
      return 0;
    case "revoke":
      if (arg === undefined) return usage("revoke needs an ID (see 'list')");
      if (!(await auth.revokeToken(arg))) {
        console.error(`sluice admin-token: no token with id ${arg}`);
        return 1;
      }
      return 0;
    default:
      return usage(verb === undefined ? "say create, list or revoke" : `unknown verb '${verb}'`);
  }
}

function usage(msg: string): number {
  console.error(`sluice admin-token: ${msg}\nRun 'sluice admin-token --help' for usage.`);
  return 2;
}
