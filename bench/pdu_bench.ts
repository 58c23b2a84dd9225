/**
 * NVMe/TCP PDU receive throughput (not a test): PDUs per second through
 * {@link PduReader} for 4 KiB H2CData and for CapsuleCmd (without data, and
 * with 4 KiB of in-capsule data), with and without header and data digests.
 *
 * The stream sits in the wasm memory, as the transport's receive buffers
 * will, and is fed in 64 KiB reads, so some headers straddle two reads; the
 * data goes into a wasm-memory destination through `receiveInto`, which is
 * what the target does with a write's buffers.
 *
 * Beside each figure, measured in the same run:
 * - "floor": only the work no parser can avoid (copy each PDU's data to the
 *   destination with one memmove, CRC32C it when data digests are on, and
 *   the header digest), so the gap is the parser's own cost;
 * - "naive": a straightforward parser that slices every header and payload
 *   into fresh arrays and reads them through a new DataView, given whole
 *   PDUs in one buffer (it does not handle partial reads at all): the
 *   allocating design the reader avoids.
 *
 * Run: `deno run -A bench/pdu_bench.ts [--ms 300]`; other benches call
 * {@link runPduBench}.
 * @module
 */
import { crc32c, initWasmMemory, kernels, wasmAlloc, wasmMemoryStats } from "../wasm/mod.ts";
import {
  encodeCapsuleCmd,
  encodeH2CData,
  encodeICReq,
  pduLength,
  type PduTxParams,
  storeDataDigest,
} from "../src/nvmf_tcp/pdu.ts";
import { type PduHeader, PduReader, type TargetPduHandler } from "../src/nvmf_tcp/pdu_reader.ts";

/** One measured case. */
export interface PduBenchRow {
  /** What is parsed: PDU type, data size, digests. */
  case: string;
  /** PDUs per second through PduReader. */
  pdusPerS: number;
  /** The same in data bytes (GB/s), 0 for PDUs without data. */
  dataGbPerS: number;
  /** PDUs per second of the floor (unavoidable copy and digests only). */
  floorPdusPerS: number;
  /** PDUs per second of the naive allocating parser. */
  naivePdusPerS: number;
}

/** Options of {@link runPduBench}. */
export interface PduBenchOptions {
  /** Wall time per implementation and case, over all rounds. Default 600 ms. */
  msPerCase?: number;
  /** Interleaved rounds; the best counts. Default 5. */
  rounds?: number;
  /** Bytes per read fed to the reader. Default 65536. */
  readBytes?: number;
  /** Print the table (default true). */
  print?: boolean;
}

interface Case {
  name: string;
  /** "h2c" = H2CData, "cmd" = CapsuleCmd. */
  kind: "h2c" | "cmd";
  dataBytes: number;
  digests: boolean;
}

const CASES: Case[] = [
  { name: "H2CData 4 KiB", kind: "h2c", dataBytes: 4096, digests: false },
  { name: "H2CData 4 KiB, HDGST+DDGST", kind: "h2c", dataBytes: 4096, digests: true },
  { name: "CapsuleCmd", kind: "cmd", dataBytes: 0, digests: false },
  { name: "CapsuleCmd, HDGST", kind: "cmd", dataBytes: 0, digests: true },
  { name: "CapsuleCmd + 4 KiB ICD", kind: "cmd", dataBytes: 4096, digests: false },
  { name: "CapsuleCmd + 4 KiB ICD, HDGST+DDGST", kind: "cmd", dataBytes: 4096, digests: true },
];

/** PDUs per stream: 2 MiB of 4 KiB data PDUs, more of the small ones. */
function pduCount(c: Case): number {
  return c.dataBytes > 0 ? 512 : 16384;
}

/** Builds the stream of one case in the wasm memory (without the ICReq). */
function buildStream(c: Case): { stream: Uint8Array; plen: number } {
  const tx: PduTxParams = { hdgst: c.digests, ddgst: c.digests, txpda: 0 };
  const hlen = c.kind === "h2c" ? 24 : 72;
  const plen = pduLength(hlen, tx, c.dataBytes);
  const n = pduCount(c);
  const stream = wasmAlloc(plen * n, 64);
  const data = new Uint8Array(c.dataBytes).map((_, i) => (i * 31 + 7) & 0xff);
  const sqe = new Uint8Array(64);
  for (let i = 0; i < n; i++) {
    const at = i * plen;
    let pdo: number;
    if (c.kind === "h2c") {
      pdo = encodeH2CData(stream, at, tx, i & 0xffff, 1, 0, c.dataBytes, true);
    } else {
      sqe[0] = c.dataBytes > 0 ? 0x01 : 0x02;
      sqe[2] = i & 0xff;
      sqe[3] = (i >>> 8) & 0xff;
      pdo = encodeCapsuleCmd(stream, at, tx, sqe, c.dataBytes);
    }
    if (c.dataBytes > 0) {
      stream.set(data, at + pdo);
      if (c.digests) storeDataDigest(stream, at + pdo + c.dataBytes, [data], 1, 0, c.dataBytes);
    }
  }
  return { stream, plen };
}

/** Runs `f` (which parses `pdus` PDUs per call) for about `ms`; returns PDUs/s. */
function rate(f: () => void, pdus: number, ms: number): number {
  let calls = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < ms) {
    f();
    calls++;
    t = performance.now();
  }
  return (calls * pdus) / ((t - t0) / 1000);
}

function readerRunner(c: Case, stream: Uint8Array, readBytes: number): () => void {
  const dest = [wasmAlloc(Math.max(c.dataBytes, 64), 64)];
  let reader: PduReader | null = null;
  let sink = 0;
  const handler: TargetPduHandler = {
    onICReq(h: PduHeader) {
      reader?.setDigests((h.dgst & 1) !== 0, (h.dgst & 2) !== 0);
    },
    onCapsuleCmd(h: PduHeader) {
      sink = (sink + h.cccid) & 0xffff;
      if (h.dataLength > 0) reader?.receiveInto(dest, 1, 0);
    },
    onH2CData(h: PduHeader) {
      reader?.receiveInto(dest, 1, h.datao);
    },
    onTermReq() {},
    onData() {},
    onDataEnd(h: PduHeader) {
      if (!h.ddgstOk) throw new Error("data digest mismatch in the bench stream");
    },
    onError(e) {
      throw new Error(e.message);
    },
  };
  reader = new PduReader({ role: "target", maxInCapsuleData: 8192 }, handler);
  const ic = new Uint8Array(128);
  encodeICReq(ic, 0, { hpda: 0, hdgst: c.digests, ddgst: c.digests, maxr2t: 0 });
  reader.consume(ic);
  const r = reader;
  const len = stream.length;
  return () => {
    for (let at = 0; at < len; at += readBytes) {
      r.consume(stream, at, Math.min(len, at + readBytes));
    }
    if (sink === -1) console.log(sink);
  };
}

function floorRunner(c: Case, stream: Uint8Array, plen: number): () => void {
  const dest = wasmAlloc(Math.max(c.dataBytes, 64), 64);
  const whole = new Uint8Array(kernels.memory.buffer);
  const n = pduCount(c);
  const hlen = c.kind === "h2c" ? 24 : 72;
  const pdo = plen - c.dataBytes - (c.digests && c.dataBytes > 0 ? 4 : 0);
  const base = stream.byteOffset;
  let sink = 0;
  return () => {
    for (let i = 0; i < n; i++) {
      const at = base + i * plen;
      if (c.digests) sink ^= kernels.crc32c(0, at, hlen);
      if (c.dataBytes > 0) {
        whole.copyWithin(dest.byteOffset, at + pdo, at + pdo + c.dataBytes);
        if (c.digests) sink ^= kernels.crc32c(0, dest.byteOffset, c.dataBytes);
      }
    }
    if (sink === 0.5) console.log(sink);
  };
}

function naiveRunner(c: Case, stream: Uint8Array): () => void {
  const dest = new Uint8Array(Math.max(c.dataBytes, 64));
  let sink = 0;
  return () => {
    let pos = 0;
    while (pos < stream.length) {
      const ch = new DataView(stream.slice(pos, pos + 8).buffer);
      const flags = ch.getUint8(1);
      const hlen = ch.getUint8(2);
      const pdo = ch.getUint8(3);
      const plen = ch.getUint32(4, true);
      const header = stream.slice(pos, pos + hlen);
      const hv = new DataView(header.buffer);
      sink ^= hv.getUint16(hlen === 72 ? 10 : 8, true);
      if (flags & 1) {
        const got = new DataView(stream.slice(pos + hlen, pos + hlen + 4).buffer).getUint32(
          0,
          true,
        );
        if (got !== crc32c(header)) throw new Error("header digest");
      }
      const dd = flags & 2 ? 4 : 0;
      if (pdo > 0) {
        const data = stream.slice(pos + pdo, pos + plen - dd);
        if (dd) {
          const got = new DataView(stream.slice(pos + plen - 4, pos + plen).buffer).getUint32(
            0,
            true,
          );
          if (got !== crc32c(data)) throw new Error("data digest");
        }
        dest.set(data);
      }
      pos += plen;
    }
  };
}

/** Heap this bench reserves when nobody has called `initWasmMemory` yet. */
const BENCH_HEAP_BYTES = 48 * 1024 * 1024;

/**
 * Measures every case with the reader, the floor and the naive parser,
 * prints a table and returns the rows. Needs about 30 MiB of wasm heap:
 * it reserves 48 MiB if the process has not initialised the wasm memory.
 */
export function runPduBench(opts: PduBenchOptions = {}): PduBenchRow[] {
  const rounds = opts.rounds ?? 5;
  const msPerRound = (opts.msPerCase ?? 600) / rounds;
  const readBytes = opts.readBytes ?? 65536;
  if (wasmMemoryStats().heapCapacityBytes === 0) initWasmMemory(BENCH_HEAP_BYTES);
  const rows: PduBenchRow[] = [];
  for (const c of CASES) {
    const { stream, plen } = buildStream(c);
    const n = pduCount(c);
    const impls = [
      readerRunner(c, stream, readBytes),
      floorRunner(c, stream, plen),
      naiveRunner(c, stream),
    ];
    const best = [0, 0, 0];
    for (const f of impls) f(); // warm up
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < impls.length; k++) {
        best[k] = Math.max(best[k] as number, rate(impls[k] as () => void, n, msPerRound));
      }
    }
    const pdus = best[0] as number;
    rows.push({
      case: c.name,
      pdusPerS: pdus,
      dataGbPerS: (pdus * c.dataBytes) / 1e9,
      floorPdusPerS: best[1] as number,
      naivePdusPerS: best[2] as number,
    });
  }
  if (opts.print ?? true) printTable(rows, readBytes);
  return rows;
}

function fmtRate(v: number): string {
  return v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : `${(v / 1e3).toFixed(0)}k`;
}

function printTable(rows: PduBenchRow[], readBytes: number): void {
  const header = [
    "case",
    "PduReader PDU/s",
    "data GB/s",
    "floor PDU/s",
    "reader/floor",
    "naive PDU/s",
    "reader/naive",
  ];
  const cells = rows.map((r) => [
    r.case,
    fmtRate(r.pdusPerS),
    r.dataGbPerS > 0 ? r.dataGbPerS.toFixed(2) : "-",
    fmtRate(r.floorPdusPerS),
    `${(r.pdusPerS / r.floorPdusPerS).toFixed(2)}x`,
    fmtRate(r.naivePdusPerS),
    `${(r.pdusPerS / r.naivePdusPerS).toFixed(2)}x`,
  ]);
  const all = [header, ...cells];
  const widths = header.map((_, i) => Math.max(...all.map((row) => (row[i] ?? "").length)));
  console.log(`NVMe/TCP PDU receive, ${readBytes}-byte reads from wasm memory (best of rounds)`);
  for (const [k, row] of all.entries()) {
    console.log(
      row.map((v, i) => (i === 0 ? v.padEnd(widths[i] ?? 0) : v.padStart(widths[i] ?? 0)))
        .join("  "),
    );
    if (k === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--ms");
  const ms = i >= 0 ? Number(Deno.args[i + 1]) : undefined;
  runPduBench({ msPerCase: ms });
}
