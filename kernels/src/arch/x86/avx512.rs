//! AVX-512 (F + BW + VL) dot products: two 32-element blocks per 512-bit register for the
//! simple quants, a whole 64-element chunk per register for Q4_K / Q6_K. F32 / F16 keep the AVX2
//! kernels, whose summation order every path shares (`fp_order`), and so do the activation
//! quantizers (they are not the bottleneck).
//!
//! Reached only through `install`, which dispatch calls after detecting avx512f, avx512bw,
//! avx512vl, avx2, fma and f16c; the safe wrappers rely on that.

use super::avx2::{self, hmul};
use crate::dot::{Dot4Fn, VecDotFn};
use crate::formats::{
    GgmlType, Q4_0_BYTES, Q4_0_QS, Q4_1_BYTES, Q4_1_M, Q4_1_QS, Q4_K_BYTES, Q4_K_QS, Q4_K_SCALES,
    Q5_0_BYTES, Q5_0_QH, Q5_0_QS, Q6_K_BYTES, Q6_K_D, Q6_K_QH, Q6_K_QL, Q6_K_SCALES, Q8_0_BYTES,
    Q8_0_QS, Q8_1_BYTES, Q8_1_QS, Q8_1_S, Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS,
};
use crate::quant::{f16_at as h2f, f32_at, scale_min_k4, u32_at};
use std::arch::x86_64::*;

/// Overrides table entries with this file's kernels (call after `avx2::install`).
pub(crate) fn install(dot: &mut [VecDotFn; 11]) {
    dot[GgmlType::Q4_0.index()] = dot_q4_0;
    dot[GgmlType::Q4_1.index()] = dot_q4_1;
    dot[GgmlType::Q5_0.index()] = dot_q5_0;
    dot[GgmlType::Q8_0.index()] = dot_q8_0;
    dot[GgmlType::Q4K.index()] = dot_q4_k;
    dot[GgmlType::Q6K.index()] = dot_q6_k;
}

/// Overrides four-row entries (call after `avx2::install_dot4`).
pub(crate) fn install_dot4(dot4: &mut [Option<Dot4Fn>; 11]) {
    dot4[GgmlType::Q5_0.index()] = Some(dot4_q5_0);
}

fn dot4_q5_0(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 4] {
    // SAFETY: only installed by dispatch after the AVX-512 and AVX2 features were detected.
    unsafe { dot4_q5_0_impl(w, w_row, a) }
}

/// The AVX2 four-row Q5_0 kernel with the fifth bits spread to bytes by one mask move.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot4_q5_0_impl(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 4] {
    // SAFETY: this fn has the features the helpers need; dot4_with hands `prep` whole blocks.
    unsafe {
        avx2::dot4_with(
            w,
            w_row,
            a,
            (Q5_0_BYTES, Q8_0_BYTES, Q8_0_QS),
            false,
            |x| prep_q5_0(x),
            |x, y| avx2::dot_i8(x, y),
        )
    }
}

/// A Q5_0 block's quants as signed bytes (nibble | fifth bit << 4, less 16): `avx2::prep_q5_0`
/// with the 32 bits of qh turned into bytes by a mask move.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn prep_q5_0(x: &[u8]) -> __m256i {
    let qh = u32_at(&x[Q5_0_QH..]);
    // SAFETY: the block holds 16 nibble bytes at QS.
    let qx = unsafe { avx2::nibbles(&x[Q5_0_QS..]) };
    let high = _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(0x10));
    _mm256_sub_epi8(_mm256_or_si256(qx, high), _mm256_set1_epi8(16))
}

macro_rules! safe_wrappers {
    ($($name:ident => $imp:ident;)*) => {$(
        fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
            // SAFETY: only installed by dispatch after the AVX-512 and AVX2 features were detected.
            unsafe { $imp(n, w, a) }
        }
    )*};
}

safe_wrappers! {
    dot_q4_0 => dot_q4_0_impl;
    dot_q4_1 => dot_q4_1_impl;
    dot_q5_0 => dot_q5_0_impl;
    dot_q8_0 => dot_q8_0_impl;
    dot_q4_k => dot_q4_k_impl;
    dot_q6_k => dot_q6_k_impl;
}

/// Two 256-bit halves as one register (`lo` in lanes 0..8).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Sum of products of signed bytes, as 16 i32 lanes (4 per 128-bit lane).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn dot_i8(x: __m512i, y: __m512i) -> __m512i {
    // No sign_epi8 in AVX-512: |x| times y negated where x < 0.
    let neg = _mm512_movepi8_mask(x);
    let ax = _mm512_abs_epi8(x);
    let sy = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
    _mm512_madd_epi16(_mm512_maddubs_epi16(ax, sy), _mm512_set1_epi16(1))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn dot_u8_i8(x: __m512i, y: __m512i) -> __m512i {
    _mm512_madd_epi16(_mm512_maddubs_epi16(x, y), _mm512_set1_epi16(1))
}

/// The upper 256 bits of a 512-bit float vector.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn hi256(v: __m512) -> __m256 {
    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
}

/// Runs `pair` over blocks two at a time: it returns the two blocks' scales and their integer
/// sums (as floats, block A in the low 256 bits), which go into the AVX2 kernels' 8-lane
/// accumulator one block after the other, so the float arithmetic is the AVX2 kernels' (and
/// ggml's) exactly; the integer work is what runs 512 bits wide. `one` adds an odd last block.
macro_rules! paired_blocks {
    ($w:ident, $a:ident, $wb:expr, $ab:expr, $one:expr, |$x:ident, $y:ident| $pair:expr) => {{
        let mut acc = _mm256_setzero_ps();
        let pairs = ($w.len() / $wb).min($a.len() / $ab) / 2;
        for ($x, $y) in $w.chunks_exact(2 * $wb).zip($a.chunks_exact(2 * $ab)) {
            let (da, db, s): (f32, f32, __m512) = $pair;
            acc = _mm256_fmadd_ps(_mm256_set1_ps(da), _mm512_castps512_ps256(s), acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(db), hi256(s), acc);
        }
        let (wr, ar) = (&$w[2 * pairs * $wb..], &$a[2 * pairs * $ab..]);
        if wr.len() >= $wb && ar.len() >= $ab {
            acc = $one(wr, ar, acc);
        }
        avx2::hsum_ps(acc)
    }};
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_q4_0_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let eight = _mm512_set1_epi8(8);
    // SAFETY (tail): the caller of this fn has the AVX2 features too (a subset of ours).
    paired_blocks!(
        w,
        a,
        Q4_0_BYTES,
        Q8_0_BYTES,
        |x, y, acc| unsafe { avx2::block_q4_0(x, y, acc) },
        |x, y| {
            // SAFETY: each Q4_0 block has 16 nibble bytes at QS; each Q8_0 block 32 quants at QS.
            let (qx, qy) = unsafe {
                (
                    join(
                        avx2::nibbles(&x[Q4_0_QS..]),
                        avx2::nibbles(&x[Q4_0_BYTES + Q4_0_QS..]),
                    ),
                    join(
                        avx2::load32(&y[Q8_0_QS..]),
                        avx2::load32(&y[Q8_0_BYTES + Q8_0_QS..]),
                    ),
                )
            };
            let s = dot_i8(_mm512_sub_epi8(qx, eight), qy);
            (
                hmul(x, y),
                hmul(&x[Q4_0_BYTES..], &y[Q8_0_BYTES..]),
                _mm512_cvtepi32_ps(s),
            )
        }
    )
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_q4_1_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut mins = 0.0f32;
    let s = paired_blocks!(
        w,
        a,
        Q4_1_BYTES,
        Q8_1_BYTES,
        // SAFETY: the caller of this fn has the AVX2 features too (a subset of ours).
        |x, y, acc| unsafe { avx2::block_q4_1(x, y, acc, &mut mins) },
        |x, y| {
            // Block by block, as the AVX2 kernel adds them.
            mins += hmul(&x[Q4_1_M..], &y[Q8_1_S..]);
            mins += hmul(&x[Q4_1_BYTES + Q4_1_M..], &y[Q8_1_BYTES + Q8_1_S..]);
            // SAFETY: each Q4_1 block has 16 nibble bytes at QS; each Q8_1 block 32 quants at QS.
            let (qx, qy) = unsafe {
                (
                    join(
                        avx2::nibbles(&x[Q4_1_QS..]),
                        avx2::nibbles(&x[Q4_1_BYTES + Q4_1_QS..]),
                    ),
                    join(
                        avx2::load32(&y[Q8_1_QS..]),
                        avx2::load32(&y[Q8_1_BYTES + Q8_1_QS..]),
                    ),
                )
            };
            (
                hmul(x, y),
                hmul(&x[Q4_1_BYTES..], &y[Q8_1_BYTES..]),
                _mm512_cvtepi32_ps(dot_u8_i8(qx, qy)),
            )
        }
    );
    s + mins
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_q5_0_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let sixteen = _mm512_set1_epi8(16);
    let bit4 = _mm512_set1_epi8(0x10);
    // SAFETY (tail): the caller of this fn has the AVX2 features too (a subset of ours).
    paired_blocks!(
        w,
        a,
        Q5_0_BYTES,
        Q8_0_BYTES,
        |x, y, acc| unsafe { avx2::block_q5_0(x, y, acc) },
        |x, y| {
            let qh =
                u32_at(&x[Q5_0_QH..]) as u64 | (u32_at(&x[Q5_0_BYTES + Q5_0_QH..]) as u64) << 32;
            // Byte i of the pair gets 0x10 when bit i of the two qh words is set.
            let high = _mm512_maskz_mov_epi8(qh, bit4);
            // SAFETY: each Q5_0 block has 16 nibble bytes at QS; each Q8_0 block 32 quants at QS.
            let (qx, qy) = unsafe {
                (
                    join(
                        avx2::nibbles(&x[Q5_0_QS..]),
                        avx2::nibbles(&x[Q5_0_BYTES + Q5_0_QS..]),
                    ),
                    join(
                        avx2::load32(&y[Q8_0_QS..]),
                        avx2::load32(&y[Q8_0_BYTES + Q8_0_QS..]),
                    ),
                )
            };
            let qx = _mm512_sub_epi8(_mm512_or_si512(qx, high), sixteen);
            (
                hmul(x, y),
                hmul(&x[Q5_0_BYTES..], &y[Q8_0_BYTES..]),
                _mm512_cvtepi32_ps(dot_i8(qx, qy)),
            )
        }
    )
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_q8_0_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY (tail): the caller of this fn has the AVX2 features too (a subset of ours).
    paired_blocks!(
        w,
        a,
        Q8_0_BYTES,
        Q8_0_BYTES,
        |x, y, acc| unsafe { avx2::block_q8_0(x, y, acc) },
        |x, y| {
            // SAFETY: each Q8_0 block has 32 quants at QS.
            let (qx, qy) = unsafe {
                (
                    join(
                        avx2::load32(&x[Q8_0_QS..]),
                        avx2::load32(&x[Q8_0_BYTES + Q8_0_QS..]),
                    ),
                    join(
                        avx2::load32(&y[Q8_0_QS..]),
                        avx2::load32(&y[Q8_0_BYTES + Q8_0_QS..]),
                    ),
                )
            };
            (
                hmul(x, y),
                hmul(&x[Q8_0_BYTES..], &y[Q8_0_BYTES..]),
                _mm512_cvtepi32_ps(dot_i8(qx, qy)),
            )
        }
    )
}

#[inline]
fn bsum(y: &[u8], k: usize) -> i32 {
    i16::from_le_bytes([y[Q8_K_BSUMS + 2 * k], y[Q8_K_BSUMS + 2 * k + 1]]) as i32
}

/// 64 bytes at the start of `p`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load64(p: &[u8]) -> __m512i {
    debug_assert!(p.len() >= 64);
    // SAFETY: callers pass slices of at least 64 bytes; loadu has no alignment requirement.
    unsafe { _mm512_loadu_si512(p.as_ptr() as *const _) }
}

/// i16 lanes: `a` in the low 256 bits, `b` in the high.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn two_i16(a: i16, b: i16) -> __m512i {
    join(_mm256_set1_epi16(a), _mm256_set1_epi16(b))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_q4_k_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = [0f32; 4];
    let m4 = _mm256_set1_epi8(0x0f);
    for (x, y) in w.chunks_exact(Q4_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let mut summ = [0i32; 4];
        let mut sumi = _mm512_setzero_si512();
        for c in 0..4 {
            let scales = &x[Q4_K_SCALES..Q4_K_QS];
            let (sc0, m0) = scale_min_k4(2 * c, scales);
            let (sc1, m1) = scale_min_k4(2 * c + 1, scales);
            summ[c] = m0 as i32 * (bsum(y, 4 * c) + bsum(y, 4 * c + 1))
                + m1 as i32 * (bsum(y, 4 * c + 2) + bsum(y, 4 * c + 3));
            // SAFETY: 32 quant bytes at QS + 32c of the Q4_K block; the two sub-blocks' 64
            // activation quants are contiguous at QS + 64c of the Q8_K block.
            let (q, yv) = unsafe {
                (
                    avx2::load32(&x[Q4_K_QS + 32 * c..]),
                    load64(&y[Q8_K_QS + 64 * c..]),
                )
            };
            let qv = join(
                _mm256_and_si256(q, m4),
                _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
            );
            let p = _mm512_madd_epi16(
                _mm512_maddubs_epi16(qv, yv),
                two_i16(sc0 as i16, sc1 as i16),
            );
            sumi = _mm512_add_epi32(sumi, p);
        }
        // The two sub-blocks' integer lanes fold into the AVX2 kernel's 8 (exact integer
        // sums), so the float work below is the AVX2 kernel's, and ggml's.
        let folded = _mm256_add_epi32(
            _mm512_castsi512_si256(sumi),
            _mm512_extracti64x4_epi64::<1>(sumi),
        );
        acc = avx2::q4_k_block_sums(x, y, folded, summ, acc, &mut acc_m);
    }
    avx2::q4_k_total(acc, acc_m)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_q6_k_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let m4 = _mm512_set1_epi8(0x0f);
    let m2 = _mm512_set1_epi8(0x03);
    for (x, y) in w.chunks_exact(Q6_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let d = h2f(&x[Q6_K_D..]) * f32_at(y);
        let sc = |k: usize| x[Q6_K_SCALES + k] as i8 as i16;
        // One i16 scale per 16 elements = per 128-bit lane.
        let pair = |k: usize| (sc(k) as u16 as u32 | (sc(k) as u16 as u32) << 16) as i32;
        let scales4 = |k: usize| {
            let (a, b, c, e) = (pair(k), pair(k + 1), pair(k + 2), pair(k + 3));
            _mm512_setr_epi32(a, a, a, a, b, b, b, b, c, c, c, c, e, e, e, e)
        };
        let mut sumi = _mm512_setzero_si512();
        for h in 0..2 {
            // SAFETY: ql has 64 bytes at QL + 64h and qh 32 bytes at QH + 32h of the Q6_K block;
            // the Q8_K block has 128 quants at QS + 128h.
            let (ql, qh, y0, y1) = unsafe {
                (
                    load64(&x[Q6_K_QL + 64 * h..]),
                    avx2::load32(&x[Q6_K_QH + 32 * h..]),
                    load64(&y[Q8_K_QS + 128 * h..]),
                    load64(&y[Q8_K_QS + 64 + 128 * h..]),
                )
            };
            let qh_a = join(qh, _mm256_srli_epi16::<2>(qh));
            let qh_b = join(_mm256_srli_epi16::<4>(qh), _mm256_srli_epi16::<6>(qh));
            let high = |s: __m512i| _mm512_slli_epi16::<4>(_mm512_and_si512(s, m2));
            // Elements 0..64 of this half, then 64..128.
            let qa = _mm512_or_si512(_mm512_and_si512(ql, m4), high(qh_a));
            let qb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4), high(qh_b));
            let pa = _mm512_madd_epi16(_mm512_maddubs_epi16(qa, y0), scales4(8 * h));
            let pb = _mm512_madd_epi16(_mm512_maddubs_epi16(qb, y1), scales4(8 * h + 4));
            sumi = _mm512_add_epi32(sumi, _mm512_add_epi32(pa, pb));
        }
        // Elements 64 apart share a lane of the AVX2 kernel: fold the halves (exact integer
        // sums) and finish as it does, so the float work is ggml's.
        let folded = _mm256_add_epi32(
            _mm512_castsi512_si256(sumi),
            _mm512_extracti64x4_epi64::<1>(sumi),
        );
        acc = avx2::q6_k_block_sums(x, y, d, folded, acc);
    }
    avx2::hsum_ps(acc)
}
