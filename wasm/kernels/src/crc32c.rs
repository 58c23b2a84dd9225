//! CRC32C (Castagnoli): reflected polynomial 0x82F63B78, initial register
//! 0xFFFFFFFF, final xor 0xFFFFFFFF (iSCSI, NVMe/TCP digests, ext4, btrfs).
//!
//! Two kernels:
//! - `update_scalar`: slicing-by-8 with 8 KiB of tables; the reference, and
//!   the kernel for inputs and tails under 256 bytes.
//! - `update_simd`: 16 independent streams, one per byte lane of a v128,
//!   advanced four bytes at a time with `i8x16.swizzle` nibble tables (wasm
//!   has no carry-less multiply and no gather; a swizzle is sixteen 4-bit ->
//!   8-bit lookups at once). See `simd_blocks` for the layout and
//!   docs/wasm.md for the measurements behind each choice.
//!
//! All the maths uses one linear map: `Z_n(r)`, the register after feeding
//! `n` zero bytes into register `r` (no inversions). The CRC register is
//! linear over GF(2), so the state of a message split into pieces is the
//! XOR of each piece's state shifted by `Z_n` over the bytes that follow it.

use core::arch::wasm32::*;

/// Reflected CRC32C polynomial.
pub const POLY: u32 = 0x82F6_3B78;

/// `BYTE[i] = Z_1(i)`: the classic byte-at-a-time table.
const BYTE: [u32; 256] = byte_table();

/// Slicing-by-8 tables: `SLICE8[k][i] = Z_{k+1}(i)`.
static SLICE8: [[u32; 256]; 8] = slice8_tables();

const fn byte_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = i as u32;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 1 == 1 { (r >> 1) ^ POLY } else { r >> 1 };
            bit += 1;
        }
        t[i] = r;
        i += 1;
    }
    t
}

const fn slice8_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    t[0] = BYTE;
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ BYTE[(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// Images of the 32 unit vectors under `Z_n`: column `b` is `Z_n(1 << b)`.
const fn zeros_basis(n: usize) -> [u32; 32] {
    let mut cols = [0u32; 32];
    let mut b = 0;
    while b < 32 {
        let mut r = 1u32 << b;
        let mut i = 0;
        while i < n {
            r = (r >> 8) ^ BYTE[(r & 0xff) as usize];
            i += 1;
        }
        cols[b] = r;
        b += 1;
    }
    cols
}

const fn apply_basis(cols: &[u32; 32], r: u32) -> u32 {
    let mut out = 0;
    let mut b = 0;
    while b < 32 {
        if (r >> b) & 1 == 1 {
            out ^= cols[b];
        }
        b += 1;
    }
    out
}

/// `Z_n` as 32 swizzle tables: entry `[4 * j + k][v]` is byte `k` of
/// `Z_n(v << 4j)`, i.e. what nibble `j` of the register contributes to
/// byte `k` of the result.
const fn nibble_tables(n: usize) -> [[u8; 16]; 32] {
    let cols = zeros_basis(n);
    let mut t = [[0u8; 16]; 32];
    let mut j = 0;
    while j < 8 {
        let mut v = 0;
        while v < 16 {
            let r = apply_basis(&cols, (v as u32) << (4 * j));
            let mut k = 0;
            while k < 4 {
                t[4 * j + k][v] = (r >> (8 * k)) as u8;
                k += 1;
            }
            v += 1;
        }
        j += 1;
    }
    t
}

/// `Z_n` as four byte tables (scalar): entry `[m][v]` is `Z_n(v << 8m)`.
const fn byte_tables(n: usize) -> [[u32; 256]; 4] {
    let cols = zeros_basis(n);
    let mut t = [[0u32; 256]; 4];
    let mut m = 0;
    while m < 4 {
        let mut v = 0;
        while v < 256 {
            t[m][v] = apply_basis(&cols, (v as u32) << (8 * m));
            v += 1;
        }
        m += 1;
    }
    t
}

/// Scalar slicing-by-8 update of register `crc` (not inverted) over `data`.
pub fn update_scalar(mut crc: u32, data: &[u8]) -> u32 {
    let t = &SLICE8;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ b as u32) & 0xff) as usize];
    }
    crc
}

// ---- SIMD: 16 byte-lane streams -------------------------------------------

/// Streams per block: one per byte lane of a v128.
const LANES: usize = 16;
/// Bytes per stream per block, large geometry: 4 KiB blocks. Measured: 256
/// edges out 128 and leaves a 4 KiB input as one block (no gap step).
const CHUNK_BIG: usize = 256;
/// Bytes per stream per block, small geometry: 256-byte blocks for inputs
/// and tails under 4 KiB (measured better than 512 or 1024-byte blocks from
/// 256 bytes to 4 KiB). Shorter tails go scalar.
const CHUNK_SMALL: usize = 16;

/// The 4-byte step `Z_4` as nibble tables (see `nibble_tables`).
static STEP4: [[u8; 16]; 32] = nibble_tables(4);
/// A second copy for `crc32c_strict`. Why: with the same tables its body
/// would equal `crc32c`'s and LLVM would merge the two exports into one
/// function, which the swizzle rewrite must tell apart (statics have
/// distinct addresses, so the bodies now differ).
static STEP4_STRICT: [[u8; 16]; 32] = nibble_tables(4);

/// The two linear maps a block geometry needs.
struct Geometry {
    /// `Z_{15C}`: moves a stream's state over the other 15 streams' chunks
    /// between two blocks. It is the same map for every lane, so one set of
    /// swizzle tables serves all 16 lanes.
    gap: [[u8; 16]; 32],
    /// `Z_C` as byte tables: folds the 16 states into one at the end,
    /// `r = Z_C(r) ^ s_l` for l = 1..16.
    join: [[u32; 256]; 4],
}

const fn geometry(chunk: usize) -> Geometry {
    Geometry {
        gap: nibble_tables((LANES - 1) * chunk),
        join: byte_tables(chunk),
    }
}

static BIG: Geometry = geometry(CHUNK_BIG);
static SMALL: Geometry = geometry(CHUNK_SMALL);

/// 16 CRC registers held byte-sliced: lane `l` of `b0..b3` is byte 0..3 of
/// stream `l`'s register.
#[derive(Clone, Copy)]
struct Lanes {
    b0: v128,
    b1: v128,
    b2: v128,
    b3: v128,
}

/// A linear map as 32 loaded nibble tables, `[4 * j + k]` as in
/// `nibble_tables`.
struct NibbleMap([v128; 32]);

/// Loads a map's tables with volatile reads. Why: LLVM would otherwise fold
/// loads from an immutable static into `v128.const` at each use, and V8
/// rebuilds a v128 constant with four instructions every time; a loaded
/// value lives in a register or a spill slot instead.
#[inline(always)]
fn load_map(t: &[[u8; 16]; 32]) -> NibbleMap {
    let mut out = [u8x16_splat(0); 32];
    let mut i = 0;
    while i < 32 {
        // SAFETY: reads the 16 bytes of `t[i]`.
        out[i] = unsafe { core::ptr::read_volatile(t[i].as_ptr() as *const v128) };
        i += 1;
    }
    NibbleMap(out)
}

/// The table lookup of every kernel here: lane `l` of the result is
/// `table[idx[l]]`. Every `idx` lane MUST be below 16 (callers mask with
/// 0x0f): wasm/build.ts rewrites the `i8x16.swizzle` in the `crc32c` export
/// into `i8x16.relaxed_swizzle` (V8 drops a saturating add and a constant
/// load per lookup: ~2x for this kernel), and the two agree only on such indices.
#[inline(always)]
fn lookup(table: v128, idx: v128) -> v128 {
    u8x16_swizzle(table, idx)
}

/// Applies the linear map `m` to all 16 registers: nibble `j` of every
/// register indexes table `[4j + k]` for result byte `k` (32 lookups).
#[inline(always)]
fn apply(s: Lanes, m: &NibbleMap) -> Lanes {
    let t = &m.0;
    let mask = u8x16_splat(0x0f);
    // Contributions of register byte `byte` (nibbles 2*byte, 2*byte + 1).
    let part = |b: v128, byte: usize| {
        let lo = v128_and(b, mask);
        let hi = v128_and(u16x8_shr(b, 4), mask);
        let k = |k: usize| v128_xor(lookup(t[8 * byte + k], lo), lookup(t[8 * byte + 4 + k], hi));
        (k(0), k(1), k(2), k(3))
    };
    let p0 = part(s.b0, 0);
    let p1 = part(s.b1, 1);
    let p2 = part(s.b2, 2);
    let p3 = part(s.b3, 3);
    let x = |a: v128, b: v128, c: v128, d: v128| v128_xor(v128_xor(a, b), v128_xor(c, d));
    Lanes {
        b0: x(p0.0, p1.0, p2.0, p3.0),
        b1: x(p0.1, p1.1, p2.1, p3.1),
        b2: x(p0.2, p1.2, p2.2, p3.2),
        b3: x(p0.3, p1.3, p2.3, p3.3),
    }
}

/// Four bytes of every stream: `s = Z_4(s ^ bytes)`, the slicing-by-4 step
/// done by nibble tables. Measured faster than four one-byte steps: the
/// dependency chain per four bytes is one lookup deep instead of four.
#[inline(always)]
fn step4(s: Lanes, e: &[v128], step: &NibbleMap) -> Lanes {
    let x = Lanes {
        b0: v128_xor(s.b0, e[0]),
        b1: v128_xor(s.b1, e[1]),
        b2: v128_xor(s.b2, e[2]),
        b3: v128_xor(s.b3, e[3]),
    };
    apply(x, step)
}

/// Interleaves of two vectors at 8/16/32/64-bit granularity (low and high
/// halves); V8 lowers each of these shuffles to one `punpck*`.
#[inline(always)]
fn il8(x: v128, y: v128) -> (v128, v128) {
    (
        u8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(x, y),
        u8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(x, y),
    )
}
#[inline(always)]
fn il16(x: v128, y: v128) -> (v128, v128) {
    (
        u16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(x, y),
        u16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(x, y),
    )
}
#[inline(always)]
fn il32(x: v128, y: v128) -> (v128, v128) {
    (
        u32x4_shuffle::<0, 4, 1, 5>(x, y),
        u32x4_shuffle::<2, 6, 3, 7>(x, y),
    )
}
#[inline(always)]
fn il64(x: v128, y: v128) -> (v128, v128) {
    (u64x2_shuffle::<0, 2>(x, y), u64x2_shuffle::<1, 3>(x, y))
}

/// Loads 16 bytes of each of the 16 streams (stream `l` at `p + l * C`) and
/// transposes them, 64 interleaves: result `[k]` lane `l` = byte `k` of
/// stream `l`.
///
/// # Safety
/// `p + l * C + 16` must be readable for l < 16.
#[inline(always)]
unsafe fn load_transposed<const C: usize>(p: *const u8) -> [v128; 16] {
    let a = |l: usize| v128_load(p.add(l * C) as *const v128);
    // Round 1: b_i (i < 8) = streams 2i, 2i+1, bytes 0..8; b_{i+8}: bytes 8..16.
    let (b0, b8) = il8(a(0), a(1));
    let (b1, b9) = il8(a(2), a(3));
    let (b2, b10) = il8(a(4), a(5));
    let (b3, b11) = il8(a(6), a(7));
    let (b4, b12) = il8(a(8), a(9));
    let (b5, b13) = il8(a(10), a(11));
    let (b6, b14) = il8(a(12), a(13));
    let (b7, b15) = il8(a(14), a(15));
    // Round 2: c_{4g+i} = streams 4i..4i+4, bytes 4g..4g+4.
    let (c0, c4) = il16(b0, b1);
    let (c1, c5) = il16(b2, b3);
    let (c2, c6) = il16(b4, b5);
    let (c3, c7) = il16(b6, b7);
    let (c8, c12) = il16(b8, b9);
    let (c9, c13) = il16(b10, b11);
    let (c10, c14) = il16(b12, b13);
    let (c11, c15) = il16(b14, b15);
    // Round 3: d_{2q+i} = streams 8i..8i+8, bytes 2q..2q+2.
    let (d0, d2) = il32(c0, c1);
    let (d1, d3) = il32(c2, c3);
    let (d4, d6) = il32(c4, c5);
    let (d5, d7) = il32(c6, c7);
    let (d8, d10) = il32(c8, c9);
    let (d9, d11) = il32(c10, c11);
    let (d12, d14) = il32(c12, c13);
    let (d13, d15) = il32(c14, c15);
    // Round 4: e_k = byte k of all 16 streams.
    let (e0, e1) = il64(d0, d1);
    let (e2, e3) = il64(d2, d3);
    let (e4, e5) = il64(d4, d5);
    let (e6, e7) = il64(d6, d7);
    let (e8, e9) = il64(d8, d9);
    let (e10, e11) = il64(d10, d11);
    let (e12, e13) = il64(d12, d13);
    let (e14, e15) = il64(d14, d15);
    [
        e0, e1, e2, e3, e4, e5, e6, e7, e8, e9, e10, e11, e12, e13, e14, e15,
    ]
}

/// Processes `nblocks` blocks of `16 * C` bytes from `p`, starting from
/// register `crc`, and returns the register after the last block.
///
/// Stream `l` owns bytes `[l*C, (l+1)*C)` of every block, so one 16-byte
/// load per stream plus a transpose feeds all 16 lanes. A stream's state
/// runs through its chunks in order and skips the other chunks with
/// `geo.gap` between blocks; at the end `geo.join` folds the 16 states.
///
/// # Safety
/// `p..p + nblocks * 16 * C` must be readable.
#[inline(always)]
unsafe fn simd_blocks<const C: usize>(
    crc: u32,
    mut p: *const u8,
    nblocks: usize,
    geo: &Geometry,
    step: &[[u8; 16]; 32],
) -> u32 {
    let step = load_map(step);
    // The incoming register belongs to stream 0: it precedes its bytes.
    let zero = u8x16_splat(0);
    let mut s = Lanes {
        b0: u8x16_replace_lane::<0>(zero, crc as u8),
        b1: u8x16_replace_lane::<0>(zero, (crc >> 8) as u8),
        b2: u8x16_replace_lane::<0>(zero, (crc >> 16) as u8),
        b3: u8x16_replace_lane::<0>(zero, (crc >> 24) as u8),
    };
    let mut blk = 0;
    while blk < nblocks {
        if blk > 0 {
            s = apply(s, &load_map(&geo.gap));
        }
        let mut off = 0;
        while off < C {
            let e = load_transposed::<C>(p.add(off));
            s = step4(s, &e[0..4], &step);
            s = step4(s, &e[4..8], &step);
            s = step4(s, &e[8..12], &step);
            s = step4(s, &e[12..16], &step);
            off += 16;
        }
        p = p.add(LANES * C);
        blk += 1;
    }

    let mut bytes = [[0u8; 16]; 4];
    v128_store(bytes[0].as_mut_ptr() as *mut v128, s.b0);
    v128_store(bytes[1].as_mut_ptr() as *mut v128, s.b1);
    v128_store(bytes[2].as_mut_ptr() as *mut v128, s.b2);
    v128_store(bytes[3].as_mut_ptr() as *mut v128, s.b3);
    let lane = |l: usize| u32::from_le_bytes([bytes[0][l], bytes[1][l], bytes[2][l], bytes[3][l]]);
    let j = &geo.join;
    let mut r = lane(0);
    let mut l = 1;
    while l < LANES {
        r = j[0][(r & 0xff) as usize]
            ^ j[1][((r >> 8) & 0xff) as usize]
            ^ j[2][((r >> 16) & 0xff) as usize]
            ^ j[3][(r >> 24) as usize]
            ^ lane(l);
        l += 1;
    }
    r
}

/// SIMD update of register `crc` (not inverted) over `data`: 4 KiB blocks,
/// then 256-byte blocks, then the scalar kernel for the last < 256 bytes.
/// `step` is `STEP4` or its copy `STEP4_STRICT`.
#[inline(always)]
pub fn update_simd(mut crc: u32, data: &[u8], step: &[[u8; 16]; 32]) -> u32 {
    let mut rest = data;
    let big = LANES * CHUNK_BIG;
    if rest.len() >= big {
        let n = rest.len() / big;
        // SAFETY: reads n * big <= rest.len() bytes of rest.
        crc = unsafe { simd_blocks::<CHUNK_BIG>(crc, rest.as_ptr(), n, &BIG, step) };
        rest = &rest[n * big..];
    }
    let small = LANES * CHUNK_SMALL;
    if rest.len() >= small {
        let n = rest.len() / small;
        // SAFETY: reads n * small <= rest.len() bytes of rest.
        crc = unsafe { simd_blocks::<CHUNK_SMALL>(crc, rest.as_ptr(), n, &SMALL, step) };
        rest = &rest[n * small..];
    }
    update_scalar(crc, rest)
}

/// # Safety
/// `ptr..ptr+len` must lie in linear memory (else the module traps).
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    core::slice::from_raw_parts(ptr, len)
}

/// CRC32C of `len` bytes at `ptr`, continuing from a previous CRC `seed`
/// (0 for a fresh start): `crc32c(b, crc32c(a)) == crc32c(a ++ b)`.
/// SIMD kernel; its lookups become `i8x16.relaxed_swizzle` (wasm/build.ts).
///
/// # Safety
/// `ptr..ptr+len` must lie in linear memory (else the module traps).
#[no_mangle]
pub unsafe extern "C" fn crc32c(seed: u32, ptr: *const u8, len: usize) -> u32 {
    if len == 0 {
        return seed;
    }
    !update_simd(!seed, bytes(ptr, len), &STEP4)
}

/// As `crc32c` with the same SIMD kernel left on the strict
/// `i8x16.swizzle` (build.ts does not rewrite it): the benchmark's measure
/// of what the rewrite buys, and a cross-check in the tests.
///
/// # Safety
/// `ptr..ptr+len` must lie in linear memory (else the module traps).
#[no_mangle]
pub unsafe extern "C" fn crc32c_strict(seed: u32, ptr: *const u8, len: usize) -> u32 {
    if len == 0 {
        return seed;
    }
    !update_simd(!seed, bytes(ptr, len), &STEP4_STRICT)
}

/// As `crc32c`, with the scalar slicing-by-8 kernel (the reference).
///
/// # Safety
/// `ptr..ptr+len` must lie in linear memory (else the module traps).
#[no_mangle]
pub unsafe extern "C" fn crc32c_scalar(seed: u32, ptr: *const u8, len: usize) -> u32 {
    if len == 0 {
        return seed;
    }
    !update_scalar(!seed, bytes(ptr, len))
}
