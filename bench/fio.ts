/**
 * fio as the peer: the same workload on the same file, measured in the
 * same run, so every sluice figure stands beside what the kernel's own
 * io_uring path does.
 * @module
 */

/** One fio job's result. */
export interface FioResult {
  iops: number;
  meanUs: number;
  p50Us: number;
  p99Us: number;
}

/** Options for {@link runFio}. */
export interface FioJob {
  filename: string;
  rw: "randread" | "randwrite";
  blockSize: number;
  iodepth: number;
  seconds: number;
  direct: boolean;
  /** Bytes of the file to use (from offset 0). */
  sizeBytes: number;
  /** CPU to pin fio to, as the bench pins sluice. */
  cpu?: number;
}

/** Is fio installed? */
export async function haveFio(): Promise<boolean> {
  try {
    const { code } = await new Deno.Command("fio", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return code === 0;
  } catch {
    return false;
  }
}

/** Runs one fio job with io_uring and returns its figures. */
export async function runFio(job: FioJob): Promise<FioResult> {
  const args = [
    "--name=peer",
    `--filename=${job.filename}`,
    "--ioengine=io_uring",
    `--rw=${job.rw}`,
    `--bs=${job.blockSize}`,
    `--iodepth=${job.iodepth}`,
    `--direct=${job.direct ? 1 : 0}`,
    `--size=${job.sizeBytes}`,
    "--time_based",
    `--runtime=${job.seconds}`,
    "--ramp_time=0",
    "--randrepeat=0",
    "--norandommap",
    "--output-format=json",
    ...(job.cpu !== undefined ? [`--cpus_allowed=${job.cpu}`] : []),
  ];
  const out = await new Deno.Command("fio", { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (out.code !== 0) {
    throw new Error(`fio failed (${out.code}): ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  // fio may print warnings before the JSON document.
  const doc = JSON.parse(text.slice(text.indexOf("{"))) as {
    jobs: {
      read: FioDir;
      write: FioDir;
    }[];
  };
  const job0 = doc.jobs[0];
  if (job0 === undefined) throw new Error("fio printed no job");
  const dir = job.rw === "randread" ? job0.read : job0.write;
  const pct = dir.clat_ns.percentile ?? {};
  return {
    iops: dir.iops,
    meanUs: dir.clat_ns.mean / 1000,
    p50Us: (pct["50.000000"] ?? 0) / 1000,
    p99Us: (pct["99.000000"] ?? 0) / 1000,
  };
}

interface FioDir {
  iops: number;
  clat_ns: { mean: number; percentile?: Record<string, number> };
}
