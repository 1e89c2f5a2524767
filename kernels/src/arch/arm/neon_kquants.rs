//! aarch64 kernels for the K-quant formats (Q4_K and Q6_K against Q8_K activations), plain NEON
//! and dotprod: one row (the vec_dot), four rows against one token (decode) and four rows
//! against up to two tokens (prompts).
//!
//! One statement of the per-super-block arithmetic (`Superblock::step`: the exact integer sums
//! of the block, then the row's scalar f32 update) serves all three, and the multi-row kernels
//! run it for each output in the same order, so every output equals the one-row kernel exactly.
//! They share a token's activation loads across four rows and keep four independent scalar
//! chains in flight.
//!
//! Reached only through `install`, which dispatch calls after detecting neon (and dotprod for
//! the `Sdot` flavour); the safe wrappers rely on that.

use super::neon::{ld, lds, nibbles, I8Dot, Plain, Sdot};
use crate::dot::{tile_blocks, Dot4Fn, Tile4Fn, VecDotFn};
use crate::formats::{
    GgmlType, Q4_K_BYTES, Q4_K_DMIN, Q4_K_QS, Q4_K_SCALES, Q6_K_BYTES, Q6_K_D, Q6_K_QH, Q6_K_QL,
    Q6_K_SCALES, Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS,
};
use crate::quant::{f16_at, f32_at, scale_min_k4};
use std::arch::aarch64::*;

/// A K-quant format as the kernels consume it: `step` adds one super-block of one row (`x`)
/// against one token (`y`) to that output's running sum.
trait Superblock {
    const WB: usize;
    unsafe fn step<D: I8Dot>(sumf: f32, x: &[u8], y: &[u8]) -> f32;
}

struct Q4K;
struct Q6K;

#[inline(always)]
fn bsum(y: &[u8], k: usize) -> i32 {
    i16::from_le_bytes([y[Q8_K_BSUMS + 2 * k], y[Q8_K_BSUMS + 2 * k + 1]]) as i32
}

impl Superblock for Q4K {
    const WB: usize = Q4_K_BYTES;
    #[inline(always)]
    unsafe fn step<D: I8Dot>(sumf: f32, x: &[u8], y: &[u8]) -> f32 {
        // SAFETY: `x` is a whole Q4_K block and `y` a whole Q8_K block: quant bytes QS.. and
        // activation quants QS..BSUMS; every 16-byte load starts at least 16 bytes before
        // those ends.
        unsafe {
            let mut sumi = 0i32;
            let mut summ = 0i32;
            for c in 0..4 {
                let scales = &x[Q4_K_SCALES..Q4_K_QS];
                let (sc0, m0) = scale_min_k4(2 * c, scales);
                let (sc1, m1) = scale_min_k4(2 * c + 1, scales);
                summ += m0 as i32 * (bsum(y, 4 * c) + bsum(y, 4 * c + 1))
                    + m1 as i32 * (bsum(y, 4 * c + 2) + bsum(y, 4 * c + 3));
                let q = Q4_K_QS + 32 * c;
                let yq = Q8_K_QS + 64 * c;
                let (lo0, hi0) = nibbles(&x[q..], 0);
                let (lo1, hi1) = nibbles(&x[q + 16..], 0);
                let s0 = D::dot(
                    D::dot(vdupq_n_s32(0), lo0, lds(&y[yq..])),
                    lo1,
                    lds(&y[yq + 16..]),
                );
                let s1 = D::dot(
                    D::dot(vdupq_n_s32(0), hi0, lds(&y[yq + 32..])),
                    hi1,
                    lds(&y[yq + 48..]),
                );
                sumi += sc0 as i32 * vaddvq_s32(s0) + sc1 as i32 * vaddvq_s32(s1);
            }
            let dy = f32_at(y);
            sumf + f16_at(x) * dy * sumi as f32 - f16_at(&x[Q4_K_DMIN..]) * dy * summ as f32
        }
    }
}

impl Superblock for Q6K {
    const WB: usize = Q6_K_BYTES;
    #[inline(always)]
    unsafe fn step<D: I8Dot>(sumf: f32, x: &[u8], y: &[u8]) -> f32 {
        // SAFETY: `x` is a whole Q6_K block (ql at QL..QH, qh at QH..SCALES) and `y` a whole
        // Q8_K block (quants QS..BSUMS); every 16-byte load lies inside those ranges.
        unsafe {
            let m4 = vdupq_n_u8(0x0f);
            let m3 = vdupq_n_u8(0x03);
            let off = vdupq_n_s8(32);
            let mut sumi = 0i32;
            for h in 0..2 {
                // Two 16-element groups per 32 lanes of l: g = 0 for l < 16, 1 for l >= 16.
                for g in 0..2 {
                    let l = 16 * g;
                    let ql0 = ld(&x[Q6_K_QL + 64 * h + l..]);
                    let ql1 = ld(&x[Q6_K_QL + 64 * h + 32 + l..]);
                    let qh = ld(&x[Q6_K_QH + 32 * h + l..]);
                    let hb = |s: uint8x16_t| vshlq_n_u8::<4>(vandq_u8(s, m3));
                    let q = [
                        vorrq_u8(vandq_u8(ql0, m4), hb(qh)),
                        vorrq_u8(vandq_u8(ql1, m4), hb(vshrq_n_u8::<2>(qh))),
                        vorrq_u8(vshrq_n_u8::<4>(ql0), hb(vshrq_n_u8::<4>(qh))),
                        vorrq_u8(vshrq_n_u8::<4>(ql1), vshlq_n_u8::<4>(vshrq_n_u8::<6>(qh))),
                    ];
                    for (k, &qk) in q.iter().enumerate() {
                        let qs = vsubq_s8(vreinterpretq_s8_u8(qk), off);
                        let yk = lds(&y[Q8_K_QS + 128 * h + 32 * k + l..]);
                        let s = vaddvq_s32(D::dot(vdupq_n_s32(0), qs, yk));
                        sumi += (x[Q6_K_SCALES + 8 * h + 2 * k + g] as i8) as i32 * s;
                    }
                }
            }
            sumf + f16_at(&x[Q6_K_D..]) * f32_at(y) * sumi as f32
        }
    }
}

/// One weight row against one activation row.
#[inline(always)]
unsafe fn one_row<F: Superblock, D: I8Dot>(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(F::WB).zip(a.chunks_exact(Q8_K_BYTES)) {
        // SAFETY: whole blocks, as `step` needs.
        sumf = unsafe { F::step::<D>(sumf, x, y) };
    }
    sumf
}

/// Four weight rows (`w_row` bytes apart) against `T` activation rows (`a_row` apart; `nt` of
/// them are real, 1..=T): `out[t][r]`.
#[inline(always)]
unsafe fn rows4<F: Superblock, D: I8Dot, const T: usize>(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    a_row: usize,
    nt: usize,
) -> [[f32; 4]; T] {
    let nb = tile_blocks((w, w_row, 4, F::WB), (a, a_row, nt, T, Q8_K_BYTES));
    let mut sumf = [[0.0f32; 4]; T];
    for i in 0..nb {
        for (t, sums) in sumf.iter_mut().enumerate().take(nt) {
            let y = &a[t * a_row + i * Q8_K_BYTES..][..Q8_K_BYTES];
            for (r, s) in sums.iter_mut().enumerate() {
                let x = &w[r * w_row + i * F::WB..][..F::WB];
                // SAFETY: tile_blocks checked that these whole blocks lie inside the slices.
                *s = unsafe { F::step::<D>(*s, x, y) };
            }
        }
    }
    sumf
}

/// Installs the kernels of this file for the flavour of `sdot`.
pub(crate) fn install(
    sdot: bool,
    dot: &mut [VecDotFn; 11],
    dot4: &mut [Option<Dot4Fn>; 11],
    tile4: &mut [Option<Tile4Fn>; 11],
) {
    let (q4k, q6k) = (GgmlType::Q4K.index(), GgmlType::Q6K.index());
    let (d, d4, t4): ([VecDotFn; 2], [Dot4Fn; 2], [Tile4Fn; 2]) = if sdot {
        ([d_q4_k, d_q6_k], [d4_q4_k, d4_q6_k], [dt_q4_k, dt_q6_k])
    } else {
        ([n_q4_k, n_q6_k], [n4_q4_k, n4_q6_k], [nt_q4_k, nt_q6_k])
    };
    for (i, ty) in [q4k, q6k].into_iter().enumerate() {
        dot[ty] = d[i];
        dot4[ty] = Some(d4[i]);
        tile4[ty] = Some(t4[i]);
    }
}

/// The safe entry points of one format in one flavour, each compiled with its features.
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
    Q4K, Plain, "neon" => n_q4_k, n4_q4_k, nt_q4_k;
    Q6K, Plain, "neon" => n_q6_k, n4_q6_k, nt_q6_k;
    Q4K, Sdot, "neon,dotprod" => d_q4_k, d4_q4_k, dt_q4_k;
    Q6K, Sdot, "neon,dotprod" => d_q6_k, d4_q6_k, dt_q6_k;
}
