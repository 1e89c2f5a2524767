//! Scalar reference quantization and dequantization for every [`GgmlType`].
//!
//! Weight quantizers follow ggml's reference `quantize_row_*_ref` step for step (same rounding,
//! same float operation order) so a file written by `lckv quantize` has the bytes llama.cpp would
//! write. The activation formats (Q8_0, Q8_1, Q8_K) are quantized the same way llama.cpp's
//! reference does. These functions are the twins every SIMD version is tested against.

use crate::formats::{
    GgmlType, Q4_0_BYTES, Q4_0_QS, Q4_1_BYTES, Q4_1_M, Q4_1_QS, Q4_K_BYTES, Q4_K_DMIN, Q4_K_QS,
    Q4_K_SCALES, Q5_0_BYTES, Q5_0_QH, Q5_0_QS, Q6_K_BYTES, Q6_K_D, Q6_K_QH, Q6_K_QL, Q6_K_SCALES,
    Q8_0_BYTES, Q8_0_QS, Q8_1_BYTES, Q8_1_QS, Q8_1_S, Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS, QK4_0,
    QK4_1, QK5_0, QK8_0, QK8_1, QK_K,
};
use half::{bf16, f16};

/// Exact f16 -> f32 with integer operations and one multiply. Used for block scales in every
/// kernel: `half` checks CPU features on each call, and F16C on a scalar lets the compiler merge
/// into a live vector register (a false dependency that serialised the SIMD block loops).
#[inline(always)]
pub(crate) fn f16_bits_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let em = (h & 0x7fff) as u32;
    if em >= 0x7c00 {
        // Inf / NaN (made quiet, as hardware conversion does).
        let quiet = if em > 0x7c00 { 0x0040_0000 } else { 0 };
        return f32::from_bits(sign | 0x7f80_0000 | quiet | ((em & 0x3ff) << 13));
    }
    // Shifted into place the f16 bits are an f32 2^112 times too small (exact, subnormals too).
    let mag = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000);
    f32::from_bits(mag.to_bits() | sign)
}

/// Reads the little-endian f16 at `b[0..2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8]) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

#[inline(always)]
pub(crate) fn put_f16(b: &mut [u8], v: f32) {
    b[..2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

#[inline(always)]
pub(crate) fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads the little-endian u32 at `b[0..4]` (Q5_0's fifth bits).
#[inline(always)]
pub(crate) fn u32_at(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// ggml's `nearest_int`: round half to even through the 1.5 * 2^23 trick (valid for |v| < 2^22).
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let x = v + 12_582_912.0f32;
    (x.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Panics with a precise message when `bytes` is not the row size of `n` elements of `ty`.
/// Callers validate shapes when a model is loaded; reaching this is a bug in the caller.
#[inline]
pub(crate) fn check_row(ty: GgmlType, n: usize, bytes: usize, what: &str) {
    match ty.row_size(n) {
        Some(sz) if sz == bytes => {}
        Some(sz) => panic!("{what}: {n} {ty} elements need {sz} bytes, got {bytes}"),
        None => panic!(
            "{what}: {n} elements is not a multiple of the {ty} block size {}",
            ty.block_size()
        ),
    }
}

/// Dequantizes one row: `dst.len()` elements from `src` (exactly `ty.row_size(dst.len())` bytes).
///
/// # Panics
/// When the lengths disagree (a caller bug: shapes are validated at load time).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    check_row(ty, dst.len(), src.len(), "dequantize_row");
    dequant_fn(ty)(src, dst);
}

/// Quantizes one row: `src.len()` elements into `dst` (exactly `ty.row_size(src.len())` bytes).
///
/// # Panics
/// When the lengths disagree (a caller bug: shapes are validated at load time).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    check_row(ty, src.len(), dst.len(), "quantize_row");
    quant_fn(ty)(src, dst);
}

pub(crate) type DequantFn = fn(&[u8], &mut [f32]);
pub(crate) type QuantFn = fn(&[f32], &mut [u8]);

/// The scalar dequantizer for `ty` (lengths already checked by the caller).
pub(crate) fn dequant_fn(ty: GgmlType) -> DequantFn {
    match ty {
        GgmlType::F32 => dequantize_f32,
        GgmlType::F16 => dequantize_f16,
        GgmlType::BF16 => dequantize_bf16,
        GgmlType::Q4_0 => dequantize_q4_0,
        GgmlType::Q4_1 => dequantize_q4_1,
        GgmlType::Q5_0 => dequantize_q5_0,
        GgmlType::Q8_0 => dequantize_q8_0,
        GgmlType::Q8_1 => dequantize_q8_1,
        GgmlType::Q4K => dequantize_q4_k,
        GgmlType::Q6K => dequantize_q6_k,
        GgmlType::Q8K => dequantize_q8_k,
    }
}

/// The scalar quantizer for `ty` (lengths already checked by the caller).
pub(crate) fn quant_fn(ty: GgmlType) -> QuantFn {
    match ty {
        GgmlType::F32 => quantize_f32,
        GgmlType::F16 => quantize_f16,
        GgmlType::BF16 => quantize_bf16,
        GgmlType::Q4_0 => quantize_q4_0,
        GgmlType::Q4_1 => quantize_q4_1,
        GgmlType::Q5_0 => quantize_q5_0,
        GgmlType::Q8_0 => quantize_q8_0,
        GgmlType::Q8_1 => quantize_q8_1,
        GgmlType::Q4K => quantize_q4_k,
        GgmlType::Q6K => quantize_q6_k,
        GgmlType::Q8K => quantize_q8_k,
    }
}

// ---------------------------------------------------------------- float formats

fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32_at(s);
    }
}

fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (d, s) in dst.chunks_exact_mut(4).zip(src) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f16_at(s);
    }
}

fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    for (d, s) in dst.chunks_exact_mut(2).zip(src) {
        put_f16(d, *s);
    }
}

fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = bf16::from_le_bytes([s[0], s[1]]).to_f32();
    }
}

/// ggml's `ggml_compute_fp32_to_bf16`: NaN stays a quiet NaN, everything else rounds to nearest
/// even (no flush of subnormals).
fn f32_to_bf16_bits(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (d, s) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&f32_to_bf16_bits(*s).to_le_bytes());
    }
}

// ---------------------------------------------------------------- 32-element blocks

/// The element of largest magnitude (first one on ties), keeping its sign.
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(Q4_0_BYTES)
        .zip(dst.chunks_exact_mut(QK4_0))
    {
        let d = f16_at(b);
        for j in 0..16 {
            let q = b[Q4_0_QS + j];
            y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

fn quantize_q4_0(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK4_0)
        .zip(dst.chunks_exact_mut(Q4_0_BYTES))
    {
        let d = signed_absmax(x) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, d);
        for j in 0..16 {
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
            b[Q4_0_QS + j] = q0 | (q1 << 4);
        }
    }
}

fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(Q4_1_BYTES)
        .zip(dst.chunks_exact_mut(QK4_1))
    {
        let d = f16_at(b);
        let m = f16_at(&b[Q4_1_M..]);
        for j in 0..16 {
            let q = b[Q4_1_QS + j];
            y[j] = (q & 0x0f) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

fn quantize_q4_1(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK4_1)
        .zip(dst.chunks_exact_mut(Q4_1_BYTES))
    {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, d);
        put_f16(&mut b[Q4_1_M..], min);
        for j in 0..16 {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            b[Q4_1_QS + j] = q0 | (q1 << 4);
        }
    }
}

fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(Q5_0_BYTES)
        .zip(dst.chunks_exact_mut(QK5_0))
    {
        let d = f16_at(b);
        let qh = u32_at(&b[Q5_0_QH..]);
        for j in 0..16 {
            let q = b[Q5_0_QS + j];
            let h0 = (((qh >> j) << 4) & 0x10) as i32;
            let h1 = ((qh >> (j + 12)) & 0x10) as i32;
            y[j] = (((q & 0x0f) as i32 | h0) - 16) as f32 * d;
            y[j + 16] = (((q >> 4) as i32 | h1) - 16) as f32 * d;
        }
    }
}

fn quantize_q5_0(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK5_0)
        .zip(dst.chunks_exact_mut(Q5_0_BYTES))
    {
        let d = signed_absmax(x) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, d);
        let mut qh = 0u32;
        for j in 0..16 {
            let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
            b[Q5_0_QS + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
        }
        b[Q5_0_QH..Q5_0_QS].copy_from_slice(&qh.to_le_bytes());
    }
}

fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(Q8_0_BYTES)
        .zip(dst.chunks_exact_mut(QK8_0))
    {
        let d = f16_at(b);
        for j in 0..32 {
            y[j] = (b[Q8_0_QS + j] as i8) as f32 * d;
        }
    }
}

fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK8_0)
        .zip(dst.chunks_exact_mut(Q8_0_BYTES))
    {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, d);
        for j in 0..32 {
            b[Q8_0_QS + j] = (x[j] * id).round() as i8 as u8;
        }
    }
}

fn dequantize_q8_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(Q8_1_BYTES)
        .zip(dst.chunks_exact_mut(QK8_1))
    {
        let d = f16_at(b);
        for j in 0..32 {
            y[j] = (b[Q8_1_QS + j] as i8) as f32 * d;
        }
    }
}

fn quantize_q8_1(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK8_1)
        .zip(dst.chunks_exact_mut(Q8_1_BYTES))
    {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, d);
        let mut sum = 0i32;
        for j in 0..32 {
            let q = (x[j] * id).round() as i8;
            b[Q8_1_QS + j] = q as u8;
            sum += q as i32;
        }
        put_f16(&mut b[Q8_1_S..], sum as f32 * d);
    }
}

/// Q8_0 as llama.cpp's x86 runtime quantizes activations (and K/V it caches): the inverse scale
/// is 127 / amax rather than 1 / (amax / 127), and halves round to even. Weights use
/// `quantize_q8_0` (ggml's reference quantizer, what llama-quantize writes); activations use this
/// so that every 8-bit level agrees with llama.cpp's.
pub(crate) fn quantize_q8_0_act(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK8_0)
        .zip(dst.chunks_exact_mut(Q8_0_BYTES))
    {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        put_f16(b, amax / 127.0);
        for j in 0..32 {
            b[Q8_0_QS + j] = (x[j] * id).round_ties_even() as i8 as u8;
        }
    }
}

/// Q8_1 activations, as `quantize_q8_0_act`, with `s = d * sum(q)`.
pub(crate) fn quantize_q8_1_act(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK8_1)
        .zip(dst.chunks_exact_mut(Q8_1_BYTES))
    {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        put_f16(b, d);
        let mut sum = 0i32;
        for j in 0..32 {
            let q = (x[j] * id).round_ties_even() as i8;
            b[Q8_1_QS + j] = q as u8;
            sum += q as i32;
        }
        put_f16(&mut b[Q8_1_S..], d * sum as f32);
    }
}

/// The quantizer for activations of type `ty` (see `quantize_q8_0_act`); other types as
/// `quant_fn`.
pub fn activation_quant_fn(ty: GgmlType) -> QuantFn {
    match ty {
        GgmlType::Q8_0 => quantize_q8_0_act,
        GgmlType::Q8_1 => quantize_q8_1_act,
        other => quant_fn(other),
    }
}

// ---------------------------------------------------------------- K-quants

/// Scale and min of sub-block `j` from the 12 packed 6-bit values of a Q4_K block.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q4_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b);
        let min = f16_at(&b[Q4_K_DMIN..]);
        let scales = &b[Q4_K_SCALES..Q4_K_QS];
        let qs = &b[Q4_K_QS..Q4_K_BYTES];
        for (c, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc, m) = scale_min_k4(2 * c, scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = scale_min_k4(2 * c + 1, scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0x0f) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// ggml's `make_qkx2_quants`: an asymmetric 4-bit fit (scale, -min) of `x` minimising the weighted
/// squared error over the candidate scales (nmax - 1 + 0.1 * k) / range, k = 0..=20 (the grid
/// Q4_K uses). Writes levels into `l`.
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
) -> (f32, f32) {
    let (rmin, rdelta, nstep) = (-1.0f32, 0.1f32, 20);
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let lf = q as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

fn quantize_q4_k(src: &[f32], dst: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; QK_K / 32];
    let mut scales = [0f32; QK_K / 32];
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q4_K_BYTES)) {
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..QK_K / 32 {
            let xs = &x[32 * j..32 * j + 32];
            let mut sum_x2 = 0.0f32;
            for &v in xs {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = av_x + v.abs();
            }
            let (s, m) = make_qkx2_quants(
                15,
                xs,
                &weights,
                &mut levels[32 * j..32 * j + 32],
                &mut laux,
            );
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let sc = &mut b[Q4_K_SCALES..Q4_K_QS];
        sc.fill(0);
        for j in 0..QK_K / 32 {
            // ggml stores nearest_int into a uint8_t before clamping: keep that wrap-around.
            let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
            if j < 4 {
                sc[j] = ls;
                sc[j + 4] = lm;
            } else {
                sc[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
                sc[j - 4] |= (ls >> 4) << 6;
                sc[j] |= (lm >> 4) << 6;
            }
        }
        put_f16(b, max_scale / 63.0);
        put_f16(&mut b[Q4_K_DMIN..], max_min / 63.0);
        let d_all = f16_at(b);
        let dmin_all = f16_at(&b[Q4_K_DMIN..]);
        for j in 0..QK_K / 32 {
            let (s, m) = scale_min_k4(j, &b[Q4_K_SCALES..Q4_K_QS]);
            let d = d_all * s as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin_all * m as f32;
            for ii in 0..32 {
                let q = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, 15);
                levels[32 * j + ii] = q as u8;
            }
        }
        let qs = &mut b[Q4_K_QS..Q4_K_BYTES];
        for (c, q) in qs.chunks_exact_mut(32).enumerate() {
            let j = 64 * c;
            for l in 0..32 {
                q[l] = levels[j + l] | (levels[j + l + 32] << 4);
            }
        }
    }
}

fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q6_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(&b[Q6_K_D..]);
        for h in 0..2 {
            let ql = &b[Q6_K_QL + 64 * h..][..64];
            let qh = &b[Q6_K_QH + 32 * h..][..32];
            let sc = &b[Q6_K_SCALES + 8 * h..][..8];
            let y = &mut y[128 * h..128 * h + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

/// ggml's `make_qx_quants` with `rmse_type == 1` and no importance weights: a symmetric fit of
/// `x` onto levels -nmax..nmax-1, searching 18 scales around the naive one. Levels are stored
/// offset by `nmax`.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let nm = nmax as f32;
    let mut iscale = -nm / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (i, &v) in x.iter().enumerate() {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        l[i] = (q + nmax) as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nm + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let w = v * v;
            sumlx += w * v * q as f32;
            suml2 += w * q as f32 * q as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
                l[i] = (q + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

fn quantize_q6_k(src: &[f32], dst: &mut [u8]) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q6_K_BYTES)) {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let s = make_qx_quants(
                32,
                &x[16 * ib..16 * ib + 16],
                &mut levels[16 * ib..16 * ib + 16],
            );
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < 1e-15 {
            b.fill(0);
            continue;
        }
        let iscale = -128.0 / max_scale;
        put_f16(&mut b[Q6_K_D..], 1.0 / iscale);
        for ib in 0..QK_K / 16 {
            b[Q6_K_SCALES + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
        }
        let d_all = f16_at(&b[Q6_K_D..]);
        for j in 0..QK_K / 16 {
            let d = d_all * (b[Q6_K_SCALES + j] as i8) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                levels[16 * j + ii] = (q + 32) as i8;
            }
        }
        for h in 0..2 {
            let j = 128 * h;
            for l in 0..32 {
                let lv = |k: usize| levels[j + l + k] as u8;
                b[Q6_K_QL + 64 * h + l] = (lv(0) & 0x0f) | ((lv(64) & 0x0f) << 4);
                b[Q6_K_QL + 64 * h + l + 32] = (lv(32) & 0x0f) | ((lv(96) & 0x0f) << 4);
                b[Q6_K_QH + 32 * h + l] = (lv(0) >> 4)
                    | ((lv(32) >> 4) << 2)
                    | ((lv(64) >> 4) << 4)
                    | ((lv(96) >> 4) << 6);
            }
        }
    }
}

fn dequantize_q8_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q8_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f32_at(b);
        for j in 0..QK_K {
            y[j] = d * (b[Q8_K_QS + j] as i8) as f32;
        }
    }
}

fn quantize_q8_k(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for j in 0..QK_K {
            b[Q8_K_QS + j] = nearest_int(iscale * x[j]).min(127) as i8 as u8;
        }
        for j in 0..QK_K / 16 {
            let sum: i32 = b[Q8_K_QS + 16 * j..][..16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            b[Q8_K_BSUMS + 2 * j..][..2].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        b[..Q8_K_QS].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer f16 conversion agrees with `half` on all 65536 bit patterns.
    #[test]
    fn f16_conversion_is_exact() {
        for h in 0..=u16::MAX {
            let want = f16::from_bits(h).to_f32();
            let got = f16_bits_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
            }
        }
    }
}
