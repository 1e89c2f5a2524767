//! Prompt-processing tiles: several weight rows against several activation rows per call, each
//! output computed in exactly the float order of its one-row kernel.
//!
//! - `tile8`: eight rows by up to four tokens, for Q4_0 in llama.cpp's repacked order
//!   (`dot::dot_rows8_fn`), where each output is `acc = fma(isum as f32, d_w * d_a, acc)` block
//!   after block: a block's nibbles are unpacked once for four tokens, a token's block loaded
//!   once for eight rows, and the eight rows' integer sums reduced together, row r in lane r.
//! - `tile4`: four rows by up to two tokens, for Q4_0, Q4_1, Q5_0 and Q8_0 in ggml's vec_dot
//!   order (per output the 8-lane accumulator and min term the avx2 block kernels build, with the
//!   scale products formed four rows at a time): a block is unpacked (`prep_*`) once for both
//!   tokens.
//!
//! Integer sums are exact, so how they are formed does not change the result.
//! Reached only through `install`, which dispatch calls after detecting avx2, fma and f16c.

use super::avx2::{
    dot_i8, dot_u8_i8, hsum_ps, nibbles, prep_q4_0, prep_q4_1, prep_q5_0, prep_q8_0, rows_ahead,
};
use crate::dot::{tile_blocks, Tile4Fn, Tile8Fn};
use crate::formats::{
    GgmlType, Q4_0_BYTES, Q4_0_QS, Q4_1_BYTES, Q4_1_M, Q5_0_BYTES, Q8_0_BYTES, Q8_0_QS, Q8_1_BYTES,
    Q8_1_QS, Q8_1_S,
};
use std::arch::x86_64::*;

/// Installs the tiles of this file; with `vnni` (the AVX-512 path on a CPU with AVX-512 VNNI)
/// the Q4_0 tile forms its integer sums with `vpdpbusd` (exact, so the same bits).
pub(crate) fn install(
    tile8: &mut [Option<Tile8Fn>; 11],
    tile4: &mut [Option<Tile4Fn>; 11],
    vnni: bool,
) {
    tile8[GgmlType::Q4_0.index()] = Some(if vnni { tile8_q4_0_vnni } else { tile8_q4_0 });
    tile4[GgmlType::Q4_0.index()] = Some(tile4_q4_0);
    tile4[GgmlType::Q4_1.index()] = Some(tile4_q4_1);
    tile4[GgmlType::Q5_0.index()] = Some(tile4_q5_0);
    tile4[GgmlType::Q8_0.index()] = Some(tile4_q8_0);
}

fn tile8_q4_0(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 8]; 4] {
    // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
    unsafe { tile8_q4_0_impl(w, w_row, a, a_row, nt) }
}

/// Eight i32 vectors summed across their lanes, vector r's sum in lane r (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose_sum8(s: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(s[0], s[1]);
    let h23 = _mm256_hadd_epi32(s[2], s[3]);
    let h45 = _mm256_hadd_epi32(s[4], s[5]);
    let h67 = _mm256_hadd_epi32(s[6], s[7]);
    // Each 128-bit half of lo holds rows 0..4 (of that half's lanes), of hi rows 4..8.
    let lo = _mm256_hadd_epi32(h01, h23);
    let hi = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile8_q4_0_impl(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    a_row: usize,
    nt: usize,
) -> [[f32; 8]; 4] {
    let ones = _mm256_set1_epi16(1);
    let eight = _mm256_set1_epi8(8);
    // (x - 8) * y pair sums = x * y pair sums - 8 * y pair sums; no i16 overflow (|.| <= 2 * 15 *
    // 128 before, 2 * 8 * 128 after).
    // SAFETY: this fn has the features the closures' intrinsics need.
    unsafe {
        tile8_q4_0_with(
            w,
            w_row,
            a,
            a_row,
            nt,
            |y| _mm256_maddubs_epi16(eight, y),
            |x, y, y8| _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(x, y), y8), ones),
        )
    }
}

fn tile8_q4_0_vnni(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 8]; 4] {
    // SAFETY: only installed by dispatch, on its AVX-512 path, after avx2, fma, f16c, avx512f,
    // avx512vl and avx512vnni were detected.
    unsafe { tile8_q4_0_vnni_impl(w, w_row, a, a_row, nt) }
}

/// The Q4_0 tile with AVX-512 VNNI's byte dot product (on 256-bit vectors): one `vpdpbusd` per
/// row and block, starting from -8 * (the token's byte sums) so that it yields (x - 8) . y.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn tile8_q4_0_vnni_impl(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    a_row: usize,
    nt: usize,
) -> [[f32; 8]; 4] {
    let eight = _mm256_set1_epi8(8);
    let zero = _mm256_setzero_si256();
    // SAFETY: this fn has the features the closures' intrinsics need.
    unsafe {
        tile8_q4_0_with(
            w,
            w_row,
            a,
            a_row,
            nt,
            |y| _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, eight, y)),
            |x, y, neg_y8| _mm256_dpbusd_epi32(neg_y8, x, y),
        )
    }
}

/// The Q4_0 tile's loop: `tok(y)` is computed once per token block, `row(x, y, tok(y))` gives
/// eight i32 lanes whose sum is (x - 8) . y for one row (x: unsigned nibbles, y: Q8_0 quants).
/// A constant token count keeps the accumulators in registers (decode is one token).
#[inline(always)]
unsafe fn tile8_q4_0_with(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    a_row: usize,
    nt: usize,
    tok: impl Fn(__m256i) -> __m256i,
    row: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) -> [[f32; 8]; 4] {
    // SAFETY: as the callers'.
    unsafe {
        match nt {
            1 => tile8_q4_0_n::<1>(w, w_row, a, a_row, tok, row),
            2 => tile8_q4_0_n::<2>(w, w_row, a, a_row, tok, row),
            3 => tile8_q4_0_n::<3>(w, w_row, a, a_row, tok, row),
            _ => tile8_q4_0_n::<4>(w, w_row, a, a_row, tok, row),
        }
    }
}

#[inline(always)]
unsafe fn tile8_q4_0_n<const NT: usize>(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    a_row: usize,
    tok: impl Fn(__m256i) -> __m256i,
    row: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) -> [[f32; 8]; 4] {
    const WB: usize = Q4_0_BYTES;
    const AB: usize = Q8_0_BYTES;
    let nb = tile_blocks((w, w_row, 8, WB), (a, a_row, NT, 4, AB));
    let ahead_rows = rows_ahead(w_row, 8);
    // SAFETY (the intrinsics below): the callers carry avx2, fma and f16c.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); NT];
        let mut xs = [_mm256_setzero_si256(); 8];
        let mut dw = [0u16; 8];
        for i in 0..nb {
            for (r, (x, d)) in xs.iter_mut().zip(dw.iter_mut()).enumerate() {
                // Eight short interleaved streams: fetch the same place in rows further on
                // now, ahead of the hardware prefetcher (decode reads each weight once).
                let ahead = w.as_ptr().wrapping_add((r + ahead_rows) * w_row + i * WB);
                _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                let blk = &w[r * w_row + i * WB..][..WB];
                *d = u16::from_le_bytes([blk[0], blk[1]]);
                // The block holds 16 nibble bytes at QS. Unsigned 0..15: the -8 offset is taken
                // off through the token's sum.
                *x = nibbles(&blk[Q4_0_QS..]);
            }
            // `dw` is eight u16s; loadu has no alignment requirement.
            let dw8 = _mm256_cvtph_ps(_mm_loadu_si128(dw.as_ptr() as *const __m128i));
            for (t, acc) in acc.iter_mut().enumerate() {
                let blk = &a[t * a_row + i * AB..][..AB];
                // The Q8_0 block holds 32 quants at QS; loadu has no alignment requirement.
                let y = _mm256_loadu_si256(blk[Q8_0_QS..].as_ptr() as *const __m256i);
                let dy = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                let ty = tok(y);
                let mut s = [_mm256_setzero_si256(); 8];
                for (s, x) in s.iter_mut().zip(&xs) {
                    *s = row(*x, y, ty);
                }
                let isum = transpose_sum8(&s);
                let d = _mm256_mul_ps(dw8, _mm256_set1_ps(dy));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, *acc);
            }
        }
        let mut out = [[0f32; 8]; 4];
        for (o, acc) in out.iter_mut().zip(acc) {
            // Each output row is eight f32s.
            _mm256_storeu_ps(o.as_mut_ptr(), acc);
        }
        out
    }
}

/// Four weight rows against `nt` (1..=2) activation rows in the one-row kernels' order
/// (`block_q8_0_with`, `block_q4_1`): per output an 8-lane accumulator gets
/// `fma(d_w * d_a, isum lanes, acc)` block after block and, with `mins` (Q4_1), a scalar min term
/// gets `m_w * s_a`; `hsum_ps(acc) + mins` at the end. The scale products are formed four rows at a
/// time (each lane the same f32 product the one-row kernel forms) and each block is unpacked
/// (`prep`) once for both tokens. `q_at` is where the activation block's quants start.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile4_with(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    a_row: usize,
    nt: usize,
    (wb, ab, q_at): (usize, usize, usize),
    mins: bool,
    prep: impl Fn(&[u8]) -> __m256i,
    int_dot: impl Fn(__m256i, __m256i) -> __m256i,
) -> [[f32; 4]; 2] {
    let nb = tile_blocks((w, w_row, 4, wb), (a, a_row, nt, 2, ab));
    let h = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
    let mut min_acc = [_mm_setzero_ps(); 2];
    for i in 0..nb {
        let xb: [&[u8]; 4] = std::array::from_fn(|r| &w[r * w_row + i * wb..][..wb]);
        let qx: [__m256i; 4] = [prep(xb[0]), prep(xb[1]), prep(xb[2]), prep(xb[3])];
        let dw = [h(xb[0]), h(xb[1]), h(xb[2]), h(xb[3])];
        // SAFETY: `dw` is four u16s (8 bytes); loadl reads exactly 8.
        let dw4 = _mm_cvtph_ps(unsafe { _mm_loadl_epi64(dw.as_ptr() as *const __m128i) });
        let mw = [
            h(&xb[0][Q4_1_M..]),
            h(&xb[1][Q4_1_M..]),
            h(&xb[2][Q4_1_M..]),
            h(&xb[3][Q4_1_M..]),
        ];
        // SAFETY: as above.
        let mw4 = _mm_cvtph_ps(unsafe { _mm_loadl_epi64(mw.as_ptr() as *const __m128i) });
        for t in 0..nt {
            let y = &a[t * a_row + i * ab..][..ab];
            let dy = half::f16::from_bits(h(y)).to_f32();
            let mut d = [0f32; 4];
            // SAFETY: `d` is four f32s.
            unsafe { _mm_storeu_ps(d.as_mut_ptr(), _mm_mul_ps(dw4, _mm_set1_ps(dy))) };
            if mins {
                let sy = half::f16::from_bits(h(&y[Q8_1_S..])).to_f32();
                min_acc[t] = _mm_add_ps(min_acc[t], _mm_mul_ps(mw4, _mm_set1_ps(sy)));
            }
            // SAFETY: the activation block holds 32 quants at q_at (ab = q_at + 32).
            let qy = unsafe { _mm256_loadu_si256(y[q_at..].as_ptr() as *const __m256i) };
            for r in 0..4 {
                let isum = _mm256_cvtepi32_ps(int_dot(qx[r], qy));
                acc[t][r] = _mm256_fmadd_ps(_mm256_set1_ps(d[r]), isum, acc[t][r]);
            }
        }
    }
    let mut out = [[0f32; 4]; 2];
    for t in 0..nt {
        let mut m = [0f32; 4];
        // SAFETY: `m` is four f32s.
        unsafe { _mm_storeu_ps(m.as_mut_ptr(), min_acc[t]) };
        for r in 0..4 {
            // SAFETY: the callers carry the avx2/fma/f16c features hsum_ps needs.
            let s = unsafe { hsum_ps(acc[t][r]) };
            out[t][r] = if mins { s + m[r] } else { s };
        }
    }
    out
}

/// One four-row tile per format: the safe entry point (installed only after avx2, fma and f16c
/// were detected) and its body over `tile4_with`.
macro_rules! tile4_kernels {
    ($($name:ident => $imp:ident: $sizes:expr, $mins:expr, $prep:ident, $dot:ident;)*) => {$(
        fn $name(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 4]; 2] {
            // SAFETY: only installed by dispatch after avx2, fma and f16c were detected.
            unsafe { $imp(w, w_row, a, a_row, nt) }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $imp(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 4]; 2] {
            // SAFETY: this fn has the features the helpers need, and tile4_with hands `prep`
            // whole weight blocks of the size given.
            unsafe {
                tile4_with(w, w_row, a, a_row, nt, $sizes, $mins, |x| $prep(x), |x, y| $dot(x, y))
            }
        }
    )*};
}

tile4_kernels! {
    tile4_q4_0 => tile4_q4_0_impl: (Q4_0_BYTES, Q8_0_BYTES, Q8_0_QS), false, prep_q4_0, dot_i8;
    tile4_q4_1 => tile4_q4_1_impl: (Q4_1_BYTES, Q8_1_BYTES, Q8_1_QS), true, prep_q4_1, dot_u8_i8;
    tile4_q5_0 => tile4_q5_0_impl: (Q5_0_BYTES, Q8_0_BYTES, Q8_0_QS), false, prep_q5_0, dot_i8;
    tile4_q8_0 => tile4_q8_0_impl: (Q8_0_BYTES, Q8_0_BYTES, Q8_0_QS), false, prep_q8_0, dot_i8;
}
