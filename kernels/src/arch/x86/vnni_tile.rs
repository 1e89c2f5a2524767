//! Prompt tiles on AVX-512 VNNI for the formats that follow ggml's vec_dot order: Q4_0, Q4_1,
//! Q5_0 and Q8_0 eight weight rows by up to four tokens, Q6_K four rows by up to two tokens
//! (`tile_q6_k_impl`), two rows per 512-bit register.
//!
//! Each output keeps the one-row kernels' state exactly: an 8-lane f32 accumulator that gets
//! `fma(d_w * d_a, isum lanes, acc)` block after block (lane l's integer sum covering bytes
//! 4l..4l + 4 of the block, as `maddubs` + `madd` form it), a scalar min term for Q4_1, and
//! `hsum_ps` at the end. Here rows a and b of a pair share a register, row a in the low 256 bits,
//! so one `vpdpbusd` forms both rows' eight lane sums. VNNI multiplies unsigned by signed bytes:
//! weights are moved up to unsigned (Q8_0 + 128, Q5_0 + 16, Q4_0 + 8; Q4_1 already is) and the
//! sum starts from -offset * (the token's lane sums), which makes each lane's sum exact again.
//!
//! Reached only through `install`, which dispatch calls on its AVX-512 path after detecting
//! avx512f, avx512bw, avx512vl, avx512vnni, avx2, fma and f16c.

use super::avx2::{hsum_ps, nibbles, rows_ahead};
use crate::dot::tile_blocks;
use crate::dot::{Tile4Fn, Tile8Fn};
use crate::formats::{
    GgmlType, Q4_0_BYTES, Q4_0_QS, Q4_1_BYTES, Q4_1_M, Q4_1_QS, Q5_0_BYTES, Q5_0_QH, Q5_0_QS,
    Q6_K_BYTES, Q6_K_D, Q6_K_QH, Q6_K_QL, Q6_K_SCALES, Q8_0_BYTES, Q8_0_QS, Q8_1_BYTES, Q8_1_QS,
    Q8_1_S, Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS,
};
use std::arch::x86_64::*;

// The block heads read below take Q4_1's min from the two bytes after its scale.
const _: () = assert!(Q4_1_M == 2);

/// Installs this file's tiles into the tables of vec_dot-order tiles.
pub(crate) fn install(tile8: &mut [Option<Tile8Fn>; 11], tile4: &mut [Option<Tile4Fn>; 11]) {
    tile4[GgmlType::Q6K.index()] = Some(tile4_q6_k);
    tile8[GgmlType::Q4_0.index()] = Some(tile8_q4_0);
    tile8[GgmlType::Q4_1.index()] = Some(tile8_q4_1);
    tile8[GgmlType::Q5_0.index()] = Some(tile8_q5_0);
    tile8[GgmlType::Q8_0.index()] = Some(tile8_q8_0);
}

/// A pair of 32-byte halves as one register (`lo` in the low 256 bits).
#[inline(always)]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    // SAFETY: the callers carry avx512f.
    unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi) }
}

/// The f16 at `p` as an f32 (a weight or activation block's scale).
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the callers point at two readable bytes.
    half::f16::from_le_bytes(unsafe { [*p, *p.add(1)] }).to_f32()
}

/// Eight rows against `nt` (1..=4) tokens; see the file's notes. `(wb, ab, q_at)`: weight block
/// bytes, activation block bytes, offset of the activation block's 32 quants; `offset`: what
/// `prep` added to the weights (0 for none); `mins`: Q4_1's min term (weight min at `Q4_1_M`,
/// activation sum at `Q8_1_S`). `prep(x_a, x_b)` gives two rows' blocks as unsigned bytes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile8_pairs_with(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    a_row: usize,
    nt: usize,
    (wb, ab, q_at): (usize, usize, usize),
    (offset, mins): (u8, bool),
    prep: impl Fn(*const u8, *const u8) -> __m512i,
) -> [[f32; 8]; 4] {
    let nb = tile_blocks((w, w_row, 8, wb), (a, a_row, nt, 4, ab));
    // SAFETY: every pointer below stays inside blocks that tile_blocks checked; the callers carry
    // the features.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        let mut min_acc = [_mm256_setzero_ps(); 4];
        let off = _mm512_set1_epi8(offset as i8);
        // Pair p's scale lanes: row 2p eight times, then row 2p + 1.
        let pair_idx: [__m512i; 4] = std::array::from_fn(|p| {
            let (a, b) = (2 * p as i32, 2 * p as i32 + 1);
            _mm512_setr_epi32(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b)
        });
        for i in 0..nb {
            let x = |r: usize| w.as_ptr().add(r * w_row + i * wb);
            let mut u = [_mm512_setzero_si512(); 4];
            for (p, u) in u.iter_mut().enumerate() {
                *u = prep(x(2 * p), x(2 * p + 1));
            }
            // Each row's first four bytes: its f16 scale, and for Q4_1 its f16 min after it
            // (every block is longer than four bytes).
            let heads: [u32; 8] = std::array::from_fn(|r| (x(r) as *const u32).read_unaligned());
            // `heads` is eight u32s; loadu has no alignment requirement.
            let head = _mm256_loadu_si256(heads.as_ptr() as *const __m256i);
            let dw8 = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(head));
            let mw8 = if mins {
                _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32::<16>(head)))
            } else {
                _mm256_setzero_ps()
            };
            // Pair p's weight scales spread to its lanes, once per block for all tokens.
            let dw = _mm512_castps256_ps512(dw8);
            let dwp: [__m512; 4] = std::array::from_fn(|p| _mm512_permutexvar_ps(pair_idx[p], dw));
            for (t, (acc, min_acc)) in acc.iter_mut().zip(min_acc.iter_mut()).enumerate().take(nt) {
                let y = a.as_ptr().add(t * a_row + i * ab);
                let yy = _mm512_broadcast_i64x4(_mm256_loadu_si256(y.add(q_at) as *const __m256i));
                let start = if offset == 0 {
                    _mm512_setzero_si512()
                } else {
                    let e = _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, yy);
                    _mm512_sub_epi32(_mm512_setzero_si512(), e)
                };
                let da = _mm512_set1_ps(f16_at(y));
                if mins {
                    let sy = _mm256_set1_ps(f16_at(y.add(Q8_1_S)));
                    *min_acc = _mm256_add_ps(*min_acc, _mm256_mul_ps(mw8, sy));
                }
                for (p, acc) in acc.iter_mut().enumerate() {
                    let s = _mm512_dpbusd_epi32(start, u[p], yy);
                    // Each row's d_w * d_a, the f32 product the one-row kernel broadcasts.
                    let d = _mm512_mul_ps(dwp[p], da);
                    *acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), *acc);
                }
            }
        }
        let mut out = [[0f32; 8]; 4];
        for t in 0..nt {
            let mut m = [0f32; 8];
            // `m` is eight f32s; storeu has no alignment requirement.
            _mm256_storeu_ps(m.as_mut_ptr(), min_acc[t]);
            for (p, acc) in acc[t].iter().enumerate() {
                let lo = _mm512_castps512_ps256(*acc);
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*acc)));
                for (r, half) in [(2 * p, lo), (2 * p + 1, hi)] {
                    let s = hsum_ps(half);
                    out[t][r] = if mins { s + m[r] } else { s };
                }
            }
        }
        out
    }
}

/// The two rows' 16 nibble bytes at `at` of each block, unpacked (low nibbles first).
#[inline(always)]
unsafe fn nibble_pair(xa: *const u8, xb: *const u8, at: usize) -> __m512i {
    // SAFETY: the callers' blocks hold 16 nibble bytes at `at`.
    unsafe {
        let n = |x: *const u8| nibbles(std::slice::from_raw_parts(x.add(at), 16));
        join(n(xa), n(xb))
    }
}

/// One eight-row tile per format: the safe entry point and its body over `tile8_pairs_with`.
macro_rules! vnni_tiles {
    ($($name:ident => $imp:ident: $sizes:expr, $off:expr, |$xa:ident, $xb:ident| $prep:expr;)*) => {$(
        fn $name(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 8]; 4] {
            // SAFETY: only installed by dispatch after the features of $imp were detected.
            unsafe { $imp(w, w_row, a, a_row, nt) }
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $imp(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 8]; 4] {
            // SAFETY: this fn has the features the closures need; tile8_pairs_with hands `prep`
            // the starts of whole weight blocks of the size given.
            unsafe { tile8_pairs_with(w, w_row, a, a_row, nt, $sizes, $off, |$xa, $xb| $prep) }
        }
    )*};
}

vnni_tiles! {
    // Nibbles 0..15 stand for -8..7.
    tile8_q4_0 => tile8_q4_0_impl: (Q4_0_BYTES, Q8_0_BYTES, Q8_0_QS), (8, false),
        |xa, xb| nibble_pair(xa, xb, Q4_0_QS);
    tile8_q4_1 => tile8_q4_1_impl: (Q4_1_BYTES, Q8_1_BYTES, Q8_1_QS), (0, true),
        |xa, xb| nibble_pair(xa, xb, Q4_1_QS);
    // Nibble | fifth bit << 4 (the 32 bits of qh, one per quant) stands for -16..15.
    tile8_q5_0 => tile8_q5_0_impl: (Q5_0_BYTES, Q8_0_BYTES, Q8_0_QS), (16, false), |xa, xb| {
        let qh = |x: *const u8| {
            let p = x.add(Q5_0_QH);
            u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
        };
        let bits = qh(xa) as u64 | ((qh(xb) as u64) << 32);
        _mm512_or_si512(
            nibble_pair(xa, xb, Q5_0_QS),
            _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(0x10)),
        )
    };
    // Signed bytes, flipped to unsigned: x + 128.
    tile8_q8_0 => tile8_q8_0_impl: (Q8_0_BYTES, Q8_0_BYTES, Q8_0_QS), (128, false), |xa, xb| {
        let l = |x: *const u8| _mm256_loadu_si256(x.add(Q8_0_QS) as *const __m256i);
        _mm512_xor_si512(join(l(xa), l(xb)), _mm512_set1_epi8(-128))
    };
}

fn tile4_q6_k(w: &[u8], w_row: usize, a: &[u8], a_row: usize, nt: usize) -> [[f32; 4]; 2] {
    // SAFETY: only installed by dispatch after the features of tile_q6_k_impl were detected.
    unsafe { tile_q6_k_impl::<2, 2, 4>(w, w_row, a, a_row, nt) }
}

/// Q6_K rows, `P` pairs of them (`R` = 2P), against up to `T` tokens, in the one-row kernel's
/// order (`avx512::dot_q6_k_impl`, `avx2::q6_k_block_sums`): per output and super-block, eight
/// i32 lanes (the 6-bit quants times the token's bytes in groups of four, times the 16-element
/// scales, the two 64-element halves folded), less `32 * scales . bsums` lane by lane, into an
/// 8-lane accumulator by one FMA with `d_w * d_a`. A row's quants and scales are unpacked once
/// for all the tokens; its scales are spread to their lanes with one `vpermw` per 64 elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_q6_k_impl<const P: usize, const T: usize, const R: usize>(
    w: &[u8],
    w_row: usize,
    a: &[u8],
    a_row: usize,
    nt: usize,
) -> [[f32; R]; T] {
    const WB: usize = Q6_K_BYTES;
    const AB: usize = Q8_K_BYTES;
    assert_eq!(R, 2 * P, "tile_q6_k: R must be 2P");
    let nb = tile_blocks((w, w_row, R, WB), (a, a_row, nt, T, AB));
    // i16 lane j of 128-bit lane L of spread[q] takes scale 4q + L.
    let spread: [__m512i; 4] = std::array::from_fn(|q| {
        let lanes: [i16; 32] = std::array::from_fn(|j| (4 * q + j / 8) as i16);
        // SAFETY: `lanes` is 64 bytes; loadu has no alignment requirement.
        unsafe { _mm512_loadu_si512(lanes.as_ptr() as *const _) }
    });
    let (m4, m2) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0x03));
    let ahead_rows = rows_ahead(w_row, R);
    let mut acc = [[_mm512_setzero_ps(); P]; T];
    // SAFETY: every pointer below stays inside blocks that tile_blocks checked; this fn has the
    // features.
    unsafe {
        for i in 0..nb {
            let x = |r: usize| w.as_ptr().add(r * w_row + i * WB);
            let y = |t: usize| a.as_ptr().add(t * a_row + i * AB);
            let mut sumi = [[_mm512_setzero_si512(); T]; R];
            let mut sc16 = [_mm256_setzero_si256(); R];
            for (r, (sumi, sc16)) in sumi.iter_mut().zip(sc16.iter_mut()).enumerate() {
                let x = x(r);
                // The same block of the rows further on (decode reads each weight once).
                let ahead = x.wrapping_add(ahead_rows * w_row);
                for o in [0, 64, 128, WB - 1] {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o) as *const i8);
                }
                *sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(Q6_K_SCALES) as *const __m128i));
                let s512 = _mm512_castsi256_si512(*sc16);
                for h in 0..2 {
                    let ql = _mm512_loadu_si512(x.add(Q6_K_QL + 64 * h) as *const _);
                    let qh = _mm256_loadu_si256(x.add(Q6_K_QH + 32 * h) as *const __m256i);
                    let qh_a = join(qh, _mm256_srli_epi16::<2>(qh));
                    let qh_b = join(_mm256_srli_epi16::<4>(qh), _mm256_srli_epi16::<6>(qh));
                    // Elements 0..64 of this half, then 64..128.
                    let qa = _mm512_or_si512(
                        _mm512_and_si512(ql, m4),
                        _mm512_slli_epi16::<4>(_mm512_and_si512(qh_a, m2)),
                    );
                    let qb = _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                        _mm512_slli_epi16::<4>(_mm512_and_si512(qh_b, m2)),
                    );
                    let sa = _mm512_permutexvar_epi16(spread[2 * h], s512);
                    let sb = _mm512_permutexvar_epi16(spread[2 * h + 1], s512);
                    for (t, s) in sumi.iter_mut().enumerate().take(nt) {
                        let y0 = _mm512_loadu_si512(y(t).add(Q8_K_QS + 128 * h) as *const _);
                        let y1 = _mm512_loadu_si512(y(t).add(Q8_K_QS + 64 + 128 * h) as *const _);
                        *s = _mm512_dpwssd_epi32(*s, _mm512_maddubs_epi16(qa, y0), sa);
                        *s = _mm512_dpwssd_epi32(*s, _mm512_maddubs_epi16(qb, y1), sb);
                    }
                }
            }
            for (t, acc) in acc.iter_mut().enumerate().take(nt) {
                let y = y(t);
                let dy = f32::from_le_bytes([*y, *y.add(1), *y.add(2), *y.add(3)]);
                let bs = _mm256_loadu_si256(y.add(Q8_K_BSUMS) as *const __m256i);
                for (p, acc) in acc.iter_mut().enumerate() {
                    let (ra, rb) = (2 * p, 2 * p + 1);
                    let (sa, sb) = (sumi[ra][t], sumi[rb][t]);
                    // Each row's halves folded: [a lanes 0..8 | b lanes 0..8].
                    let folded = _mm512_add_epi32(
                        _mm512_shuffle_i32x4::<0x44>(sa, sb),
                        _mm512_shuffle_i32x4::<0xee>(sa, sb),
                    );
                    let corr = |r: usize| _mm256_slli_epi32::<5>(_mm256_madd_epi16(bs, sc16[r]));
                    let lanes = _mm512_sub_epi32(folded, join(corr(ra), corr(rb)));
                    let d = |r: usize| _mm256_set1_ps(f16_at(x(r).add(Q6_K_D)) * dy);
                    let d = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                        _mm512_castpd256_pd512(_mm256_castps_pd(d(ra))),
                        _mm256_castps_pd(d(rb)),
                    ));
                    *acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes), *acc);
                }
            }
        }
    }
    let mut out = [[0f32; R]; T];
    for (o, acc) in out.iter_mut().zip(&acc).take(nt) {
        for (p, acc) in acc.iter().enumerate() {
            let lo = _mm512_castps512_ps256(*acc);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*acc)));
            o[2 * p] = hsum_ps(lo);
            o[2 * p + 1] = hsum_ps(hi);
        }
    }
    out
}
