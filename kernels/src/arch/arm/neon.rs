//! aarch64 NEON dot products for F32, Q4_K and Q6_K (the 32-element block formats are in
//! `neon_blocks`), and the pieces those share, in two flavours:
//! plain NEON (widening multiplies, pairwise adds) and dotprod (`sdot`, ARMv8.2). One generic
//! body per format, instantiated for each flavour inside a function compiled with its features.
//!
//! Reached only through `install_neon` / `install_dotprod`, which dispatch calls after
//! detecting neon (and dotprod); the safe wrappers rely on that.

use crate::dot::VecDotFn;
use crate::formats::GgmlType;
use crate::quant::f32_at;
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
}

/// Overrides table entries with the dotprod kernels (F32 stays plain NEON).
pub(crate) fn install_dotprod(dot: &mut [VecDotFn; 11]) {
    dot[GgmlType::F32.index()] = dot_f32;
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
pub(super) unsafe fn ld(p: &[u8]) -> uint8x16_t {
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
