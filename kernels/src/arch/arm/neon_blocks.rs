//! aarch64 kernels for the 32-element block formats (Q4_0, Q4_1, Q5_0, Q8_0 against Q8_0/Q8_1
//! activations), plain NEON and dotprod: one row (the vec_dot), four rows against one token
//! (decode) and four rows against up to two tokens (prompts).
//!
//! All three share one statement of the per-block arithmetic (`block_step`): the block's 32
//! weight quants as signed bytes (`Block::quants`), two 16-lane dots into four i32 lanes, and
//! `acc = fma(lanes as f32, d_w * d_a, acc)` in a 4-lane f32 accumulator; Q4_1 adds its scalar
//! min term `m_w * s_a` block after block; the row's result is the accumulator's lane sum (plus
//! that term). The multi-row kernels run that step for each of their outputs in the same order,
//! so every output equals the one-row kernel exactly; what they save is work around it: a
//! token's block is loaded once for four rows, a weight block unpacked once for both tokens, and
//! four independent accumulators keep the FMA unit busy where one row waits on its own chain.
//!
//! Reached only through `install`, which dispatch calls after detecting neon (and dotprod for
//! the `Sdot` flavour); the safe wrappers rely on that.

use super::neon::{bits16, lds, nibbles, I8Dot, Plain, Sdot};
use crate::dot::{tile_blocks, Dot4Fn, Tile4Fn, VecDotFn};
use crate::formats::{
    GgmlType, Q4_0_BYTES, Q4_0_QS, Q4_1_BYTES, Q4_1_M, Q4_1_QS, Q5_0_BYTES, Q5_0_QH, Q5_0_QS,
    Q8_0_BYTES, Q8_0_QS, Q8_1_BYTES, Q8_1_QS, Q8_1_S,
};
use crate::quant::f16_at;
use std::arch::aarch64::*;

/// A block format as the kernels consume it.
trait Block {
    /// Bytes of a weight block and of its activation block, and where the activation's 32
    /// quants start.
    const WB: usize;
    const AB: usize;
    const AQ: usize;
    /// Q4_1's min term: (offset of the weight block's f16 min, of the activation's f16 sum).
    const MIN: Option<(usize, usize)>;
    /// The weight block's 32 quants as signed bytes, elements 0..16 and 16..32.
    unsafe fn quants(x: &[u8]) -> (int8x16_t, int8x16_t);
}

struct Q4_0;
struct Q4_1;
struct Q5_0;
struct Q8_0;

impl Block for Q4_0 {
    const WB: usize = Q4_0_BYTES;
    const AB: usize = Q8_0_BYTES;
    const AQ: usize = Q8_0_QS;
    const MIN: Option<(usize, usize)> = None;
    #[inline(always)]
    unsafe fn quants(x: &[u8]) -> (int8x16_t, int8x16_t) {
        // SAFETY: a Q4_0 block holds 16 nibble bytes at QS. Nibbles 0..15 stand for -8..7.
        unsafe { nibbles(&x[Q4_0_QS..], 8) }
    }
}

impl Block for Q4_1 {
    const WB: usize = Q4_1_BYTES;
    const AB: usize = Q8_1_BYTES;
    const AQ: usize = Q8_1_QS;
    const MIN: Option<(usize, usize)> = Some((Q4_1_M, Q8_1_S));
    #[inline(always)]
    unsafe fn quants(x: &[u8]) -> (int8x16_t, int8x16_t) {
        // SAFETY: a Q4_1 block holds 16 nibble bytes at QS.
        unsafe { nibbles(&x[Q4_1_QS..], 0) }
    }
}

impl Block for Q5_0 {
    const WB: usize = Q5_0_BYTES;
    const AB: usize = Q8_0_BYTES;
    const AQ: usize = Q8_0_QS;
    const MIN: Option<(usize, usize)> = None;
    #[inline(always)]
    unsafe fn quants(x: &[u8]) -> (int8x16_t, int8x16_t) {
        // SAFETY: a Q5_0 block holds 16 nibble bytes at QS and 4 high-bit bytes at QH. The fifth
        // bit over the nibble stands for -16..15.
        unsafe {
            let (lo, hi) = nibbles(&x[Q5_0_QS..], 0);
            let qh = &x[Q5_0_QH..];
            let sixteen = vdupq_n_s8(16);
            (
                vsubq_s8(vorrq_s8(lo, bits16(qh[0], qh[1])), sixteen),
                vsubq_s8(vorrq_s8(hi, bits16(qh[2], qh[3])), sixteen),
            )
        }
    }
}

impl Block for Q8_0 {
    const WB: usize = Q8_0_BYTES;
    const AB: usize = Q8_0_BYTES;
    const AQ: usize = Q8_0_QS;
    const MIN: Option<(usize, usize)> = None;
    #[inline(always)]
    unsafe fn quants(x: &[u8]) -> (int8x16_t, int8x16_t) {
        // SAFETY: a Q8_0 block holds 32 quants at QS.
        unsafe { (lds(&x[Q8_0_QS..]), lds(&x[Q8_0_QS + 16..])) }
    }
}

/// A token's activation block as every row's step reads it.
struct Act {
    lo: int8x16_t,
    hi: int8x16_t,
    d: f32,
    /// Q4_1's activation sum (0 for the other formats, never read there).
    s: f32,
}

#[inline(always)]
unsafe fn act<F: Block>(y: &[u8]) -> Act {
    // SAFETY: `y` is a whole activation block: 32 quants at AQ, its f16 sum at MIN's offset.
    unsafe {
        Act {
            lo: lds(&y[F::AQ..]),
            hi: lds(&y[F::AQ + 16..]),
            d: f16_at(y),
            s: F::MIN.map_or(0.0, |(_, s)| f16_at(&y[s..])),
        }
    }
}

/// A weight block's scale and (Q4_1) min as f32.
#[derive(Clone, Copy)]
struct Scales {
    d: f32,
    m: f32,
}

#[inline(always)]
fn scales<F: Block>(x: &[u8]) -> Scales {
    Scales {
        d: f16_at(x),
        m: F::MIN.map_or(0.0, |(m, _)| f16_at(&x[m..])),
    }
}

/// Four f16 values (the u64's 16-bit lanes, lane 0 lowest) as f32, exactly: one FCVTL, an
/// ARMv8.0 instruction, where `f16_at` takes about ten integer operations per value.
#[inline(always)]
unsafe fn f16x4(bits: u64) -> [f32; 4] {
    // SAFETY: register arithmetic on NEON, part of the aarch64 baseline.
    unsafe {
        let h = vcreate_u16(bits);
        let f: float32x4_t;
        std::arch::asm!(
            "fcvtl {0:v}.4s, {1:v}.4h",
            out(vreg) f,
            in(vreg) h,
            options(pure, nomem, nostack)
        );
        std::mem::transmute::<float32x4_t, [f32; 4]>(f)
    }
}

/// The little-endian u16 at `b[at..]`.
#[inline(always)]
fn u16_at(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}

/// The scales of four rows' blocks, converted together.
#[inline(always)]
unsafe fn scales4<F: Block>(x: &[&[u8]; 4]) -> [Scales; 4] {
    let pack = |at: usize| (0..4).fold(0u64, |v, r| v | u16_at(x[r], at) << (16 * r));
    // SAFETY: register arithmetic.
    let d = unsafe { f16x4(pack(0)) };
    let m = match F::MIN {
        // SAFETY: as above.
        Some((m, _)) => unsafe { f16x4(pack(m)) },
        None => [0.0; 4],
    };
    std::array::from_fn(|r| Scales { d: d[r], m: m[r] })
}

/// A token's activation block with its scale (and sum) converted in one instruction.
#[inline(always)]
unsafe fn act_fast<F: Block>(y: &[u8]) -> Act {
    // SAFETY: `y` is a whole activation block: 32 quants at AQ, its f16 scale at 0 and sum at
    // MIN's offset.
    unsafe {
        let s_at = F::MIN.map_or(0, |(_, s)| s);
        let ds = f16x4(u16_at(y, 0) | u16_at(y, s_at) << 16);
        Act {
            lo: lds(&y[F::AQ..]),
            hi: lds(&y[F::AQ + 16..]),
            d: ds[0],
            s: if F::MIN.is_some() { ds[1] } else { 0.0 },
        }
    }
}

/// One block of one output: the step every kernel here runs, in this order.
#[inline(always)]
unsafe fn block_step<F: Block, D: I8Dot>(
    (acc, mins): (&mut float32x4_t, &mut f32),
    (lo, hi): (int8x16_t, int8x16_t),
    w: Scales,
    y: &Act,
) {
    // SAFETY: register arithmetic.
    unsafe {
        let s = D::dot(D::dot(vdupq_n_s32(0), lo, y.lo), hi, y.hi);
        *acc = vfmaq_n_f32(*acc, vcvtq_f32_s32(s), w.d * y.d);
        if F::MIN.is_some() {
            *mins += w.m * y.s;
        }
    }
}

#[inline(always)]
unsafe fn finish<F: Block>(acc: float32x4_t, mins: f32) -> f32 {
    // SAFETY: register arithmetic.
    let sum = unsafe { vaddvq_f32(acc) };
    if F::MIN.is_some() {
        sum + mins
    } else {
        sum
    }
}

/// One weight row against one activation row.
#[inline(always)]
unsafe fn one_row<F: Block, D: I8Dot>(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: chunks_exact hands whole blocks to `quants`, `act` and `block_step`.
    unsafe {
        let (mut acc, mut mins) = (vdupq_n_f32(0.0), 0.0f32);
        for (x, y) in w.chunks_exact(F::WB).zip(a.chunks_exact(F::AB)) {
            block_step::<F, D>(
                (&mut acc, &mut mins),
                F::quants(x),
                scales::<F>(x),
                &act::<F>(y),
            );
        }
        finish::<F>(acc, mins)
    }
}

/// Four weight rows (`w_row` bytes apart) against `T` activation rows (`a_row` apart; `nt` of
/// them are real, 1..=T): `out[t][r]`.
#[inline(always)]
unsafe fn rows4<F: Block, D: I8Dot, const T: usize>(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    a_row: usize,
    nt: usize,
) -> [[f32; 4]; T] {
    let nb = tile_blocks((w, w_row, 4, F::WB), (a, a_row, nt, T, F::AB));
    // SAFETY: tile_blocks checked that nb blocks of 4 weight rows and nt activation rows lie
    // inside the slices, so every block slice below is whole.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 4]; T];
        let mut mins = [[0.0f32; 4]; T];
        for i in 0..nb {
            let x: [&[u8]; 4] = std::array::from_fn(|r| &w[r * w_row + i * F::WB..][..F::WB]);
            let q: [(int8x16_t, int8x16_t); 4] = std::array::from_fn(|r| F::quants(x[r]));
            let sc = scales4::<F>(&x);
            for t in 0..nt.min(T) {
                let y = act_fast::<F>(&a[t * a_row + i * F::AB..][..F::AB]);
                for r in 0..4 {
                    block_step::<F, D>((&mut acc[t][r], &mut mins[t][r]), q[r], sc[r], &y);
                }
            }
        }
        std::array::from_fn(|t| std::array::from_fn(|r| finish::<F>(acc[t][r], mins[t][r])))
    }
}

/// Installs the kernels of this file for the flavour of `sdot`.
pub(crate) fn install(
    sdot: bool,
    dot: &mut [VecDotFn; 11],
    dot4: &mut [Option<Dot4Fn>; 11],
    tile4: &mut [Option<Tile4Fn>; 11],
) {
    let t = |ty: GgmlType| ty.index();
    if sdot {
        dot[t(GgmlType::Q4_0)] = d_q4_0;
        dot[t(GgmlType::Q4_1)] = d_q4_1;
        dot[t(GgmlType::Q5_0)] = d_q5_0;
        dot[t(GgmlType::Q8_0)] = d_q8_0;
        dot4[t(GgmlType::Q4_0)] = Some(d4_q4_0);
        dot4[t(GgmlType::Q4_1)] = Some(d4_q4_1);
        dot4[t(GgmlType::Q5_0)] = Some(d4_q5_0);
        dot4[t(GgmlType::Q8_0)] = Some(d4_q8_0);
        tile4[t(GgmlType::Q4_0)] = Some(dt_q4_0);
        tile4[t(GgmlType::Q4_1)] = Some(dt_q4_1);
        tile4[t(GgmlType::Q5_0)] = Some(dt_q5_0);
        tile4[t(GgmlType::Q8_0)] = Some(dt_q8_0);
    } else {
        dot[t(GgmlType::Q4_0)] = n_q4_0;
        dot[t(GgmlType::Q4_1)] = n_q4_1;
        dot[t(GgmlType::Q5_0)] = n_q5_0;
        dot[t(GgmlType::Q8_0)] = n_q8_0;
        dot4[t(GgmlType::Q4_0)] = Some(n4_q4_0);
        dot4[t(GgmlType::Q4_1)] = Some(n4_q4_1);
        dot4[t(GgmlType::Q5_0)] = Some(n4_q5_0);
        dot4[t(GgmlType::Q8_0)] = Some(n4_q8_0);
        tile4[t(GgmlType::Q4_0)] = Some(nt_q4_0);
        tile4[t(GgmlType::Q4_1)] = Some(nt_q4_1);
        tile4[t(GgmlType::Q5_0)] = Some(nt_q5_0);
        tile4[t(GgmlType::Q8_0)] = Some(nt_q8_0);
    }
}

/// The safe entry points of one format in one flavour: `dot` (one row), `dot4` (four rows, one
/// token) and `tile4` (four rows, up to two tokens), each compiled with the flavour's features.
macro_rules! entry_points {
    ($($fmt:ident, $flavour:ident, $features:literal => $dot:ident, $dot4:ident, $tile4:ident;)*) => {$(
        fn $dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            #[target_feature(enable = $features)]
            unsafe fn imp(n: usize, w: &[u8], a: &[u8]) -> f32 {
                // SAFETY: see the wrapper.
                unsafe { one_row::<$fmt, $flavour>(n, w, a) }
            }
            // SAFETY: installed only after the features were detected.
            unsafe { imp(n, w, a) }
        }
        fn $dot4(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 4] {
            #[target_feature(enable = $features)]
            unsafe fn imp(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 4] {
                // SAFETY: see the wrapper; one activation row of `a.len()` bytes.
                unsafe { rows4::<$fmt, $flavour, 1>(w, w_row, a, a.len(), 1)[0] }
            }
            // SAFETY: installed only after the features were detected.
            unsafe { imp(w, w_row, a) }
        }
        fn $tile4(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 4]; 2] {
            #[target_feature(enable = $features)]
            unsafe fn imp(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 4]; 2] {
                // SAFETY: see the wrapper.
                unsafe { rows4::<$fmt, $flavour, 2>(w, w_row, a, a_row, nt) }
            }
            // SAFETY: installed only after the features were detected.
            unsafe { imp(w, w_row, a, a_row, nt) }
        }
    )*};
}

entry_points! {
    Q4_0, Plain, "neon" => n_q4_0, n4_q4_0, nt_q4_0;
    Q4_1, Plain, "neon" => n_q4_1, n4_q4_1, nt_q4_1;
    Q5_0, Plain, "neon" => n_q5_0, n4_q5_0, nt_q5_0;
    Q8_0, Plain, "neon" => n_q8_0, n4_q8_0, nt_q8_0;
    Q4_0, Sdot, "neon,dotprod" => d_q4_0, d4_q4_0, dt_q4_0;
    Q4_1, Sdot, "neon,dotprod" => d_q4_1, d4_q4_1, dt_q4_1;
    Q5_0, Sdot, "neon,dotprod" => d_q5_0, d4_q5_0, dt_q5_0;
    Q8_0, Sdot, "neon,dotprod" => d_q8_0, d4_q8_0, dt_q8_0;
}
