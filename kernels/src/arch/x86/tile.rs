//! Prompt-processing tiles: eight weight rows against up to four activation rows at once, for
//! the weight formats whose per-output float order is one FMA per block (Q4_0 in llama.cpp's
//! repacked order, `dot::dot_rows8_fn`).
//!
//! Each output (row r, token t) still computes `acc = fma(isum_rt as f32, d_r * d_t, acc)` block
//! after block, so the bits equal the one-row kernel's; what the tile shares is the work around
//! it: a block's nibbles are unpacked once for four tokens, a token's block is loaded once for
//! eight rows, and the eight rows' integer sums are reduced together with row r in lane r.
//! Integer sums are exact, so how they are formed does not change the result.
//! Reached only through `install`, which dispatch calls after detecting avx2, fma and f16c.

use super::avx2::nibbles;
use crate::dot::Tile8Fn;
use crate::formats::GgmlType;
use std::arch::x86_64::*;

/// Installs the tiles of this file.
pub(crate) fn install(tile8: &mut [Option<Tile8Fn>; 11]) {
    tile8[GgmlType::Q4_0.index()] = Some(tile8_q4_0);
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
    const WB: usize = 18; // f16 scale + 16 nibble bytes
    const AB: usize = 34; // f16 scale + 32 quants
    let nb = a_row / AB;
    assert!(
        (1..=4).contains(&nt) && a.len() >= (nt - 1) * a_row + nb * AB,
        "Q4_0 tile: {nt} activation rows of {nb} blocks do not fit the activation slice"
    );
    assert!(
        w.len() >= 7 * w_row + nb * WB,
        "Q4_0 tile: eight weight rows of {nb} blocks do not fit the weight slice"
    );
    let ones = _mm256_set1_epi16(1);
    let eight = _mm256_set1_epi8(8);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut xs = [_mm256_setzero_si256(); 8];
    let mut dw = [0u16; 8];
    for i in 0..nb {
        for (r, (x, d)) in xs.iter_mut().zip(dw.iter_mut()).enumerate() {
            let blk = &w[r * w_row + i * WB..][..WB];
            *d = u16::from_le_bytes([blk[0], blk[1]]);
            // SAFETY: the block holds 16 nibble bytes at 2. Unsigned 0..15: the -8 offset is
            // taken off below, through the token's sum.
            *x = unsafe { nibbles(&blk[2..]) };
        }
        // SAFETY: `dw` is eight u16s; loadu has no alignment requirement.
        let dw8 = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(dw.as_ptr() as *const __m128i) });
        for (t, acc) in acc.iter_mut().enumerate().take(nt) {
            let blk = &a[t * a_row + i * AB..][..AB];
            // SAFETY: the Q8_0 block holds 32 quants at 2; loadu has no alignment requirement.
            let y = unsafe { _mm256_loadu_si256(blk[2..].as_ptr() as *const __m256i) };
            let dy = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            // (x - 8) * y pair sums = x * y pair sums - 8 * y pair sums; no i16 overflow (|.| <=
            // 2 * 15 * 128 before, 2 * 8 * 128 after).
            let y8 = _mm256_maddubs_epi16(eight, y);
            let mut s = [_mm256_setzero_si256(); 8];
            for (s, x) in s.iter_mut().zip(&xs) {
                let p = _mm256_sub_epi16(_mm256_maddubs_epi16(*x, y), y8);
                *s = _mm256_madd_epi16(p, ones);
            }
            let isum = transpose_sum8(&s);
            let d = _mm256_mul_ps(dw8, _mm256_set1_ps(dy));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, *acc);
        }
    }
    let mut out = [[0f32; 8]; 4];
    for (o, acc) in out.iter_mut().zip(acc).take(nt) {
        // SAFETY: each output row is eight f32s.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), acc) };
    }
    out
}
