//! Sixteen weight rows at a time on AVX-512 with VNNI, for one token (decode) and for tiles of
//! up to eight tokens (prompts): the rows sit in the sixteen lanes of one float accumulator, so
//! each row's chain of per-block FMAs is one lane of a vector FMA. That is the order of
//! llama.cpp's repacked kernels (`dot::dot_rows8_fn`): per row `acc = fma(isum as f32, d_w *
//! d_a, acc)` block after block for Q4_0, and per super-block (GEMV) or per 64-element chunk
//! (GEMM) for Q4_K, with a second accumulator for the mins, subtracted at the end.
//!
//! - Q4_0, one token: per row, four consecutive blocks fill one 512-bit register (one 128-bit
//!   lane per block), so a single `vpdpbusd` per nibble half does the byte products of 128
//!   weights; the sixteen rows' partial sums are then reduced and transposed together
//!   (`transpose_sum16x4`) into one vector per block with row r in lane r.
//! - Q4_0, several tokens (`tile16_q4_0`): the weights are transposed instead, once per block
//!   for all the tokens, so that each token's block sum forms in its row's lane directly.
//! - Q4_K: per row, four `vpdpbusd` cover a super-block, two sub-blocks per register; the sums
//!   reduce into one vector per sub-block with the sixteen rows in lanes (`subblock_sums16`), so
//!   the 6-bit scales and mins are unpacked sixteen rows at a time and applied with `vpmulld`.
//!   The tile unpacks the nibbles and scales once per super-block for all its tokens.
//!
//! Weight scales come in by gathers, in the lane order of the sums. Integer sums are exact, so the
//! way they are formed does not change the result. Partial sums are reduced as they come: kept
//! for all sixteen rows they spill to the stack, and those stores slow the weight loads.
//!
//! Reached only through `install`, which dispatch calls on its AVX-512 path after detecting
//! avx512f, avx512bw, avx512vl, avx512vnni, avx2, fma and f16c.

use super::avx2::rows_ahead;
use crate::dot::tile_blocks;
use crate::dot::{Gemv16Fn, Tile16Fn};
use crate::formats::{
    GgmlType, Q4_0_BYTES, Q4_0_QS, Q4_K_BYTES, Q4_K_QS, Q4_K_SCALES, Q8_0_BYTES, Q8_0_QS,
    Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS,
};
use std::arch::x86_64::*;

/// Installs this file's kernels (AVX-512 path, CPU with AVX-512 VNNI): the one-token kernels
/// (the GEMV order of `dot::dot_rows8_fn`) and the tiles, each (the GEMM order's, the GEMV
/// order's).
pub(crate) fn install(
    gemv16: &mut [Option<Gemv16Fn>; 11],
    tile16: &mut [Option<(Tile16Fn, Tile16Fn)>; 11],
) {
    tile16[GgmlType::Q4_0.index()] = Some((tile16_q4_0, tile16_q4_0));
    tile16[GgmlType::Q4K.index()] = Some((tile16_q4_k_gemm, tile16_q4_k_gemv));
    gemv16[GgmlType::Q4_0.index()] = Some(gemv16_q4_0);
    gemv16[GgmlType::Q4K.index()] = Some(gemv16_q4_k);
}

fn gemv16_q4_k(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 16] {
    // SAFETY: only installed by dispatch after the features of gemv16_q4_k_impl were detected.
    unsafe { gemv16_q4_k_impl(w, w_row, a) }
}

fn gemv16_q4_0(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 16] {
    // SAFETY: only installed by dispatch after the features of gemv16_q4_0_impl were detected.
    unsafe { gemv16_q4_0_impl(w, w_row, a) }
}

/// Two rows' vectors of four blocks by four i32 partial sums (128-bit lane k: block k) folded
/// into one: in each lane k, [a0 + a2, b0 + b2, a1 + a3, b1 + b3] (exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair_blocks(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
}

/// Eight `pair_blocks` vectors (rows 2j, 2j + 1 in `q[j]`) reduced to four vectors, one per
/// block, with row r's sum of block k in lane r of vector k (exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn transpose_sum16x4(q: &[__m512i; 8]) -> [__m512i; 4] {
    // Quads of rows: in each lane k, rows 4m..4m+4 complete.
    let r: [__m512i; 4] = std::array::from_fn(|m| {
        let (a, b) = (q[2 * m], q[2 * m + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    });
    // A 4 x 4 transpose of 128-bit lanes: block k of quad m goes to lane m of vector k.
    let t0 = _mm512_shuffle_i32x4::<0x44>(r[0], r[1]);
    let t1 = _mm512_shuffle_i32x4::<0xee>(r[0], r[1]);
    let t2 = _mm512_shuffle_i32x4::<0x44>(r[2], r[3]);
    let t3 = _mm512_shuffle_i32x4::<0xee>(r[2], r[3]);
    [
        _mm512_shuffle_i32x4::<0x88>(t0, t2),
        _mm512_shuffle_i32x4::<0xdd>(t0, t2),
        _mm512_shuffle_i32x4::<0x88>(t1, t3),
        _mm512_shuffle_i32x4::<0xdd>(t1, t3),
    ]
}

/// Up to four 16-byte pieces, `at(k)` for k < nk, as the 128-bit lanes of one register (zeros
/// past nk).
///
/// # Safety
/// Each `at(k)` for k < nk must point at 16 readable bytes.
#[inline(always)]
unsafe fn lanes4<const NK: usize>(at: impl Fn(usize) -> *const u8) -> __m512i {
    // SAFETY: as the caller promises; loadu has no alignment requirement.
    unsafe {
        let l = |k: usize| _mm_loadu_si128(at(k) as *const __m128i);
        let mut v = _mm512_castsi128_si512(l(0));
        if NK < 2 {
            v = _mm512_maskz_mov_epi64(0x03, v);
        } else {
            v = _mm512_inserti32x4::<1>(v, l(1));
        }
        v = _mm512_inserti32x4::<2>(v, if NK > 2 { l(2) } else { _mm_setzero_si128() });
        _mm512_inserti32x4::<3>(v, if NK > 3 { l(3) } else { _mm_setzero_si128() })
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn gemv16_q4_0_impl(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 16] {
    const WB: usize = Q4_0_BYTES;
    const AB: usize = Q8_0_BYTES;
    let nb = a.len() / AB;
    // Every read below lies inside these bounds (the gather reads 4 bytes at a block's start).
    assert!(
        a.len() == nb * AB && w.len() >= 15 * w_row + nb * WB && nb * WB <= w_row,
        "gemv16: 16 weight rows of {nb} Q4_0 blocks do not fit the slices"
    );
    let row_at = row_offsets(w_row, &IN_ORDER);
    let ahead_rows = rows_ahead(w_row, 16);
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    // SAFETY: the reads stay inside the bounds asserted above; this fn has the features.
    unsafe {
        while i + 4 <= nb {
            acc = q4_0_chunk::<4>(w, w_row, a, i, (row_at, ahead_rows), acc);
            i += 4;
        }
        acc = match nb - i {
            1 => q4_0_chunk::<1>(w, w_row, a, i, (row_at, ahead_rows), acc),
            2 => q4_0_chunk::<2>(w, w_row, a, i, (row_at, ahead_rows), acc),
            3 => q4_0_chunk::<3>(w, w_row, a, i, (row_at, ahead_rows), acc),
            _ => acc,
        };
    }
    let mut out = [0f32; 16];
    // SAFETY: `out` is sixteen f32s; storeu has no alignment requirement.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), acc) };
    out
}

/// Four registers of four rows' 16 bytes each (row 4g + L in 128-bit lane L of `z[g]`) as four
/// registers of bytes 4q..4q + 4 of all sixteen rows, in the lane order `Q4_0_ROWS` (a 4 x 4
/// transpose of 32-bit groups inside each 128-bit lane).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn transpose4x4(z: &[__m512i; 4]) -> [__m512i; 4] {
    let (ab_lo, ab_hi) = (
        _mm512_unpacklo_epi32(z[0], z[1]),
        _mm512_unpackhi_epi32(z[0], z[1]),
    );
    let (cd_lo, cd_hi) = (
        _mm512_unpacklo_epi32(z[2], z[3]),
        _mm512_unpackhi_epi32(z[2], z[3]),
    );
    [
        _mm512_unpacklo_epi64(ab_lo, cd_lo),
        _mm512_unpackhi_epi64(ab_lo, cd_lo),
        _mm512_unpacklo_epi64(ab_hi, cd_hi),
        _mm512_unpackhi_epi64(ab_hi, cd_hi),
    ]
}

/// Rows in lane order.
const IN_ORDER: [i32; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// Lane l of `tile16_q4_0`'s vectors holds row `Q4_0_ROWS[l]`: 128-bit lane L, position j
/// is row 4j + L (the order a 4 x 4 transpose of four-row registers leaves them in).
const Q4_0_ROWS: [i32; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

fn tile16_q4_0(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 16]; 8] {
    // SAFETY: only installed by dispatch after the features of tile16_q4_0_impl were detected.
    unsafe { tile16_q4_0_impl(w, w_row, a, a_row, nt) }
}

/// Sixteen Q4_0 rows against `nt` (1..=8) Q8_0 rows with the rows in lanes from the start: per
/// block, the sixteen rows' nibble bytes are transposed so that vector q holds bytes 4q..4q + 4
/// of every row, and each token's quants go in as broadcast four-byte groups; a row's block sum
/// then gathers in its own lane and needs no reduction. VNNI takes unsigned times signed bytes:
/// the token's quants are moved up by 128 (as unsigned) against the signed weights `x - 8`, and
/// the sums start from `-128 * sum(x - 8)`, formed once per row and block for all the tokens.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile16_q4_0_impl(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    a_row: usize,
    nt: usize,
) -> [[f32; 16]; 8] {
    const WB: usize = Q4_0_BYTES;
    const AB: usize = Q8_0_BYTES;
    // Every read below lies inside these bounds (the gather reads 4 bytes at a block's start).
    let nb = tile_blocks((w, w_row, 16, WB), (a, a_row, nt, 8, AB));
    let row_at = row_offsets(w_row, &Q4_0_ROWS);
    let ahead_rows = rows_ahead(w_row, 16);
    let (m4, eight, ones) = (
        _mm512_set1_epi8(0x0f),
        _mm512_set1_epi8(8),
        _mm512_set1_epi8(1),
    );
    let flip = _mm256_set1_epi8(-128);
    let mut acc = [_mm512_setzero_ps(); 8];
    // SAFETY: every pointer below stays inside blocks that tile_blocks checked; this fn has the
    // features.
    unsafe {
        for i in 0..nb {
            let wp = w.as_ptr().add(i * WB);
            // Four registers of four rows each (row 4g + L in 128-bit lane L of z[g]).
            let mut z = [_mm512_setzero_si512(); 4];
            for (g, z) in z.iter_mut().enumerate() {
                let x = |l: usize| wp.add((4 * g + l) * w_row);
                for l in 0..4 {
                    let ahead = x(l).wrapping_add(ahead_rows * w_row);
                    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                }
                *z = lanes4::<4>(|l| x(l).add(Q4_0_QS));
            }
            // r[q] holds bytes 4q..4q + 4 of each row.
            let r = transpose4x4(&z);
            // Low nibbles are quants 4q..4q + 4, high nibbles 16 + 4q..; as signed x - 8.
            let mut sx = _mm512_setzero_si512();
            let mut xq = [_mm512_setzero_si512(); 8];
            for q in 0..4 {
                let lo = _mm512_and_si512(r[q], m4);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(r[q]), m4);
                sx = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sx, lo, ones), hi, ones);
                xq[q] = _mm512_sub_epi8(lo, eight);
                xq[4 + q] = _mm512_sub_epi8(hi, eight);
            }
            // -128 * sum(x - 8) = 128 * (256 - sum(x)).
            let start = _mm512_slli_epi32::<7>(_mm512_sub_epi32(_mm512_set1_epi32(256), sx));
            let g = _mm512_i32gather_epi32::<1>(
                _mm512_add_epi32(row_at, _mm512_set1_epi32((i * WB) as i32)),
                w.as_ptr() as *const i32,
            );
            let dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
            for (t, acc) in acc.iter_mut().enumerate().take(nt) {
                let y = a.as_ptr().add(t * a_row + i * AB);
                let mut yu = [0i32; 8];
                let v = _mm256_loadu_si256(y.add(Q8_0_QS) as *const __m256i);
                let v = _mm256_xor_si256(v, flip);
                _mm256_storeu_si256(yu.as_mut_ptr() as *mut __m256i, v);
                // Two chains, so that each waits on half as many dependent vpdpbusd.
                let mut s = [start, _mm512_setzero_si512()];
                for (k, (x, yq)) in xq.iter().zip(yu).enumerate() {
                    s[k % 2] = _mm512_dpbusd_epi32(s[k % 2], _mm512_set1_epi32(yq), *x);
                }
                let s = _mm512_add_epi32(s[0], s[1]);
                let dy = half::f16::from_le_bytes([*y, *y.add(1)]).to_f32();
                let d = _mm512_mul_ps(dw, _mm512_set1_ps(dy));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, *acc);
            }
        }
    }
    let mut out = [[0f32; 16]; 8];
    for (o, acc) in out.iter_mut().zip(acc).take(nt) {
        *o = lanes_to_rows(acc, &Q4_0_ROWS);
    }
    out
}

/// Blocks `i..i + NK` (NK <= 4) of sixteen rows into `acc`, block after block.
///
/// # Safety
/// The features of `gemv16_q4_0_impl`; blocks `i..i + NK` exist in all sixteen rows and in `a`.
#[inline(always)]
unsafe fn q4_0_chunk<const NK: usize>(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    i: usize,
    (row_at, ahead_rows): (__m512i, usize),
    mut acc: __m512,
) -> __m512 {
    const WB: usize = Q4_0_BYTES;
    const AB: usize = Q8_0_BYTES;
    // SAFETY: as the caller promises.
    unsafe {
        let (wp, ap) = (w.as_ptr().add(i * WB), a.as_ptr().add(i * AB));
        let m4 = _mm512_set1_epi8(0x0f);
        let eight = _mm512_set1_epi8(8);
        // The token's blocks: the first 16 quants of block k in lane k, the last 16 likewise.
        let ylo = lanes4::<NK>(|k| ap.add(k * AB + Q8_0_QS));
        let yhi = lanes4::<NK>(|k| ap.add(k * AB + Q8_0_QS + 16));
        // Nibbles are unsigned 0..15; -8 * (the token's block sums) makes the sums (x - 8) . y.
        let e = _mm512_dpbusd_epi32(
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, ylo),
            eight,
            yhi,
        );
        let bias = _mm512_sub_epi32(_mm512_setzero_si512(), e);
        // Row r's scale (the f16 at its block's start) in lane r, gathered first so that the
        // gathers' latency passes while the rows' sums form.
        let mut dw = [_mm512_setzero_ps(); 4];
        for (k, dw) in dw.iter_mut().enumerate().take(NK) {
            let g = _mm512_i32gather_epi32::<1>(
                _mm512_add_epi32(row_at, _mm512_set1_epi32((k * WB) as i32)),
                wp as *const i32,
            );
            *dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
        }
        // Reduced two rows at a time as they come, so that the partial sums stay in registers.
        // (A loop, not a closure: this fn has no target features of its own for one to inherit.)
        let mut q = [_mm512_setzero_si512(); 8];
        for (j, q) in q.iter_mut().enumerate() {
            let mut p = [_mm512_setzero_si512(); 2];
            for (h, p) in p.iter_mut().enumerate() {
                let x = wp.add((2 * j + h) * w_row);
                // Sixteen interleaved streams: fetch this stretch of the rows further on,
                // ahead of the hardware prefetcher (decode reads each weight once).
                let ahead = x.wrapping_add(ahead_rows * w_row);
                _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(NK * WB - 1) as *const i8);
                let v = lanes4::<NK>(|k| x.add(k * WB + Q4_0_QS));
                let lo = _mm512_and_si512(v, m4);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
                *p = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(bias, lo, ylo), hi, yhi);
            }
            *q = pair_blocks(p[0], p[1]);
        }
        let s = transpose_sum16x4(&q);
        for (k, (s, dw)) in s.iter().zip(&dw).enumerate().take(NK) {
            let dy = half::f16::from_le_bytes([*ap.add(k * AB), *ap.add(k * AB + 1)]).to_f32();
            let d = _mm512_mul_ps(*dw, _mm512_set1_ps(dy));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*s), d, acc);
        }
        acc
    }
}

/// The lane order of `subblock_sums16`'s vectors: lane l holds row `Q4K_ROWS[l]`.
const Q4K_ROWS: [i32; 16] = [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15];

/// One row's super-block sums (`d[0]`: sub-blocks 0 | 2, `d[1]`: 1 | 3, `d[2]`: 4 | 6, `d[3]`:
/// 5 | 7, eight i32 partial sums per sub-block) folded to four per 128-bit lane: in lanes 0 and
/// 1 halves of sub-blocks [0, 1, 4, 5], in lanes 2 and 3 those of [2, 3, 6, 7] (exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn row_sums(d: [__m512i; 4]) -> __m512i {
    let pair32 = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    };
    let (e01, e23) = (pair32(d[0], d[1]), pair32(d[2], d[3]));
    _mm512_add_epi32(
        _mm512_unpacklo_epi64(e01, e23),
        _mm512_unpackhi_epi64(e01, e23),
    )
}

/// Two rows' `row_sums` completed: lanes 0, 1 row a ([0, 1, 4, 5], [2, 3, 6, 7]), lanes 2, 3
/// row b.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair_rows(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0x88>(a, b),
        _mm512_shuffle_i32x4::<0xdd>(a, b),
    )
}

/// Eight `pair_rows` vectors (rows 2j, 2j + 1 in `g[j]`) as one vector per sub-block, the row
/// in lane l being `Q4K_ROWS[l]` (a transpose: no arithmetic).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn subblock_sums16(g: &[__m512i; 8]) -> [__m512i; 8] {
    // A 4 x 4 transpose inside each 128-bit lane, for vectors g[4h..4h + 4]: k[h][p] holds
    // position p of each, so in lane 0 sub-block [0, 1, 4, 5][p] of rows 8h + 0, 2, 4, 6.
    let k: [[__m512i; 4]; 2] = std::array::from_fn(|h| {
        let g = &g[4 * h..4 * h + 4];
        let lo01 = _mm512_unpacklo_epi32(g[0], g[1]);
        let hi01 = _mm512_unpackhi_epi32(g[0], g[1]);
        let lo23 = _mm512_unpacklo_epi32(g[2], g[3]);
        let hi23 = _mm512_unpackhi_epi32(g[2], g[3]);
        [
            _mm512_unpacklo_epi64(lo01, lo23),
            _mm512_unpackhi_epi64(lo01, lo23),
            _mm512_unpacklo_epi64(hi01, hi23),
            _mm512_unpackhi_epi64(hi01, hi23),
        ]
    });
    // Sub-blocks [0, 1, 4, 5][p] from lanes 0 and 2, [2, 3, 6, 7][p] from lanes 1 and 3.
    let a = |p: usize| _mm512_shuffle_i32x4::<0x88>(k[0][p], k[1][p]);
    let b = |p: usize| _mm512_shuffle_i32x4::<0xdd>(k[0][p], k[1][p]);
    [a(0), a(1), b(0), b(1), a(2), a(3), b(2), b(3)]
}

/// Sixteen Q4_K rows against one Q8_K row, in the repacked GEMV's order (one FMA per
/// super-block).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn gemv16_q4_k_impl(w: &[u8], w_row: usize, a: &[u8]) -> [f32; 16] {
    const WB: usize = Q4_K_BYTES;
    const AB: usize = Q8_K_BYTES;
    let nb = a.len() / AB;
    // Every read below lies inside these bounds.
    assert!(
        a.len() == nb * AB && w.len() >= 15 * w_row + nb * WB && nb * WB <= w_row,
        "gemv16: 16 weight rows of {nb} Q4_K blocks do not fit the slices"
    );
    let row_at = row_offsets(w_row, &Q4K_ROWS);
    let m4 = _mm512_set1_epi8(0x0f);
    let ahead_rows = rows_ahead(w_row, 16);
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm512_setzero_ps();
    // SAFETY: the reads stay inside the bounds asserted above; this fn has the features.
    unsafe {
        for i in 0..nb {
            let (wp, y) = (w.as_ptr().add(i * WB), a.as_ptr().add(i * AB));
            let ld = |o: usize| _mm256_loadu_si256(y.add(Q8_K_QS + o) as *const __m256i);
            let two = |lo: usize, hi: usize| {
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(ld(lo)), ld(hi))
            };
            // The token's quants against the registers of nibbles below: sub-blocks 0 | 2,
            // 1 | 3, 4 | 6, 5 | 7.
            let ys = [two(0, 64), two(32, 96), two(128, 192), two(160, 224)];
            // Row r's four sums of its super-block (sub-blocks 0 | 2, 1 | 3, 4 | 6, 5 | 7).
            let row = |r: usize| {
                let x = wp.add(r * w_row);
                // Sixteen interleaved streams: fetch this block of the rows further on,
                // ahead of the hardware prefetcher (no line of the block is skipped).
                let ahead = x.wrapping_add(ahead_rows * w_row);
                for o in [0, 48, 96, WB - 1] {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o) as *const i8);
                }
                // Chunks of 32 bytes: low nibbles are sub-block 2c, high nibbles 2c + 1.
                let q01 = _mm512_loadu_si512(x.add(Q4_K_QS) as *const _);
                let q23 = _mm512_loadu_si512(x.add(Q4_K_QS + 64) as *const _);
                let z = _mm512_setzero_si512();
                let hi = |q: __m512i| _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
                row_sums([
                    _mm512_dpbusd_epi32(z, _mm512_and_si512(q01, m4), ys[0]),
                    _mm512_dpbusd_epi32(z, hi(q01), ys[1]),
                    _mm512_dpbusd_epi32(z, _mm512_and_si512(q23, m4), ys[2]),
                    _mm512_dpbusd_epi32(z, hi(q23), ys[3]),
                ])
            };
            // Reduced as they come, so that the partial sums stay in registers.
            let g: [__m512i; 8] = std::array::from_fn(|j| pair_rows(row(2 * j), row(2 * j + 1)));
            let s = subblock_sums16(&g);
            let scales = q4_k_scales16(wp, row_at);
            q4_k_accumulate::<false>(&s, &scales, y, (&mut acc, &mut acc_m));
        }
    }
    lanes_to_rows(_mm512_sub_ps(acc, acc_m), &Q4K_ROWS)
}

/// The sixteen lanes of `v` as rows: lane l is row `order[l]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn lanes_to_rows(v: __m512, order: &[i32; 16]) -> [f32; 16] {
    let mut lanes = [0f32; 16];
    // SAFETY: `lanes` is sixteen f32s; storeu has no alignment requirement.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
    let mut out = [0f32; 16];
    for (l, v) in lanes.into_iter().enumerate() {
        out[order[l] as usize] = v;
    }
    out
}

/// Byte offsets of sixteen rows `w_row` apart for the scale gathers, lane l holding row
/// `order[l]`'s.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn row_offsets(w_row: usize, order: &[i32; 16]) -> __m512i {
    assert!(
        16 * w_row <= i32::MAX as usize,
        "sixteen rows of {w_row} bytes are too long for the scale gathers"
    );
    // SAFETY: `order` is sixteen i32s; loadu has no alignment requirement.
    let rows = unsafe { _mm512_loadu_si512(order.as_ptr() as *const _) };
    _mm512_mullo_epi32(rows, _mm512_set1_epi32(w_row as i32))
}

/// Sixteen rows' scales and mins of one super-block (ggml's get_scale_min_k4, sixteen rows at a
/// time; sub-block j in vector j) and their `d`, `dmin` as floats, in the lane order of
/// `subblock_sums16`. `wp` is row 0's block; `row_at` the rows' byte offsets in that order.
///
/// # Safety
/// The sixteen rows' blocks at `wp + row_at[l]` must be readable (the gathers read 16 bytes).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_k_scales16(wp: *const u8, row_at: __m512i) -> Q4kScales {
    let (m6, m2h, m4) = (
        _mm512_set1_epi32(63),
        _mm512_set1_epi32(0x30),
        _mm512_set1_epi32(0x0f),
    );
    // The 12 scale bytes of each row as three dwords, and d | dmin.
    // SAFETY: as the caller promises.
    let at = |o: i32| unsafe {
        _mm512_i32gather_epi32::<1>(
            _mm512_add_epi32(row_at, _mm512_set1_epi32(o)),
            wp as *const i32,
        )
    };
    let scales = Q4_K_SCALES as i32;
    let (dd, q0, q1, q2) = (at(0), at(scales), at(scales + 4), at(scales + 8));
    let byte = |v: __m512i, j: usize| _mm512_srlv_epi32(v, _mm512_set1_epi32(8 * j as i32));
    let hi2 = |v: __m512i, j: usize| _mm512_and_si512(_mm512_srli_epi32::<2>(byte(v, j)), m2h);
    let sc = std::array::from_fn(|j| {
        if j < 4 {
            _mm512_and_si512(byte(q0, j), m6)
        } else {
            _mm512_or_si512(_mm512_and_si512(byte(q2, j - 4), m4), hi2(q0, j - 4))
        }
    });
    let m = std::array::from_fn(|j| {
        if j < 4 {
            _mm512_and_si512(byte(q1, j), m6)
        } else {
            let lo = _mm512_and_si512(_mm512_srli_epi32::<4>(byte(q2, j - 4)), m4);
            _mm512_or_si512(lo, hi2(q1, j - 4))
        }
    });
    Q4kScales {
        sc,
        m,
        d: _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd)),
        dmin: _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(dd))),
    }
}

/// What `q4_k_scales16` gives.
struct Q4kScales {
    sc: [__m512i; 8],
    m: [__m512i; 8],
    d: __m512,
    dmin: __m512,
}

/// One super-block's sub-block sums `s` (from `subblock_sums16`) against the token's Q8_K block
/// at `y` into the two accumulators: with `GEMM`, an FMA per 64-element chunk (the repacked
/// GEMM's order), else one per super-block (its GEMV's).
///
/// # Safety
/// `y` must point at a whole Q8_K block.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_k_accumulate<const GEMM: bool>(
    s: &[__m512i; 8],
    k: &Q4kScales,
    y: *const u8,
    (acc, acc_m): (&mut __m512, &mut __m512),
) {
    // SAFETY: as the caller promises: d at 0, the i16 sums of 16 at BSUMS.
    let (dy, bs) = unsafe {
        (
            f32::from_le_bytes([*y, *y.add(1), *y.add(2), *y.add(3)]),
            std::slice::from_raw_parts(y.add(Q8_K_BSUMS), 32),
        )
    };
    let dy = _mm512_set1_ps(dy);
    let (dw, dmin) = (_mm512_mul_ps(k.d, dy), _mm512_mul_ps(k.dmin, dy));
    let bsum = |j: usize| {
        let at = |i: usize| i16::from_le_bytes([bs[2 * i], bs[2 * i + 1]]) as i32;
        at(2 * j) + at(2 * j + 1)
    };
    let mut sumi = _mm512_setzero_si512();
    let mut summ = _mm512_setzero_si512();
    for (j, s) in s.iter().enumerate() {
        sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(*s, k.sc[j]));
        summ = _mm512_add_epi32(summ, _mm512_mullo_epi32(k.m[j], _mm512_set1_epi32(bsum(j))));
        // The GEMM order: an FMA per chunk of two sub-blocks; the GEMV: per super-block.
        if (GEMM && j % 2 == 1) || j == 7 {
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), dw, *acc);
            *acc_m = _mm512_fmadd_ps(_mm512_cvtepi32_ps(summ), dmin, *acc_m);
            sumi = _mm512_setzero_si512();
            summ = _mm512_setzero_si512();
        }
    }
}

fn tile16_q4_k_gemm(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 16]; 8] {
    // SAFETY: only installed by dispatch after the features of q4_k_tile16 were detected.
    unsafe { q4_k_tile16::<true>(w, w_row, a, a_row, nt) }
}

fn tile16_q4_k_gemv(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 16]; 8] {
    // SAFETY: only installed by dispatch after the features of q4_k_tile16 were detected.
    unsafe { q4_k_tile16::<false>(w, w_row, a, a_row, nt) }
}

/// Sixteen Q4_K rows against `nt` (1..=8) Q8_K rows, all in the GEMM or all in the GEMV order
/// (see `q4_k_accumulate`). Per super-block the sixteen rows' nibble bytes are transposed once for
/// all the tokens (as in `tile16_q4_0`: vector q holds bytes 4q..4q + 4 of every row, in the lane
/// order `Q4_0_ROWS`) and the scales decoded once; each token's quants then go in as broadcast
/// four-byte groups, so every sub-block sum forms in its row's lane with no reduction.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_k_tile16<const GEMM: bool>(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    a_row: usize,
    nt: usize,
) -> [[f32; 16]; 8] {
    const WB: usize = Q4_K_BYTES;
    const AB: usize = Q8_K_BYTES;
    let nb = tile_blocks((w, w_row, 16, WB), (a, a_row, nt, 8, AB));
    let row_at = row_offsets(w_row, &Q4_0_ROWS);
    let m4 = _mm512_set1_epi8(0x0f);
    let ahead_rows = rows_ahead(w_row, 16);
    let mut acc = [_mm512_setzero_ps(); 8];
    let mut acc_m = [_mm512_setzero_ps(); 8];
    // SAFETY: every pointer below stays inside blocks that tile_blocks checked; this fn has the
    // features.
    unsafe {
        for i in 0..nb {
            let wp = w.as_ptr().add(i * WB);
            for r in 0..16 {
                // The next rows' block, for the call after this one.
                let ahead = wp.add(r * w_row).wrapping_add(ahead_rows * w_row);
                for o in [0, 48, 96, WB - 1] {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o) as *const i8);
                }
            }
            // xs[q]: the low and high nibbles of bytes 4q..4q + 4 of the 128 quant bytes.
            let mut xs = [[_mm512_setzero_si512(); 2]; 32];
            for b in 0..8 {
                let mut z = [_mm512_setzero_si512(); 4];
                for (g, z) in z.iter_mut().enumerate() {
                    *z = lanes4::<4>(|l| wp.add((4 * g + l) * w_row + Q4_K_QS + 16 * b));
                }
                for (k, r) in transpose4x4(&z).into_iter().enumerate() {
                    xs[4 * b + k] = [
                        _mm512_and_si512(r, m4),
                        _mm512_and_si512(_mm512_srli_epi16::<4>(r), m4),
                    ];
                }
            }
            let scales = q4_k_scales16(wp, row_at);
            for t in 0..nt {
                let y = a.as_ptr().add(t * a_row + i * AB);
                // Four of the token's quants, broadcast: quants 4k..4k + 4.
                let yd = |k: usize| {
                    _mm512_set1_epi32((y.add(Q8_K_QS + 4 * k) as *const i32).read_unaligned())
                };
                // Byte 4q of chunk c = q / 8 holds quant 64c + 4(q % 8) (sub-block 2c) in its
                // low nibble and quant 64c + 32 + 4(q % 8) (sub-block 2c + 1) in its high one.
                // Per sub-block two chains (even and odd groups), held in registers.
                let mut s = [_mm512_setzero_si512(); 8];
                for c in 0..4 {
                    let z = _mm512_setzero_si512();
                    let (mut lo, mut hi) = ([z; 2], [z; 2]);
                    for p in 0..8 {
                        let x = &xs[8 * c + p];
                        lo[p % 2] = _mm512_dpbusd_epi32(lo[p % 2], x[0], yd(16 * c + p));
                        hi[p % 2] = _mm512_dpbusd_epi32(hi[p % 2], x[1], yd(16 * c + 8 + p));
                    }
                    s[2 * c] = _mm512_add_epi32(lo[0], lo[1]);
                    s[2 * c + 1] = _mm512_add_epi32(hi[0], hi[1]);
                }
                q4_k_accumulate::<GEMM>(&s, &scales, y, (&mut acc[t], &mut acc_m[t]));
            }
        }
    }
    let mut out = [[0f32; 16]; 8];
    for (t, o) in out.iter_mut().enumerate().take(nt) {
        *o = lanes_to_rows(_mm512_sub_ps(acc[t], acc_m[t]), &Q4_0_ROWS);
    }
    out
}
