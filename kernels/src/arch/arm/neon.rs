//! aarch64 NEON dot products for F32, Q4_K and Q6_K (the 32-element block formats are in
//! `neon_blocks`), and the pieces those share, in two flavours:
//! plain NEON (widening multiplies, pairwise adds) and dotprod (`sdot`, ARMv8.2). One generic
//! body per format, instantiated for each flavour inside a function compiled with its features.
//!
//! Reached only through `install_neon` / `install_dotprod`, which dispatch calls after
//! detecting neon (and dotprod); the safe wrappers rely on that.

use crate::dot::VecDotFn;
use crate::formats::{
    GgmlType, Q4_K_BYTES, Q4_K_DMIN, Q4_K_QS, Q4_K_SCALES, Q6_K_BYTES, Q6_K_D, Q6_K_QH, Q6_K_QL,
    Q6_K_SCALES, Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS,
};
use crate::quant::{f16_at, f32_at, scale_min_k4};
use std::arch::aarch64::*;

/// Signed 8-bit dot product of 16 lanes, accumulated into 4 i32 lanes.
pub(super) trait I8Dot {
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

pub(super) struct Plain;
pub(super) struct Sdot;

impl I8Dot for Plain {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: NEON is part of the aarch64 baseline.
        unsafe {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let hi = vmull_high_s8(a, b);
            vpadalq_s16(vpadalq_s16(acc, lo), hi)
        }
    }
}

impl I8Dot for Sdot {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: only reached from functions compiled with (and dispatched after detecting)
        // dotprod; `vdotq_s32` is not stable yet, so the instruction is written out.
        unsafe { sdot(acc, a, b) }
    }
}

#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: pure register arithmetic; the caller guarantees the CPU has dotprod.
    unsafe {
        std::arch::asm!(
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc,
            in(vreg) a,
            in(vreg) b,
            options(pure, nomem, nostack)
        );
    }
    acc
}

/// Overrides table entries with the plain NEON kernels.
pub(crate) fn install_neon(dot: &mut [VecDotFn; 11]) {
    dot[GgmlType::F32.index()] = dot_f32;
    dot[GgmlType::Q4K.index()] = n_q4_k;
    dot[GgmlType::Q6K.index()] = n_q6_k;
}

/// Overrides table entries with the dotprod kernels (F32 stays plain NEON).
pub(crate) fn install_dotprod(dot: &mut [VecDotFn; 11]) {
    dot[GgmlType::F32.index()] = dot_f32;
    dot[GgmlType::Q4K.index()] = d_q4_k;
    dot[GgmlType::Q6K.index()] = d_q6_k;
}

macro_rules! flavours {
    ($($generic:ident => $plain:ident, $dotp:ident;)*) => {$(
        fn $plain(n: usize, w: &[u8], a: &[u8]) -> f32 {
            #[target_feature(enable = "neon")]
            unsafe fn imp(n: usize, w: &[u8], a: &[u8]) -> f32 {
                // SAFETY: see the wrapper.
                unsafe { $generic::<Plain>(n, w, a) }
            }
            // SAFETY: installed only after neon was detected.
            unsafe { imp(n, w, a) }
        }
        fn $dotp(n: usize, w: &[u8], a: &[u8]) -> f32 {
            #[target_feature(enable = "neon,dotprod")]
            unsafe fn imp(n: usize, w: &[u8], a: &[u8]) -> f32 {
                // SAFETY: see the wrapper.
                unsafe { $generic::<Sdot>(n, w, a) }
            }
            // SAFETY: installed only after neon and dotprod were detected.
            unsafe { imp(n, w, a) }
        }
    )*};
}

flavours! {
    q4_k => n_q4_k, d_q4_k;
    q6_k => n_q6_k, d_q6_k;
}

fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: installed only after neon was detected.
    unsafe { dot_f32_impl(n, w, a) }
}

#[target_feature(enable = "neon")]
unsafe fn dot_f32_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    // The shared order (fp_order::dot_f32): 4 accumulators of 8 lanes, here two q-registers
    // each, over steps of 32; the same reduction tree; leftovers one FMA at a time.
    let n = w.len().min(a.len()) / 4;
    let (wp, ap) = (w.as_ptr() as *const f32, a.as_ptr() as *const f32);
    let mut acc = [vdupq_n_f32(0.0); 8];
    let np = n & !31;
    for i in (0..np).step_by(32) {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 4k + 4 <= np <= n elements lie inside both slices; vld1q is unaligned.
            *acc = unsafe {
                vfmaq_f32(
                    *acc,
                    vld1q_f32(wp.add(i + 4 * k)),
                    vld1q_f32(ap.add(i + 4 * k)),
                )
            };
        }
    }
    // Accumulator j is (acc[2j] = lanes 0..4, acc[2j+1] = lanes 4..8).
    let lo = vaddq_f32(vaddq_f32(acc[0], acc[4]), vaddq_f32(acc[2], acc[6]));
    let hi = vaddq_f32(vaddq_f32(acc[1], acc[5]), vaddq_f32(acc[3], acc[7]));
    let t = vaddq_f32(lo, hi);
    let mut sum = (vgetq_lane_f32::<0>(t) + vgetq_lane_f32::<1>(t))
        + (vgetq_lane_f32::<2>(t) + vgetq_lane_f32::<3>(t));
    for j in np..n {
        sum = f32_at(&w[4 * j..]).mul_add(f32_at(&a[4 * j..]), sum);
    }
    sum
}

/// 16 bytes at the start of `p`.
#[inline(always)]
unsafe fn ld(p: &[u8]) -> uint8x16_t {
    debug_assert!(p.len() >= 16);
    // SAFETY: callers pass slices of at least 16 bytes; vld1q has no alignment requirement.
    unsafe { vld1q_u8(p.as_ptr()) }
}

#[inline(always)]
pub(super) unsafe fn lds(p: &[u8]) -> int8x16_t {
    // SAFETY: as `ld`.
    unsafe { vreinterpretq_s8_u8(ld(p)) }
}

/// Low and high nibbles of 16 bytes, as signed bytes minus `off`.
#[inline(always)]
pub(super) unsafe fn nibbles(p: &[u8], off: i8) -> (int8x16_t, int8x16_t) {
    // SAFETY: callers pass slices of at least 16 bytes.
    unsafe {
        let b = ld(p);
        let o = vdupq_n_s8(off);
        let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(0x0f))), o);
        let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(b)), o);
        (lo, hi)
    }
}

#[inline(always)]
pub(super) unsafe fn bits16(b0: u8, b1: u8) -> int8x16_t {
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: BIT is 16 bytes; the rest is register arithmetic.
    unsafe {
        let v = vcombine_u8(vdup_n_u8(b0), vdup_n_u8(b1));
        let set = vtstq_u8(v, vld1q_u8(BIT.as_ptr()));
        vreinterpretq_s8_u8(vandq_u8(set, vdupq_n_u8(0x10)))
    }
}

#[inline(always)]
fn bsum(y: &[u8], k: usize) -> i32 {
    i16::from_le_bytes([y[Q8_K_BSUMS + 2 * k], y[Q8_K_BSUMS + 2 * k + 1]]) as i32
}

#[inline(always)]
unsafe fn q4_k<D: I8Dot>(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: quant bytes QS.. of each Q4_K block, activation quants QS..BSUMS of each Q8_K
    // block; every 16-byte load starts at least 16 bytes before those ends.
    unsafe {
        let mut sumf = 0.0f32;
        for (x, y) in w.chunks_exact(Q4_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
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
            sumf += f16_at(x) * dy * sumi as f32 - f16_at(&x[Q4_K_DMIN..]) * dy * summ as f32;
        }
        sumf
    }
}

#[inline(always)]
unsafe fn q6_k<D: I8Dot>(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: ql at QL..QH, qh at QH..SCALES of each Q6_K block; activation quants QS..BSUMS of
    // each Q8_K block; every 16-byte load lies inside those ranges.
    unsafe {
        let mut sumf = 0.0f32;
        let m4 = vdupq_n_u8(0x0f);
        let m3 = vdupq_n_u8(0x03);
        let off = vdupq_n_s8(32);
        for (x, y) in w.chunks_exact(Q6_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
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
            sumf += f16_at(&x[Q6_K_D..]) * f32_at(y) * sumi as f32;
        }
        sumf
    }
}
