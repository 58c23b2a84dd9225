/**
 * `deno task bench:nvme [--seconds N]`: a local NVMe SSD, 4 KiB random reads and writes at QD1
 * and QD128, sluice's user-space driver (src/nvme_vfio over VFIO) beside the Linux kernel's nvme
 * driver (fio with io_uring, O_DIRECT, on /dev/nvme0n1), on the same device in the same run.
 *
 * There is no NVMe SSD to hand over on these machines, so the device is QEMU's emulated NVMe
 * controller behind an emulated IOMMU in a TCG guest (test/vm/vfio.ts), backed by a file here.
 * Both drivers run in that guest, one after the other: first the kernel's (fio), then
 * `sluice setup bind` moves the controller to vfio-pci and sluice's driver runs the same
 * workloads, then `sluice setup unbind` gives it back. Under TCG the figures measure the emulated
 * CPU and QEMU's device model, not an SSD: the ratio says how much each driver costs per I/O on
 * the same (slow) CPU, which is what this bench is for.
 *
 * The sluice column needs the nvme driver (src/nvme_vfio); where it is missing the column says
 * so instead of holding a number. Nothing is asserted: a benchmark is not a test.
 *
 * The same file runs the guest side: `nvme_bench.ts --guest --seconds N --bdf ADDR` prints one
 * JSON document with every figure.
 * @module
 */
import { type FioResult, runFio } from "./fio.ts";
import { f1, k, ratio, table } from "./common.ts";

type Rw = "randread" | "randwrite";

/** The workloads of the table, in order. */
const WORKLOADS: readonly { rw: Rw; qd: number }[] = [
  { rw: "randread", qd: 1 },
  { rw: "randread", qd: 128 },
  { rw: "randwrite", qd: 1 },
  { rw: "randwrite", qd: 128 },
];
const IO_BYTES = 4096;
/** Emulated namespace size; written end to end before the run (no sparse-file shortcuts). */
const DISK_MIB = 128;
const DEFAULT_SECONDS = 8;
/** Guest RAM: deno + tools + fio's buffers, and the DMA memory of sluice's queues. */
const GUEST_MEM_MIB = 1024;

/** One driver's figures for one workload. */
interface Figures {
  iops: number;
  meanUs: number;
  p99Us: number;
}

/** What the guest side prints. */
interface GuestReport {
  kernel: Record<string, Figures>;
  /** Figures per workload, or why there are none. */
  sluice: Record<string, Figures> | { unavailable: string };
  device: string;
}

const key = (w: { rw: Rw; qd: number }) => `${w.rw} QD${w.qd}`;

// ---------------------------------------------------------------------------------------------
// Guest side

async function guestSide(seconds: number, bdf: string): Promise<GuestReport> {
  const dev = await waitForNamespace(bdf);
  const kernel: Record<string, Figures> = {};
  for (const w of WORKLOADS) {
    const r: FioResult = await runFio({
      filename: dev,
      rw: w.rw,
      blockSize: IO_BYTES,
      iodepth: w.qd,
      seconds,
      direct: true,
      sizeBytes: DISK_MIB * 1024 * 1024,
    });
    kernel[key(w)] = { iops: r.iops, meanUs: r.meanUs, p99Us: r.p99Us };
    console.error(`kernel nvme ${key(w)}: ${r.iops.toFixed(0)} IOPS`);
  }
  const sluice = await sluiceSide(seconds, bdf);
  return { kernel, sluice, device: dev };
}

/**
 * sluice's driver on the same controller: `sluice setup bind` moves it to vfio-pci, an App
 * attaches it as an nvme bdev through its RPC (bdev_nvme_attach_controller -t pcie -a BDF, as
 * an operator would), and each workload runs in the bdev perf loop (bench/bdev_perf.ts) on the
 * App's reactor; then the controller is detached and given back to the kernel.
 *
 * The driver (src/nvme_vfio, the nvme bdev module) is issue 6's other half: in a tree without
 * it the RPC is unknown and the column says so instead of holding a number.
 */
async function sluiceSide(
  seconds: number,
  bdf: string,
): Promise<Record<string, Figures> | { unavailable: string }> {
  const { App } = await import("../src/app.ts");
  const { measureBdev } = await import("./bdev_perf.ts");
  const { bindVfio, unbindVfio } = await import("../appliance/setup.ts");
  const app = new App(undefined, (m) => console.error(`sluice: ${m}`));
  if (app.rpc.info("bdev_nvme_attach_controller") === undefined) {
    return { unavailable: "this tree has no nvme bdev module (bdev_nvme_attach_controller)" };
  }
  const say = (l: string) => console.error(l);
  await bindVfio([bdf], undefined, say);
  app.start();
  try {
    await app.call("bdev_nvme_attach_controller", { name: "Nvme0", trtype: "pcie", traddr: bdf });
    const out: Record<string, Figures> = {};
    for (const w of WORKLOADS) {
      const r = await measureBdev({
        registry: app.bdevs,
        name: "Nvme0n1",
        thread: app.reactor,
        rw: w.rw,
        depth: w.qd,
        seconds,
        ioSizeBytes: IO_BYTES,
      });
      if (r.errors > 0) throw new Error(`sluice nvme ${key(w)}: ${r.errors} I/Os failed`);
      out[key(w)] = { iops: r.iops, meanUs: r.latencyUsMean, p99Us: r.latencyUsP99 };
      console.error(`sluice nvme ${key(w)}: ${r.iops.toFixed(0)} IOPS`);
    }
    await app.call("bdev_nvme_detach_controller", { name: "Nvme0" });
    return out;
  } finally {
    await app.shutdown();
    await unbindVfio([bdf], undefined, say);
  }
}

async function waitForNamespace(bdf: string): Promise<string> {
  const dir = `/sys/bus/pci/devices/${bdf}/nvme`;
  for (let i = 0; i < 200; i++) {
    try {
      for await (const c of Deno.readDir(dir)) {
        const dev = `/dev/${c.name}n1`;
        if (await Deno.stat(dev).then(() => true, () => false)) return dev;
      }
    } catch {
      // the driver has not probed yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no namespace of ${bdf} appeared (is it on the kernel's nvme driver?)`);
}

// ---------------------------------------------------------------------------------------------
// Host side

/** Prints the table of a guest report. */
export function printReport(r: GuestReport, seconds: number): void {
  const sluice = "unavailable" in r.sluice ? null : r.sluice;
  const rows = WORKLOADS.map((w) => {
    const kn = r.kernel[key(w)];
    const sl = sluice?.[key(w)];
    return [
      key(w),
      kn ? k(kn.iops) : "-",
      kn ? f1(kn.meanUs) : "-",
      kn ? f1(kn.p99Us) : "-",
      sl ? k(sl.iops) : "n/a",
      sl ? f1(sl.meanUs) : "n/a",
      sl ? f1(sl.p99Us) : "n/a",
      sl && kn ? ratio(sl.iops, kn.iops) : "-",
    ];
  });
  console.log(
    `\n4 KiB random I/O on QEMU's emulated NVMe (${DISK_MIB} MiB, ${r.device}), in a TCG guest, ` +
      `${seconds} s per run\n`,
  );
  table(
    [
      "workload",
      "kernel nvme IOPS",
      "mean us",
      "p99 us",
      "sluice nvme IOPS",
      "mean us",
      "p99 us",
      "sluice/kernel",
    ],
    rows,
  );
  console.log(
    "\nkernel nvme: fio --ioengine=io_uring --direct=1 on the guest's block device (latency: " +
      "fio's clat, submission to completion)." +
      "\nsluice nvme: sluice's user-space driver over VFIO (vfio-pci, intel-iommu) on the same " +
      "controller." +
      ("unavailable" in r.sluice ? `\n  n/a: ${r.sluice.unavailable}.` : "") +
      "\nUnder TCG both are bound by the emulated CPU and QEMU's device model: compare the ratio, " +
      "not the figures to real SSDs.",
  );
}

async function hostSide(seconds: number): Promise<void> {
  // Loaded here only: the guest side must not need the lab's host modules.
  const { createDiskImage, nvmePciAddress, runVfioGuest } = await import("../test/vm/vfio.ts");
  const { setupLab } = await import("../test/vm/setup.ts");
  await setupLab();
  const dir = await Deno.makeTempDir({ prefix: "sluice-bench-nvme-" });
  try {
    const img = await createDiskImage(`${dir}/nvm0.img`, DISK_MIB);
    // Written end to end, so reads hit data rather than holes of a sparse file.
    {
      using f = await Deno.open(img, { write: true });
      const chunk = new Uint8Array(1024 * 1024).fill(0xa5);
      for (let i = 0; i < DISK_MIB; i++) {
        let done = 0;
        while (done < chunk.length) done += await f.write(chunk.subarray(done));
      }
    }
    const bdf = nvmePciAddress(0);
    const started = performance.now();
    const r = await runVfioGuest({
      name: "bench-nvme",
      disks: [{ path: img }],
      memMiB: GUEST_MEM_MIB,
      script: `deno run -A "$SLUICE/bench/nvme_bench.ts" --guest --seconds ${seconds} ` +
        `--bdf ${bdf} >/dev/report`,
      timeoutSec: 120 + seconds * WORKLOADS.length * 4,
    });
    if (r.exitCode !== 0) {
      const { outputTail } = await import("../test/vm/guest.ts");
      throw new Error(`the guest side failed (${r.exitCode}):\n${outputTail(r.output, 30)}`);
    }
    const report = JSON.parse(r.report) as GuestReport;
    printReport(report, seconds);
    console.log(`\n(guest run: ${((performance.now() - started) / 1000).toFixed(0)} s)`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function parseArgs(args: readonly string[]): { guest: boolean; seconds: number; bdf: string } {
  let guest = false;
  let seconds = DEFAULT_SECONDS;
  let bdf = "0000:00:04.0";
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--guest") guest = true;
    else if (a === "--seconds") seconds = Number(args[++i]);
    else if (a === "--bdf") bdf = args[++i] ?? "";
    else throw new Error(`unknown argument ${a}; usage: nvme_bench.ts [--seconds N]`);
  }
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 60) {
    throw new Error("--seconds must be an integer from 1 to 60");
  }
  return { guest, seconds, bdf };
}

if (import.meta.main) {
  const o = parseArgs(Deno.args);
  if (o.guest) console.log(JSON.stringify(await guestSide(o.seconds, o.bdf)));
  else await hostSide(o.seconds);
}
