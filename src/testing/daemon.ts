/**
 * `sluice serve` as a child process for end-to-end tests: writes the config
 * (SPDK JSON layout), starts the daemon, waits for its "ready" line, keeps
 * its output flowing, and stops it with SIGTERM.
 * @module
 */
import { GUARD_MS } from "./wait.ts";

const MAIN = new URL("../../appliance/main.ts", import.meta.url).pathname;

/** A running daemon. */
export interface Daemon {
  child: Deno.ChildProcess;
  /** The lines it printed up to "ready". */
  log: string[];
  /** The JSON-RPC socket. */
  socket: string;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number>;
}

/** Options of {@link startDaemon}. */
export interface DaemonOptions {
  /** Config document written to `<stateDir>/config.json`; none: the embedded default. */
  config?: unknown;
  /** More `serve` arguments (e.g. `--nvmf-listen`). */
  args?: string[];
  /** Copy the daemon's output after "ready" to this process's stdout (default: drain it). */
  echo?: boolean;
  /** Called with the daemon's stdout after "ready", chunk by chunk (tests watching its log). */
  onOutput?: (text: string) => void;
}

/** Starts `sluice serve --state-dir stateDir` and waits until it is ready. */
export async function startDaemon(stateDir: string, o: DaemonOptions = {}): Promise<Daemon> {
  if (o.config !== undefined) {
    await Deno.writeTextFile(`${stateDir}/config.json`, JSON.stringify(o.config));
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "serve", "--state-dir", stateDir, ...(o.args ?? [])],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const log: string[] = [];
  let partial = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), GUARD_MS)));
  try {
    while (!log.some((l) => l.includes("ready"))) {
      const r = await Promise.race([reader.read(), timeout]);
      if (r === "timeout") {
        throw new Error(`sluice serve not ready after ${GUARD_MS} ms:\n${log.join("\n")}`);
      }
      if (r.done) throw new Error(`sluice serve exited before ready:\n${log.join("\n")}${partial}`);
      const lines = (partial + r.value).split("\n");
      partial = lines.pop() ?? "";
      log.push(...lines);
    }
  } catch (e) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await reader.cancel().catch(() => {});
    await child.status;
    throw e;
  } finally {
    clearTimeout(timer);
  }
  if (o.echo) Deno.stdout.writeSync(new TextEncoder().encode(log.join("\n") + "\n"));
  // Keep the pipe drained so the daemon never blocks on a full stdout.
  const relay = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      o.onOutput?.(value);
      if (o.echo) Deno.stdout.writeSync(new TextEncoder().encode(value));
    }
  })().catch(() => {});
  return {
    child,
    log,
    socket: `${stateDir}/sluice.sock`,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const { code } = await child.status;
      await relay;
      return code;
    },
  };
}

/** An `onOutput` that appends the daemon's output to `lines`, line by line (a partial line waits). */
export function collectLines(lines: string[]): (text: string) => void {
  let partial = "";
  return (text) => {
    const parts = (partial + text).split("\n");
    partial = parts.pop() ?? "";
    lines.push(...parts);
  };
}
