/**
 * `deno task bench:vhost [--seconds N] [--profile]`: vhost-user-blk end to
 * end, 4 KiB random reads and writes at QD1 and QD128, the back-end on CPU 0
 * and the client (`sluice perf -r 'trtype:vhost-user path:...'`, one queue)
 * on CPU 1, RAM-backed volumes, every back-end driven by the same client in
 * the same run:
 *
 * - sluice (`sluice serve`, 1 GiB malloc bdev: data is copied between guest
 *   memory and the bdev's RAM);
 * - qemu-storage-daemon (Debian's) exporting a 1 GiB file in /dev/shm
 *   (`driver=file,cache.direct=off`: data is copied too, through the page
 *   cache) — like with like;
 * - qemu-storage-daemon on null-co (no data copied at all): a ceiling for
 *   the protocol and rings, not a peer;
 * - SPDK's vhost as the issue quotes it (one core, RAM bdev, user-space
 *   virtio client on the other core), labelled as a reference: not measured.
 *
 * Each qemu-storage-daemon row gets a fresh daemon (its libvhost-user keeps
 * ring state across front-end connections). sluice's RAM disk is written
 * once before it is measured (a malloc bdev's pages fault in on first
 * write); the /dev/shm file is fallocated, which allocates its pages.
 *
 * `--profile`: instead of the table, runs sluice's back-end under
 * `--cpu-prof` and `--trace-gc` for randread and randwrite at QD128 and
 * prints its top functions by self time and the bytes it allocates per I/O.
 *
 * Nothing is asserted: a benchmark is not a test. Every process started
 * here is ended here, on error and on Ctrl-C too.
 * @module
 */

import {
  benchChildren,
  type Children,
  f1,
  k,
  kill,
  ratio,
  rssAnonBytes,
  table,
  warnIfBusy,
  which,
} from "./common.ts";
import { mallocBdevConfig, vhostBlkConfig } from "../src/testing/config.ts";
import { sleep } from "../src/testing/wait.ts";

const MAIN = new URL("../appliance/main.ts", import.meta.url).pathname;
const BACKEND_CPU = 0;
const CLIENT_CPU = 1;
const VOLUME_MIB = 1024;
const IO_BYTES = 4096;
/**
 * The profile covers the daemon's whole life, the preconditioning writes too: a
 * smaller volume keeps them to a few percent of the samples.
 */
const PROFILE_VOLUME_MIB = 256;
const QSD = "/usr/bin/qemu-storage-daemon";

type Rw = "randread" | "randwrite";
interface Row {
  rw: Rw;
  qd: number;
}
const ROWS: Row[] = [
  { rw: "randread", qd: 1 },
  { rw: "randwrite", qd: 1 },
  { rw: "randread", qd: 128 },
  { rw: "randwrite", qd: 128 },
];
const rowName = (r: Row) => `${r.rw} QD${r.qd}`;

/** SPDK's vhost as issue 4 quotes it: one core, RAM bdev, a user-space virtio client. */
const SPDK_REFERENCE: Record<string, { iops?: number; avgUs?: number }> = {
  "randread QD1": { avgUs: 1.6 },
  "randread QD128": { iops: 986_000 },
};
const REFERENCE_TEXT =
  "SPDK (ref): not measured here; issue 4's figures from one of these 2-core machines: SPDK's vhost " +
  "on one core with a RAM bdev served ~986k IOPS of 4 KiB randread at QD128 and 1.6 us mean " +
  "latency at QD1 to a user-space virtio client on the other core (3.4M IOPS on a null bdev); " +
  "qemu-storage-daemon ~221k on a tmpfs file, ~2.7M on null-co. QD1 rows compare mean latency.";

interface Figures {
  iops: number;
  avgUs: number;
  p50Us: number;
  p99Us: number;
  /** Times the client re-kicked after 1 ms without a completion. */
  stallKicks: number;
}

// ---------------------------------------------------------------------------
// Child processes (tracked and ended: ./common.ts Children).

/** Stops a child with SIGTERM (SIGKILL after 5 s) and waits for it. */
async function stop(c: Deno.ChildProcess): Promise<void> {
  kill(c, "SIGTERM");
  const timer = setTimeout(() => kill(c, "SIGKILL"), 5000);
  await c.status;
  clearTimeout(timer);
}

/** Reads a child's stdout until a line matches; the rest keeps draining. */
async function waitForLine(
  child: Deno.ChildProcess,
  re: RegExp,
  what: string,
  sink?: (text: string) => void,
): Promise<void> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const timer = setTimeout(() => kill(child, "SIGKILL"), 30_000);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${what} ended before it was ready:\n${seen}`);
      seen += value;
      if (re.test(seen)) break;
    }
  } finally {
    clearTimeout(timer);
  }
  (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      sink?.(value);
    }
  })().catch(() => {});
}

async function waitForSocket(path: string, child: Deno.ChildProcess, what: string) {
  let exited = false;
  child.status.then(() => (exited = true));
  for (let i = 0; i < 300; i++) {
    try {
      if (Deno.statSync(path).isSocket) return;
    } catch { /* not yet */ }
    if (exited) break;
    await sleep(20);
  }
  const err = await new Response(child.stderr).text().catch(() => "");
  throw new Error(`${what} did not create ${path}${err ? `:\n${err}` : ""}`);
}

// ---------------------------------------------------------------------------
// The client.

const TOTAL_RE =
  /^Total: IOPS=(\d+) MiB\/s=[\d.]+ avg_us=([\d.]+) p50_us=([\d.]+) p99_us=([\d.]+) p999_us=[\d.]+ errors=(\d+)$/m;

async function perf(
  kids: Children,
  socket: string,
  rw: string,
  qd: number,
  seconds: number,
  ioBytes = IO_BYTES,
): Promise<Figures> {
  const args = ["run", "-A", MAIN, "perf", "-r", `trtype:vhost-user path:${socket}`];
  args.push("-q", String(qd), "-o", String(ioBytes), "-w", rw, "-t", String(seconds));
  const out = await kids.run(CLIENT_CPU, Deno.execPath(), args, (seconds + 30) * 1000);
  const m = TOTAL_RE.exec(out.stdout);
  if (m === null || out.code !== 0) {
    throw new Error(`sluice perf failed (exit ${out.code}):\n${out.stdout}${out.stderr}`);
  }
  const stall = /stall kicks (\d+)/.exec(out.stderr);
  return {
    iops: Number(m[1]),
    avgUs: Number(m[2]),
    p50Us: Number(m[3]),
    p99Us: Number(m[4]),
    stallKicks: stall === null ? 0 : Number(stall[1]),
  };
}

/**
 * Runs `once` `n` times and keeps the run of median IOPS, with the spread:
 * on a shared 2-core machine one run says little.
 */
async function median(
  n: number,
  once: () => Promise<Figures>,
): Promise<Figures & { min: number; max: number }> {
  const runs: Figures[] = [];
  for (let i = 0; i < n; i++) runs.push(await once());
  runs.sort((a, b) => a.iops - b.iops);
  const mid = runs[Math.floor((runs.length - 1) / 2)] as Figures;
  return { ...mid, min: runs[0]?.iops ?? 0, max: runs[runs.length - 1]?.iops ?? 0 };
}

// ---------------------------------------------------------------------------
// The back-ends.

function sluiceConfig(socket: string, mib: number, cpumask?: string): unknown {
  return {
    subsystems: [
      mallocBdevConfig("Malloc0", (mib * 2 ** 20) / 512),
      vhostBlkConfig([{ ctrlr: "vhost.bench", devName: "Malloc0", socket, numQueues: 1, cpumask }]),
    ],
  };
}

/**
 * `sluice serve` with the controller on a data-path worker pinned to the
 * back-end CPU; the main thread (idle here: no RPC, no NVMe/TCP) is on the
 * client's CPU, so the worker has its core as the one-reactor daemon has.
 */
async function startSluiceWorker(
  kids: Children,
  dir: string,
  socket: string,
): Promise<Deno.ChildProcess> {
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify(sluiceConfig(socket, VOLUME_MIB, `0x${(1 << BACKEND_CPU).toString(16)}`)),
  );
  const mask = `0x${((1 << BACKEND_CPU) | (1 << CLIENT_CPU)).toString(16)}`;
  const child = kids.spawn(
    `${BACKEND_CPU},${CLIENT_CPU}`,
    Deno.execPath(),
    ["run", "-A", MAIN, "serve", "--state-dir", dir, "--cpumask", mask, "--main-core"].concat(
      String(CLIENT_CPU),
    ),
  );
  await waitForLine(child, /ready/, "sluice serve (worker)");
  return child;
}

/** `sluice serve` on the back-end CPU; `denoFlags` go before the script (profiling). */
async function startSluice(
  kids: Children,
  dir: string,
  socket: string,
  denoFlags: string[] = [],
  sink?: (text: string) => void,
  mib = VOLUME_MIB,
): Promise<Deno.ChildProcess> {
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(sluiceConfig(socket, mib)));
  const child = kids.spawn(
    BACKEND_CPU,
    Deno.execPath(),
    ["run", "-A", ...denoFlags, MAIN, "serve", "--state-dir", dir],
  );
  await waitForLine(child, /ready/, "sluice serve", sink);
  return child;
}

/** Writes the whole volume once so its pages exist (first-touch faults otherwise dominate). */
async function precondition(
  kids: Children,
  socket: string,
  pid: number,
  mib = VOLUME_MIB,
): Promise<void> {
  for (let i = 0; i < 6; i++) {
    await perf(kids, socket, "write", 8, 1, 131072);
    if ((await rssAnonBytes(pid)) >= mib * 2 ** 20) return;
  }
  console.log(
    `  (the volume may not be fully written: the back-end's RSS stayed below ${mib} MiB)`,
  );
}

/** The volumes qemu-storage-daemon serves: the file with its default (thread pool) I/O or io_uring. */
type QsdVolume = "file" | "uring" | "null";

function qsdArgs(socket: string, volume: QsdVolume, file: string): string[] {
  const blockdev = volume === "null"
    ? `driver=null-co,node-name=vol0,size=${VOLUME_MIB * 2 ** 20}`
    : `driver=file,node-name=vol0,filename=${file},cache.direct=off` +
      (volume === "uring" ? ",aio=io_uring" : "");
  return [
    "--blockdev",
    blockdev,
    "--export",
    `type=vhost-user-blk,id=exp0,node-name=vol0,addr.type=unix,addr.path=${socket},` +
    "writable=on,num-queues=1",
  ];
}

let qsdRuns = 0;

/** One run on a fresh qemu-storage-daemon. */
async function qsdRow(
  kids: Children,
  dir: string,
  volume: QsdVolume,
  file: string,
  row: Row,
  seconds: number,
): Promise<Figures> {
  const socket = `${dir}/qsd-${volume}-${row.rw}-${row.qd}-${qsdRuns++}.sock`;
  const child = kids.spawn(BACKEND_CPU, QSD, qsdArgs(socket, volume, file), "null");
  try {
    await waitForSocket(socket, child, "qemu-storage-daemon");
    return await perf(kids, socket, row.rw, row.qd, seconds);
  } finally {
    await stop(child);
  }
}

// ---------------------------------------------------------------------------

async function setUp(tag: string) {
  // Every sluice perf child prints its kick and stall counters (the table's last lines).
  Deno.env.set("SLUICE_PERF_STATS", "1");
  const { pin, kids, release } = await benchChildren("bench:vhost");
  const dir = await Deno.makeTempDir({ prefix: `sluice-bench-vhost-${tag}-` });
  return {
    pin,
    kids,
    dir,
    async tearDown() {
      await release();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

async function bench(seconds: number, repeat: number): Promise<void> {
  const { pin, kids, dir, tearDown } = await setUp("table");
  const shm = `/dev/shm/sluice-bench-vhost-${Deno.pid}.img`;
  try {
    console.log(
      `bench:vhost: 4 KiB random I/O over vhost-user-blk, one queue, ${seconds} s per run, ` +
        `median of ${repeat} runs (null-co: one); ` +
        (pin
          ? `back-ends on CPU ${BACKEND_CPU}, client on CPU ${CLIENT_CPU} (taskset)`
          : "NOT pinned (taskset missing or one CPU): figures are not comparable to pinned runs") +
        `; ${navigator.hardwareConcurrency} CPUs, 2-core VMs see 20-50% noise between runs\n`,
    );
    await warnIfBusy(500);

    /** Every row against one running sluice: preconditioned, medians, printed as they come. */
    const sluiceRows = async (label: string, socket: string, pid: number) => {
      await precondition(kids, socket, pid);
      const out = new Map<string, Figures>();
      for (const row of ROWS) {
        const f = await median(repeat, () => perf(kids, socket, row.rw, row.qd, seconds));
        out.set(rowName(row), f);
        console.log(
          `  ${label} ${rowName(row)}: ${k(f.iops)} IOPS (runs ${k(f.min)}-${k(f.max)}), ` +
            `avg ${f1(f.avgUs)} us`,
        );
      }
      return out;
    };

    // sluice: one daemon for every row.
    const socket = `${dir}/sluice.sock.vhost`;
    const target = await startSluice(kids, dir, socket);
    const ours = await sluiceRows("sluice", socket, target.pid);
    await stop(target);

    // The same with the controller on a data-path worker (src/worker).
    const wdir = `${dir}/worker`;
    await Deno.mkdir(wdir);
    const wsocket = `${wdir}/sluice.sock.vhost`;
    const wtarget = await startSluiceWorker(kids, wdir, wsocket);
    const onWorker = await sluiceRows("sluice (worker)", wsocket, wtarget.pid);
    await stop(wtarget);

    // qemu-storage-daemon, file in /dev/shm and null-co.
    let qsdNote = "";
    const qsd = new Map<string, Figures>();
    const uring = new Map<string, Figures>();
    const nul = new Map<string, Figures>();
    if (await which(QSD)) {
      const fa = await new Deno.Command("fallocate", {
        args: ["-l", String(VOLUME_MIB * 2 ** 20), shm],
      }).output();
      if (!fa.success) throw new Error(`fallocate ${shm} failed`);
      const runs: [QsdVolume, Map<string, Figures>, number, string][] = [
        ["file", qsd, repeat, "file"],
        ["uring", uring, repeat, "file aio=io_uring"],
        ["null", nul, 1, "null-co"],
      ];
      for (const [volume, into, n, label] of runs) {
        for (const row of ROWS) {
          const f = await median(n, () => qsdRow(kids, dir, volume, shm, row, seconds));
          into.set(rowName(row), f);
          console.log(
            `  qemu-storage-daemon ${label} ${rowName(row)}: ${k(f.iops)} IOPS` +
              (n > 1 ? ` (runs ${k(f.min)}-${k(f.max)})` : ""),
          );
        }
      }
    } else {qsdNote =
        `${QSD} is not installed (apt-get install qemu-system-common): no qsd columns.`;}

    console.log();
    table(
      [
        "4 KiB workload",
        "sluice IOPS",
        "avg us",
        "p50 us",
        "p99 us",
        "on a worker IOPS",
        "worker/main",
        "qsd file IOPS",
        "qsd avg us",
        "sluice/qsd",
        "qsd io_uring IOPS",
        "sluice/qsd io_uring",
        "qsd null-co IOPS",
        "sluice/null-co",
        "SPDK (ref)",
        "sluice/SPDK",
      ],
      ROWS.map((row) => {
        const name = rowName(row);
        const o = ours.get(name) as Figures;
        const w = onWorker.get(name);
        const q = qsd.get(name);
        const n = nul.get(name);
        const u = uring.get(name);
        const s = SPDK_REFERENCE[name];
        // QD1: SPDK's figure is a latency, and lower is better: compare the inverse.
        const sCell = s?.iops !== undefined
          ? k(s.iops)
          : s?.avgUs !== undefined
          ? `${f1(s.avgUs)} us`
          : "-";
        const sRatio = s?.iops !== undefined
          ? ratio(o.iops, s.iops)
          : s?.avgUs !== undefined
          ? `${ratio(s.avgUs, o.avgUs)} (lat)`
          : "-";
        return [
          name,
          k(o.iops),
          f1(o.avgUs),
          f1(o.p50Us),
          f1(o.p99Us),
          w ? k(w.iops) : "-",
          w ? ratio(w.iops, o.iops) : "-",
          q ? k(q.iops) : "-",
          q ? f1(q.avgUs) : "-",
          q ? ratio(o.iops, q.iops) : "-",
          u ? k(u.iops) : "-",
          u ? ratio(o.iops, u.iops) : "-",
          n ? k(n.iops) : "-",
          n ? ratio(o.iops, n.iops) : "-",
          sCell,
          sRatio,
        ];
      }),
    );
    console.log(
      `\nsluice: \`sluice serve\`, ${VOLUME_MIB} MiB malloc bdev (written once first), one ` +
        'vhost-user-blk queue, on the main thread\'s reactor; "on a worker": the same daemon with ' +
        "--cpumask and the controller on a data-path worker pinned to the back-end CPU. qsd file: qemu-storage-daemon " +
        `(${QSD}), driver=file on a ${VOLUME_MIB} MiB fallocated file in /dev/shm, ` +
        "cache.direct=off, num-queues=1, a fresh daemon per run; both copy the data (like with " +
        "like). qsd io_uring: the same with aio=io_uring instead of its default thread pool (its " +
        "faster configuration here). qsd null-co: no data copied, a ceiling for rings and protocol, not a peer. Client: " +
        "`sluice perf` in vhost-user mode for every column (EVENT_IDX, direct chains, used ring " +
        "polled).",
    );
    const stallText = (label: string, m: Map<string, Figures>) =>
      [...m.entries()].map(([n, f]) => `${label} ${n} ${f.stallKicks}`).join(", ");
    console.log(
      "Client re-kicks after 1 ms without a completion (a busy or descheduled back-end, or a lost " +
        `notification), in the median run: ${stallText("sluice", ours)}; ${
          stallText("qsd", qsd)
        }; ` +
        stallText("qsd io_uring", uring),
    );
    console.log(REFERENCE_TEXT);
    if (qsdNote) console.log(qsdNote);
  } finally {
    await Deno.remove(shm).catch(() => {});
    await tearDown();
  }
}

// ---------------------------------------------------------------------------
// --profile: where sluice's back-end spends its time at QD128.

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function (name + file:line), as shares of all samples. */
function selfTimes(p: CpuProfile): { name: string; share: number }[] {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const counts = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i] as number);
    if (n === undefined) continue;
    const f = n.callFrame;
    const file = f.url.replace(/^.*\/(src|ffi|appliance|wasm)\//, "$1/");
    const name = `${f.functionName || "(anonymous)"}${file ? ` ${file}:${f.lineNumber + 1}` : ""}`;
    counts.set(name, (counts.get(name) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  return [...counts.entries()]
    .map(([name, t]) => ({ name, share: total > 0 ? t / total : 0 }))
    .sort((a, b) => b.share - a.share);
}

/**
 * Bytes allocated on the V8 heap over the trace: for each scavenge or
 * mark-compact, what the heap grew since the previous collection ended.
 */
function allocatedBytes(trace: string): { bytes: number; gcs: number } {
  const re = /(Scavenge|Mark-Compact|Minor Mark-Sweep)[^\d]*([\d.]+) \(([\d.]+)\) -> ([\d.]+) \(/g;
  let bytes = 0, gcs = 0, after = -1;
  for (const m of trace.matchAll(re)) {
    const before = Number(m[2]);
    if (after >= 0 && before > after) bytes += (before - after) * 2 ** 20;
    after = Number(m[4]);
    gcs++;
  }
  return { bytes, gcs };
}

async function profile(seconds: number): Promise<void> {
  const { kids, dir, tearDown } = await setUp("profile");
  try {
    console.log(
      `bench:vhost --profile: sluice's back-end under --cpu-prof and --trace-gc, ${seconds} s ` +
        `per workload, one queue at QD128, back-end on CPU 0, client on CPU 1, ${PROFILE_VOLUME_MIB} ` +
        "MiB malloc bdev (its preconditioning writes are in the profile too, a few percent)\n",
    );
    for (const rw of ["randread", "randwrite"] as Rw[]) {
      const profDir = `${dir}/prof-${rw}`;
      await Deno.mkdir(profDir);
      const socket = `${dir}/sluice-${rw}.sock`;
      let out = "";
      const target = await startSluice(
        kids,
        dir,
        socket,
        [
          "--cpu-prof",
          `--cpu-prof-dir=${profDir}`,
          "--v8-flags=--trace-gc",
        ],
        (t) => (out += t),
        PROFILE_VOLUME_MIB,
      );
      await precondition(kids, socket, target.pid, PROFILE_VOLUME_MIB);
      const from = out.length;
      const f = await perf(kids, socket, rw, 128, seconds);
      const gc = allocatedBytes(out.slice(from));
      await stop(target);
      const files = [...Deno.readDirSync(profDir)].filter((e) => e.name.endsWith(".cpuprofile"));
      const file = files[0];
      const ios = f.iops * seconds;
      console.log(
        `${rw} QD128: ${k(f.iops)} IOPS, avg ${f1(f.avgUs)} us; back-end heap: ${gc.gcs} GCs, ` +
          `~${ios > 0 ? (gc.bytes / ios).toFixed(0) : "-"} bytes allocated per I/O ` +
          "(heap growth between collections over the run)",
      );
      if (file === undefined) {
        console.log("  (no .cpuprofile was written)");
        continue;
      }
      const p = JSON.parse(await Deno.readTextFile(`${profDir}/${file.name}`)) as CpuProfile;
      table(
        ["function (self time)", "share"],
        selfTimes(p).slice(0, 15).map((e) => [e.name, `${(e.share * 100).toFixed(1)}%`]),
      );
      console.log();
    }
  } finally {
    await tearDown();
  }
}

function numberArg(name: string, dflt: number, min: number, max: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const n = Number(Deno.args[i + 1]);
  if (!Number.isFinite(n) || n < min || n > max) {
    console.error(`bench:vhost: --${name} must be a number from ${min} to ${max}`);
    Deno.exit(2);
  }
  return n;
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(
      "Usage: deno task bench:vhost [--seconds N] [--repeat N] [--profile]\n" +
        "  default: 2 s per run, the median of 3 runs per figure (null-co: one run), ~100 s",
    );
  } else if (Deno.args.includes("--profile")) {
    await profile(numberArg("seconds", 5, 0.5, 600));
  } else {
    await bench(numberArg("seconds", 2, 0.5, 600), numberArg("repeat", 3, 1, 99));
  }
}
