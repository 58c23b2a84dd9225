//! AES-256-XTS (IEEE 1619 / NIST SP 800-38E), constant time, on wasm
//! simd128: the S-box by vector permutes (Hamburg's vpaes idea: GF(2^8)
//! inversion as nibble lookups over GF(2^4)), no secret-dependent branch,
//! no secret-dependent memory address.
//!
//! ## The S-box as sixteen-entry lookups
//!
//! A byte `x` of the AES field GF(2^8) (polynomial 0x11b) is written
//! `x = enc(i) + v * enc(k)` with `i`, `k` in the subfield GF(2^4) (`enc`
//! maps a nibble to the subfield through the GF(2) basis `SUB_BASIS`), and
//! `v = 0x12` (not in the subfield). In that basis (`bmap`) the inverse of
//! `x` falls out of five lookups of single nibbles and four xors:
//!
//! ```text
//! j = i ^ k     iak = INV[i] ^ AK[k]     jak = INV[j] ^ AK[k]
//! io = INV[iak] ^ j                      jo = INV[jak] ^ i
//! x^-1 = F[io] ^ G[jo]
//! ```
//!
//! where `INV` is inversion in GF(2^4) and `AK[k] = c / k` (c = enc(13)).
//! Division by zero gives the flag 0x80, and a lookup at an index with bit 7
//! set gives 0 (`i8x16.swizzle` zeroes any index >= 16): that is how zero
//! propagates. The constants `v`, `c` were found by an exhaustive search
//! over all (v, c) for which such `F`, `G` exist; `F`, `G` are derived here
//! at compile time, and the identity is checked for all 256 bytes at
//! compile time too (`check_inversion`): a wrong constant fails the build.
//!
//! The output tables fold in everything linear that follows the inversion:
//! the S-box's affine map (its constant 0x63 goes into the round keys), the
//! doubling of MixColumns (encryption) or the 9/11/13/14 products of
//! InvMixColumns (decryption), and the change back into the nibble basis
//! for the next round. The state thus stays in the nibble basis from the
//! first round to the last; the round keys are converted once per key.
//!
//! Every lookup index lies in [0, 16) or [0x80, 0x90): the relaxed swizzle
//! returns 0 for indices >= 128 on every engine, exactly as the strict one
//! (relaxed-SIMD spec), which is why `xts_encrypt`/`xts_decrypt` may be
//! listed in wasm/build.ts (see docs/wasm.md).
//!
//! ## Speed
//!
//! Blocks are processed `LANES` at a time (independent dependency chains,
//! so the lookups of one block fill the latency of another); the tables
//! are loaded once per call.

use core::arch::wasm32::*;

// ---------------------------------------------------------------------------
// Scalar GF(2^8) helpers (compile time, and constant-time key expansion)

/// Multiplication in GF(2^8) mod x^8 + x^4 + x^3 + x + 1, without a branch
/// on the operands (masks instead): also used on key bytes.
const fn gmul(a: u8, b: u8) -> u8 {
    let mut a = a;
    let mut r = 0u8;
    let mut bit = 0;
    while bit < 8 {
        let m = 0u8.wrapping_sub((b >> bit) & 1);
        r ^= a & m;
        let hi = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & hi);
        bit += 1;
    }
    r
}

/// x^254 = x^-1 (0 for 0), by a fixed chain of multiplications.
const fn ginv(x: u8) -> u8 {
    // 254 = 0b11111110: square-and-multiply with a fixed sequence.
    let x2 = gmul(x, x);
    let x3 = gmul(x2, x);
    let x6 = gmul(x3, x3);
    let x12 = gmul(x6, x6);
    let x15 = gmul(x12, x3);
    let x30 = gmul(x15, x15);
    let x60 = gmul(x30, x30);
    let x120 = gmul(x60, x60);
    let x126 = gmul(x120, x6);
    let x127 = gmul(x126, x);
    gmul(x127, x127)
}

/// The linear part of the S-box's affine map.
const fn affine_lin(y: u8) -> u8 {
    y ^ y.rotate_left(1) ^ y.rotate_left(2) ^ y.rotate_left(3) ^ y.rotate_left(4)
}

/// The inverse of `affine_lin`.
const fn affine_lin_inv(y: u8) -> u8 {
    y.rotate_left(1) ^ y.rotate_left(3) ^ y.rotate_left(6)
}

/// The AES S-box, constant time (key expansion).
const fn sbox(x: u8) -> u8 {
    affine_lin(ginv(x)) ^ 0x63
}

// ---------------------------------------------------------------------------
// The nibble representation (all compile time)

/// A GF(2) basis of the subfield GF(2^4) inside GF(2^8) (elements z with
/// z^16 = z); nibble bit b selects `SUB_BASIS[b]`.
const SUB_BASIS: [u8; 4] = [0x01, 0x0c, 0x50, 0xb0];
/// The second coordinate's multiplier: x = enc(i) + V * enc(k).
const V: u8 = 0x12;
/// The constant of the `AK` table, as a nibble: AK[k] = enc(C) / enc(k).
const C: u8 = 13;
/// Division by zero: a lookup at an index with bit 7 set yields 0.
const FLAG: u8 = 0x80;

const fn enc(n: u8) -> u8 {
    let mut e = 0;
    let mut b = 0;
    while b < 4 {
        e ^= SUB_BASIS[b] & 0u8.wrapping_sub((n >> b) & 1);
        b += 1;
    }
    e
}

const fn dec(e: u8) -> u8 {
    let mut n = 0;
    while n < 16 {
        if enc(n) == e {
            return n;
        }
        n += 1;
    }
    panic!("not in the subfield");
}

/// The nibble pair `(i << 4) | k` -> the field element it stands for.
const fn from_nibbles(b: u8) -> u8 {
    enc(b >> 4) ^ gmul(V, enc(b & 15))
}

/// Columns of the GF(2)-linear map field element -> nibble pair.
const fn bmap_cols() -> [u8; 8] {
    // Invert `from_nibbles` by search (it is a bijection; checked below).
    let mut cols = [0u8; 8];
    let mut bit = 0;
    while bit < 8 {
        let mut b = 0u16;
        let mut found = false;
        while b < 256 {
            if from_nibbles(b as u8) == 1 << bit {
                cols[bit] = b as u8;
                found = true;
            }
            b += 1;
        }
        assert!(found, "from_nibbles is not onto");
        bit += 1;
    }
    cols
}

const BMAP_COLS: [u8; 8] = bmap_cols();

/// Field element -> nibble pair, as a GF(2) matrix product: no lookup
/// indexed by the (possibly secret) byte, so it serves key expansion too.
const fn bmap(x: u8) -> u8 {
    let mut out = 0;
    let mut bit = 0;
    while bit < 8 {
        out ^= BMAP_COLS[bit] & 0u8.wrapping_sub((x >> bit) & 1);
        bit += 1;
    }
    out
}

const fn inv_table() -> [u8; 16] {
    let mut t = [FLAG; 16];
    let mut n = 1;
    while n < 16 {
        t[n] = dec(ginv(enc(n as u8)));
        n += 1;
    }
    t
}

const fn ak_table() -> [u8; 16] {
    let mut t = [FLAG; 16];
    let mut n = 1;
    while n < 16 {
        t[n] = dec(gmul(enc(C), ginv(enc(n as u8))));
        n += 1;
    }
    t
}

const INV: [u8; 16] = inv_table();
const AK: [u8; 16] = ak_table();

/// A strict-swizzle lookup on one byte.
const fn look(t: &[u8; 16], idx: u8) -> u8 {
    if idx < 16 {
        t[idx as usize]
    } else {
        0
    }
}

/// `(io, jo)` of the nibble pair `b`.
const fn io_jo(b: u8) -> (u8, u8) {
    let i = b >> 4;
    let k = b & 15;
    let j = i ^ k;
    let ak = AK[k as usize];
    let iak = look(&INV, i) ^ ak;
    let jak = look(&INV, j) ^ ak;
    (look(&INV, iak) ^ j, look(&INV, jak) ^ i)
}

/// `F` and `G` with x^-1 = F[io] ^ G[jo]: read off the bytes whose other
/// half is flagged (contributes 0).
const fn fg_tables() -> ([u8; 16], [u8; 16]) {
    let mut f = [0u8; 16];
    let mut g = [0u8; 16];
    let mut b = 0u16;
    while b < 256 {
        let (io, jo) = io_jo(b as u8);
        let y = ginv(from_nibbles(b as u8));
        if jo >= 16 && io < 16 {
            f[io as usize] = y;
        }
        if io >= 16 && jo < 16 {
            g[jo as usize] = y;
        }
        b += 1;
    }
    (f, g)
}

const FG: ([u8; 16], [u8; 16]) = fg_tables();

/// Compile-time proof that the lookups invert every byte, that `bmap`
/// inverts `from_nibbles`, and that every index stays in [0,16) or
/// [0x80,0x90) (the relaxed-swizzle argument).
#[allow(dead_code)] // used only by the compile-time assertion below
const fn check_inversion() -> bool {
    let mut b = 0u16;
    while b < 256 {
        let x = from_nibbles(b as u8);
        assert!(bmap(x) == b as u8, "bmap does not invert from_nibbles");
        let i = (b as u8) >> 4;
        let k = (b as u8) & 15;
        let iak = look(&INV, i) ^ AK[k as usize];
        let jak = look(&INV, i ^ k) ^ AK[k as usize];
        assert!(iak < 16 || (iak >= 0x80 && iak < 0x90), "index range");
        assert!(jak < 16 || (jak >= 0x80 && jak < 0x90), "index range");
        let (io, jo) = io_jo(b as u8);
        assert!(io < 16 || (io >= 0x80 && io < 0x90), "index range");
        assert!(jo < 16 || (jo >= 0x80 && jo < 0x90), "index range");
        assert!(
            look(&FG.0, io) ^ look(&FG.1, jo) == ginv(x),
            "inversion identity fails"
        );
        b += 1;
    }
    true
}

const _: () = assert!(check_inversion());
const _: () = {
    assert!(sbox(0x00) == 0x63);
    assert!(sbox(0x53) == 0xed);
    assert!(sbox(0xff) == 0x16);
};

/// Output table pair: entry a = map(F[a]) / map(G[a]); flagged entries 0.
const fn out_pair(kind: u8) -> [[u8; 16]; 2] {
    let mut t = [[0u8; 16]; 2];
    let mut h = 0;
    while h < 2 {
        let mut a = 0;
        while a < 16 {
            let y = if h == 0 { FG.0[a] } else { FG.1[a] };
            t[h][a] = match kind {
                // Encryption, middle rounds: S-box (linear part) and its
                // double, back in the nibble basis.
                0 => bmap(affine_lin(y)),
                1 => bmap(gmul(2, affine_lin(y))),
                // Encryption, last round: the S-box's linear part, plain.
                2 => affine_lin(y),
                // Decryption, middle rounds: the InvMixColumns products of
                // the inverse S-box output, in the decryption basis.
                3 => bmap(affine_lin_inv(gmul(14, y))),
                4 => bmap(affine_lin_inv(gmul(11, y))),
                5 => bmap(affine_lin_inv(gmul(13, y))),
                6 => bmap(affine_lin_inv(gmul(9, y))),
                // Decryption, last round: the inverse S-box output, plain.
                _ => y,
            };
            a += 1;
        }
        h += 1;
    }
    t
}

/// Input transform into a basis: low-nibble and high-nibble tables.
const fn in_pair(decrypt: bool) -> [[u8; 16]; 2] {
    let mut t = [[0u8; 16]; 2];
    let mut n = 0;
    while n < 16 {
        let lo = n as u8;
        let hi = (n as u8) << 4;
        t[0][n] = if decrypt {
            bmap(affine_lin_inv(lo))
        } else {
            bmap(lo)
        };
        t[1][n] = if decrypt {
            bmap(affine_lin_inv(hi))
        } else {
            bmap(hi)
        };
        n += 1;
    }
    t
}

/// All tables of one direction, 16 bytes each, in load order.
#[repr(C, align(16))]
pub struct Tables {
    mask: [u8; 16],
    inv: [u8; 16],
    ak: [u8; 16],
    input: [[u8; 16]; 2],
    /// Encryption: S, 2S, last. Decryption: 14, 11, 13, 9, last.
    out: [[[u8; 16]; 2]; 5],
    /// Byte permutations, as swizzle indices (all < 16): `q[r % 4][k-1]`
    /// is the rotation `Q_k` of round r (see `q_perm`); `last` is ShiftRows
    /// squared, applied after the last S-box in both directions.
    q: [[[u8; 16]; 3]; 4],
    last: [u8; 16],
}

const fn bytes(p: [usize; 16]) -> [u8; 16] {
    let mut b = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        b[i] = p[i] as u8;
        i += 1;
    }
    b
}

const fn tables(decrypt: bool) -> Tables {
    let none = [[0u8; 16]; 2];
    Tables {
        mask: [0x0f; 16],
        inv: INV,
        ak: AK,
        input: in_pair(decrypt),
        out: if decrypt {
            [
                out_pair(3),
                out_pair(4),
                out_pair(5),
                out_pair(6),
                out_pair(7),
            ]
        } else {
            [out_pair(0), out_pair(1), out_pair(2), none, none]
        },
        q: [
            [
                q_perm(decrypt, 0, 1),
                q_perm(decrypt, 0, 2),
                q_perm(decrypt, 0, 3),
            ],
            [
                q_perm(decrypt, 1, 1),
                q_perm(decrypt, 1, 2),
                q_perm(decrypt, 1, 3),
            ],
            [
                q_perm(decrypt, 2, 1),
                q_perm(decrypt, 2, 2),
                q_perm(decrypt, 2, 3),
            ],
            [
                q_perm(decrypt, 3, 1),
                q_perm(decrypt, 3, 2),
                q_perm(decrypt, 3, 3),
            ],
        ],
        last: bytes(sr_pow(2)),
    }
}

// Two copies of each: the strict exports read their own, so LLVM cannot
// merge their bodies with the relaxed ones (wasm/relax_swizzle.ts refuses a
// body exported under a listed and an unlisted name).
static ENC_TABLES: Tables = tables(false);
static DEC_TABLES: Tables = tables(true);
static ENC_TABLES_STRICT: Tables = tables(false);
static DEC_TABLES_STRICT: Tables = tables(true);

// ---------------------------------------------------------------------------
// Byte permutations (state is column major: byte 4c + r is row r, column c)
//
// A permutation is an index array: `out[i] = in[p[i]]` (a swizzle).
// ShiftRows is never applied as such: the state of round r is kept as
// SR^-r(s_r) (encryption) or SR^r(s_r) (decryption), with s_r the FIPS-197
// state. The S-box is bytewise, so it commutes with any permutation; what
// is left per round is MixColumns conjugated by SR^r, whose term `2a`
// (`14y`) needs no permutation at all. That saves one permute per round
// against ShiftRows + MixColumns. The round keys are permuted to match
// (`xts_key_init`), and the last round ends with SR^2 (SR^14 = SR^2).

/// `a` then `b`: the index array of the map x -> b(a(x))... as swizzles,
/// `swizzle(swizzle(x, pb), pa)`, i.e. out[i] = x[pb[pa[i]]].
const fn then(pa: [usize; 16], pb: [usize; 16]) -> [usize; 16] {
    let mut out = [0usize; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = pb[pa[i]];
        i += 1;
    }
    out
}

/// ShiftRows to the power n (n mod 4): row r moves left by n * r.
const fn sr_pow(n: usize) -> [usize; 16] {
    let mut p = [0usize; 16];
    let mut c = 0;
    while c < 4 {
        let mut r = 0;
        while r < 4 {
            p[4 * c + r] = 4 * ((c + n * r) % 4) + r;
            r += 1;
        }
        c += 1;
    }
    p
}

/// Rotation within each column: row r takes row r + k.
const fn rot(k: usize) -> [usize; 16] {
    let mut p = [0usize; 16];
    let mut c = 0;
    while c < 4 {
        let mut r = 0;
        while r < 4 {
            p[4 * c + r] = 4 * c + (r + k) % 4;
            r += 1;
        }
        c += 1;
    }
    p
}

/// `Q_k` of round r: SR^-r . rot_k . SR^r (encryption), SR^r . rot_k .
/// SR^-r (decryption), composed as operators (rightmost first).
const fn q_perm(decrypt: bool, r: usize, k: usize) -> [u8; 16] {
    let (first, last) = if decrypt {
        (sr_pow((4 - r % 4) % 4), sr_pow(r % 4))
    } else {
        (sr_pow(r % 4), sr_pow((4 - r % 4) % 4))
    };
    // Operators: apply `first`, then rot_k, then `last`. As swizzles the
    // index arrays compose in the other order (see `then`).
    bytes(then(then(last, rot(k)), first))
}

/// Index array of SR^-r (encryption) or SR^r (decryption): how round r's
/// key is permuted to match the state.
const fn key_perm(decrypt: bool, r: usize) -> [usize; 16] {
    if decrypt {
        sr_pow(r % 4)
    } else {
        sr_pow((4 - r % 4) % 4)
    }
}

// ---------------------------------------------------------------------------
// The SIMD rounds

#[inline(always)]
fn ld(p: &[u8; 16]) -> v128 {
    // Volatile: keeps LLVM from folding the table into a `v128.const` at
    // every use (V8 rebuilds those with four instructions each time).
    // SAFETY: reads the 16 bytes of `p`.
    unsafe { core::ptr::read_volatile(p.as_ptr() as *const v128) }
}

struct Loaded {
    /// 0x0f in every byte.
    mask: v128,
    inv: v128,
    ak: v128,
    in_lo: v128,
    in_hi: v128,
    out: [[v128; 2]; 5],
    last: v128,
}

#[inline(always)]
fn load_tables(t: &Tables) -> Loaded {
    Loaded {
        mask: ld(&t.mask),
        inv: ld(&t.inv),
        ak: ld(&t.ak),
        in_lo: ld(&t.input[0]),
        in_hi: ld(&t.input[1]),
        out: [
            [ld(&t.out[0][0]), ld(&t.out[0][1])],
            [ld(&t.out[1][0]), ld(&t.out[1][1])],
            [ld(&t.out[2][0]), ld(&t.out[2][1])],
            [ld(&t.out[3][0]), ld(&t.out[3][1])],
            [ld(&t.out[4][0]), ld(&t.out[4][1])],
        ],
        last: ld(&t.last),
    }
}

/// Lane l = table[idx[l]], 0 when idx[l] >= 16.
#[inline(always)]
fn look16(table: v128, idx: v128) -> v128 {
    u8x16_swizzle(table, idx)
}

/// The high nibble of every byte. A 16-bit shift and the mask: V8 expands
/// `i8x16.shr_u` into a shift plus a mask it builds each time.
#[inline(always)]
fn shr4(t: &Loaded, x: v128) -> v128 {
    v128_and(u16x8_shr(x, 4), t.mask)
}

/// The basis change of plain bytes (first round).
#[inline(always)]
fn input(t: &Loaded, x: v128) -> v128 {
    let lo = v128_and(x, t.mask);
    let hi = shr4(t, x);
    v128_xor(look16(t.in_lo, lo), look16(t.in_hi, hi))
}

/// GF(2^8) inversion of every byte (nibble basis in), as `(io, jo)`.
#[inline(always)]
fn invert(t: &Loaded, p: v128) -> (v128, v128) {
    let i = shr4(t, p);
    let k = v128_and(p, t.mask);
    let j = v128_xor(i, k);
    let ak = look16(t.ak, k);
    let iak = v128_xor(look16(t.inv, i), ak);
    let jak = v128_xor(look16(t.inv, j), ak);
    let io = v128_xor(look16(t.inv, iak), j);
    let jo = v128_xor(look16(t.inv, jak), i);
    (io, jo)
}

#[inline(always)]
fn out(t: &Loaded, n: usize, io: v128, jo: v128) -> v128 {
    v128_xor(look16(t.out[n][0], io), look16(t.out[n][1], jo))
}

/// One middle encryption round of one block: SubBytes, then MixColumns
/// conjugated by the accumulated ShiftRows (`q1`, `q3`: this round's
/// `Q_1`, `Q_3`), AddRoundKey; all in the nibble basis.
#[inline(always)]
fn enc_round(t: &Loaded, s: v128, k: v128, q1: v128, q3: v128) -> v128 {
    let (io, jo) = invert(t, s);
    let a = out(t, 0, io, jo);
    let a2 = out(t, 1, io, jo);
    // 2a + 3 Q1 a + Q2 a + Q3 a = X + Q1 X + Q3 a with X = 2a + Q1 a.
    let x = v128_xor(a2, look16(a, q1));
    let o = v128_xor(v128_xor(x, look16(x, q1)), look16(a, q3));
    v128_xor(o, k)
}

#[inline(always)]
fn enc_last(t: &Loaded, s: v128, k: v128) -> v128 {
    let (io, jo) = invert(t, s);
    v128_xor(look16(out(t, 2, io, jo), t.last), k)
}

/// One middle round of the equivalent inverse cipher: InvSubBytes, then
/// InvMixColumns conjugated by the accumulated InvShiftRows, AddRoundKey.
#[inline(always)]
fn dec_round(t: &Loaded, s: v128, k: v128, q1: v128, q2: v128, q3: v128) -> v128 {
    let (io, jo) = invert(t, s);
    let e = out(t, 0, io, jo);
    let bb = out(t, 1, io, jo);
    let d = out(t, 2, io, jo);
    let n9 = out(t, 3, io, jo);
    // 14 y + 11 Q1 y + 13 Q2 y + 9 Q3 y
    let o = v128_xor(
        v128_xor(e, look16(bb, q1)),
        v128_xor(look16(d, q2), look16(n9, q3)),
    );
    v128_xor(o, k)
}

#[inline(always)]
fn dec_last(t: &Loaded, s: v128, k: v128) -> v128 {
    let (io, jo) = invert(t, s);
    v128_xor(look16(out(t, 4, io, jo), t.last), k)
}

/// Encrypts the blocks `$s...` (plain variables, so they stay in locals;
/// a loop over an array put them on the shadow stack). `$rk`: 15 round
/// keys, the first plain, the middle ones in the nibble basis with 0x63
/// folded in, the last plain with 0x63 folded in.
macro_rules! encrypt_blocks {
    ($t:expr, $q:expr, $rk:expr, $($s:ident),+) => {{
        let k0 = v128_load($rk);
        $( $s = input($t, v128_xor($s, k0)); )+
        let mut r = 1;
        while r < 14 {
            let k = v128_load($rk.add(r));
            let q = &$q[r % 4];
            let q1 = ld(&q[0]);
            let q3 = ld(&q[2]);
            $( $s = enc_round($t, $s, k, q1, q3); )+
            r += 1;
        }
        let k14 = v128_load($rk.add(14));
        $( $s = enc_last($t, $s, k14); )+
    }};
}

/// Decrypts the blocks `$s...` (equivalent inverse cipher). `$rk`: the 15
/// decryption round keys and the input constant, as `xts_key_init` lays
/// them out.
macro_rules! decrypt_blocks {
    ($t:expr, $q:expr, $rk:expr, $($s:ident),+) => {{
        let k0 = v128_load($rk);
        let c0 = v128_load($rk.add(15));
        $( $s = v128_xor(input($t, v128_xor($s, k0)), c0); )+
        let mut r = 1;
        while r < 14 {
            let k = v128_load($rk.add(r));
            let q = &$q[r % 4];
            let q1 = ld(&q[0]);
            let q2 = ld(&q[1]);
            let q3 = ld(&q[2]);
            $( $s = dec_round($t, $s, k, q1, q2, q3); )+
            r += 1;
        }
        let k14 = v128_load($rk.add(14));
        $( $s = dec_last($t, $s, k14); )+
    }};
}

// ---------------------------------------------------------------------------
// Key expansion (scalar, constant time: S-box by arithmetic, basis changes
// by masked xors; no lookup indexed by key bytes)

/// Bytes of one key slot, laid out as `key_init` writes it.
pub const SLOT_BYTES: usize = 1024;
const ENC1: usize = 0; // 15 round keys of key1 (encryption)
const DEC1: usize = 240; // 15 round keys of key1 (decryption) + 1 constant
const ENC2: usize = 512; // 15 round keys of key2 (tweak encryption)
const RAW: usize = 768; // the 64 raw key bytes, zeroed by key_init
                        // Bytes 832..848: where the TS side puts the first data-unit number of a
                        // call (`unit` of `xts_encrypt`); not secret.

fn expand(key: &[u8], w: &mut [[u8; 16]; 15]) {
    // FIPS-197 KeyExpansion for Nk = 8, Nr = 14, as 60 words.
    let mut words = [[0u8; 4]; 60];
    for i in 0..8 {
        words[i] = [key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]];
    }
    let mut rcon = 1u8;
    for i in 8..60 {
        let mut t = words[i - 1];
        if i % 8 == 0 {
            t = [sbox(t[1]) ^ rcon, sbox(t[2]), sbox(t[3]), sbox(t[0])];
            rcon = gmul(rcon, 2);
        } else if i % 8 == 4 {
            t = [sbox(t[0]), sbox(t[1]), sbox(t[2]), sbox(t[3])];
        }
        for b in 0..4 {
            words[i][b] = words[i - 8][b] ^ t[b];
        }
    }
    for r in 0..15 {
        for c in 0..4 {
            for b in 0..4 {
                w[r][4 * c + b] = words[4 * r + c][b];
            }
        }
    }
    wipe(&mut words);
}

fn inv_mix_column(col: &mut [u8]) {
    let a = [col[0], col[1], col[2], col[3]];
    for r in 0..4 {
        col[r] = gmul(14, a[r])
            ^ gmul(11, a[(r + 1) % 4])
            ^ gmul(13, a[(r + 2) % 4])
            ^ gmul(9, a[(r + 3) % 4]);
    }
}

/// Zeroes `v` with volatile writes (the compiler may not drop them).
fn wipe<T>(v: &mut T) {
    let p = v as *mut T as *mut u8;
    for i in 0..core::mem::size_of::<T>() {
        // SAFETY: within the object.
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
    }
}

unsafe fn store_keys(dst: *mut u8, keys: &[[u8; 16]; 15]) {
    for r in 0..15 {
        for b in 0..16 {
            *dst.add(16 * r + b) = keys[r][b];
        }
    }
}

/// The encryption schedule as the kernel wants it: round 0 plain; rounds
/// 1..13 permuted like the state (`key_perm`), in the nibble basis, with
/// the S-box constant; round 14 plain with the constant.
fn enc_schedule(w: &[[u8; 16]; 15], out: &mut [[u8; 16]; 15]) {
    for r in 0..15 {
        let p = key_perm(false, r);
        for b in 0..16 {
            out[r][b] = match r {
                0 => w[r][b],
                14 => w[r][b] ^ 0x63,
                _ => bmap(w[r][p[b]] ^ 0x63),
            };
        }
    }
}

/// Expands the 64-byte XTS key at `slot + 768` (key1 || key2) into the
/// slot's schedules and zeroes the raw key. Returns 0, or -1 when the
/// halves are equal (IEEE 1619-2018 requires key1 != key2). The slot must
/// be 16-byte aligned and `SLOT_BYTES` long.
///
/// # Safety
/// `slot..slot+SLOT_BYTES` must lie in linear memory.
#[no_mangle]
pub unsafe extern "C" fn xts_key_init(slot: *mut u8) -> i32 {
    let raw = slot.add(RAW);
    let mut key = [0u8; 64];
    for i in 0..64 {
        key[i] = *raw.add(i);
        core::ptr::write_volatile(raw.add(i), 0);
    }
    // Equal halves: compared without an early exit.
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= key[i] ^ key[32 + i];
    }
    if diff == 0 {
        wipe(&mut key);
        return -1;
    }
    let mut w = [[0u8; 16]; 15];
    let mut out = [[0u8; 16]; 15];

    // Key1, encryption: round 0 plain; rounds 1..13 in the nibble basis
    // with the S-box constant; round 14 plain with the constant.
    expand(&key[..32], &mut w);
    enc_schedule(&w, &mut out);
    store_keys(slot.add(ENC1), &out);

    // Key1, decryption (equivalent inverse cipher): dk_0 = rk_14 (plain,
    // before the input transform), dk_r = InvMixColumns(rk_{14-r}) in the
    // decryption basis plus the basis image of 0x63, dk_14 = rk_0 plain,
    // and the constant for the first round after the input transform.
    let cst = bmap(affine_lin_inv(0x63));
    for r in 0..15 {
        let mut k = w[14 - r];
        if r != 0 && r != 14 {
            for c in 0..4 {
                inv_mix_column(&mut k[4 * c..4 * c + 4]);
            }
            for b in 0..16 {
                k[b] = bmap(affine_lin_inv(k[b])) ^ cst;
            }
        }
        let p = key_perm(true, r);
        for b in 0..16 {
            out[r][b] = if r != 0 && r != 14 { k[p[b]] } else { k[b] };
        }
        wipe(&mut k);
    }
    store_keys(slot.add(DEC1), &out);
    for b in 0..16 {
        *slot.add(DEC1 + 240 + b) = cst;
    }

    // Key2, encryption only (tweaks).
    expand(&key[32..], &mut w);
    enc_schedule(&w, &mut out);
    store_keys(slot.add(ENC2), &out);

    wipe(&mut w);
    wipe(&mut out);
    wipe(&mut key);
    0
}

/// Zeroes a key slot (volatile: not optimised away).
///
/// # Safety
/// `slot..slot+SLOT_BYTES` must lie in linear memory.
#[no_mangle]
pub unsafe extern "C" fn xts_key_wipe(slot: *mut u8) {
    for i in 0..SLOT_BYTES {
        core::ptr::write_volatile(slot.add(i), 0);
    }
}

/// Bytes of a key slot (for the TS pool).
#[no_mangle]
pub extern "C" fn xts_slot_bytes() -> usize {
    SLOT_BYTES
}

/// Key slots present from instantiation on (static, zero-initialised: no
/// bytes in the module file): keys work before `heap_init`; the TS pool
/// takes further slots from the heap.
pub const STATIC_SLOTS: usize = 32;
#[repr(align(64))]
struct Slots([u8; STATIC_SLOTS * SLOT_BYTES]);
static mut SLOTS: Slots = Slots([0; STATIC_SLOTS * SLOT_BYTES]);

/// Offset of the first static key slot.
#[no_mangle]
pub extern "C" fn xts_static_slots_ptr() -> *mut u8 {
    // SAFETY: only the address is taken.
    unsafe { SLOTS.0.as_mut_ptr() }
}

/// Number of static key slots.
#[no_mangle]
pub extern "C" fn xts_static_slots() -> usize {
    STATIC_SLOTS
}

// ---------------------------------------------------------------------------
// XTS

/// Blocks in flight per group.
const LANES: usize = 8;

/// Multiplies the tweak by alpha (x) in GF(2^128), little-endian (IEEE 1619).
#[inline(always)]
fn mul_alpha(t: v128) -> v128 {
    let sh = i64x2_shl(t, 1);
    let carry = i64x2_shr(t, 63);
    let swapped = i64x2_shuffle::<1, 0>(carry, carry);
    v128_xor(sh, v128_and(swapped, i64x2(0x87, 1)))
}

/// Advances the 128-bit data-unit number (lo, hi) and returns the new one
/// as a tweak block.
#[inline(always)]
fn next_unit(lo: &mut u64, hi: &mut u64) -> v128 {
    *lo = lo.wrapping_add(1);
    *hi = hi.wrapping_add((*lo == 0) as u64);
    u64x2(*lo, *hi)
}

/// Checks the arguments: 0 ok, -2 length not a multiple of 16, -3 data
/// unit not a positive multiple of 16, -4 length not a multiple of the unit.
fn check(len: usize, du: usize) -> i32 {
    if len % 16 != 0 {
        return -2;
    }
    if du == 0 || du % 16 != 0 {
        return -3;
    }
    if len % du != 0 {
        return -4;
    }
    0
}

#[inline(always)]
unsafe fn xts<const DECRYPT: bool>(
    t_enc: &Tables,
    t_dir: &Tables,
    slot: *const u8,
    src: *const u8,
    dst: *mut u8,
    len: usize,
    du: usize,
    unit: *const u8,
) -> i32 {
    let rc = check(len, du);
    if rc != 0 {
        return rc;
    }
    let te = load_tables(t_enc);
    let td = load_tables(t_dir);
    let key2 = slot.add(ENC2) as *const v128;
    let key1 = slot.add(if DECRYPT { DEC1 } else { ENC1 }) as *const v128;
    // The 128-bit little-endian number of the first data unit.
    let first = v128_load(unit as *const v128);
    let mut lo = u64x2_extract_lane::<0>(first);
    let mut hi = u64x2_extract_lane::<1>(first);
    let blocks = du / 16;
    let mut off = 0;
    while off < len {
        // The tweaks of the next (up to) eight data units, encrypted side by
        // side: one at a time, the tweak of a 512-byte unit cost ~5%.
        let units = core::cmp::min((len - off) / du, 8);
        let mut tweaks = [u64x2(0, 0); 8];
        if units == 8 {
            let mut u0 = u64x2(lo, hi);
            let mut u1 = next_unit(&mut lo, &mut hi);
            let mut u2 = next_unit(&mut lo, &mut hi);
            let mut u3 = next_unit(&mut lo, &mut hi);
            let mut u4 = next_unit(&mut lo, &mut hi);
            let mut u5 = next_unit(&mut lo, &mut hi);
            let mut u6 = next_unit(&mut lo, &mut hi);
            let mut u7 = next_unit(&mut lo, &mut hi);
            next_unit(&mut lo, &mut hi);
            encrypt_blocks!(&te, &t_enc.q, key2, u0, u1, u2, u3, u4, u5, u6, u7);
            tweaks = [u0, u1, u2, u3, u4, u5, u6, u7];
        } else {
            for slot_tweak in tweaks.iter_mut().take(units) {
                let mut u = u64x2(lo, hi);
                next_unit(&mut lo, &mut hi);
                encrypt_blocks!(&te, &t_enc.q, key2, u);
                *slot_tweak = u;
            }
        }
        for &first_tweak in tweaks.iter().take(units) {
            let mut t = first_tweak;
            let mut b = 0;
            while b + LANES <= blocks {
                let p = src.add(off + 16 * b) as *const v128;
                let t0 = t;
                let t1 = mul_alpha(t0);
                let t2 = mul_alpha(t1);
                let t3 = mul_alpha(t2);
                let t4 = mul_alpha(t3);
                let t5 = mul_alpha(t4);
                let t6 = mul_alpha(t5);
                let t7 = mul_alpha(t6);
                t = mul_alpha(t7);
                let mut s0 = v128_xor(v128_load(p), t0);
                let mut s1 = v128_xor(v128_load(p.add(1)), t1);
                let mut s2 = v128_xor(v128_load(p.add(2)), t2);
                let mut s3 = v128_xor(v128_load(p.add(3)), t3);
                let mut s4 = v128_xor(v128_load(p.add(4)), t4);
                let mut s5 = v128_xor(v128_load(p.add(5)), t5);
                let mut s6 = v128_xor(v128_load(p.add(6)), t6);
                let mut s7 = v128_xor(v128_load(p.add(7)), t7);
                if DECRYPT {
                    decrypt_blocks!(&td, &t_dir.q, key1, s0, s1, s2, s3, s4, s5, s6, s7);
                } else {
                    encrypt_blocks!(&td, &t_dir.q, key1, s0, s1, s2, s3, s4, s5, s6, s7);
                }
                let q = dst.add(off + 16 * b) as *mut v128;
                v128_store(q, v128_xor(s0, t0));
                v128_store(q.add(1), v128_xor(s1, t1));
                v128_store(q.add(2), v128_xor(s2, t2));
                v128_store(q.add(3), v128_xor(s3, t3));
                v128_store(q.add(4), v128_xor(s4, t4));
                v128_store(q.add(5), v128_xor(s5, t5));
                v128_store(q.add(6), v128_xor(s6, t6));
                v128_store(q.add(7), v128_xor(s7, t7));
                b += LANES;
            }
            while b < blocks {
                let p = src.add(off + 16 * b) as *const v128;
                let mut s0 = v128_xor(v128_load(p), t);
                if DECRYPT {
                    decrypt_blocks!(&td, &t_dir.q, key1, s0);
                } else {
                    encrypt_blocks!(&td, &t_dir.q, key1, s0);
                }
                v128_store(dst.add(off + 16 * b) as *mut v128, v128_xor(s0, t));
                t = mul_alpha(t);
                b += 1;
            }
            off += du;
        }
    }
    0
}

/// AES-256-XTS encryption of `len` bytes at `src` into `dst` (may equal
/// `src`), in data units of `du` bytes; data unit i has the number
/// `N + i`, where N is the 128-bit little-endian number at `unit`. Returns 0 or a
/// negative code (`check`). Lookups relaxed by wasm/build.ts.
///
/// # Safety
/// The slot (`xts_key_init`) and both ranges must lie in linear memory.
#[no_mangle]
pub unsafe extern "C" fn xts_encrypt(
    slot: *const u8,
    src: *const u8,
    dst: *mut u8,
    len: usize,
    du: usize,
    unit: *const u8,
) -> i32 {
    xts::<false>(&ENC_TABLES, &ENC_TABLES, slot, src, dst, len, du, unit)
}

/// The inverse of `xts_encrypt`.
///
/// # Safety
/// As `xts_encrypt`.
#[no_mangle]
pub unsafe extern "C" fn xts_decrypt(
    slot: *const u8,
    src: *const u8,
    dst: *mut u8,
    len: usize,
    du: usize,
    unit: *const u8,
) -> i32 {
    xts::<true>(&ENC_TABLES, &DEC_TABLES, slot, src, dst, len, du, unit)
}

/// `xts_encrypt` left on strict swizzles (benchmark and cross-check).
///
/// # Safety
/// As `xts_encrypt`.
#[no_mangle]
pub unsafe extern "C" fn xts_encrypt_strict(
    slot: *const u8,
    src: *const u8,
    dst: *mut u8,
    len: usize,
    du: usize,
    unit: *const u8,
) -> i32 {
    xts::<false>(
        &ENC_TABLES_STRICT,
        &ENC_TABLES_STRICT,
        slot,
        src,
        dst,
        len,
        du,
        unit,
    )
}

/// `xts_decrypt` left on strict swizzles (benchmark and cross-check).
///
/// # Safety
/// As `xts_encrypt`.
#[no_mangle]
pub unsafe extern "C" fn xts_decrypt_strict(
    slot: *const u8,
    src: *const u8,
    dst: *mut u8,
    len: usize,
    du: usize,
    unit: *const u8,
) -> i32 {
    xts::<true>(
        &ENC_TABLES_STRICT,
        &DEC_TABLES_STRICT,
        slot,
        src,
        dst,
        len,
        du,
        unit,
    )
}
