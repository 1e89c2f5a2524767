//! F32 and F16 weight products in the batched order of [`crate::fp_order::dot_gemm`] (ggml's
//! tinyBLAS order for a batch of two or more), as explicit AVX2 + FMA + F16C vectors.
//!
//! Each output keeps one 8-lane accumulator, element `i` going into lane `i % 8` by FMA in
//! order, then `hsum8`: the bits are those of the scalar statement. The four-row kernel runs four
//! such chains side by side so that the FMA latency overlaps and the activation is loaded once.
//! Reached only through `install`, which dispatch calls after detecting avx2, fma and f16c.

use crate::dot::{Dot4Fn, VecDotFn};
use crate::formats::GgmlType;
use crate::fp_order::hsum8;
use std::arch::x86_64::*;

/// Installs the single-row and four-row batched-order products for F32 and F16 weights.
pub(crate) fn install(dot_gemm: &mut [Option<VecDotFn>; 11], dot4_gemm: &mut [Option<Dot4Fn>; 11]) {
    dot_gemm[GgmlType::F32.index()] = Some(dot_f32_gemm);
    dot_gemm[GgmlType::F16.index()] = Some(dot_f16_gemm);
    dot4_gemm[GgmlType::F32.index()] = Some(dot4_f32_gemm);
    dot4_gemm[GgmlType::F16.index()] = Some(dot4_f16_gemm);
}

fn dot_f32_gemm(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
    unsafe { rows_gemm::<false, 1>(w, 0, a)[0] }
}

fn dot_f16_gemm(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
    unsafe { rows_gemm::<true, 1>(w, 0, a)[0] }
}

fn dot4_f32_gemm(w4: &[u8], w_row: usize, a: &[u8]) -> [f32; 4] {
    // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
    unsafe { rows_gemm::<false, 4>(w4, w_row, a) }
}

fn dot4_f16_gemm(w4: &[u8], w_row: usize, a: &[u8]) -> [f32; 4] {
    // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
    unsafe { rows_gemm::<true, 4>(w4, w_row, a) }
}

/// Eight elements from `p` as f32: f16 bytes (F16) or f32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8<const F16: bool>(p: *const u8) -> __m256 {
    if F16 {
        // SAFETY: the caller guarantees 16 readable bytes at p.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    } else {
        // SAFETY: the caller guarantees 32 readable bytes at p.
        unsafe { _mm256_loadu_ps(p as *const f32) }
    }
}

/// One element at index `i` of an f16 (F16) or f32 byte row.
#[inline(always)]
fn elem<const F16: bool>(row: &[u8], i: usize) -> f32 {
    if F16 {
        half::f16::from_le_bytes([row[2 * i], row[2 * i + 1]]).to_f32()
    } else {
        f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]])
    }
}

/// `R` weight rows (`w_row` bytes apart in `w`) against the activation row `a`, each in the
/// batched order; the row length is that of `a`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_gemm<const F16: bool, const R: usize>(w: &[u8], w_row: usize, a: &[u8]) -> [f32; R] {
    let es = if F16 { 2 } else { 4 };
    let n = a.len() / es;
    assert!(
        w.len() >= (R - 1) * w_row + n * es,
        "batched-order product: {R} weight rows of {n} elements need more bytes than given"
    );
    let full = n / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); R];
    let mut i = 0;
    while i < full {
        // SAFETY: i + 8 <= n, so 8 elements of `a` and of each row lie inside the slices
        // (the assert above bounds the rows).
        let y = unsafe { load8::<F16>(a.as_ptr().add(i * es)) };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: as above, row r's elements i..i+8 end within w.
            let x = unsafe { load8::<F16>(w.as_ptr().add(r * w_row + i * es)) };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 8;
    }
    let mut out = [0f32; R];
    for (r, (o, acc)) in out.iter_mut().zip(acc).enumerate() {
        let mut lanes = [0f32; 8];
        // SAFETY: lanes has room for 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        let row = &w[r * w_row..];
        for j in full..n {
            lanes[j % 8] = elem::<F16>(row, j).mul_add(elem::<F16>(a, j), lanes[j % 8]);
        }
        *o = hsum8(&lanes);
    }
    out
}
