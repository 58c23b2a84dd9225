/**
 * Post-link rewrite used by wasm/build.ts: turns every `i8x16.swizzle` inside
 * chosen exported functions into `i8x16.relaxed_swizzle`.
 *
 * Why: V8 lowers the strict swizzle on x64 to a saturating add (with a
 * constant load) plus `pshufb`, so that indices >= 16 give 0; the relaxed
 * form is the bare `pshufb`. The CRC32C kernel does almost nothing but
 * swizzles, and measured ~2x faster relaxed. Debian's rustc 1.63 has no
 * relaxed-SIMD intrinsics, hence a rewrite of its output. The two
 * instructions agree whenever every index lane is below 16, which the kernels
 * guarantee by masking (see `lookup` in wasm/kernels/src/crc32c.rs); that is
 * why the rewrite is opt-in per exported function, never module-wide.
 *
 * The walker decodes every instruction (it must, to find opcode boundaries)
 * and throws on any opcode it does not know rather than guess.
 *
 * @module
 */

/** Raised when the input is not a module this rewriter understands. */
export class WasmRewriteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WasmRewriteError";
  }
}

/** Outcome of {@linkcode relaxSwizzles}. */
export interface RelaxResult {
  /** The rewritten module (a new array; the input is left untouched). */
  bytes: Uint8Array<ArrayBuffer>;
  /** Swizzles rewritten, per export name. */
  rewritten: Record<string, number>;
}

const SECTION_IMPORT = 2;
const SECTION_EXPORT = 7;
const SECTION_CODE = 10;
const EXTERNAL_FUNC = 0;
const SIMD_PREFIX = 0xfd;
const SIMD_SWIZZLE = 14;
const SIMD_RELAXED_SWIZZLE = 256;
/** Largest SIMD sub-opcode accepted: the end of the relaxed-SIMD range. */
const SIMD_LAST = 0x113;

/** Sequential reader over a byte array; every read is bounds-checked. */
class Reader {
  pos: number;
  constructor(readonly bytes: Uint8Array, pos = 0, readonly end = bytes.length) {
    this.pos = pos;
  }
  byte(): number {
    if (this.pos >= this.end) throw new WasmRewriteError("Unexpected end of module.");
    return this.bytes[this.pos++] as number;
  }
  /** Unsigned LEB128 up to 32 bits. */
  u32(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
    }
    throw new WasmRewriteError("Malformed LEB128 integer.");
  }
  /** Skips a LEB128 of any width (signed constants, 64-bit values). */
  skipLeb(): void {
    for (let i = 0; i < 10; i++) if ((this.byte() & 0x80) === 0) return;
    throw new WasmRewriteError("Malformed LEB128 integer.");
  }
  skip(n: number): void {
    if (this.pos + n > this.end) throw new WasmRewriteError("Unexpected end of module.");
    this.pos += n;
  }
  name(): string {
    const n = this.u32();
    const start = this.pos;
    this.skip(n);
    return new TextDecoder().decode(this.bytes.subarray(start, start + n));
  }
}

/** Appends without spreading (a spread of a large array overflows the stack). */
function append(dst: number[], src: ArrayLike<number>): void {
  for (let i = 0; i < src.length; i++) dst.push(src[i] as number);
}

function leb(value: number): number[] {
  const out: number[] = [];
  let v = value;
  do {
    let b = v & 0x7f;
    v = Math.floor(v / 128);
    if (v !== 0) b |= 0x80;
    out.push(b);
  } while (v !== 0);
  return out;
}

interface Section {
  id: number;
  /** Offset of the section id byte. */
  start: number;
  /** Offset of the contents (after the size). */
  body: number;
  end: number;
}

function sections(bytes: Uint8Array): Section[] {
  const magic = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  if (bytes.length < 8 || magic.some((b, i) => bytes[i] !== b)) {
    throw new WasmRewriteError("Not a version 1 WebAssembly module.");
  }
  const r = new Reader(bytes, 8);
  const out: Section[] = [];
  while (r.pos < bytes.length) {
    const start = r.pos;
    const id = r.byte();
    const size = r.u32();
    const body = r.pos;
    r.skip(size);
    out.push({ id, start, body, end: r.pos });
  }
  return out;
}

/** Number of imported functions: they come first in the function index space. */
function importedFunctions(bytes: Uint8Array, s: Section | undefined): number {
  if (s === undefined) return 0;
  const r = new Reader(bytes, s.body, s.end);
  let funcs = 0;
  for (let n = r.u32(); n > 0; n--) {
    r.name();
    r.name();
    const kind = r.byte();
    switch (kind) {
      case 0x00: // func: type index
        r.u32();
        funcs++;
        break;
      case 0x01: // table: reftype, limits
        r.byte();
        skipLimits(r);
        break;
      case 0x02: // memory: limits
        skipLimits(r);
        break;
      case 0x03: // global: valtype, mutability
        r.byte();
        r.byte();
        break;
      case 0x04: // tag: attribute, type index
        r.byte();
        r.u32();
        break;
      default:
        throw new WasmRewriteError(`Unknown import kind ${kind}.`);
    }
  }
  return funcs;
}

function skipLimits(r: Reader): void {
  const flags = r.byte();
  r.skipLeb();
  if (flags & 1) r.skipLeb();
}

function exportedFunctions(bytes: Uint8Array, s: Section | undefined): Map<string, number> {
  const out = new Map<string, number>();
  if (s === undefined) return out;
  const r = new Reader(bytes, s.body, s.end);
  for (let n = r.u32(); n > 0; n--) {
    const name = r.name();
    const kind = r.byte();
    const index = r.u32();
    if (kind === EXTERNAL_FUNC) out.set(name, index);
  }
  return out;
}

function skipMemarg(r: Reader): void {
  const align = r.u32();
  if (align & 0x40) r.u32(); // multi-memory: explicit memory index
  r.skipLeb(); // offset (u32 or u64)
}

function skipBlockType(r: Reader): void {
  const b = r.bytes[r.pos];
  // 0x40 (empty) or a one-byte value type; otherwise an s33 type index.
  if (b === 0x40 || b === 0x7f || b === 0x7e || b === 0x7d || b === 0x7c || b === 0x7b) {
    r.skip(1);
  } else if (b === 0x70 || b === 0x6f) {
    r.skip(1);
  } else {
    r.skipLeb();
  }
}

/**
 * Walks one function body and appends it to `out`, rewriting swizzles when
 * `relax` is set. Returns the number of swizzles rewritten.
 */
function rewriteBody(r: Reader, out: number[], relax: boolean): number {
  let count = 0;
  const copyFrom = (start: number) => {
    for (let i = start; i < r.pos; i++) out.push(r.bytes[i] as number);
  };
  // Locals: vec(count, valtype).
  const localsStart = r.pos;
  for (let n = r.u32(); n > 0; n--) {
    r.u32();
    r.byte();
  }
  copyFrom(localsStart);
  while (r.pos < r.end) {
    const start = r.pos;
    const op = r.byte();
    if (op === SIMD_PREFIX) {
      const sub = r.u32();
      if (sub === SIMD_SWIZZLE && relax) {
        out.push(SIMD_PREFIX);
        append(out, leb(SIMD_RELAXED_SWIZZLE));
        count++;
        continue;
      }
      skipSimdImmediates(r, sub);
    } else {
      skipImmediates(r, op);
    }
    copyFrom(start);
  }
  return count;
}

function skipSimdImmediates(r: Reader, sub: number): void {
  if (sub <= 11 || sub === 92 || sub === 93) skipMemarg(r); // loads, store, load_zero
  else if (sub === 12 || sub === 13) r.skip(16); // v128.const, i8x16.shuffle
  else if (sub >= 21 && sub <= 34) r.skip(1); // extract/replace lane
  else if (sub >= 84 && sub <= 91) { // load_lane / store_lane
    skipMemarg(r);
    r.skip(1);
  } else if (sub > SIMD_LAST) throw new WasmRewriteError(`Unknown SIMD opcode ${sub}.`);
}

function skipImmediates(r: Reader, op: number): void {
  if (op >= 0x45 && op <= 0xc4) return; // numeric, no immediates
  switch (op) {
    case 0x00: // unreachable
    case 0x01: // nop
    case 0x05: // else
    case 0x0b: // end
    case 0x0f: // return
    case 0x1a: // drop
    case 0x1b: // select
    case 0xd1: // ref.is_null
      return;
    case 0x02: // block
    case 0x03: // loop
    case 0x04: // if
      skipBlockType(r);
      return;
    case 0x0c: // br
    case 0x0d: // br_if
    case 0x10: // call
    case 0x12: // return_call
    case 0x20: // local.get
    case 0x21: // local.set
    case 0x22: // local.tee
    case 0x23: // global.get
    case 0x24: // global.set
    case 0x25: // table.get
    case 0x26: // table.set
    case 0x3f: // memory.size
    case 0x40: // memory.grow
    case 0xd2: // ref.func
      r.u32();
      return;
    case 0x0e: { // br_table
      for (let n = r.u32(); n >= 0; n--) r.u32(); // n targets + default
      return;
    }
    case 0x11: // call_indirect
    case 0x13: // return_call_indirect
      r.u32();
      r.u32();
      return;
    case 0x1c: // select t*
      r.skip(r.u32());
      return;
    case 0x41: // i32.const
    case 0x42: // i64.const
      r.skipLeb();
      return;
    case 0x43: // f32.const
      r.skip(4);
      return;
    case 0x44: // f64.const
      r.skip(8);
      return;
    case 0xd0: // ref.null
      r.skip(1);
      return;
    case 0xfc: {
      const sub = r.u32();
      if (sub <= 7) return; // saturating truncations
      if (sub === 8 || sub === 10 || sub === 12 || sub === 14) { // *.init, *.copy
        r.u32();
        r.u32();
        return;
      }
      if (sub === 9 || sub === 11 || sub === 13 || (sub >= 15 && sub <= 17)) {
        r.u32();
        return;
      }
      throw new WasmRewriteError(`Unknown 0xfc opcode ${sub}.`);
    }
  }
  if (op >= 0x28 && op <= 0x3e) { // loads and stores
    skipMemarg(r);
    return;
  }
  throw new WasmRewriteError(`Unknown opcode 0x${op.toString(16)}.`);
}

/**
 * Rewrites `i8x16.swizzle` into `i8x16.relaxed_swizzle` in the bodies of the
 * functions exported as `exportNames` (and nowhere else).
 *
 * Throws {@linkcode WasmRewriteError} when a name is not an exported
 * function of the module, when one function is exported both under a listed
 * name and an unlisted one (the rewrite would leak into the unlisted export),
 * or on an instruction the walker does not know.
 *
 * @example
 * ```ts
 * import { relaxSwizzles } from "./relax_swizzle.ts";
 * const raw = Deno.readFileSync(new URL("./dist/sluice_kernels.wasm", import.meta.url));
 * const { bytes, rewritten } = relaxSwizzles(raw, ["crc32c_strict"]);
 * console.assert((rewritten.crc32c_strict ?? 0) > 0 && bytes.length > raw.length);
 * ```
 */
export function relaxSwizzles(module: Uint8Array, exportNames: readonly string[]): RelaxResult {
  const secs = sections(module);
  const find = (id: number) => secs.find((s) => s.id === id);
  const imported = importedFunctions(module, find(SECTION_IMPORT));
  const exported = exportedFunctions(module, find(SECTION_EXPORT));

  const chosen = new Map<number, string[]>(); // code body index -> export names
  for (const name of exportNames) {
    const index = exported.get(name);
    if (index === undefined) throw new WasmRewriteError(`No exported function "${name}".`);
    if (index < imported) throw new WasmRewriteError(`Export "${name}" is an import.`);
    chosen.set(index - imported, [...(chosen.get(index - imported) ?? []), name]);
  }
  for (const [name, index] of exported) {
    const owners = chosen.get(index - imported);
    if (owners !== undefined && !owners.includes(name)) {
      throw new WasmRewriteError(
        `Export "${name}" shares its function with "${owners[0]}"; refusing to rewrite both.`,
      );
    }
  }

  const code = find(SECTION_CODE);
  if (code === undefined) throw new WasmRewriteError("Module has no code section.");
  const r = new Reader(module, code.body, code.end);
  const rewritten: Record<string, number> = {};
  for (const name of exportNames) rewritten[name] = 0;
  const body: number[] = [];
  const count = r.u32();
  append(body, leb(count));
  for (let i = 0; i < count; i++) {
    const size = r.u32();
    const fn = new Reader(module, r.pos, r.pos + size);
    const names = chosen.get(i);
    const out: number[] = [];
    const n = rewriteBody(fn, out, names !== undefined);
    for (const name of names ?? []) rewritten[name] = n;
    append(body, leb(out.length));
    append(body, out);
    r.skip(size);
  }

  const head = module.subarray(0, code.start);
  const tail = module.subarray(code.end);
  const sectionHead = [SECTION_CODE, ...leb(body.length)];
  const bytes = new Uint8Array(head.length + sectionHead.length + body.length + tail.length);
  bytes.set(head, 0);
  bytes.set(sectionHead, head.length);
  bytes.set(body, head.length + sectionHead.length);
  bytes.set(tail, head.length + sectionHead.length + body.length);
  return { bytes, rewritten };
}
