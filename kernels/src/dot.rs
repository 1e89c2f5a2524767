//! Scalar reference dot products: one weight row against one activation row quantized as
//! `wty.vec_dot_type()`, with ggml's block arithmetic (integer sums inside a block, one float
//! multiply-add per block). These are the "unopt" twins of the SIMD kernels in `arch/`.

use crate::formats::{
    GgmlType, Q4_0_BYTES, Q4_0_QS, Q4_1_BYTES, Q4_1_M, Q4_1_QS, Q4_K_BYTES, Q4_K_DMIN, Q4_K_QS,
    Q4_K_SCALES, Q5_0_BYTES, Q5_0_QH, Q5_0_QS, Q6_K_BYTES, Q6_K_D, Q6_K_QH, Q6_K_QL, Q6_K_SCALES,
    Q8_0_BYTES, Q8_0_QS, Q8_1_BYTES, Q8_1_QS, Q8_1_S, Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS,
};
use crate::quant::{check_row, f16_at, f32_at, scale_min_k4, u32_at};
use half::bf16;

/// A dot product kernel for one weight type: `n` elements, weight row bytes, activation row bytes.
pub(crate) type VecDotFn = fn(usize, &[u8], &[u8]) -> f32;

/// Four consecutive weight rows (the second argument: bytes per row) against one activation row,
/// each exactly as the type's [`VecDotFn`] computes it.
pub(crate) type Dot4Fn = fn(&[u8], usize, &[u8]) -> [f32; 4];

/// `R` weight rows (`w_row` bytes apart) against `nt` (1..=T) activation rows (`a_row` bytes
/// apart): `fn(w, w_row, a, a_row, nt)`, `out[t][r]` being row r against activation row t.
pub(crate) type TileFn<const R: usize, const T: usize> =
    fn(&[u8], usize, &[u8], usize, usize) -> [[f32; R]; T];

/// Sixteen consecutive weight rows (the second argument: bytes per row) against one activation
/// row, each exactly as the type's one-row kernel in the same order computes it.
pub(crate) type Gemv16Fn = fn(&[u8], usize, &[u8]) -> [f32; 16];

/// Eight weight rows by up to four activation rows.
pub(crate) type Tile8Fn = TileFn<8, 4>;

/// Sixteen weight rows by up to eight activation rows.
pub(crate) type Tile16Fn = TileFn<16, 8>;

/// Four weight rows by up to two activation rows.
pub(crate) type Tile4Fn = TileFn<4, 2>;

/// The blocks per row of a tile call, after checking that `rows` weight rows and `nt` (1..=max)
/// activation rows of that many blocks lie inside the slices: the kernels' reads rely on it.
pub(crate) fn tile_blocks(
    (w, w_row, rows, wb): (&[u8], usize, usize, usize),
    (a, a_row, nt, max, ab): (&[u8], usize, usize, usize, usize),
) -> usize {
    let nb = a_row / ab;
    assert!(
        (1..=max).contains(&nt) && a.len() >= (nt - 1) * a_row + nb * ab,
        "tile: {nt} activation rows of {nb} blocks do not fit the activation slice"
    );
    assert!(
        w.len() >= (rows - 1) * w_row + nb * wb,
        "tile: {rows} weight rows of {nb} blocks do not fit the weight slice"
    );
    nb
}

/// Dot product of `n` elements: weight row `w` of type `wty` and activation row `a` of type
/// `wty.vec_dot_type()`.
///
/// # Panics
/// When a row's byte length is not `row_size(n)` of its type (a caller bug).
pub fn vec_dot(wty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(wty, n, w.len(), "vec_dot weights");
    check_row(wty.vec_dot_type(), n, a.len(), "vec_dot activations");
    dot_fn(wty)(n, w, a)
}

/// The scalar dot kernel for weights of type `wty` (lengths already checked by the caller).
pub(crate) fn dot_fn(wty: GgmlType) -> VecDotFn {
    match wty {
        GgmlType::F32 => dot_f32,
        GgmlType::F16 => dot_f16,
        GgmlType::BF16 => dot_bf16,
        GgmlType::Q4_0 => dot_q4_0_q8_0,
        GgmlType::Q4_1 => dot_q4_1_q8_1,
        GgmlType::Q5_0 => dot_q5_0_q8_0,
        GgmlType::Q8_0 => dot_q8_0_q8_0,
        GgmlType::Q8_1 => dot_q8_1_q8_1,
        GgmlType::Q4K => dot_q4_k_q8_k,
        GgmlType::Q6K => dot_q6_k_q8_k,
        GgmlType::Q8K => dot_q8_k_q8_k,
    }
}

/// The batched-product twin of [`dot_fn`] for the float types whose batched order differs
/// (`fp_order::dot_gemm`); None where a batch uses the same kernel as one row.
pub(crate) fn dot_gemm_fn(wty: GgmlType) -> Option<VecDotFn> {
    match wty {
        GgmlType::F32 => Some(|_, w, a| crate::fp_order::dot_f32_gemm_bytes(w, a)),
        GgmlType::F16 => Some(|_, w, a| crate::fp_order::dot_f16_gemm_bytes(w, a)),
        _ => None,
    }
}

// F32 and F16 rows follow ggml's AVX2 order (`fp_order`), the order of every path; BF16 rows
// accumulate in f64 as ggml's generic `ggml_vec_dot_bf16` does.

fn dot_f32(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    crate::fp_order::dot_f32_bytes(w, a)
}

fn dot_f16(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    crate::fp_order::dot_f16_bytes(w, a)
}

fn dot_bf16(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0.0f64;
    for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
        let xv = bf16::from_le_bytes([x[0], x[1]]).to_f32();
        let yv = bf16::from_le_bytes([y[0], y[1]]).to_f32();
        s += (xv * yv) as f64;
    }
    s as f32
}

/// The integer dot product of one Q4_0 block with one Q8_0 block.
fn q4_0_isum(x: &[u8], y: &[u8]) -> i32 {
    let mut sumi = 0i32;
    for j in 0..16 {
        let v0 = (x[Q4_0_QS + j] & 0x0f) as i32 - 8;
        let v1 = (x[Q4_0_QS + j] >> 4) as i32 - 8;
        sumi += v0 * (y[Q8_0_QS + j] as i8) as i32 + v1 * (y[Q8_0_QS + 16 + j] as i8) as i32;
    }
    sumi
}

fn dot_q4_0_q8_0(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(Q4_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        sumf += q4_0_isum(x, y) as f32 * f16_at(x) * f16_at(y);
    }
    sumf
}

/// The orders of ggml's repacked ("8x8") Q4_0 and Q4_K kernels, which llama.cpp's x86 build
/// runs for weights whose row count is a multiple of 8: per row, one f32 FMA per block of the
/// exact integer block sum times `d_weight * d_activation` (Q4_K: a second accumulator for the
/// mins, subtracted at the end). Its GEMM, which takes activation rows four at a time, does the
/// FMA per 64-element chunk of a Q4_K super-block; its GEMV, for the remaining rows, per
/// super-block. Returned as (GEMM order, GEMV order); None for the other types.
pub(crate) fn dot_rows8_fn(wty: GgmlType) -> Option<(VecDotFn, VecDotFn)> {
    match wty {
        GgmlType::Q4_0 => Some((dot_q4_0_rows8, dot_q4_0_rows8)),
        GgmlType::Q4K => Some((dot_q4_k_rows8_gemm, dot_q4_k_rows8)),
        _ => None,
    }
}

fn dot_q4_k_rows8_gemm(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (mut acc, mut acc_m) = (0.0f32, 0.0f32);
    for (x, y) in w.chunks_exact(Q4_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let (sumi, summ) = q4_k_chunk_isums(x, y);
        let dy = f32_at(y);
        for c in 0..4 {
            acc = (sumi[c] as f32).mul_add(f16_at(x) * dy, acc);
            acc_m = (summ[c] as f32).mul_add(f16_at(&x[Q4_K_DMIN..]) * dy, acc_m);
        }
    }
    acc - acc_m
}

fn dot_q4_0_rows8(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (x, y) in w.chunks_exact(Q4_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        acc = (q4_0_isum(x, y) as f32).mul_add(f16_at(x) * f16_at(y), acc);
    }
    acc
}

fn dot_q4_k_rows8(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (mut acc, mut acc_m) = (0.0f32, 0.0f32);
    for (x, y) in w.chunks_exact(Q4_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let (sumi, summ) = q4_k_isums(x, y);
        let dy = f32_at(y);
        acc = (sumi as f32).mul_add(f16_at(x) * dy, acc);
        acc_m = (summ as f32).mul_add(f16_at(&x[Q4_K_DMIN..]) * dy, acc_m);
    }
    acc - acc_m
}

fn dot_q4_1_q8_1(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(Q4_1_BYTES).zip(a.chunks_exact(Q8_1_BYTES)) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = (x[Q4_1_QS + j] & 0x0f) as i32;
            let v1 = (x[Q4_1_QS + j] >> 4) as i32;
            sumi += v0 * (y[Q8_1_QS + j] as i8) as i32 + v1 * (y[Q8_1_QS + 16 + j] as i8) as i32;
        }
        sumf += (f16_at(x) * f16_at(y)) * sumi as f32 + f16_at(&x[Q4_1_M..]) * f16_at(&y[Q8_1_S..]);
    }
    sumf
}

fn dot_q5_0_q8_0(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(Q5_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let qh = u32_at(&x[Q5_0_QH..]);
        let mut sumi = 0i32;
        for j in 0..16 {
            let h0 = (((qh >> j) & 1) << 4) as i32;
            let h1 = (((qh >> (j + 16)) & 1) << 4) as i32;
            let v0 = ((x[Q5_0_QS + j] & 0x0f) as i32 | h0) - 16;
            let v1 = ((x[Q5_0_QS + j] >> 4) as i32 | h1) - 16;
            sumi += v0 * (y[Q8_0_QS + j] as i8) as i32 + v1 * (y[Q8_0_QS + 16 + j] as i8) as i32;
        }
        sumf += (f16_at(x) * f16_at(y)) * sumi as f32;
    }
    sumf
}

fn dot_q8_0_q8_0(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(Q8_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let sumi: i32 = x[Q8_0_QS..]
            .iter()
            .zip(&y[Q8_0_QS..])
            .map(|(&p, &q)| (p as i8) as i32 * (q as i8) as i32)
            .sum();
        sumf += sumi as f32 * (f16_at(x) * f16_at(y));
    }
    sumf
}

fn dot_q8_1_q8_1(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(Q8_1_BYTES).zip(a.chunks_exact(Q8_1_BYTES)) {
        let sumi: i32 = x[Q8_1_QS..]
            .iter()
            .zip(&y[Q8_1_QS..])
            .map(|(&p, &q)| (p as i8) as i32 * (q as i8) as i32)
            .sum();
        sumf += sumi as f32 * (f16_at(x) * f16_at(y));
    }
    sumf
}

/// Sum of the Q8_K `bsums` (16-element partial sums) in pairs: one per 32-element sub-block.
#[inline(always)]
fn q8k_bsum(y: &[u8], sub: usize) -> i32 {
    let at =
        |k: usize| i16::from_le_bytes([y[Q8_K_BSUMS + 2 * k], y[Q8_K_BSUMS + 2 * k + 1]]) as i32;
    at(2 * sub) + at(2 * sub + 1)
}

/// The integer sums of one Q4_K super-block against one Q8_K block: scaled quants, and mins
/// times the activation block sums.
fn q4_k_isums(x: &[u8], y: &[u8]) -> (i32, i32) {
    let (sumi, summ) = q4_k_chunk_isums(x, y);
    (sumi.iter().sum(), summ.iter().sum())
}

/// [`q4_k_isums`] for each 64-element chunk of the super-block.
fn q4_k_chunk_isums(x: &[u8], y: &[u8]) -> ([i32; 4], [i32; 4]) {
    let scales = &x[Q4_K_SCALES..Q4_K_QS];
    let qs = &x[Q4_K_QS..];
    let q8 = &y[Q8_K_QS..Q8_K_BSUMS];
    let mut sumi = [0i32; 4];
    let mut summ = [0i32; 4];
    for c in 0..4 {
        let (sc0, m0) = scale_min_k4(2 * c, scales);
        let (sc1, m1) = scale_min_k4(2 * c + 1, scales);
        let (mut s0, mut s1) = (0i32, 0i32);
        for l in 0..32 {
            let q = qs[32 * c + l];
            s0 += (q & 0x0f) as i32 * (q8[64 * c + l] as i8) as i32;
            s1 += (q >> 4) as i32 * (q8[64 * c + 32 + l] as i8) as i32;
        }
        sumi[c] = sc0 as i32 * s0 + sc1 as i32 * s1;
        summ[c] = m0 as i32 * q8k_bsum(y, 2 * c) + m1 as i32 * q8k_bsum(y, 2 * c + 1);
    }
    (sumi, summ)
}

fn dot_q4_k_q8_k(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(Q4_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let (sumi, summ) = q4_k_isums(x, y);
        let dy = f32_at(y);
        sumf += f16_at(x) * dy * sumi as f32 - f16_at(&x[Q4_K_DMIN..]) * dy * summ as f32;
    }
    sumf
}

fn dot_q6_k_q8_k(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(Q6_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let q8 = &y[Q8_K_QS..Q8_K_BSUMS];
        let mut sumi = 0i32;
        for h in 0..2 {
            let ql = &x[Q6_K_QL + 64 * h..][..64];
            let qh = &x[Q6_K_QH + 32 * h..][..32];
            let sc = &x[Q6_K_SCALES + 8 * h..][..8];
            let q8 = &q8[128 * h..128 * h + 128];
            // Sub-block sums: index = 16-element group within these 128 elements.
            let mut sub = [0i32; 8];
            for l in 0..32 {
                let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                let is = l / 16;
                sub[is] += q1 * (q8[l] as i8) as i32;
                sub[is + 2] += q2 * (q8[l + 32] as i8) as i32;
                sub[is + 4] += q3 * (q8[l + 64] as i8) as i32;
                sub[is + 6] += q4 * (q8[l + 96] as i8) as i32;
            }
            for k in 0..8 {
                sumi += (sc[k] as i8) as i32 * sub[k];
            }
        }
        sumf += f16_at(&x[Q6_K_D..]) * f32_at(y) * sumi as f32;
    }
    sumf
}

fn dot_q8_k_q8_k(_n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.chunks_exact(Q8_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let sumi: i32 = x[Q8_K_QS..Q8_K_BSUMS]
            .iter()
            .zip(&y[Q8_K_QS..Q8_K_BSUMS])
            .map(|(&p, &q)| (p as i8) as i32 * (q as i8) as i32)
            .sum();
        sumf += f32_at(x) * f32_at(y) * sumi as f32;
    }
    sumf
}
