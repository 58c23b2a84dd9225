import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import {
  blank,
  concat,
  encodeGenPdu,
  type GeneratedStream,
  generateStream,
  type GenPdu,
  mutate,
  Prng,
  randomPdu,
} from "../testing/nvme_tcp_pdu_gen.ts";
import { crc32c, initWasmMemory, wasmAlloc } from "../../wasm/mod.ts";
import {
  encodeC2HData,
  encodeCapsuleResp,
  encodeICReq,
  encodeICResp,
  encodeR2T,
  Fes,
  getLe32,
  type PduRole,
  type PduTxParams,
  PduType,
  pduTypeName,
  setLe16,
  setLe32,
  storeDataDigest,
} from "./pdu.ts";
import {
  type HostPduHandler,
  type PduError,
  type PduHeader,
  PduReader,
  PduReaderState,
  type TargetPduHandler,
} from "./pdu_reader.ts";

// ---------------------------------------------------------------------------
// A recording handler: every event as a line, every PDU's data as bytes.

function hex(b: Uint8Array, s = 0, e = b.length): string {
  let out = "";
  for (let i = s; i < e; i++) out += (b[i] as number).toString(16).padStart(2, "0");
  return out;
}

type Delivery = "copy" | "pieces";

interface ReaderSetup {
  role: PduRole;
  rxpda?: number;
  maxData?: number;
}

/** Implements both handler roles and records everything. */
class Recorder implements TargetPduHandler, HostPduHandler {
  events: string[] = [];
  datas: Uint8Array[] = [];
  errors: PduError[] = [];
  reader: PduReader | null = null;
  /** Fill slack around copy destinations and check it stays untouched. */
  #dest: Uint8Array | null = null;
  #destStart = 0;
  #pieces: Uint8Array[] = [];
  #after = 0;
  ddgstFailures = 0;

  constructor(
    readonly delivery: Delivery,
    readonly acceptDigests = true,
    /** Make data destinations one byte short (to provoke Data Transfer Out of Range). */
    readonly shortDest = false,
  ) {}

  #r(): PduReader {
    if (this.reader === null) throw new Error("reader not attached");
    return this.reader;
  }

  #event(line: string): void {
    if (this.#r().stopped && this.errors.length > 0) this.#after++;
    this.events.push(line);
  }

  #maybeDest(h: PduHeader): void {
    if (h.dataLength === 0) return;
    if (this.delivery === "pieces") {
      this.#pieces = [];
      return;
    }
    // Three iovs (one of them empty) around a slack prefix and suffix of 0xee.
    const slack = h.datao % 7;
    const total = this.shortDest ? slack + h.dataLength - 1 : slack + h.dataLength + 3;
    const buf = new Uint8Array(total).fill(0xee);
    const a = Math.min(total, slack + 5);
    const b = Math.min(total, Math.max(a, slack + (h.dataLength >> 1)));
    const iovs = [buf.subarray(0, a), buf.subarray(a, a), buf.subarray(a, b), buf.subarray(b)];
    this.#dest = buf;
    this.#destStart = slack;
    this.#r().receiveInto(iovs, iovs.length, slack);
  }

  onICReq(h: PduHeader): void {
    this.#event(`ICReq pfv=${h.pfv} hpda=${h.pda} dgst=${h.dgst} maxr2t=${h.maxr2t}`);
    if (this.acceptDigests) this.#r().setDigests((h.dgst & 1) !== 0, (h.dgst & 2) !== 0);
  }
  onICResp(h: PduHeader): void {
    this.#event(`ICResp pfv=${h.pfv} cpda=${h.pda} dgst=${h.dgst} maxh2cdata=${h.maxh2cdata}`);
    if (this.acceptDigests) this.#r().setDigests((h.dgst & 1) !== 0, (h.dgst & 2) !== 0);
  }
  onTermReq(h: PduHeader): void {
    this.#event(
      `${pduTypeName[h.type]} fes=${h.fes} fei=${h.fei} data=${
        hex(h.bytes, h.termDataOffset, h.offset + h.plen)
      }`,
    );
  }
  onCapsuleCmd(h: PduHeader): void {
    const sqe = new Uint8Array(64);
    h.copySqe(sqe);
    this.#event(`CapsuleCmd flags=${h.flags} cid=${h.cccid} len=${h.dataLength} sqe=${hex(sqe)}`);
    this.#maybeDest(h);
  }
  onCapsuleResp(h: PduHeader): void {
    const cqe = new Uint8Array(16);
    h.copyCqe(cqe);
    this.#event(`CapsuleResp flags=${h.flags} cid=${h.cccid} cqe=${hex(cqe)}`);
  }
  onH2CData(h: PduHeader): void {
    this.#event(
      `H2CData flags=${h.flags} cccid=${h.cccid} ttag=${h.ttag} datao=${h.datao} datal=${h.datal}`,
    );
    this.#maybeDest(h);
  }
  onC2HData(h: PduHeader): void {
    this.#event(`C2HData flags=${h.flags} cccid=${h.cccid} datao=${h.datao} datal=${h.datal}`);
    this.#maybeDest(h);
  }
  onR2T(h: PduHeader): void {
    this.#event(`R2T cccid=${h.cccid} ttag=${h.ttag} r2to=${h.r2to} r2tl=${h.r2tl}`);
  }
  onData(_h: PduHeader, bytes: Uint8Array, start: number, end: number): void {
    assert(this.delivery === "pieces", "onData while a destination was named");
    assert(end > start, "empty data piece");
    this.#pieces.push(bytes.slice(start, end));
  }
  onDataEnd(h: PduHeader): void {
    let data: Uint8Array;
    if (this.delivery === "pieces") {
      data = concat(this.#pieces);
    } else {
      const d = this.#dest;
      if (d === null) throw new Error("no destination");
      const s = this.#destStart;
      for (let i = 0; i < s; i++) assertEquals(d[i], 0xee, "prefix slack overwritten");
      for (let i = s + h.dataLength; i < d.length; i++) assertEquals(d[i], 0xee, "suffix overrun");
      data = d.slice(s, s + h.dataLength);
    }
    if (!h.ddgstOk) this.ddgstFailures++;
    this.datas.push(data);
    this.#event(`end len=${data.length} ok=${h.ddgstOk}`);
  }
  onError(e: PduError): void {
    this.errors.push(e);
    this.events.push(`error fes=${e.fes} fei=${e.fei} reply=${e.sendTermReq}`);
  }
  /** Events recorded after the reader had stopped on an error (must stay 0). */
  get eventsAfterStop(): number {
    return this.#after;
  }
}

function attach(rec: Recorder, s: ReaderSetup): PduReader {
  const reader = s.role === "target"
    ? new PduReader({
      role: "target",
      rxpda: s.rxpda,
      maxInCapsuleData: s.maxData,
      maxH2CData: s.maxData,
    }, rec)
    : new PduReader({ role: "host", rxpda: s.rxpda, maxC2HData: s.maxData }, rec);
  rec.reader = reader;
  return reader;
}

/** The events a correct reader reports for a generated stream. */
function expectedEvents(pdus: readonly GenPdu[]): { events: string[]; datas: Uint8Array[] } {
  const events: string[] = [];
  const datas: Uint8Array[] = [];
  for (const p of pdus) {
    const n = p.data?.length ?? 0;
    switch (p.type) {
      case PduType.ICReq:
        events.push(`ICReq pfv=0 hpda=${p.pda} dgst=${p.dgst} maxr2t=${p.maxr2t}`);
        break;
      case PduType.ICResp:
        events.push(`ICResp pfv=0 cpda=${p.pda} dgst=${p.dgst} maxh2cdata=${p.maxh2cdata}`);
        break;
      case PduType.H2CTermReq:
      case PduType.C2HTermReq:
        events.push(
          `${pduTypeName[p.type]} fes=${p.fes} fei=${p.fei} data=${
            hex(p.data ?? new Uint8Array())
          }`,
        );
        continue;
      case PduType.CapsuleCmd:
        events.push(
          `CapsuleCmd flags=${p.flags} cid=${p.cccid} len=${n} sqe=${
            hex(p.qe ?? new Uint8Array())
          }`,
        );
        break;
      case PduType.CapsuleResp:
        events.push(
          `CapsuleResp flags=${p.flags} cid=${p.cccid} cqe=${hex(p.qe ?? new Uint8Array())}`,
        );
        break;
      case PduType.H2CData:
        events.push(
          `H2CData flags=${p.flags} cccid=${p.cccid} ttag=${p.ttag} datao=${p.datao} datal=${n}`,
        );
        break;
      case PduType.C2HData:
        events.push(`C2HData flags=${p.flags} cccid=${p.cccid} datao=${p.datao} datal=${n}`);
        break;
      case PduType.R2T:
        events.push(`R2T cccid=${p.cccid} ttag=${p.ttag} r2to=${p.r2to} r2tl=${p.r2tl}`);
        break;
    }
    if (n > 0) {
      datas.push(p.data ?? new Uint8Array());
      events.push(`end len=${n} ok=true`);
    }
  }
  return { events, datas };
}

interface Run {
  rec: Recorder;
  reader: PduReader;
  consumed: number;
}

/** Feeds `bytes` split at the given cut points (sorted, inside the array). */
function feed(bytes: Uint8Array, cuts: readonly number[], s: ReaderSetup, delivery: Delivery): Run {
  const rec = new Recorder(delivery);
  const reader = attach(rec, s);
  let at = 0;
  let consumed = 0;
  for (const c of [...cuts, bytes.length]) {
    consumed += reader.consume(bytes, at, c);
    at = c;
  }
  return { rec, reader, consumed };
}

function feedAll(bytes: Uint8Array, s: ReaderSetup, d: Delivery): Run {
  return feed(bytes, [], s, d);
}

function feedBytewise(bytes: Uint8Array, s: ReaderSetup, d: Delivery): Run {
  const rec = new Recorder(d);
  const reader = attach(rec, s);
  let consumed = 0;
  // Each byte in its own one-byte array: nothing can lean on the previous read.
  for (let i = 0; i < bytes.length; i++) consumed += reader.consume(bytes.slice(i, i + 1));
  return { rec, reader, consumed };
}

function assertSameRun(a: Run, b: Run, what: string): void {
  assertEquals(b.rec.events, a.rec.events, `${what}: events`);
  assertEquals(b.rec.datas.length, a.rec.datas.length, `${what}: data PDUs`);
  for (let i = 0; i < a.rec.datas.length; i++) {
    assertEquals(b.rec.datas[i], a.rec.datas[i], `${what}: data of PDU ${i}`);
  }
  // After an error the count depends on where reads were cut (bytes of the
  // bad PDU's header in an earlier read were consumed into the assembly buffer).
  if (a.rec.errors.length === 0) assertEquals(b.consumed, a.consumed, `${what}: bytes consumed`);
  if (a.rec.errors[0] !== undefined) {
    assertEquals(b.rec.errors[0]?.header, a.rec.errors[0].header, `${what}: error header`);
    assertEquals(b.rec.errors[0]?.streamOffset, a.rec.errors[0].streamOffset, `${what}: offset`);
  }
}

function assertMatchesStream(run: Run, g: GeneratedStream, what: string): void {
  const want = expectedEvents(g.pdus);
  assertEquals(run.rec.errors.length, 0, `${what}: ${run.rec.errors[0]?.message}`);
  assertEquals(run.rec.events, want.events, `${what}: events`);
  assertEquals(run.rec.datas.length, want.datas.length, `${what}: data PDUs`);
  for (let i = 0; i < want.datas.length; i++) {
    assertEquals(run.rec.datas[i], want.datas[i], `${what}: data of PDU ${i}`);
  }
  assertEquals(run.consumed, g.bytes.length, `${what}: consumed`);
  assertEquals(run.reader.pdusReceived, g.pdus.length, `${what}: PDU count`);
}

const DIGESTS: [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];

// ---------------------------------------------------------------------------
// Round trips and streams.

Deno.test("reader: every PDU type round-trips from the encoders, with and without digests", () => {
  for (const role of ["target", "host"] as const) {
    for (const [hd, dd] of DIGESTS) {
      const prng = new Prng(role === "target" ? 11 : 12);
      const g = generateStream(prng, {
        receiver: role,
        hdgst: hd,
        ddgst: dd,
        count: 40,
        maxData: 300,
        termReq: true,
      });
      const types = new Set(g.pdus.map((p) => p.type));
      const want = role === "target" ? [0, 2, 4, 6] : [1, 3, 5, 7, 9];
      for (const t of want) assert(types.has(t), `stream lacks ${pduTypeName[t]}`);
      for (const d of ["copy", "pieces"] as const) {
        const run = feedAll(g.bytes, { role }, d);
        assertMatchesStream(run, g, `${role} hd=${hd} dd=${dd} ${d}`);
        assertEquals(run.reader.state, PduReaderState.Terminated);
        assertEquals(run.reader.hdgstEnabled, hd);
        assertEquals(run.reader.ddgstEnabled, dd);
      }
    }
  }
});

Deno.test("reader: a mixed stream gives the same events whole, byte by byte and at every split", () => {
  for (const role of ["target", "host"] as const) {
    for (const [hd, dd] of DIGESTS) {
      for (const pda of [0, 7]) {
        const seed = (role === "target" ? 100 : 200) + (hd ? 10 : 0) + (dd ? 20 : 0) + pda;
        const g = generateStream(new Prng(seed), {
          receiver: role,
          hdgst: hd,
          ddgst: dd,
          pda,
          count: 10,
          maxData: 160,
          termReq: seed % 2 === 0,
        });
        const setup = { role, rxpda: pda };
        const what = `${role} hd=${hd} dd=${dd} pda=${pda}`;
        for (const d of ["copy", "pieces"] as const) {
          const whole = feedAll(g.bytes, setup, d);
          assertMatchesStream(whole, g, `${what} ${d} whole`);
          assertSameRun(whole, feedBytewise(g.bytes, setup, d), `${what} ${d} bytewise`);
          for (let cut = 1; cut < g.bytes.length; cut++) {
            assertSameRun(whole, feed(g.bytes, [cut], setup, d), `${what} ${d} split at ${cut}`);
          }
        }
      }
    }
  }
});

Deno.test("reader: random read sizes over a long stream, and headers assembled only when split", () => {
  const prng = new Prng(7);
  const g = generateStream(prng, {
    receiver: "target",
    hdgst: true,
    ddgst: true,
    count: 300,
    maxData: 4096,
  });
  const whole = feedAll(g.bytes, { role: "target" }, "copy");
  assertMatchesStream(whole, g, "whole");
  assertEquals(whole.reader.headersAssembled, 0, "one read: every header in place");
  for (let round = 0; round < 20; round++) {
    const cuts: number[] = [];
    for (let at = prng.range(1, 3000); at < g.bytes.length; at += prng.range(1, 3000)) {
      cuts.push(at);
    }
    const run = feed(g.bytes, cuts, { role: "target" }, prng.bool() ? "copy" : "pieces");
    assertMatchesStream(run, g, `round ${round}`);
    assert(run.reader.headersAssembled <= cuts.length, "assembled only headers cut by a read");
  }
});

Deno.test("reader: the read buffer can be reused as soon as consume returns", () => {
  const g = generateStream(new Prng(5), {
    receiver: "host",
    hdgst: true,
    ddgst: false,
    count: 30,
    maxData: 500,
  });
  // One 100-byte read buffer, overwritten with garbage after every consume.
  const rec = new Recorder("copy");
  const reader = attach(rec, { role: "host" });
  const buf = new Uint8Array(100);
  for (let at = 0; at < g.bytes.length; at += 100) {
    const n = Math.min(100, g.bytes.length - at);
    buf.set(g.bytes.subarray(at, at + n));
    assertEquals(reader.consume(buf, 0, n), n);
    buf.fill(0x5a);
  }
  assertMatchesStream({ rec, reader, consumed: g.bytes.length }, g, "reused buffer");
});

// ---------------------------------------------------------------------------
// Malformed PDUs: the right FES and FEI.

const NONE: PduTxParams = { hdgst: false, ddgst: false, txpda: 0 };

function icReq(hdgst: boolean, ddgst: boolean): Uint8Array {
  const b = new Uint8Array(128);
  encodeICReq(b, 0, { hpda: 0, hdgst, ddgst, maxr2t: 0 });
  return b;
}

function icResp(hdgst: boolean, ddgst: boolean): Uint8Array {
  const b = new Uint8Array(128);
  encodeICResp(b, 0, { cpda: 0, hdgst, ddgst, maxh2cdata: 65536 });
  return b;
}

function cmd(tx: PduTxParams, dataLength: number, cid = 1): Uint8Array {
  const p: GenPdu = blank(PduType.CapsuleCmd);
  p.qe = new Uint8Array(64);
  p.qe[2] = cid;
  p.data = dataLength > 0 ? new Uint8Array(dataLength).fill(0x33) : null;
  return encodeGenPdu(p, tx);
}

function h2c(tx: PduTxParams, n: number): Uint8Array {
  const p = blank(PduType.H2CData);
  p.cccid = 1;
  p.ttag = 2;
  p.data = new Uint8Array(n).fill(0x44);
  p.flags = 4;
  return encodeGenPdu(p, tx);
}

function hostPdu(type: number, tx: PduTxParams, f: (p: GenPdu) => void = () => {}): Uint8Array {
  const p = blank(type);
  p.cccid = 3;
  p.ttag = 4;
  p.r2tl = 100;
  p.qe = type === PduType.CapsuleResp ? new Uint8Array(16) : null;
  if (type === PduType.C2HData) {
    p.data = new Uint8Array(50).fill(9);
    p.flags = 4;
  }
  if (type === PduType.C2HTermReq) p.fes = 1;
  f(p);
  return encodeGenPdu(p, tx);
}

/** Recomputes the header digest after patching a header. */
function reHdgst(b: Uint8Array): Uint8Array {
  const hlen = b[2] as number;
  setLe32(b, hlen, crc32c(b.subarray(0, hlen)));
  return b;
}

function patch(b: Uint8Array, f: (b: Uint8Array) => void): Uint8Array {
  const c = b.slice();
  f(c);
  return c;
}

interface BadCase {
  name: string;
  role: PduRole;
  /** What precedes the bad PDU (IC exchange, ...). */
  before: Uint8Array;
  bad: Uint8Array;
  fes: number;
  fei: number;
  /** Bytes of the bad PDU's header the error carries. */
  headerBytes: number;
  reply?: boolean;
  rxpda?: number;
  maxData?: number;
}

const HD: PduTxParams = { hdgst: true, ddgst: false, txpda: 0 };
const DD: PduTxParams = { hdgst: false, ddgst: true, txpda: 0 };
const tIc = icReq(false, false);
const tIcH = icReq(true, false);
const tIcD = icReq(false, true);
const hIc = icResp(false, false);

const BAD: BadCase[] = [
  {
    name: "unknown PDU type",
    role: "target",
    before: tIc,
    bad: patch(cmd(NONE, 0), (b) => b[0] = 0x08),
    fes: Fes.InvalidHeaderField,
    fei: 0,
    headerBytes: 8,
  },
  {
    name: "a host PDU type sent to a target",
    role: "target",
    before: tIc,
    bad: hostPdu(PduType.CapsuleResp, NONE),
    fes: Fes.InvalidHeaderField,
    fei: 0,
    headerBytes: 8,
  },
  {
    name: "a target PDU type sent to a host",
    role: "host",
    before: hIc,
    bad: cmd(NONE, 0),
    fes: Fes.InvalidHeaderField,
    fei: 0,
    headerBytes: 8,
  },
  {
    name: "CapsuleCmd before the ICReq",
    role: "target",
    before: new Uint8Array(0),
    bad: cmd(NONE, 0),
    fes: Fes.PduSequenceError,
    fei: 0,
    headerBytes: 8,
  },
  {
    name: "CapsuleResp before the ICResp",
    role: "host",
    before: new Uint8Array(0),
    bad: hostPdu(PduType.CapsuleResp, NONE),
    fes: Fes.PduSequenceError,
    fei: 0,
    headerBytes: 8,
  },
  {
    name: "a second ICReq",
    role: "target",
    before: tIc,
    bad: tIc,
    fes: Fes.PduSequenceError,
    fei: 0,
    headerBytes: 8,
  },
  {
    name: "ICReq with flags",
    role: "target",
    before: new Uint8Array(0),
    bad: patch(tIc, (b) => b[1] = 1),
    fes: Fes.InvalidHeaderField,
    fei: 1,
    headerBytes: 8,
  },
  {
    name: "reserved flag in a CapsuleCmd",
    role: "target",
    before: tIc,
    bad: patch(cmd(NONE, 0), (b) => b[1] = 0x04),
    fes: Fes.InvalidHeaderField,
    fei: 1,
    headerBytes: 8,
  },
  {
    name: "HDGSTF set without negotiated header digests",
    role: "target",
    before: tIc,
    bad: cmd(HD, 0),
    fes: Fes.InvalidHeaderField,
    fei: 1,
    headerBytes: 8,
  },
  {
    name: "HDGSTF missing with negotiated header digests",
    role: "target",
    before: tIcH,
    bad: cmd(NONE, 0),
    fes: Fes.InvalidHeaderField,
    fei: 1,
    headerBytes: 8,
  },
  {
    name: "data without DDGSTF under negotiated data digests",
    role: "target",
    before: tIcD,
    bad: cmd(NONE, 16),
    fes: Fes.InvalidHeaderField,
    fei: 1,
    headerBytes: 8,
  },
  {
    name: "DDGSTF without negotiated data digests",
    role: "target",
    before: tIc,
    bad: cmd(DD, 16),
    fes: Fes.InvalidHeaderField,
    fei: 1,
    headerBytes: 8,
  },
  {
    name: "DDGSTF on a CapsuleCmd without data",
    role: "target",
    before: tIcD,
    bad: patch(cmd(NONE, 0), (b) => b[1] = 2),
    fes: Fes.InvalidHeaderField,
    fei: 1,
    headerBytes: 8,
  },
  {
    name: "SUCCESS in an H2CData",
    role: "target",
    before: tIc,
    bad: patch(h2c(NONE, 8), (b) => b[1] = 0x0c),
    fes: Fes.InvalidHeaderField,
    fei: 1,
    headerBytes: 8,
  },
  {
    name: "C2HData SUCCESS without LAST_PDU",
    role: "host",
    before: hIc,
    bad: patch(hostPdu(PduType.C2HData, NONE), (b) => b[1] = 0x08),
    fes: Fes.InvalidHeaderField,
    fei: 1,
    headerBytes: 8,
  },
  {
    name: "CapsuleCmd HLEN 24",
    role: "target",
    before: tIc,
    bad: patch(cmd(NONE, 0), (b) => b[2] = 24),
    fes: Fes.InvalidHeaderField,
    fei: 2,
    headerBytes: 8,
  },
  {
    name: "H2CData HLEN 72",
    role: "target",
    before: tIc,
    bad: patch(h2c(NONE, 100), (b) => b[2] = 72),
    fes: Fes.InvalidHeaderField,
    fei: 2,
    headerBytes: 8,
  },
  {
    name: "ICResp HLEN 124",
    role: "host",
    before: new Uint8Array(0),
    bad: patch(hIc, (b) => b[2] = 124),
    fes: Fes.InvalidHeaderField,
    fei: 2,
    headerBytes: 8,
  },
  {
    name: "PDO inside the header (PDO < HLEN)",
    role: "target",
    before: tIc,
    bad: patch(cmd(NONE, 16), (b) => b[3] = 68),
    fes: Fes.InvalidHeaderField,
    fei: 3,
    headerBytes: 8,
  },
  {
    name: "PDO inside the header digest (PDO < HLEN + HDGST)",
    role: "target",
    before: tIcH,
    bad: reHdgst(patch(cmd(HD, 16), (b) => b[3] = 72)),
    fes: Fes.InvalidHeaderField,
    fei: 3,
    headerBytes: 8,
  },
  {
    name: "PDO not aligned to the CPDA",
    role: "target",
    rxpda: 7,
    before: tIc,
    bad: cmd(NONE, 16), // PDO 72, CPDA asks for 32-byte alignment
    fes: Fes.InvalidHeaderField,
    fei: 3,
    headerBytes: 8,
  },
  {
    name: "PDO past PLEN",
    role: "target",
    before: tIc,
    bad: patch(cmd(NONE, 16), (b) => b[3] = 200),
    fes: Fes.InvalidHeaderField,
    fei: 3,
    headerBytes: 8,
  },
  {
    name: "PDO in a CapsuleResp",
    role: "host",
    before: hIc,
    bad: patch(hostPdu(PduType.CapsuleResp, NONE), (b) => b[3] = 24),
    fes: Fes.InvalidHeaderField,
    fei: 3,
    headerBytes: 8,
  },
  {
    name: "PLEN shorter than HLEN",
    role: "target",
    before: tIc,
    bad: patch(cmd(NONE, 0), (b) => setLe32(b, 4, 20)),
    fes: Fes.InvalidHeaderField,
    fei: 4,
    headerBytes: 8,
  },
  {
    name: "R2T with PLEN beyond its header",
    role: "host",
    before: hIc,
    bad: patch(hostPdu(PduType.R2T, NONE), (b) => setLe32(b, 4, 28)),
    fes: Fes.InvalidHeaderField,
    fei: 4,
    headerBytes: 8,
  },
  {
    name: "H2CData without data",
    role: "target",
    before: tIc,
    bad: patch(h2c(NONE, 8), (b) => {
      b[3] = 0;
      setLe32(b, 4, 24);
    }),
    fes: Fes.InvalidHeaderField,
    fei: 4,
    headerBytes: 8,
  },
  {
    name: "ICReq PLEN 132",
    role: "target",
    before: new Uint8Array(0),
    bad: patch(tIc, (b) => setLe32(b, 4, 132)),
    fes: Fes.InvalidHeaderField,
    fei: 4,
    headerBytes: 8,
  },
  {
    name: "in-capsule data beyond the limit",
    role: "target",
    maxData: 8192,
    before: tIc,
    bad: cmd(NONE, 8193),
    fes: Fes.DataTransferLimitExceeded,
    fei: 0,
    headerBytes: 8,
  },
  {
    name: "H2CData beyond MAXH2CDATA",
    role: "target",
    maxData: 4096,
    before: tIc,
    bad: h2c(NONE, 4100),
    fes: Fes.DataTransferLimitExceeded,
    fei: 0,
    headerBytes: 8,
  },
  {
    name: "PLEN of 4 GiB",
    role: "host",
    before: hIc,
    bad: patch(hostPdu(PduType.C2HData, NONE), (b) => setLe32(b, 4, 0xffffffff)),
    fes: Fes.DataTransferLimitExceeded,
    fei: 0,
    headerBytes: 8,
  },
  {
    name: "H2CData DATAL not matching its data",
    role: "target",
    before: tIc,
    bad: patch(h2c(NONE, 100), (b) => setLe32(b, 16, 99)),
    fes: Fes.InvalidHeaderField,
    fei: 16,
    headerBytes: 24,
  },
  {
    name: "C2HData DATAL not matching its data (behind a header digest)",
    role: "host",
    before: icResp(true, false),
    bad: reHdgst(patch(hostPdu(PduType.C2HData, HD), (b) => setLe32(b, 16, 0))),
    fes: Fes.InvalidHeaderField,
    fei: 16,
    headerBytes: 24,
  },
  {
    name: "R2T asking for 0 bytes",
    role: "host",
    before: hIc,
    bad: patch(hostPdu(PduType.R2T, NONE), (b) => setLe32(b, 16, 0)),
    fes: Fes.InvalidHeaderField,
    fei: 16,
    headerBytes: 24,
  },
  {
    name: "ICReq PFV 1",
    role: "target",
    before: new Uint8Array(0),
    bad: patch(tIc, (b) => setLe16(b, 8, 1)),
    fes: Fes.UnsupportedParameter,
    fei: 8,
    headerBytes: 128,
  },
  {
    name: "ICReq HPDA 32",
    role: "target",
    before: new Uint8Array(0),
    bad: patch(tIc, (b) => b[10] = 32),
    fes: Fes.InvalidHeaderField,
    fei: 10,
    headerBytes: 128,
  },
  {
    name: "ICReq reserved DGST bit",
    role: "target",
    before: new Uint8Array(0),
    bad: patch(tIc, (b) => b[11] = 4),
    fes: Fes.InvalidHeaderField,
    fei: 11,
    headerBytes: 128,
  },
  {
    name: "ICResp MAXH2CDATA below 4096",
    role: "host",
    before: new Uint8Array(0),
    bad: patch(hIc, (b) => setLe32(b, 12, 4092)),
    fes: Fes.InvalidHeaderField,
    fei: 12,
    headerBytes: 128,
  },
  {
    name: "ICResp MAXH2CDATA not a multiple of 4",
    role: "host",
    before: new Uint8Array(0),
    bad: patch(hIc, (b) => setLe32(b, 12, 8190)),
    fes: Fes.InvalidHeaderField,
    fei: 12,
    headerBytes: 128,
  },
  {
    name: "TermReq PLEN above 152: close without a TermReq",
    role: "target",
    before: tIc,
    bad: patch(new Uint8Array(200), (b) => {
      b[0] = 2;
      b[2] = 24;
      setLe32(b, 4, 200);
    }),
    fes: Fes.InvalidHeaderField,
    fei: 4,
    headerBytes: 8,
    reply: false,
  },
  {
    name: "TermReq with a header digest flag: close without a TermReq",
    role: "host",
    before: icResp(true, false),
    bad: patch(hostPdu(PduType.C2HTermReq, NONE), (b) => b[1] = 1),
    fes: Fes.InvalidHeaderField,
    fei: 1,
    headerBytes: 8,
    reply: false,
  },
];

Deno.test("reader: each malformed PDU yields its FES and FEI, whole and byte by byte", () => {
  for (const c of BAD) {
    // A valid PDU after the bad one must not be seen.
    const trailer = c.role === "target" ? cmd(NONE, 0, 9) : hostPdu(PduType.CapsuleResp, NONE);
    const stream = concat([c.before, c.bad, trailer]);
    const setup = { role: c.role, rxpda: c.rxpda, maxData: c.maxData };
    for (const d of ["copy", "pieces"] as const) {
      for (const bytewise of [false, true]) {
        const run = bytewise ? feedBytewise(stream, setup, d) : feedAll(stream, setup, d);
        const what = `${c.name} (${bytewise ? "byte by byte" : "whole"}, ${d})`;
        assertEquals(run.rec.errors.length, 1, `${what}: one error`);
        const e = run.rec.errors[0] as PduError;
        assertEquals([e.fes, e.fei], [c.fes, c.fei], `${what}: FES/FEI (${e.message})`);
        assertEquals(e.sendTermReq, c.reply ?? true, `${what}: reply`);
        assertEquals(e.streamOffset, c.before.length, `${what}: stream offset`);
        assertEquals(e.header, c.bad.subarray(0, c.headerBytes), `${what}: offending header`);
        assert(e.message.length > 0);
        assertEquals(run.rec.eventsAfterStop, 0, `${what}: events after the error`);
        assert(!run.rec.events.some((l) => l.includes("cid=9")), `${what}: trailer parsed`);
        assertEquals(run.reader.state, PduReaderState.Failed);
        assert(run.consumed < stream.length, `${what}: stopped consuming`);
        assertEquals(run.reader.consume(trailer), 0, `${what}: consumes nothing after`);
      }
    }
  }
});

Deno.test("reader: a header digest mismatch is FES 3 with the received digest as FEI", () => {
  for (
    const [role, ic, bad] of [
      ["target", tIcH, cmd(HD, 0)],
      ["target", icReq(true, true), cmd({ hdgst: true, ddgst: true, txpda: 0 }, 64)],
      ["host", icResp(true, false), hostPdu(PduType.CapsuleResp, HD)],
      [
        "host",
        icResp(true, true),
        hostPdu(PduType.C2HData, { hdgst: true, ddgst: true, txpda: 0 }),
      ],
    ] as const
  ) {
    const hlen = bad[2] as number;
    for (const flipAt of [9, hlen - 1, hlen, hlen + 3]) {
      const b = patch(bad, (x) => x[flipAt] = (x[flipAt] as number) ^ 0x10);
      const received = getLe32(b, hlen);
      for (const bytewise of [false, true]) {
        const stream = concat([ic, b]);
        const run = bytewise
          ? feedBytewise(stream, { role }, "copy")
          : feedAll(stream, { role }, "copy");
        assertEquals(run.rec.errors.length, 1, `${role} flip ${flipAt}`);
        const e = run.rec.errors[0] as PduError;
        assertEquals([e.fes, e.fei], [Fes.HeaderDigestError, received]);
        assertEquals(e.header, b.subarray(0, hlen));
        assertEquals(run.rec.events.length, 2, "the IC event and the error, nothing else");
      }
    }
  }
});

Deno.test("reader: a data digest mismatch is reported in onDataEnd and the stream goes on", () => {
  const tx: PduTxParams = { hdgst: false, ddgst: true, txpda: 0 };
  for (const role of ["target", "host"] as const) {
    const ic = role === "target" ? tIcD : icResp(false, true);
    const good = role === "target" ? h2c(tx, 300) : hostPdu(PduType.C2HData, tx);
    for (const flip of ["data", "digest"] as const) {
      const bad = patch(good, (b) => {
        const at = flip === "data" ? 24 + 5 : b.length - 2;
        b[at] = (b[at] as number) ^ 1;
      });
      const stream = concat([ic, bad, good]);
      for (const d of ["copy", "pieces"] as const) {
        for (const bytewise of [false, true]) {
          const run = bytewise ? feedBytewise(stream, { role }, d) : feedAll(stream, { role }, d);
          assertEquals(run.rec.errors.length, 0);
          assertEquals(run.rec.ddgstFailures, 1, `${role} ${flip} ${d}`);
          const ends = run.rec.events.filter((l) => l.startsWith("end"));
          assertEquals(ends.map((l) => l.endsWith("ok=true")), [false, true]);
          assertEquals(run.consumed, stream.length);
        }
      }
    }
  }
});

Deno.test("reader: receiveInto with too small a buffer is Data Transfer Out of Range", () => {
  class Small extends Recorder {
    override onH2CData(h: PduHeader): void {
      const r = this.reader;
      if (r === null) throw new Error("no reader");
      r.receiveInto([new Uint8Array(10), new Uint8Array(20)], 2, h.datao + 5);
    }
  }
  const rec = new Small("copy");
  const reader = attach(rec, { role: "target" });
  const stream = concat([tIc, h2c(NONE, 26)]);
  reader.consume(stream);
  assertEquals(rec.errors.length, 1);
  const e = rec.errors[0] as PduError;
  assertEquals([e.fes, e.fei, e.sendTermReq], [Fes.DataTransferOutOfRange, 0, true]);
  assertEquals(e.header, stream.subarray(128, 128 + 24));
  assert(reader.stopped);
});

Deno.test("reader: the handler can fail a PDU, in its header callback or after its data", () => {
  const stream = concat([tIc, h2c(NONE, 40), cmd(NONE, 0, 5)]);
  for (const when of ["header", "dataEnd"] as const) {
    class Failing extends Recorder {
      override onH2CData(h: PduHeader): void {
        super.onH2CData(h);
        if (when === "header") this.reader?.fail(Fes.PduSequenceError, 0, "unknown TTAG");
      }
      override onDataEnd(h: PduHeader): void {
        super.onDataEnd(h);
        if (when === "dataEnd") this.reader?.fail(Fes.DataTransferOutOfRange, 0, "too much");
      }
    }
    const rec = new Failing("copy");
    const reader = attach(rec, { role: "target" });
    reader.consume(stream);
    assertEquals(rec.errors.length, 1, when);
    const e = rec.errors[0] as PduError;
    assertEquals(e.fes, when === "header" ? Fes.PduSequenceError : Fes.DataTransferOutOfRange);
    // Both carry the H2CData header (rebuilt from its fields after the data).
    assertEquals(e.header, stream.subarray(128, 128 + 24), when);
    assert(!rec.events.some((l) => l.includes("cid=5")), "nothing after the failure");
    reader.fail(Fes.InvalidHeaderField, 1, "second");
    assertEquals(rec.errors.length, 1, "the first error wins");
  }
});

Deno.test("reader: misuse is a programming error", () => {
  const rec = new Recorder("copy");
  const reader = attach(rec, { role: "target" });
  assertThrows(() => reader.receiveInto([], 0, 0), Error, "header callback");
  assertThrows(() => reader.consume(new Uint8Array(4), 3, 2), RangeError, "Bad range");
  assertThrows(() => reader.consume(new Uint8Array(4), 0, 5), RangeError, "Bad range");
  assertThrows(
    () => new PduReader({ role: "target", rxpda: 32 }, rec),
    RangeError,
    "rxpda",
  );
  assertThrows(
    () =>
      new PduReader({ role: "host" }, {
        onTermReq() {},
        onData() {},
        onDataEnd() {},
        onError() {},
        onICResp() {},
        onCapsuleResp() {},
        onC2HData() {},
      } as unknown as HostPduHandler),
    TypeError,
    "onR2T",
  );
  class Reentrant extends Recorder {
    override onICReq(h: PduHeader): void {
      super.onICReq(h);
      this.reader?.consume(new Uint8Array(1));
    }
  }
  const re = new Reentrant("copy");
  const r2 = attach(re, { role: "target" });
  assertThrows(() => r2.consume(tIc), Error, "re-entrant");
});

Deno.test("reader: a TermReq stops the reader without an error", () => {
  const term = hostPdu(PduType.C2HTermReq, NONE, (p) => {
    p.fes = Fes.HeaderDigestError;
    p.fei = 0x12345678;
    p.data = new Uint8Array(28).fill(7);
  });
  for (const before of [new Uint8Array(0), hIc]) {
    const stream = concat([before, term, hostPdu(PduType.CapsuleResp, NONE)]);
    const run = feedBytewise(stream, { role: "host" }, "copy");
    assertEquals(run.rec.errors.length, 0);
    assertEquals(run.rec.events.at(-1), `C2HTermReq fes=3 fei=305419896 data=${"07".repeat(28)}`);
    assertEquals(run.reader.state, PduReaderState.Terminated);
    assertEquals(run.consumed, before.length + term.length);
  }
});

// ---------------------------------------------------------------------------
// Fuzz: random and mutated streams never make the reader throw.

/** A handler that picks its delivery at random and checks the reader's promises. */
class FuzzHandler extends Recorder {
  constructor(prng: Prng) {
    const copy = prng.bool();
    super(copy ? "copy" : "pieces", prng.bool(0.9), copy && prng.bool(0.05));
  }
}

function fuzzOnce(
  prng: Prng,
  input: Uint8Array,
  role: PduRole,
  rxpda: number,
  cuts: number[],
): Run {
  const rec = new FuzzHandler(new Prng(prng.u32()));
  const reader = attach(rec, { role, rxpda, maxData: 4096 });
  let at = 0;
  let consumed = 0;
  for (const c of [...cuts, input.length]) {
    consumed += reader.consume(input, at, c);
    at = c;
  }
  return { rec, reader, consumed };
}

Deno.test("reader: fuzz with random and mutated PDUs (seeded, bounded)", () => {
  const prng = new Prng(0x5eed);
  const iterations = 10_000;
  let errors = 0;
  const fesSeen = new Map<number, number>();
  for (let i = 0; i < iterations; i++) {
    const role: PduRole = prng.bool() ? "target" : "host";
    let input: Uint8Array;
    const kind = prng.int(10);
    if (kind === 0) {
      input = prng.bytes(prng.range(1, 400));
    } else if (kind === 1) {
      const parts = [];
      for (let k = prng.range(1, 4); k > 0; k--) parts.push(randomPdu(prng, role));
      input = concat(parts);
    } else {
      const g = generateStream(prng, {
        receiver: role,
        hdgst: prng.bool(),
        ddgst: prng.bool(),
        count: prng.range(0, 6),
        maxData: prng.pick([8, 100, 600]),
        termReq: prng.bool(0.2),
      });
      input = kind === 2
        ? g.bytes
        : mutate(prng, g.bytes, prng.range(1, 4), g.pdus.map((p) => p.offset));
    }
    const cuts: number[] = [];
    for (let at = prng.range(1, 64); at < input.length; at += prng.range(1, 64)) cuts.push(at);
    const seed = prng.u32();
    const rxpda = prng.bool(0.8) ? 0 : prng.int(32);
    let whole: Run;
    let split: Run;
    try {
      whole = fuzzOnce(new Prng(seed), input, role, rxpda, []);
      split = fuzzOnce(new Prng(seed), input, role, rxpda, cuts);
    } catch (err) {
      throw new Error(`iteration ${i}: the reader threw on ${hex(input.subarray(0, 64))}`, {
        cause: err,
      });
    }
    assertSameRun(whole, split, `iteration ${i}`);
    if (kind === 2 && rxpda === 0 && whole.rec.acceptDigests && !whole.rec.shortDest) {
      assertEquals(whole.rec.errors.length, 0, `iteration ${i}: a valid stream was rejected`);
    }
    for (const run of [whole, split]) {
      assert(run.rec.errors.length <= 1, `iteration ${i}: more than one error`);
      assertEquals(run.rec.eventsAfterStop, 0, `iteration ${i}: events after the error`);
      const e = run.rec.errors[0];
      if (e !== undefined) {
        assert(e.fes >= 1 && e.fes <= 6, `iteration ${i}: FES ${e.fes}`);
        assert(Number.isInteger(e.fei) && e.fei >= 0 && e.fei <= 0xffffffff);
        assert(e.message.length > 0);
        assert(e.header.length >= 8 && e.header.length <= 128);
        assertEquals(
          e.header,
          input.subarray(e.streamOffset, e.streamOffset + e.header.length),
          `iteration ${i}: offending header`,
        );
        assert(run.reader.stopped);
        assertEquals(run.reader.consume(new Uint8Array(16)), 0);
      } else if (!run.reader.stopped) {
        assertEquals(run.consumed, input.length, `iteration ${i}: consumed all`);
      }
    }
    if (whole.rec.errors[0] !== undefined) {
      errors++;
      const fes = whole.rec.errors[0].fes;
      fesSeen.set(fes, (fesSeen.get(fes) ?? 0) + 1);
    }
  }
  assert(errors > iterations / 2, `only ${errors} of ${iterations} inputs were rejected`);
  for (const fes of [1, 2, 3, 4, 5, 6]) {
    assert(fesSeen.has(fes), `no FES ${fes} in the fuzz run: ${[...fesSeen]}`);
  }
});

// ---------------------------------------------------------------------------
// Steady state allocates nothing: V8's GC trace in a child process.

function gcChild(mode: string): void {
  const stdio = Deno.dlopen("libc.so.6", {
    puts: { parameters: ["buffer"], result: "i32" },
    fflush: { parameters: ["pointer"], result: "i32" },
  });
  const mark = (text: string) => {
    stdio.symbols.fflush(null);
    stdio.symbols.puts(new TextEncoder().encode(`${text}\0`));
    stdio.symbols.fflush(null);
  };
  initWasmMemory(16 << 20);
  if (mode === "encode") return gcEncode(mark);
  // mode: [host-](plain|header|data|digests|alloc)
  const host = mode.startsWith("host-");
  const m = host ? mode.slice(5) : mode;
  const g = generateStream(new Prng(99), {
    receiver: host ? "host" : "target",
    hdgst: m === "digests" || m === "alloc" || m === "header",
    ddgst: m === "digests" || m === "alloc" || m === "data",
    count: 200,
    maxData: 1024,
    maxInCapsule: 1024,
  });
  const icLen = 128;
  const body = g.bytes.subarray(icLen);
  const recv = wasmAlloc(body.length, 64);
  recv.set(body);
  const dest = [wasmAlloc(4096, 64)];
  let sink = 0;
  let reader: PduReader | null = null;
  const base = {
    onTermReq() {},
    onData(_h: PduHeader, bytes: Uint8Array, start: number, end: number) {
      // The control: keeps a copy of every piece, as a careless handler would.
      sink = (sink + bytes.slice(start, end).length) & 0xffff;
    },
    onDataEnd(h: PduHeader) {
      if (!h.ddgstOk) throw new Error("digest");
    },
    onError(e: PduError) {
      throw new Error(e.message);
    },
  };
  const setDigests = (h: PduHeader) => reader?.setDigests((h.dgst & 1) !== 0, (h.dgst & 2) !== 0);
  const data = (h: PduHeader, at: number) => {
    if (h.dataLength > 0 && m !== "alloc") reader?.receiveInto(dest, 1, at);
  };
  if (host) {
    const handler: HostPduHandler = {
      ...base,
      onICResp: setDigests,
      onCapsuleResp(h) {
        sink = (sink + h.cccid) & 0xffff;
      },
      onC2HData(h) {
        data(h, h.datao);
      },
      onR2T(h) {
        sink = (sink + h.r2tl) & 0xffff;
      },
    };
    reader = new PduReader({ role: "host", maxC2HData: 4096 }, handler);
  } else {
    const handler: TargetPduHandler = {
      ...base,
      onICReq: setDigests,
      onCapsuleCmd(h) {
        sink = (sink + h.cccid) & 0xffff;
        data(h, 0);
      },
      onH2CData(h) {
        data(h, h.datao);
      },
    };
    reader = new PduReader({ role: "target", maxInCapsuleData: 4096, maxH2CData: 4096 }, handler);
  }
  reader.consume(g.bytes.subarray(0, icLen));
  const r = reader;
  const run = (n: number) => {
    for (let i = 0; i < n; i++) {
      // MTU-sized reads: most headers in place, some straddling two reads.
      for (let at = 0; at < recv.length; at += 1448) {
        r.consume(recv, at, Math.min(recv.length, at + 1448));
      }
    }
  };
  run(300);
  mark("MEASURE-BEGIN");
  run(3000);
  mark("MEASURE-END");
  console.log(`pdus=${r.pdusReceived} assembled=${r.headersAssembled} sink=${sink}`);
  stdio.close();
}

/** The send side: a target's headers and digests, encoded into wasm memory. */
function gcEncode(mark: (text: string) => void): void {
  const tx: PduTxParams = { hdgst: true, ddgst: true, txpda: 0 };
  const out = wasmAlloc(256, 64);
  const data = [wasmAlloc(4096, 64)];
  const cqe = new Uint8Array(16);
  let sink = 0;
  const run = (n: number) => {
    for (let i = 0; i < n; i++) {
      const k = i & 0xffff;
      let at = encodeC2HData(out, 0, tx, k, 0, 4096, true, false);
      at += storeDataDigest(out, at, data, 1, 0, 4096);
      at += encodeR2T(out, at, tx, k, k, 0, 8192);
      cqe[12] = k & 0xff;
      at += encodeCapsuleResp(out, at, tx, cqe);
      sink = (sink + at) & 0xffff;
    }
  };
  run(100_000);
  mark("MEASURE-BEGIN");
  run(1_000_000);
  mark("MEASURE-END");
  console.log(`pdus=3000000 sink=${sink}`);
}

if (Deno.args[0] === "--gc-child") {
  gcChild(Deno.args[1] ?? "digests");
  Deno.exit(0);
}

Deno.test("reader and encoders: no allocation per PDU in steady state (V8 GC trace)", async () => {
  const script = new URL(import.meta.url).pathname;
  async function gcEvents(mode: string): Promise<{ gcs: number; pdus: number }> {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--v8-flags=--trace-gc", script, "--gc-child", mode],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert(out.success, `child failed: ${new TextDecoder().decode(out.stderr)}`);
    const begin = text.indexOf("MEASURE-BEGIN");
    const end = text.indexOf("MEASURE-END");
    assert(begin >= 0 && end > begin, `markers missing in: ${text.slice(0, 2000)}`);
    const gcs = text.slice(begin, end).split("\n").filter((l) => /Scavenge|Mark-Compact/.test(l));
    const pdus = Number(/pdus=(\d+)/.exec(text)?.[1] ?? "0");
    return { gcs: gcs.length, pdus };
  }
  const modes = ["digests", "plain", "host-digests", "host-plain", "encode", "alloc"];
  const results = await Promise.all(modes.map(gcEvents));
  const control = results[5];
  assert(control !== undefined && control.gcs > 0, "the allocating control shows no GC");
  for (let i = 0; i < 5; i++) {
    const r = results[i];
    assert(r !== undefined && r.pdus > 500_000, `${modes[i]}: only ${r?.pdus} PDUs measured`);
    assertEquals(r.gcs, 0, `GC events while parsing (${modes[i]})`);
  }
});
