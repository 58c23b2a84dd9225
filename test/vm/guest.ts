/**
 * Runs one shell script inside a throw-away QEMU guest (TCG) and returns its exit code.
 *
 * The guest boots Debian's kernel (PVH, `-kernel vmlinux`) with an initramfs made of the lab's
 * pieces (see `setup.ts`) plus a small cpio holding the script as `/test.sh`, `/guest.env` and any
 * extra files. The guest's `/init` mounts the usual filesystems, loads the requested modules,
 * optionally configures the network, runs `/test.sh` from `/root`, prints
 * `SLUICE_GUEST_EXIT=<rc>` and makes QEMU exit through `isa-debug-exit`.
 *
 * A script's own exit code, whatever it is, comes back in {@linkcode GuestResult.exitCode}. When
 * the guest never reports one (kernel panic, timeout, QEMU error, ...), {@linkcode runGuest}
 * throws a {@linkcode GuestError} that says which. QEMU is always gone when the promise settles,
 * and it dies with the calling process (parent-death signal) if that is killed.
 *
 * Besides the console (`output`), a guest can write clean results to `/dev/report` (the second
 * serial port, raw): they come back as `report`, without kernel messages mixed in.
 *
 * @example
 * ```ts
 * import { runGuest } from "./guest.ts";
 * const r = await runGuest({
 *   name: "hello",
 *   tools: false,
 *   script: 'uname -r > /dev/report; exit 3',
 * });
 * console.log(r.exitCode, r.report); // 3 "6.1.0-...-amd64\n"
 * ```
 *
 * @module
 */

import { type LabManifest, labPaths, readLab } from "./lab.ts";
import { which } from "./exec.ts";
import { BufferSink, CpioWriter } from "./cpio.ts";

/** A port of the guest published on the host through QEMU user networking. */
export interface HostForward {
  /** Host port (on `hostAddr`). */
  hostPort: number;
  /** Guest port (on 10.0.2.15). */
  guestPort: number;
  /** Host address to listen on; default 127.0.0.1. */
  hostAddr?: string;
  /** Default tcp. */
  proto?: "tcp" | "udp";
}

/** What to run and how to configure the guest. */
export interface GuestOptions {
  /** The test: shell script text (`#!/bin/sh` is added if missing), or a URL of a script file. */
  script: string | URL;
  /** Name for logs and the run directory; default "guest". */
  name?: string;
  /** Include fio, nvme-cli, mkfs.ext4, blkdiscard (about +1 s of boot); default true. */
  tools?: boolean;
  /** Include deno (needs memMiB >= 512); default false. */
  deno?: boolean;
  /** Guest RAM in MiB; default 512, 1024 with deno. */
  memMiB?: number;
  /** Virtual CPUs; default 2. */
  smp?: number;
  /** QEMU machine type; q35 is needed for intel-iommu (VFIO). Default pc. */
  machine?: "pc" | "q35";
  /**
   * An emulated Intel IOMMU for VFIO in the guest: `-device intel-iommu,intremap=on` as the first
   * device and `intel_iommu=on` on the kernel command line; implies (and needs) q35. Under TCG
   * `kernel-irqchip=split` is not needed (only KVM's in-kernel irqchip requires it).
   */
  iommu?: boolean;
  /** Kernel modules to load before the test (names as for modprobe). */
  modules?: readonly string[];
  /** virtio-net on QEMU user networking: guest 10.0.2.15/24, host loopback is 10.0.2.2. */
  net?: boolean;
  /** Guest ports to publish on the host (implies net). */
  hostfwd?: readonly HostForward[];
  /** Guest RAM as a shared memfd (`share=on`) with a NUMA node, as vhost-user backends need. */
  sharedMem?: boolean;
  /** Extra QEMU arguments, for example devices (`-drive`, `-chardev`, `-device`). */
  qemuArgs?: readonly string[];
  /** Extra kernel command line arguments. */
  kernelArgs?: readonly string[];
  /** Variables exported to the test. */
  env?: Readonly<Record<string, string>>;
  /** Extra files for the guest: absolute guest path -> contents, or a URL of a host file. */
  files?: Readonly<Record<string, string | Uint8Array | URL>>;
  /** Seconds until QEMU is killed and a timeout reported (per boot); default 300. */
  timeoutSec?: number;
  /**
   * Seconds for the kernel to start /init; default 60 (a boot takes 2-5 s). A guest that misses
   * it is killed, its CPU state saved to `hang.txt` in its run directory, and booted again.
   */
  bootTimeoutSec?: number;
  /** How many times a guest that did not boot is booted again; default 1. */
  bootRetries?: number;
  /** Aborting kills QEMU. */
  signal?: AbortSignal;
  /** Copy the console to stderr while the guest runs; default `SLUICE_LAB_ECHO=1`. */
  echo?: boolean;
  /**
   * Called with each complete console line (`\r` removed) while the guest runs, so a test can
   * act on what the guest prints (e.g. disturb a backend in the middle of a run).
   */
  onLine?: (line: string) => void;
  /**
   * A QMP socket to create (`-qmp unix:PATH,server=on,wait=off`), for tests that drive QEMU
   * (live migration); at most 107 bytes.
   */
  qmp?: string;
  /**
   * Start as the destination of a live migration (`-incoming URI`, e.g. `defer`): the guest
   * does not boot here, it arrives, so there is no boot deadline; the console holds what the
   * guest prints after it arrived.
   */
  incoming?: string;
  /** Lab directory; default `$SLUICE_LAB` or `var/vm-lab`. */
  labDir?: string;
}

/** A guest that ran its test to the end. */
export interface GuestResult {
  /** Exit code of `/test.sh` (0-255; 125 is never returned, see GuestError "init-error"). */
  exitCode: number;
  /** The console (kernel messages and the test's output), with `\r` removed. */
  output: string;
  /** What the guest wrote to `/dev/report`. */
  report: string;
  /** Path of the console log on the host (kept after the run). */
  serialLog: string;
  /** Directory of this run (console log, report, QEMU stderr). */
  runDir: string;
  /** QEMU's own exit status (2 * exitCode + 1 when the guest exits through isa-debug-exit). */
  qemuExitCode: number;
  /** Host wall time from QEMU start to exit. */
  durationMs: number;
  /** Guest uptime when /init was ready to run the test (seconds), if reported. */
  readyUptimeSec: number | null;
}

/** Why a guest did not report an exit code. */
export type GuestFailure =
  | "timeout"
  | "boot-timeout"
  | "panic"
  | "qemu-error"
  | "init-error"
  | "no-exit"
  | "aborted";

/** The guest did not run its test to the end; {@linkcode GuestError.failure} says why. */
export class GuestError extends Error {
  /** What went wrong. */
  readonly failure: GuestFailure;
  /** The console, with `\r` removed. */
  readonly output: string;
  /** Path of the console log. */
  readonly serialLog: string;
  /** QEMU's exit status, or null if it was killed by a signal. */
  readonly qemuExitCode: number | null;
  /** What QEMU wrote to stderr. */
  readonly qemuStderr: string;

  constructor(
    failure: GuestFailure,
    detail: string,
    info: { output: string; serialLog: string; qemuExitCode: number | null; qemuStderr: string },
  ) {
    super(
      `Guest ${describeFailure(failure)}: ${detail} (console: ${info.serialLog})` +
        (info.qemuStderr.trim() ? `\nQEMU stderr:\n${info.qemuStderr.trim()}` : "") +
        `\nLast console lines:\n${outputTail(info.output, 15)}`,
    );
    this.name = "GuestError";
    this.failure = failure;
    this.output = info.output;
    this.serialLog = info.serialLog;
    this.qemuExitCode = info.qemuExitCode;
    this.qemuStderr = info.qemuStderr;
  }
}

const EXIT_MARKER = /^SLUICE_GUEST_EXIT=(\d+)/gm;
const READY_MARKER = /^SLUICE_GUEST_READY uptime=([0-9.]+)/m;
const NO_TEST_MARKER = "SLUICE_GUEST_NO_TEST";
const PANIC_MARKER = /Kernel panic - not syncing[^\n]*/;
const INIT_MARKER = "SLUICE_GUEST_INIT";
const KILL_GRACE_MS = 2000;
const CONSOLE_POLL_MS = 250;
const MONITOR_READ_MS = 1500;
const HANG_MONITOR_COMMANDS = ["info status", "info cpus", "info registers -a"];
const TIMEOUT_SEC_DEFAULT = 300;
const BOOT_TIMEOUT_SEC_DEFAULT = 60;
const MEM_MIB_DEFAULT = 512;
const MEM_MIB_DENO_DEFAULT = 1024;
const MEM_MIB_DENO_MIN = 512;
const RESERVED_PATHS = new Set(["/init", "/test.sh", "/guest.env"]);

let runSeq = 0;
let setprivPath: Promise<string | null> | undefined;

/** Boots a guest, runs `options.script` in it and returns its exit code and output. */
export async function runGuest(options: GuestOptions): Promise<GuestResult> {
  const lab = await readLab(options.labDir);
  const deno = options.deno ?? false;
  const plan: Plan = {
    lab,
    paths: labPaths(options.labDir),
    name: (options.name ?? "guest").replace(/[^A-Za-z0-9_.-]/g, "_"),
    tools: options.tools ?? true,
    deno,
    memMiB: options.memMiB ?? (deno ? MEM_MIB_DENO_DEFAULT : MEM_MIB_DEFAULT),
    smp: options.smp ?? 2,
    timeoutSec: options.timeoutSec ?? TIMEOUT_SEC_DEFAULT,
    bootTimeoutSec: options.bootTimeoutSec ?? BOOT_TIMEOUT_SEC_DEFAULT,
    echo: options.echo ?? Deno.env.get("SLUICE_LAB_ECHO") === "1",
    testCpio: await testArchive(options),
  };
  if (deno && !lab.pieces.deno) throw new Error("The lab has no deno piece; run setup with deno.");
  if (deno && plan.memMiB < MEM_MIB_DENO_MIN) {
    throw new RangeError(`A guest with deno needs memMiB >= ${MEM_MIB_DENO_MIN}.`);
  }
  if (!Number.isInteger(plan.memMiB) || plan.memMiB < 128) {
    throw new RangeError("memMiB must be an integer >= 128.");
  }
  if (!Number.isInteger(plan.smp) || plan.smp < 1 || plan.smp > 64) {
    throw new RangeError("smp must be an integer in 1..64.");
  }
  if (!(plan.timeoutSec > 0) || !(plan.bootTimeoutSec > 0)) {
    throw new RangeError("timeoutSec and bootTimeoutSec must be positive.");
  }
  const bootRetries = options.bootRetries ?? 1;
  for (let attempt = 0;; attempt++) {
    const run = await boot(plan, options);
    if (run.ended === "boot-timeout" && attempt < bootRetries) {
      console.error(
        `[vm-lab] guest ${plan.name} did not reach /init within ${plan.bootTimeoutSec} s ` +
          `(console: ${run.serialLog}); booting it again`,
      );
      continue;
    }
    return outcome(plan, run);
  }
}

/** Everything one boot needs, worked out once per runGuest call. */
interface Plan {
  lab: LabManifest;
  paths: ReturnType<typeof labPaths>;
  name: string;
  tools: boolean;
  deno: boolean;
  memMiB: number;
  smp: number;
  timeoutSec: number;
  bootTimeoutSec: number;
  echo: boolean;
  testCpio: Uint8Array;
}

/** How one boot ended, before interpretation. */
interface Run {
  ended: "exit" | "timeout" | "boot-timeout" | "aborted";
  status: Deno.CommandOutput;
  runDir: string;
  serialLog: string;
  output: string;
  report: string;
  qemuStderr: string;
  /** CPU state read through the QEMU monitor when the boot hung. */
  hangState: string;
  durationMs: number;
}

async function boot(plan: Plan, options: GuestOptions): Promise<Run> {
  const runDir = `${plan.paths.runs}/${plan.name}-${stamp()}-${Deno.pid}-${++runSeq}`;
  if (runDir.includes(",")) throw new Error(`The run directory ${runDir} must not contain ",".`);
  await Deno.mkdir(runDir, { recursive: true });
  const serialLog = `${runDir}/serial.log`;
  const reportLog = `${runDir}/report.log`;
  const initrd = `${runDir}/initrd.cpio`;
  const monitor = `${runDir}/monitor.sock`;
  const pieces = [plan.lab.pieces.base];
  if (plan.tools) pieces.push(plan.lab.pieces.tools);
  if (plan.deno && plan.lab.pieces.deno) pieces.push(plan.lab.pieces.deno);
  await writeInitrd(initrd, pieces, plan.testCpio);

  const net = options.net === true || (options.hostfwd?.length ?? 0) > 0;
  const kernelArgs = [
    "console=ttyS0",
    "quiet",
    "panic=-1",
    "mitigations=off",
    "tsc=reliable",
    // Under TCG on a loaded host the kernel's IO-APIC timer check can fail and panic at boot
    // ("IO-APIC + timer doesn't work", seen once); it checks real wiring, not what we test.
    "no_timer_check",
    // ramfs instead of tmpfs for the initramfs root: tmpfs would cap it at half of the RAM left
    // while the initrd itself still occupies memory, too little for tools + deno at 512 MiB.
    "rootfstype=ramfs",
    `sluice.mods=${(options.modules ?? []).join(",")}`,
    `sluice.net=${net ? 1 : 0}`,
    ...(options.iommu ? ["intel_iommu=on"] : []),
    ...(options.kernelArgs ?? []),
  ];
  if (options.iommu && options.machine === "pc") {
    throw new Error("iommu needs machine q35 (intel-iommu is a q35 device).");
  }
  const machine = options.iommu ? "q35" : options.machine ?? "pc";
  const qemu = [
    "qemu-system-x86_64",
    ...["-accel", "tcg,thread=multi,tb-size=512", "-cpu", "max"],
    ...["-machine", machine, "-smp", String(plan.smp), "-m", String(plan.memMiB)],
    // QEMU wants the IOMMU created before the PCI devices it translates for.
    ...(options.iommu ? ["-device", "intel-iommu,intremap=on"] : []),
    ...["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"],
    ...["-serial", `file:${serialLog}`, "-serial", `file:${reportLog}`],
    ...["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"],
    ...["-kernel", plan.lab.kernelImage, "-initrd", initrd, "-append", kernelArgs.join(" ")],
  ];
  // A monitor socket, to read the CPU state of a guest that hangs while booting (unix socket
  // paths are limited to 107 bytes).
  const withMonitor = monitor.length < 100;
  if (withMonitor) qemu.push("-monitor", `unix:${monitor},server=on,wait=off`);
  if (options.qmp !== undefined) {
    if (options.qmp.length > 107 || options.qmp.includes(",")) {
      throw new Error(`QMP socket path ${options.qmp} is too long or has a ","`);
    }
    qemu.push("-qmp", `unix:${options.qmp},server=on,wait=off`);
  }
  if (options.incoming !== undefined) qemu.push("-incoming", options.incoming);
  if (net) {
    const fwd = (options.hostfwd ?? []).map((f) =>
      `,hostfwd=${f.proto ?? "tcp"}:${f.hostAddr ?? "127.0.0.1"}:${f.hostPort}-:${f.guestPort}`
    );
    qemu.push("-netdev", `user,id=net0${fwd.join("")}`, "-device", "virtio-net-pci,netdev=net0");
  }
  if (options.sharedMem) {
    qemu.push(
      "-object",
      `memory-backend-memfd,id=mem0,size=${plan.memMiB}M,share=on`,
      "-numa",
      "node,memdev=mem0",
    );
  }
  qemu.push(...(options.qemuArgs ?? []));

  // setpriv makes the kernel kill QEMU if this process dies first (no orphaned guests).
  setprivPath ??= which("setpriv");
  const setpriv = await setprivPath;
  const argv = setpriv ? [setpriv, "--pdeathsig", "KILL", "--", ...qemu] : qemu;
  await Deno.writeTextFile(`${runDir}/qemu.cmdline`, argv.join(" ") + "\n");

  const started = performance.now();
  const child = new Deno.Command(argv[0] ?? "qemu-system-x86_64", {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const outputs = child.output();
  let exited = false;
  outputs.finally(() => exited = true).catch(() => {});

  let ended: Run["ended"] = "exit";
  let hardKill: ReturnType<typeof setTimeout> | undefined;
  const stop = (why: Exclude<Run["ended"], "exit">) => {
    if (ended !== "exit") return;
    ended = why;
    killQuietly(child, "SIGTERM");
    hardKill = setTimeout(() => killQuietly(child, "SIGKILL"), KILL_GRACE_MS);
  };
  const timer = setTimeout(() => stop("timeout"), plan.timeoutSec * 1000);
  const onAbort = () => stop("aborted");
  options.signal?.addEventListener("abort", onAbort);
  if (options.signal?.aborted) onAbort();

  let hangState = "";
  const watching = watchConsole(serialLog, {
    echoPrefix: plan.echo ? `[${plan.name}] ` : null,
    onLine: options.onLine,
    // A migration destination never boots: its guest arrives already running.
    bootDeadlineMs: options.incoming !== undefined
      ? Infinity
      : started + plan.bootTimeoutSec * 1000,
    exited: () => exited,
    onBootHung: async () => {
      if (withMonitor) hangState = await readMonitor(monitor, HANG_MONITOR_COMMANDS);
      if (hangState) await Deno.writeTextFile(`${runDir}/hang.txt`, hangState);
      stop("boot-timeout");
    },
  });

  let status: Deno.CommandOutput;
  try {
    status = await outputs;
  } finally {
    clearTimeout(timer);
    if (hardKill !== undefined) clearTimeout(hardKill);
    options.signal?.removeEventListener("abort", onAbort);
    await watching;
    await Deno.remove(initrd).catch(() => {});
    await Deno.remove(monitor).catch(() => {});
  }
  const durationMs = performance.now() - started;
  const decoder = new TextDecoder();
  const qemuStderr = decoder.decode(status.stderr) + decoder.decode(status.stdout);
  if (qemuStderr.trim()) await Deno.writeTextFile(`${runDir}/qemu.stderr`, qemuStderr);
  return {
    ended,
    status,
    runDir,
    serialLog,
    output: (await Deno.readTextFile(serialLog).catch(() => "")).replaceAll("\r", ""),
    report: await Deno.readTextFile(reportLog).catch(() => ""),
    qemuStderr,
    hangState,
    durationMs,
  };
}

/** Turns a finished boot into a result, or throws the GuestError that explains it. */
function outcome(plan: Plan, run: Run): GuestResult {
  const { output, status } = run;
  const info = {
    output,
    serialLog: run.serialLog,
    qemuExitCode: status.signal === null ? status.code : null,
    qemuStderr: run.qemuStderr,
  };
  switch (run.ended) {
    case "timeout":
      throw new GuestError("timeout", `no exit after ${plan.timeoutSec} s; QEMU was killed`, info);
    case "boot-timeout":
      throw new GuestError(
        "boot-timeout",
        `/init did not start within ${plan.bootTimeoutSec} s; QEMU was killed` +
          (run.hangState ? `; CPU state in ${run.runDir}/hang.txt` : ""),
        info,
      );
    case "aborted":
      throw new GuestError("aborted", "the run was aborted", info);
    case "exit":
      break;
  }
  const exits = [...output.matchAll(EXIT_MARKER)];
  const last = exits[exits.length - 1]?.[1];
  if (last !== undefined) {
    if (output.includes(NO_TEST_MARKER)) {
      throw new GuestError(
        "init-error",
        `/test.sh was missing in the guest (initramfs too big for ${plan.memMiB} MiB?)`,
        info,
      );
    }
    const ready = READY_MARKER.exec(output)?.[1];
    return {
      exitCode: Number(last),
      output,
      report: run.report,
      serialLog: run.serialLog,
      runDir: run.runDir,
      qemuExitCode: status.code,
      durationMs: run.durationMs,
      readyUptimeSec: ready === undefined ? null : Number(ready),
    };
  }
  const panic = PANIC_MARKER.exec(output)?.[0];
  if (panic) throw new GuestError("panic", panic, info);
  if (status.code !== 0 || run.qemuStderr.trim()) {
    throw new GuestError("qemu-error", `QEMU exited with status ${status.code}`, info);
  }
  throw new GuestError("no-exit", "the guest stopped without reporting an exit code", info);
}

/** The last `lines` lines of a console output, for assertion messages. */
export function outputTail(output: string, lines = 30): string {
  const all = output.trimEnd().split("\n");
  return all.slice(-lines).join("\n");
}

function describeFailure(f: GuestFailure): string {
  switch (f) {
    case "timeout":
      return "timed out";
    case "boot-timeout":
      return "did not boot";
    case "panic":
      return "kernel panicked";
    case "qemu-error":
      return "QEMU failed";
    case "init-error":
      return "init failed";
    case "no-exit":
      return "stopped without an exit code";
    case "aborted":
      return "run aborted";
  }
}

/** The per-run cpio: /test.sh, /guest.env and the extra files. */
async function testArchive(options: GuestOptions): Promise<Uint8Array> {
  const enc = new TextEncoder();
  let script = options.script instanceof URL
    ? await Deno.readTextFile(options.script)
    : options.script;
  if (!script.startsWith("#!")) script = `#!/bin/sh\n${script}`;
  if (!script.endsWith("\n")) script += "\n";
  const env: string[] = [];
  for (const [k, v] of Object.entries(options.env ?? {})) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`Bad guest variable name ${k}.`);
    env.push(`export ${k}='${v.replaceAll("'", "'\\''")}'\n`);
  }
  const sink = new BufferSink();
  const cpio = new CpioWriter(sink);
  await cpio.file("test.sh", enc.encode(script), 0o755);
  await cpio.file("guest.env", enc.encode(env.join("")), 0o644);
  for (const [path, data] of Object.entries(options.files ?? {})) {
    if (!path.startsWith("/") || RESERVED_PATHS.has(path)) {
      throw new Error(`Guest file path ${path} must be absolute and not one of the lab's own.`);
    }
    const bytes = data instanceof URL
      ? await Deno.readFile(data)
      : typeof data === "string"
      ? enc.encode(data)
      : data;
    const shebang = bytes[0] === 0x23 && bytes[1] === 0x21;
    await cpio.file(path, bytes, shebang ? 0o755 : 0o644);
  }
  await cpio.finish();
  return sink.bytes();
}

async function writeInitrd(out: string, pieces: string[], extra: Uint8Array): Promise<void> {
  using dst = await Deno.open(out, { create: true, write: true, truncate: true });
  for (const piece of pieces) {
    const src = await Deno.open(piece, { read: true });
    await src.readable.pipeTo(dst.writable, { preventClose: true });
  }
  let at = 0;
  while (at < extra.length) at += await dst.write(extra.subarray(at));
}

/**
 * Follows the console log while QEMU runs: copies new lines to stderr when `echoPrefix` is set,
 * and calls `onBootHung` once if /init has not announced itself by `bootDeadlineMs`.
 */
async function watchConsole(
  path: string,
  opts: {
    echoPrefix: string | null;
    onLine?: (line: string) => void;
    bootDeadlineMs: number;
    exited: () => boolean;
    onBootHung: () => Promise<void>;
  },
): Promise<void> {
  const decoder = new TextDecoder();
  const enc = new TextEncoder();
  const buf = new Uint8Array(64 * 1024);
  let offset = 0;
  let partial = "";
  let booted = false;
  let seen = "";
  while (true) {
    const last = opts.exited();
    try {
      using f = await Deno.open(path, { read: true });
      await f.seek(offset, Deno.SeekMode.Start);
      while (true) {
        const n = await f.read(buf);
        if (n === null || n === 0) break;
        offset += n;
        const text = decoder.decode(buf.subarray(0, n), { stream: true });
        partial += text;
        if (!booted) {
          seen = (seen + text).slice(-4096);
          booted = seen.includes(INIT_MARKER);
        }
      }
    } catch {
      // QEMU has not created the log yet
    }
    const lines = partial.replaceAll("\r", "").split("\n");
    partial = lines.pop() ?? "";
    if (opts.onLine !== undefined) { for (const l of lines) opts.onLine(l); }
    if (opts.echoPrefix !== null && lines.length > 0) {
      const prefix = opts.echoPrefix;
      await Deno.stderr.write(enc.encode(lines.map((l) => prefix + l + "\n").join("")));
    }
    if (last) break;
    if (!booted && performance.now() > opts.bootDeadlineMs) {
      booted = true; // report once
      await opts.onBootHung();
    }
    await new Promise((r) => setTimeout(r, CONSOLE_POLL_MS));
  }
  if (opts.echoPrefix !== null && partial) {
    await Deno.stderr.write(enc.encode(opts.echoPrefix + partial + "\n"));
  }
}

/** Sends human monitor commands to QEMU's monitor socket; returns what it answered. */
async function readMonitor(path: string, commands: readonly string[]): Promise<string> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch {
    return "";
  }
  const chunks: string[] = [];
  const decoder = new TextDecoder();
  const reading = (async () => {
    const buf = new Uint8Array(16 * 1024);
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        chunks.push(decoder.decode(buf.subarray(0, n), { stream: true }));
      }
    } catch {
      // closed below
    }
  })();
  try {
    await conn.write(new TextEncoder().encode(commands.map((c) => c + "\n").join("")));
    await new Promise((r) => setTimeout(r, MONITOR_READ_MS));
  } catch {
    // QEMU went away; keep what arrived
  }
  conn.close();
  await reading;
  // Drop the terminal control sequences and the echoed command lines of the monitor.
  // deno-lint-ignore no-control-regex
  const text = chunks.join("").replace(/\x1b\[[0-9;]*[A-Za-z]/g, "").replaceAll("\r", "");
  return `monitor commands: ${commands.join("; ")}\n` +
    text.split("\n").filter((l) => !l.startsWith("(qemu)")).join("\n");
}

function killQuietly(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // already exited
  }
}

function stamp(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${
    p(d.getMinutes())
  }${p(d.getSeconds())}`;
}
