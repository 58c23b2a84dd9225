/**
 * Pieces the process-level benches (nvmf_bench.ts, vhost_bench.ts) share:
 * tracked child processes pinned to a CPU, machine and process figures from
 * /proc, and the Markdown table they print.
 * @module
 */
import { sleep } from "../src/testing/wait.ts";

/** Child processes: every one started is tracked and ended. */
export class Children {
  readonly #live = new Set<Deno.ChildProcess>();
  readonly pin: boolean;

  constructor(pin: boolean) {
    this.pin = pin;
  }

  /** `cmd args` on `cpu` (a core, or a taskset list such as "0,1"; through taskset when pinning). */
  spawn(
    cpu: number | string,
    cmd: string,
    args: string[],
    stdout: "piped" | "null" = "piped",
    stderr: "piped" | "inherit" = "piped",
  ): Deno.ChildProcess {
    const [c, a] = this.pin ? ["taskset", ["-c", String(cpu), cmd, ...args]] : [cmd, args];
    const child = new Deno.Command(c, { args: a, stdin: "null", stdout, stderr }).spawn();
    this.#live.add(child);
    child.status.then(() => this.#live.delete(child));
    return child;
  }

  /** Runs to the end (killed after `timeoutMs`); returns its output. */
  async run(
    cpu: number,
    cmd: string,
    args: string[],
    timeoutMs: number,
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const child = this.spawn(cpu, cmd, args);
    const timer = setTimeout(() => kill(child, "SIGKILL"), timeoutMs);
    try {
      const out = await child.output();
      const dec = new TextDecoder();
      return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM to everyone still running, SIGKILL to whoever is left after 3 s. */
  async endAll(): Promise<void> {
    const left = [...this.#live];
    for (const c of left) kill(c, "SIGTERM");
    const timer = setTimeout(() => {
      for (const c of left) kill(c, "SIGKILL");
    }, 3000);
    await Promise.all(left.map((c) => c.status.catch(() => {})));
    clearTimeout(timer);
  }
}

/** A bench run's children, from {@link benchChildren}. */
export interface BenchChildren {
  /** Whether children are pinned to CPUs (taskset there and 2+ CPUs). */
  pin: boolean;
  kids: Children;
  /** Ends every child still running and removes the signal handlers. */
  release(): Promise<void>;
}

/** Children for a bench run, all ended on SIGINT or SIGTERM (then exit 130, `name` saying so). */
export async function benchChildren(name: string): Promise<BenchChildren> {
  const pin = (await which("taskset")) && navigator.hardwareConcurrency >= 2;
  const kids = new Children(pin);
  const onSignal = () => {
    console.error(`\n${name}: interrupted; ending every process it started`);
    kids.endAll().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  return {
    pin,
    kids,
    async release() {
      await kids.endAll();
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
    },
  };
}

/** Sends `sig`; a child already gone is fine. */
export function kill(c: Deno.ChildProcess, sig: Deno.Signal): void {
  try {
    c.kill(sig);
  } catch { /* already gone */ }
}

/** Whether `cmd` is on PATH. */
export async function which(cmd: string): Promise<boolean> {
  try {
    const out = await new Deno.Command("sh", {
      args: ["-c", `command -v ${cmd}`],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

/** A process's anonymous resident memory (RssAnon), in bytes; 0 when it cannot be read. */
export async function rssAnonBytes(pid: number): Promise<number> {
  try {
    const m = /RssAnon:\s+(\d+) kB/.exec(await Deno.readTextFile(`/proc/${pid}/status`));
    return m === null ? 0 : Number(m[1]) * 1024;
  } catch {
    return 0;
  }
}

/** CPU time used by everything on the machine over `ms`, as a share of all CPUs. */
export async function machineBusy(ms: number): Promise<number> {
  const read = async () => {
    const line = (await Deno.readTextFile("/proc/stat")).split("\n")[0] ?? "";
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { idle, total: v.reduce((a, b) => a + b, 0) };
  };
  try {
    const a = await read();
    await sleep(ms);
    const b = await read();
    return b.total > a.total ? 1 - (b.idle - a.idle) / (b.total - a.total) : 0;
  } catch {
    return 0;
  }
}

/** Measures machineBusy over `ms` and prints a warning above the figures when it is over 10%. */
export async function warnIfBusy(ms: number): Promise<void> {
  const busy = await machineBusy(ms);
  if (busy > 0.1) {
    console.log(
      `WARNING: something else keeps ${(busy * 100).toFixed(0)}% of this machine's CPUs busy ` +
        "(other tests or builds?): every figure below shares the CPUs with it.\n",
    );
  }
}

/** Prints a Markdown table: the first column left-aligned, the others right-aligned. */
export function table(header: string[], rows: string[][]): void {
  const cells = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    `| ${
      r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join(
        " | ",
      )
    } |`;
  console.log(line(header));
  console.log(
    `| ${widths.map((w, i) => (i === 0 ? "-".repeat(w) : `${"-".repeat(w - 1)}:`)).join(" | ")} |`,
  );
  for (const r of rows) console.log(line(r));
}

/** 12345 -> "12.3k". */
export const k = (n: number) => (n >= 1000 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0));
/** One decimal. */
export const f1 = (n: number) => n.toFixed(1);
/** a/b as "1.23x"; "-" when b is 0. */
export const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}x` : "-");
