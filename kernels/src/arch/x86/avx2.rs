//! AVX2 + FMA + F16C kernels: dot products for the weight formats lckv runs (F32, F16, Q4_0,
//! Q4_1, Q5_0, Q8_0, Q4_K, Q6_K), the activation quantizers (Q8_0, Q8_1, Q8_K), and attention
//! and SiLU recompiled with FMA.
//!
//! Integer block sums are exact, so quantized dots differ from the scalar twins only in the
//! order of f32 additions; F32/F16 dots, attention and SiLU keep the twins' order exactly. The
//! quantizers use the scalar rounding rules and give identical bytes.
//! Everything here is reached only through `install`, which dispatch calls after detecting
//! avx2, fma and f16c; the safe wrappers rely on that.

use crate::attention::{attend_with, AttendFn, AttnFns, AttnQuery};
use crate::dot::{Dot4Fn, VecDotFn};
use crate::formats::{
    GgmlType, Q4_0_BYTES, Q4_0_QS, Q4_1_BYTES, Q4_1_M, Q4_1_QS, Q4_K_BYTES, Q4_K_DMIN, Q4_K_QS,
    Q4_K_SCALES, Q5_0_BYTES, Q5_0_QH, Q5_0_QS, Q6_K_BYTES, Q6_K_D, Q6_K_QH, Q6_K_QL, Q6_K_SCALES,
    Q8_0_BYTES, Q8_0_QS, Q8_1_BYTES, Q8_1_QS, Q8_1_S, Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS, QK8_0,
    QK8_1, QK_K,
};
use crate::quant::{f16_at as h2f, f32_at, scale_min_k4, DequantFn, QuantFn};
use crate::AttnScratch;
use std::arch::x86_64::*;

/// Overrides the scalar entries of the tables with this file's kernels.
pub(crate) fn install(
    dot: &mut [VecDotFn; 11],
    quant: &mut [QuantFn; 11],
    dequant: &mut [DequantFn; 11],
) {
    // f16 -> f32 is exact either way; F16C does eight at a time (the V rows of an f16 cache).
    dequant[GgmlType::F16.index()] = dequantize_f16;
    dot[GgmlType::F32.index()] = dot_f32;
    dot[GgmlType::F16.index()] = dot_f16;
    dot[GgmlType::Q4_0.index()] = dot_q4_0;
    dot[GgmlType::Q4_1.index()] = dot_q4_1;
    dot[GgmlType::Q5_0.index()] = dot_q5_0;
    dot[GgmlType::Q8_0.index()] = dot_q8_0;
    dot[GgmlType::Q4K.index()] = dot_q4_k;
    dot[GgmlType::Q6K.index()] = dot_q6_k;
    quant[GgmlType::Q8_0.index()] = quantize_q8_0;
    quant[GgmlType::Q8_1.index()] = quantize_q8_1;
    quant[GgmlType::Q8K.index()] = quantize_q8_k;
}

fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
    unsafe { dequantize_f16_impl(src, dst) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_f16_impl(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 <= n: 16 bytes of src and 8 floats of dst lie inside the slices.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
    }
    for i in full..n {
        dst[i] = h2f(&src[2 * i..]);
    }
}

/// The attention and SiLU of `attention` / `fp_order`, recompiled with AVX2 + FMA so that their
/// `mul_add`s are FMA instructions and their lane loops vectorize; same arithmetic, same bits.
pub(crate) fn install_f32_ops(
    attend: &mut AttendFn,
    silu_mul: &mut fn(&mut [f32], &[f32]),
    dot_rows8: &mut [Option<(VecDotFn, VecDotFn)>; 11],
) {
    dot_rows8[GgmlType::Q4_0.index()] = Some((dot_q4_0_rows8, dot_q4_0_rows8));
    dot_rows8[GgmlType::Q4K.index()] = Some((dot_q4_k_rows8_gemm, dot_q4_k_rows8));
    *attend = attend_fma;
    *silu_mul = silu_mul_fma;
}

fn attend_fma(fns: &AttnFns, query: &AttnQuery, scratch: &mut AttnScratch, out: &mut [f32]) {
    // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
    unsafe { attend_fma_impl(fns, query, scratch, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_fma_impl(
    fns: &AttnFns,
    query: &AttnQuery,
    scratch: &mut AttnScratch,
    out: &mut [f32],
) {
    attend_with(fns, query, scratch, out)
}

fn silu_mul_fma(gate: &mut [f32], up: &[f32]) {
    // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
    unsafe { silu_mul_fma_impl(gate, up) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn silu_mul_fma_impl(gate: &mut [f32], up: &[f32]) {
    crate::fp_order::silu_mul_row(gate, up)
}

macro_rules! safe_wrappers {
    ($($name:ident => $imp:ident ($($arg:ident : $ty:ty),*) $(-> $ret:ty)?;)*) => {$(
        fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
            unsafe { $imp($($arg),*) }
        }
    )*};
}

safe_wrappers! {
    dot_f32 => dot_f32_impl(n: usize, w: &[u8], a: &[u8]) -> f32;
    dot_f16 => dot_f16_impl(n: usize, w: &[u8], a: &[u8]) -> f32;
    dot_q4_0 => dot_q4_0_impl(n: usize, w: &[u8], a: &[u8]) -> f32;
    dot_q4_0_rows8 => dot_q4_0_rows8_impl(n: usize, w: &[u8], a: &[u8]) -> f32;
    dot_q4_k_rows8 => dot_q4_k_rows8_impl(n: usize, w: &[u8], a: &[u8]) -> f32;
    dot_q4_k_rows8_gemm => dot_q4_k_rows8_gemm_impl(n: usize, w: &[u8], a: &[u8]) -> f32;
    dot_q4_1 => dot_q4_1_impl(n: usize, w: &[u8], a: &[u8]) -> f32;
    dot_q5_0 => dot_q5_0_impl(n: usize, w: &[u8], a: &[u8]) -> f32;
    dot_q8_0 => dot_q8_0_impl(n: usize, w: &[u8], a: &[u8]) -> f32;
    dot_q4_k => dot_q4_k_impl(n: usize, w: &[u8], a: &[u8]) -> f32;
    dot_q6_k => dot_q6_k_impl(n: usize, w: &[u8], a: &[u8]) -> f32;
    quantize_q8_0 => quantize_q8_0_impl(src: &[f32], dst: &mut [u8]);
    quantize_q8_1 => quantize_q8_1_impl(src: &[f32], dst: &mut [u8]);
    quantize_q8_k => quantize_q8_k_impl(src: &[f32], dst: &mut [u8]);
}

/// The product of the f16 at `a[0..2]` and the f16 at `b[0..2]`, both converted by one F16C
/// instruction. Both lanes are used, so the compiler loads them with a zeroing `vmovd` (a scalar
/// F16C conversion gets merged into a live register: a false dependency on the accumulator).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hmul(a: &[u8], b: &[u8]) -> f32 {
    let bits =
        u16::from_le_bytes([a[0], a[1]]) as u32 | (u16::from_le_bytes([b[0], b[1]]) as u32) << 16;
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    _mm_cvtss_f32(_mm_mul_ss(v, _mm_movehdup_ps(v)))
}

/// Writes `v` as a little-endian f16 (round to nearest even, as `half` does) into `b[0..2]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn put_h(b: &mut [u8], v: f32) {
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v));
    b[..2].copy_from_slice(&(_mm_cvtsi128_si32(h) as u16).to_le_bytes());
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
    _mm_cvtsi128_si32(s)
}

/// 32 bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load32(p: &[u8]) -> __m256i {
    debug_assert!(p.len() >= 32);
    // SAFETY: callers pass slices of at least 32 bytes; loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(p.as_ptr() as *const __m256i) }
}

/// The 16 bytes at `p` as 32 nibbles: low nibbles in bytes 0..16, high nibbles in 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles(p: &[u8]) -> __m256i {
    debug_assert!(p.len() >= 16);
    // SAFETY: callers pass slices of at least 16 bytes; loadu has no alignment requirement.
    let b = unsafe { _mm_loadu_si128(p.as_ptr() as *const __m128i) };
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(b, m4);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m4);
    _mm256_set_m128i(hi, lo)
}

/// Sum of products of signed bytes, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_i8(x: __m256i, y: __m256i) -> __m256i {
    // maddubs wants one unsigned operand: move x's sign onto y.
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

/// Sum of products of unsigned `x` (< 64) and signed `y`, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_u8_i8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_f32_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    // ggml_vec_dot_f32's order (fp_order::dot_f32): 4 accumulators over steps of 32, the
    // GGML_F32x8_REDUCE tree, then the leftovers one FMA at a time.
    let n = w.len().min(a.len()) / 4;
    let (wp, ap) = (w.as_ptr() as *const f32, a.as_ptr() as *const f32);
    let mut acc = [_mm256_setzero_ps(); 4];
    let np = n & !31;
    for i in (0..np).step_by(32) {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= np <= n elements lie inside both slices; loadu is unaligned.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(wp.add(i + 8 * k)),
                    _mm256_loadu_ps(ap.add(i + 8 * k)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
    }
    let mut sum = reduce_step(acc);
    for j in np..n {
        sum = f32_at(&w[4 * j..]).mul_add(f32_at(&a[4 * j..]), sum);
    }
    sum
}

/// GGML_F32x8_REDUCE: acc0 + acc2 and acc1 + acc3, their sum, then the halves and two hadds.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce_step(acc: [__m256; 4]) -> f32 {
    let x = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    let t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    let t1 = _mm_hadd_ps(t0, t0);
    _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_f16_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    // ggml_vec_dot_f16's order: as dot_f32, the leftover products added in f64.
    let n = w.len().min(a.len()) / 2;
    let mut acc = [_mm256_setzero_ps(); 4];
    let np = n & !31;
    for i in (0..np).step_by(32) {
        for (k, acc) in acc.iter_mut().enumerate() {
            let o = 2 * (i + 8 * k);
            // SAFETY: 8 halves (16 bytes) from o lie inside both slices since i + 32 <= n.
            let (x, y) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(o) as *const __m128i)),
                    _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(o) as *const __m128i)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
    }
    let mut sum = reduce_step(acc) as f64;
    for j in np..n {
        sum += (h2f(&w[2 * j..]) * h2f(&a[2 * j..])) as f64;
    }
    sum as f32
}

// One block of each simple quant, FMA'd into the 8-lane accumulator as ggml's AVX2 kernels do;
// the loops below and the AVX-512 kernels (for their odd last block) share them, so the order of
// float operations is one and the same.

/// A Q4_0 weight block's quants as signed bytes (nibble - 8), for `block_q8_0_with`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn prep_q4_0(x: &[u8]) -> __m256i {
    // SAFETY: the block holds 16 nibble bytes at QS.
    _mm256_sub_epi8(unsafe { nibbles(&x[Q4_0_QS..]) }, _mm256_set1_epi8(8))
}

/// One block of a weight format with its f16 scale first and signed byte quants `qx` (from
/// `prep_q4_0`, `prep_q5_0` or `prep_q8_0`) against a Q8_0 block, into `acc`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn block_q8_0_with(qx: __m256i, x: &[u8], y: &[u8], acc: __m256) -> __m256 {
    let d = _mm256_set1_ps(hmul(x, y));
    // SAFETY: the Q8_0 block holds 32 quants at QS.
    let qy = unsafe { load32(&y[Q8_0_QS..]) };
    _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(qx, qy)), acc)
}

/// One Q4_0 x Q8_0 block into `acc`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn block_q4_0(x: &[u8], y: &[u8], acc: __m256) -> __m256 {
    // SAFETY: x is a whole Q4_0 block, y a whole Q8_0 block.
    unsafe { block_q8_0_with(prep_q4_0(x), x, y, acc) }
}

/// A Q4_1 weight block's quants (unsigned nibbles).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn prep_q4_1(x: &[u8]) -> __m256i {
    // SAFETY: the block holds 16 nibble bytes at QS.
    unsafe { nibbles(&x[Q4_1_QS..]) }
}

/// One Q4_1 x Q8_1 block into `acc`, its min term into `mins`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn block_q4_1(x: &[u8], y: &[u8], acc: __m256, mins: &mut f32) -> __m256 {
    let d = _mm256_set1_ps(hmul(x, y));
    *mins += hmul(&x[Q4_1_M..], &y[Q8_1_S..]);
    // SAFETY: x is a whole Q4_1 block; the Q8_1 block holds 32 quants at QS.
    let (qx, qy) = unsafe { (prep_q4_1(x), load32(&y[Q8_1_QS..])) };
    _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_u8_i8(qx, qy)), acc)
}

/// A Q5_0 weight block's quants as signed bytes (5-bit value - 16), for `block_q8_0_with`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn prep_q5_0(x: &[u8]) -> __m256i {
    let qh = crate::quant::u32_at(&x[Q5_0_QH..]);
    // SAFETY: the block holds 16 nibble bytes at QS.
    let qx = unsafe { nibbles(&x[Q5_0_QS..]) };
    _mm256_sub_epi8(_mm256_or_si256(qx, bits_to_0x10(qh)), _mm256_set1_epi8(16))
}

/// One Q5_0 x Q8_0 block into `acc`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn block_q5_0(x: &[u8], y: &[u8], acc: __m256) -> __m256 {
    // SAFETY: x is a whole Q5_0 block, y a whole Q8_0 block.
    unsafe { block_q8_0_with(prep_q5_0(x), x, y, acc) }
}

/// A Q8_0 weight block's quants, for `block_q8_0_with`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn prep_q8_0(x: &[u8]) -> __m256i {
    // SAFETY: the block holds 32 quants at QS.
    unsafe { load32(&x[Q8_0_QS..]) }
}

/// One Q8_0 x Q8_0 block into `acc`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn block_q8_0(x: &[u8], y: &[u8], acc: __m256) -> __m256 {
    // SAFETY: both blocks hold 32 quants at QS.
    unsafe { block_q8_0_with(prep_q8_0(x), x, y, acc) }
}

/// Four consecutive weight rows (`w_row` bytes apart) against one activation row, each row's
/// float work in exactly the order of the one-row kernel (`block_q8_0_with`, `block_q4_1`): the
/// four FMA chains are independent, so the CPU overlaps their latency instead of waiting on one
/// chain per row. The activation block's scale (and Q8_1 sum) is converted once for the four
/// rows, and a row's scale and min in one conversion with one multiply: lane 0 is `d_w * d_a`,
/// lane 1 `m_w * s_a`, the products the one-row kernel forms. `(wb, ab, q_at)`: weight block
/// bytes, activation block bytes, where the activation quants start.
#[inline(always)]
pub(super) unsafe fn dot4_with(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    (wb, ab, q_at): (usize, usize, usize),
    has_mins: bool,
    prep: impl Fn(&[u8]) -> __m256i,
    int_dot: impl Fn(__m256i, __m256i) -> __m256i,
) -> [f32; 4] {
    let nb = a.len() / ab;
    // Every read below lies inside these bounds.
    assert!(
        a.len() == nb * ab && nb * wb <= w_row && w.len() >= 3 * w_row + nb * wb,
        "dot4: 4 weight rows of {nb} blocks do not fit the slices"
    );
    let ahead_rows = rows_ahead(w_row, 4);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut mins = [0f32; 4];
    // SAFETY: the pointers stay inside the bounds asserted above; the callers carry the
    // avx2/fma/f16c features the intrinsics need.
    unsafe {
        // The f16 pair at the start of a block as two f32 lanes.
        let pair =
            |p: *const u8| _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
        for i in 0..nb {
            let y = a.as_ptr().add(i * ab);
            let ys = pair(y);
            let qy = _mm256_loadu_si256(y.add(q_at) as *const __m256i);
            for (r, (acc, m)) in acc.iter_mut().zip(mins.iter_mut()).enumerate() {
                let x = w.as_ptr().add(r * w_row + i * wb);
                // Four rows are four short interleaved streams, which the hardware prefetcher
                // follows late: ask for the same place in rows further on now.
                let ahead = x.wrapping_add(ahead_rows * w_row);
                _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                let d = _mm_mul_ps(pair(x), ys);
                let q = int_dot(prep(std::slice::from_raw_parts(x, wb)), qy);
                *acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(d), _mm256_cvtepi32_ps(q), *acc);
                if has_mins {
                    *m += _mm_cvtss_f32(_mm_movehdup_ps(d));
                }
            }
        }
    }
    // SAFETY: the callers carry the avx2/fma/f16c features hsum_ps needs.
    std::array::from_fn(|r| {
        let s = unsafe { hsum_ps(acc[r]) };
        if has_mins {
            s + mins[r]
        } else {
            s
        }
    })
}

/// How many rows ahead a kernel working through `group` rows of `w_row` bytes at a time should
/// prefetch: the next group, or as many groups as make about 8 KiB, so that short rows (a wide
/// vocabulary over a narrow model) still ask early enough to cover the memory's latency.
pub(super) fn rows_ahead(w_row: usize, group: usize) -> usize {
    group * (8192 / (group * w_row).max(1)).max(1)
}

/// A four-row kernel per format over `dot4_with`.
macro_rules! dot4_kernels {
    ($($imp:ident: $sizes:expr, $mins:expr, $prep:ident, $dot:ident;)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $imp(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 4] {
            // SAFETY: this fn has the features the helpers need, and dot4_with hands `prep`
            // whole weight blocks of the size given.
            unsafe { dot4_with(w, w_row, a, $sizes, $mins, |x| $prep(x), |x, y| $dot(x, y)) }
        }
    )*};
}

dot4_kernels! {
    dot4_q4_0_impl: (Q4_0_BYTES, Q8_0_BYTES, Q8_0_QS), false, prep_q4_0, dot_i8;
    dot4_q4_1_impl: (Q4_1_BYTES, Q8_1_BYTES, Q8_1_QS), true, prep_q4_1, dot_u8_i8;
    dot4_q5_0_impl: (Q5_0_BYTES, Q8_0_BYTES, Q8_0_QS), false, prep_q5_0, dot_i8;
    dot4_q8_0_impl: (Q8_0_BYTES, Q8_0_BYTES, Q8_0_QS), false, prep_q8_0, dot_i8;
}

macro_rules! safe_dot4 {
    ($($name:ident => $imp:ident;)*) => {$(
        fn $name(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 4] {
            // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
            unsafe { $imp(w, w_row, a) }
        }
    )*};
}

safe_dot4! {
    dot4_q4_0 => dot4_q4_0_impl;
    dot4_q4_1 => dot4_q4_1_impl;
    dot4_q5_0 => dot4_q5_0_impl;
    dot4_q8_0 => dot4_q8_0_impl;
}

/// Q4_0 in the repacked kernels' order (`dot::dot_rows8_fn`), four rows at a time: the four
/// rows' integer block sums reduce together and each row's chain is one lane of a vector FMA.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_q4_0_rows8_impl(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 4] {
    let eight = _mm256_set1_epi8(8);
    let ahead_rows = rows_ahead(w_row, 4);
    let mut acc = _mm_setzero_ps();
    for (i, y) in a.chunks_exact(Q8_0_BYTES).enumerate() {
        // SAFETY: the Q8_0 block holds 32 quants at QS.
        let qy = unsafe { load32(&y[Q8_0_QS..]) };
        let dy = h2f(y);
        let mut s = [_mm256_setzero_si256(); 4];
        let mut d = [0f32; 4];
        for (r, (s, d)) in s.iter_mut().zip(d.iter_mut()).enumerate() {
            // As in dot4_with: the same place in the next four rows, ahead of the prefetcher.
            let ahead = w
                .as_ptr()
                .wrapping_add((r + ahead_rows) * w_row + i * Q4_0_BYTES);
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            let x = &w[r * w_row + i * Q4_0_BYTES..][..Q4_0_BYTES];
            // SAFETY: the block holds 16 nibble bytes at QS.
            let qx = unsafe { nibbles(&x[Q4_0_QS..]) };
            *s = dot_i8(_mm256_sub_epi8(qx, eight), qy);
            *d = h2f(x) * dy;
        }
        // Exact integer sums of each row's 8 lanes, row r in lane r.
        let h01 = _mm256_hadd_epi32(s[0], s[1]);
        let h23 = _mm256_hadd_epi32(s[2], s[3]);
        let h = _mm256_hadd_epi32(h01, h23);
        let sums = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
        // SAFETY: `d` is four f32s; loadu has no alignment requirement.
        let dv = unsafe { _mm_loadu_ps(d.as_ptr()) };
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(sums), dv, acc);
    }
    let mut out = [0f32; 4];
    // SAFETY: `out` is four f32s.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), acc) };
    out
}

fn dot4_q4_0_rows8(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 4] {
    // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
    unsafe { dot4_q4_0_rows8_impl(w, w_row, a) }
}

/// The four-row kernels of this file (the AVX-512 path installs them too: their float work is
/// the same as its own one-row kernels', and four chains hide the FMA latency that pairing does).
pub(crate) fn install_dot4(dot4: &mut [Option<Dot4Fn>; 11], dot4_rows8: &mut [Option<Dot4Fn>; 11]) {
    dot4_rows8[GgmlType::Q4_0.index()] = Some(dot4_q4_0_rows8);
    dot4[GgmlType::Q4_0.index()] = Some(dot4_q4_0);
    dot4[GgmlType::Q4_1.index()] = Some(dot4_q4_1);
    dot4[GgmlType::Q5_0.index()] = Some(dot4_q5_0);
    dot4[GgmlType::Q8_0.index()] = Some(dot4_q8_0);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q4_0_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.chunks_exact(Q4_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        // SAFETY: this fn has the features block_q4_0 needs; the chunks are whole blocks.
        acc = unsafe { block_q4_0(x, y, acc) };
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q4_1_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for (x, y) in w.chunks_exact(Q4_1_BYTES).zip(a.chunks_exact(Q8_1_BYTES)) {
        // SAFETY: this fn has the features block_q4_1 needs; the chunks are whole blocks.
        acc = unsafe { block_q4_1(x, y, acc, &mut mins) };
    }
    hsum_ps(acc) + mins
}

/// The 32 bits of `qh` as 32 bytes: 0x10 where the bit is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bits_to_0x10(qh: u32) -> __m256i {
    let v = _mm256_set1_epi32(qh as i32);
    // Byte i takes byte i / 8 of qh, then tests bit i % 8 of it.
    let spread = _mm256_setr_epi64x(
        0,
        0x0101_0101_0101_0101,
        0x0202_0202_0202_0202,
        0x0303_0303_0303_0303,
    );
    let bytes = _mm256_shuffle_epi8(v, spread);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q5_0_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.chunks_exact(Q5_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        // SAFETY: this fn has the features block_q5_0 needs; the chunks are whole blocks.
        acc = unsafe { block_q5_0(x, y, acc) };
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q8_0_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.chunks_exact(Q8_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        // SAFETY: this fn has the features block_q8_0 needs; the chunks are whole blocks.
        acc = unsafe { block_q8_0(x, y, acc) };
    }
    hsum_ps(acc)
}

#[inline]
pub(super) fn bsum(y: &[u8], k: usize) -> i32 {
    i16::from_le_bytes([y[Q8_K_BSUMS + 2 * k], y[Q8_K_BSUMS + 2 * k + 1]]) as i32
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q4_k_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = [0f32; 4];
    for (x, y) in w.chunks_exact(Q4_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        // SAFETY: this fn has the features q4_k_isums needs; the chunks are whole blocks.
        let (sumi, summ) = unsafe { q4_k_isums(x, y) };
        acc = q4_k_block_sums(x, y, sumi, summ, acc, &mut acc_m);
    }
    q4_k_total(acc, acc_m)
}

/// [`q4_k_isums`] with the products summed per 64-element chunk (exact integers).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_chunk_isums(x: &[u8], y: &[u8]) -> ([i32; 4], [i32; 4]) {
    let mut chunks = [0i32; 4];
    // SAFETY: the caller has this fn's features, which q4_k_chunk does too.
    let summ = unsafe { q4_k_isums_with(x, y, |c, p| chunks[c] = hsum_epi32(p)) };
    (chunks, summ)
}

/// The integer work of one Q4_K super-block: the scaled quant products in 8 lanes (lane `l`
/// holds elements 4l..4l+4 of every 32) and, per 64-element chunk, mins times block sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_isums(x: &[u8], y: &[u8]) -> (__m256i, [i32; 4]) {
    let mut sumi = _mm256_setzero_si256();
    // SAFETY: the caller has this fn's features.
    let summ = unsafe { q4_k_isums_with(x, y, |_, p| sumi = _mm256_add_epi32(sumi, p)) };
    (sumi, summ)
}

/// Runs over the four 64-element chunks of a Q4_K super-block, handing each chunk's scaled
/// products (8 i32 lanes) to `chunk`; returns the per-chunk mins times block sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_isums_with(x: &[u8], y: &[u8], mut chunk: impl FnMut(usize, __m256i)) -> [i32; 4] {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut summ = [0i32; 4];
    for (c, sm) in summ.iter_mut().enumerate() {
        let scales = &x[Q4_K_SCALES..Q4_K_QS];
        let (sc0, m0) = scale_min_k4(2 * c, scales);
        let (sc1, m1) = scale_min_k4(2 * c + 1, scales);
        *sm = m0 as i32 * (bsum(y, 4 * c) + bsum(y, 4 * c + 1))
            + m1 as i32 * (bsum(y, 4 * c + 2) + bsum(y, 4 * c + 3));
        // SAFETY: 32 quant bytes at QS + 32c of the Q4_K block; 64 quants at QS + 64c of the
        // Q8_K block.
        let (q, y0, y1) = unsafe {
            (
                load32(&x[Q4_K_QS + 32 * c..]),
                load32(&y[Q8_K_QS + 64 * c..]),
                load32(&y[Q8_K_QS + 32 + 64 * c..]),
            )
        };
        let lo = _mm256_and_si256(q, m4);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), _mm256_set1_epi16(sc0 as i16));
        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), _mm256_set1_epi16(sc1 as i16));
        chunk(c, _mm256_add_epi32(p0, p1));
    }
    summ
}

/// Q4_0 in the order of ggml's repacked kernels (`dot::dot_rows8_fn`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_0_rows8_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let eight = _mm256_set1_epi8(8);
    let mut acc = 0.0f32;
    for (x, y) in w.chunks_exact(Q4_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        // SAFETY: the block holds 16 nibble bytes at QS and the Q8_0 block 32 quants at QS.
        let (qx, qy) = unsafe { (nibbles(&x[Q4_0_QS..]), load32(&y[Q8_0_QS..])) };
        let s = hsum_epi32(dot_i8(_mm256_sub_epi8(qx, eight), qy));
        acc = (s as f32).mul_add(hmul(x, y), acc);
    }
    acc
}

/// Q4_K in the order of ggml's repacked GEMM (`dot::dot_rows8_fn`): an FMA per 64-element chunk.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k_rows8_gemm_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (mut acc, mut acc_m) = (0.0f32, 0.0f32);
    for (x, y) in w.chunks_exact(Q4_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        // SAFETY: this fn has the features q4_k_isums needs; the chunks are whole blocks.
        let (chunks, summ) = unsafe { q4_k_chunk_isums(x, y) };
        let dy = f32_at(y);
        for c in 0..4 {
            acc = (chunks[c] as f32).mul_add(h2f(x) * dy, acc);
            acc_m = (summ[c] as f32).mul_add(h2f(&x[Q4_K_DMIN..]) * dy, acc_m);
        }
    }
    acc - acc_m
}

/// Q4_K in the order of ggml's repacked GEMV (`dot::dot_rows8_fn`): an FMA per super-block.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k_rows8_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (mut acc, mut acc_m) = (0.0f32, 0.0f32);
    for (x, y) in w.chunks_exact(Q4_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        // SAFETY: this fn has the features q4_k_isums needs; the chunks are whole blocks.
        let (sumi, summ) = unsafe { q4_k_isums(x, y) };
        let dy = f32_at(y);
        acc = (hsum_epi32(sumi) as f32).mul_add(h2f(x) * dy, acc);
        let m: i32 = summ.iter().sum();
        acc_m = (m as f32).mul_add(h2f(&x[Q4_K_DMIN..]) * dy, acc_m);
    }
    acc - acc_m
}

/// One Q4_K super-block's float work as ggml's AVX2 kernel does it: the scaled integer lanes
/// into `acc` and, per 64-element chunk, the min term into lane `c` of `acc_m` (both by FMA).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_k_block_sums(
    x: &[u8],
    y: &[u8],
    sumi: __m256i,
    summ: [i32; 4],
    acc: __m256,
    acc_m: &mut [f32; 4],
) -> __m256 {
    let dy = f32_at(y);
    let dmin = -dy * h2f(&x[Q4_K_DMIN..]);
    for (m, s) in acc_m.iter_mut().zip(summ) {
        *m = dmin.mul_add(s as f32, *m);
    }
    _mm256_fmadd_ps(_mm256_set1_ps(dy * h2f(x)), _mm256_cvtepi32_ps(sumi), acc)
}

/// The Q4_K dot product from its two accumulators, reduced in ggml's order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_k_total(acc: __m256, acc_m: [f32; 4]) -> f32 {
    hsum_ps(acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q6_k_impl(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    for (x, y) in w.chunks_exact(Q6_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let d = h2f(&x[Q6_K_D..]) * f32_at(y);
        let sc = |k: usize| x[Q6_K_SCALES + k] as i8 as i16;
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            // SAFETY: ql has 64 bytes at QL + 64h, qh 32 bytes at QH + 32h; the Q8_K block has
            // 128 quants at QS + 128h.
            let (ql0, ql1, qh) = unsafe {
                (
                    load32(&x[Q6_K_QL + 64 * h..]),
                    load32(&x[Q6_K_QL + 64 * h + 32..]),
                    load32(&x[Q6_K_QH + 32 * h..]),
                )
            };
            let high = |s: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(s, m2));
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), high(qh)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), high(_mm256_srli_epi16::<2>(qh))),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    high(_mm256_srli_epi16::<4>(qh)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    high(_mm256_srli_epi16::<6>(qh)),
                ),
            ];
            for (k, &qk) in q.iter().enumerate() {
                // SAFETY: 32 quants at QS + 128h + 32k lie inside the Q8_K block.
                let yk = unsafe { load32(&y[Q8_K_QS + 128 * h + 32 * k..]) };
                let s = 8 * h + 2 * k;
                let scales = _mm256_set_m128i(_mm_set1_epi16(sc(s + 1)), _mm_set1_epi16(sc(s)));
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qk, yk), scales);
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        acc = q6_k_block_sums(x, y, d, sumi, acc);
    }
    hsum_ps(acc)
}

/// One Q6_K super-block's float work as ggml's AVX2 kernel does it. The stored levels are
/// q + 32, so lane `k` first loses 32 * (scale * y-sum) of sub-blocks 2k and 2k + 1 (integers),
/// then the lanes go into `acc` by FMA.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6_k_block_sums(x: &[u8], y: &[u8], d: f32, sumi: __m256i, acc: __m256) -> __m256 {
    let sc = |k: usize| x[Q6_K_SCALES + k] as i8 as i32;
    let corr: [i32; 8] = std::array::from_fn(|k| {
        32 * (sc(2 * k) * bsum(y, 2 * k) + sc(2 * k + 1) * bsum(y, 2 * k + 1))
    });
    // SAFETY: `corr` is 8 i32s; loadu has no alignment requirement.
    let corr = unsafe { _mm256_loadu_si256(corr.as_ptr() as *const __m256i) };
    let lanes = _mm256_sub_epi32(sumi, corr);
    _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc)
}

/// Largest |x| of 32 floats at `x`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn absmax(v: &[__m256; 4]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_andnot_ps(sign, v[0]);
    for &x in &v[1..] {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, x));
    }
    let s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// Packs 32 i32 (in 4 vectors) to 32 i8 in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pack_i8(i: [__m256i; 4]) -> __m256i {
    let ab = _mm256_packs_epi32(i[0], i[1]);
    let cd = _mm256_packs_epi32(i[2], i[3]);
    let p = _mm256_packs_epi16(ab, cd);
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_block32(x: &[f32]) -> [__m256; 4] {
    debug_assert!(x.len() >= 32);
    // SAFETY: callers pass 32-element chunks.
    unsafe { [0, 8, 16, 24].map(|o| _mm256_loadu_ps(x.as_ptr().add(o))) }
}

/// Quantizes 32 activations as `quant::quantize_q8_0_act` does (127 / amax, halves to even);
/// returns the scale and the quants as i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block(x: &[f32]) -> (f32, [__m256i; 4]) {
    // SAFETY: callers pass 32-element chunks.
    let v = unsafe { load_block32(x) };
    let amax = absmax(&v);
    let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    (
        amax / 127.0,
        v.map(|v| {
            _mm256_cvtps_epi32(_mm256_round_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(_mm256_mul_ps(v, id)))
        }),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_0_impl(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK8_0)
        .zip(dst.chunks_exact_mut(Q8_0_BYTES))
    {
        // SAFETY: x is a 32-element chunk.
        let (d, q) = unsafe { q8_block(x) };
        put_h(b, d);
        // SAFETY: the Q8_0 block has 32 bytes at QS.
        unsafe { _mm256_storeu_si256(b.as_mut_ptr().add(Q8_0_QS) as *mut __m256i, pack_i8(q)) };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_1_impl(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK8_1)
        .zip(dst.chunks_exact_mut(Q8_1_BYTES))
    {
        // SAFETY: x is a 32-element chunk.
        let (d, q) = unsafe { q8_block(x) };
        let sum = hsum_epi32(_mm256_add_epi32(
            _mm256_add_epi32(q[0], q[1]),
            _mm256_add_epi32(q[2], q[3]),
        ));
        put_h(b, d);
        put_h(&mut b[Q8_1_S..], d * sum as f32);
        // SAFETY: the Q8_1 block has 32 bytes at QS.
        unsafe { _mm256_storeu_si256(b.as_mut_ptr().add(Q8_1_QS) as *mut __m256i, pack_i8(q)) };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_k_impl(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        let mut amax = 0.0f32;
        for c in x.chunks_exact(32) {
            // SAFETY: c is a 32-element chunk.
            amax = amax.max(absmax(&unsafe { load_block32(c) }));
        }
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        // The first element of largest magnitude sets the sign of the scale, as in the scalar.
        let max = *x.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
        let iscale = -127.0 / max;
        let is = _mm256_set1_ps(iscale);
        let top = _mm256_set1_epi32(127);
        for (k, c) in x.chunks_exact(32).enumerate() {
            // SAFETY: c is a 32-element chunk.
            let v = unsafe { load_block32(c) };
            let q = v.map(|v| {
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_ps(v, is),
                );
                _mm256_min_epi32(_mm256_cvtps_epi32(r), top)
            });
            // bsums of the two 16-element groups of this chunk.
            for g in 0..2 {
                let s = hsum_epi32(_mm256_add_epi32(q[2 * g], q[2 * g + 1]));
                b[Q8_K_BSUMS + 4 * k + 2 * g..][..2].copy_from_slice(&(s as i16).to_le_bytes());
            }
            // SAFETY: the Q8_K block has 256 quant bytes at QS; chunk k covers QS + 32k..+32.
            unsafe {
                _mm256_storeu_si256(
                    b.as_mut_ptr().add(Q8_K_QS + 32 * k) as *mut __m256i,
                    pack_i8(q),
                )
            };
        }
        b[..Q8_K_QS].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
