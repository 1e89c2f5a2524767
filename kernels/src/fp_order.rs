//! Float reductions and `exp` in one fixed order: that of ggml's x86 AVX2 build, which is how
//! llama.cpp computes on the machines its logits are compared on. Every kernel path (scalar,
//! AVX2, AVX-512, NEON) uses these orders for F32/F16 dot products, softmax and SiLU, so a model
//! gives the same bits on every path and, where the weights' integer dot products agree,
//! llama.cpp's bits too.
//!
//! The functions are `#[inline(always)]` so that a SIMD path can recompile them under its
//! `#[target_feature]` (turning `mul_add` into FMA instructions and vectorizing the lane loops)
//! without a second copy of the arithmetic. `mul_add` is a fused multiply-add on every target,
//! as the vector FMA instructions are, which is what makes the lanes exact.

/// f32 lanes of one accumulator (an AVX2 register).
pub const LANES: usize = 8;
/// Accumulators a dot product keeps (ggml's `GGML_F32_ARR`).
pub const ACCS: usize = 4;
/// Elements one dot-product step consumes (`GGML_F32_STEP`).
pub const STEP: usize = LANES * ACCS;

/// The sum of the 4 x 8 accumulator lanes of a dot product, in `GGML_F32x8_REDUCE`'s order:
/// pairwise across accumulators, then the two 128-bit halves, then two horizontal adds.
#[inline(always)]
pub fn reduce_step(acc: &[[f32; LANES]; ACCS]) -> f32 {
    let x: [f32; LANES] =
        std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    let t = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// One step of 32 elements: element `k` (from `get(k)` as a pair) goes by FMA into lane `k % 8`
/// of accumulator `k / 8`.
#[inline(always)]
fn fma_step(acc: &mut [[f32; LANES]; ACCS], get: impl Fn(usize) -> (f32, f32)) {
    for (j, accj) in acc.iter_mut().enumerate() {
        for (l, a) in accj.iter_mut().enumerate() {
            let (x, y) = get(j * LANES + l);
            *a = x.mul_add(y, *a);
        }
    }
}

/// `sum x[i] * y[i]` as `ggml_vec_dot_f32`: element `i < n & !31` goes to lane `i % 8` of
/// accumulator `(i / 8) % 4` by FMA, the lanes reduce as [`reduce_step`], and the remaining
/// elements are added one by one with FMA.
#[inline(always)]
pub fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n & !(STEP - 1);
    let mut acc = [[0f32; LANES]; ACCS];
    for (xs, ys) in x[..np].chunks_exact(STEP).zip(y[..np].chunks_exact(STEP)) {
        fma_step(&mut acc, |k| (xs[k], ys[k]));
    }
    let mut s = reduce_step(&acc);
    for i in np..n {
        s = x[i].mul_add(y[i], s);
    }
    s
}

/// [`dot_f32`] over little-endian f32 bytes (a weight or cache row).
#[inline(always)]
pub fn dot_f32_bytes(x: &[u8], y: &[u8]) -> f32 {
    let n = (x.len() / 4).min(y.len() / 4);
    let np = n & !(STEP - 1);
    let at = |b: &[u8], i: usize| {
        f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    };
    let mut acc = [[0f32; LANES]; ACCS];
    for i in (0..np).step_by(STEP) {
        fma_step(&mut acc, |k| (at(x, i + k), at(y, i + k)));
    }
    let mut s = reduce_step(&acc);
    for i in np..n {
        s = at(x, i).mul_add(at(y, i), s);
    }
    s
}

/// `sum x[i] * y[i]` over f16 bytes as `ggml_vec_dot_f16`: the lanes as [`dot_f32`], the
/// remaining products (exact in f32) added in f64.
#[inline(always)]
pub fn dot_f16_bytes(x: &[u8], y: &[u8]) -> f32 {
    let n = (x.len() / 2).min(y.len() / 2);
    let np = n & !(STEP - 1);
    let at = |b: &[u8], i: usize| half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32();
    let mut acc = [[0f32; LANES]; ACCS];
    for i in (0..np).step_by(STEP) {
        fma_step(&mut acc, |k| (at(x, i + k), at(y, i + k)));
    }
    let mut s = reduce_step(&acc) as f64;
    for i in np..n {
        s += (at(x, i) * at(y, i)) as f64;
    }
    s as f32
}

/// `sum x[i] * y[i]` as ggml computes a batched F32/F16 product on x86 (llamafile's tinyBLAS,
/// used when two or more rows are multiplied and the weight has a multiple of 4 rows): one
/// accumulator of 8 lanes, element `i` into lane `i % 8` by FMA in order (the last partial group
/// too), then [`hsum8`].
#[inline(always)]
pub fn dot_gemm(n: usize, get: impl Fn(usize) -> (f32, f32)) -> f32 {
    let mut acc = [0f32; LANES];
    for i in 0..n {
        let (x, y) = get(i);
        acc[i % LANES] = x.mul_add(y, acc[i % LANES]);
    }
    hsum8(&acc)
}

/// [`dot_gemm`] over little-endian f32 bytes.
#[inline(always)]
pub fn dot_f32_gemm_bytes(x: &[u8], y: &[u8]) -> f32 {
    let n = (x.len() / 4).min(y.len() / 4);
    let at = |b: &[u8], i: usize| {
        f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    };
    dot_gemm(n, |i| (at(x, i), at(y, i)))
}

/// [`dot_gemm`] over f16 bytes.
#[inline(always)]
pub fn dot_f16_gemm_bytes(x: &[u8], y: &[u8]) -> f32 {
    let n = (x.len() / 2).min(y.len() / 2);
    let at = |b: &[u8], i: usize| half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32();
    dot_gemm(n, |i| (at(x, i), at(y, i)))
}

const EXP_SHIFT: f32 = 12582912.0; // 0x1.8p23: adding it rounds to an integer in the low bits
const EXP_LOG2E: u32 = 0x3fb8_aa3b; // 0x1.715476p+0
const EXP_LN2_HI: u32 = 0x3f31_7200; // 0x1.62e4p-1
const EXP_LN2_LO: u32 = 0x35bf_be8e; // 0x1.7f7d1cp-20
const EXP_P5: u32 = 0x3c07_2010; // 0x1.0e4020p-7
const EXP_P4: u32 = 0x3d2b_9f17; // 0x1.573e2ep-5
const EXP_P3: u32 = 0x3e2a_af33; // 0x1.555e66p-3
const EXP_P2: u32 = 0x3eff_fedb; // 0x1.fffdb6p-2
const EXP_P1: u32 = 0x3f7f_fff6; // 0x1.ffffecp-1

/// `e^x` as one lane of ggml's vectorised `ggml_v_expf` (1.5 ulp; exact 0 for -inf, inf for
/// +inf): x = n ln2 + b with n integral, e^b by a degree-5 polynomial, 2^n put into the exponent
/// bits, and a scaled path where 2^n alone would overflow or underflow. Branch-free per lane.
#[inline(always)]
pub fn expf(x: f32) -> f32 {
    let f = f32::from_bits;
    let z = x.mul_add(f(EXP_LOG2E), EXP_SHIFT);
    let n = z - EXP_SHIFT;
    let b = (-n).mul_add(f(EXP_LN2_LO), (-n).mul_add(f(EXP_LN2_HI), x));
    let e = z.to_bits() << 23;
    let k = f(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = f(EXP_P5)
        .mul_add(b, f(EXP_P4))
        .mul_add(u, f(EXP_P3).mul_add(b, f(EXP_P2)))
        .mul_add(u, f(EXP_P1) * b);
    let normal = j.mul_add(k, k);
    // |n| > 126: 2^n is split as s1 * s2 so neither factor leaves the float range.
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f(g.wrapping_add(0x7f00_0000));
    let s2 = f(e.wrapping_sub(g));
    let scaled = s2.mul_add(j, s2) * s1;
    let an = n.abs();
    if an > 192.0 {
        s1 * s1
    } else if an > 126.0 {
        scaled
    } else {
        normal
    }
}

/// `x / (1 + e^-x)` as one lane of ggml's `ggml_v_silu`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + expf(0.0 - x))
}

/// One row of ggml's `swiglu`: `gate[i] = silu(gate[i]) * up[i]`, whole groups of 8 through the
/// vector `silu`, the rest of the row through libm's `expf` as ggml's scalar tail does.
#[inline(always)]
pub fn silu_mul_row(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let nv = n & !(LANES - 1);
    for (g, &u) in gate[..nv].iter_mut().zip(&up[..nv]) {
        *g = silu(*g) * u;
    }
    for (g, &u) in gate[nv..n].iter_mut().zip(&up[nv..n]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// The sum of 8 lanes as ggml's softmax and tinyBLAS add them: upper half onto lower, then
/// lanes (0, 2) and (1, 3), then those two.
#[inline(always)]
pub fn hsum8(v: &[f32]) -> f32 {
    ((v[4] + v[0]) + (v[6] + v[2])) + ((v[5] + v[1]) + (v[7] + v[3]))
}

/// `x[i] = e^(x[i] - max)` for a row whose length is a multiple of 8 (masked entries hold -inf
/// and become 0), returning the sum in f64 as `ggml_vec_soft_max_f32` accumulates it.
#[inline(always)]
pub fn exp_rows8(x: &mut [f32], max: f32) -> f64 {
    let mut sum = 0f64;
    for blk in x.chunks_exact_mut(LANES) {
        for v in blk.iter_mut() {
            *v = expf(*v - max);
        }
        sum += hsum8(blk) as f64;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_close_to_libm_and_handles_the_ends() {
        let mut worst = 0f32;
        let mut x = -103.0f32;
        while x < 88.0 {
            let (a, b) = (expf(x), x.exp());
            if b > 1e-37 {
                worst = worst.max(((a - b) / b).abs());
            }
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf(-200.0), 0.0);
        assert_eq!(expf(0.0), 1.0);
        assert!(expf(100.0).is_infinite());
        assert!(expf(f32::NAN).is_nan());
    }

    #[test]
    fn dot_orders_agree_with_f64() {
        for n in [0usize, 1, 7, 31, 32, 33, 64, 100, 257] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let y: Vec<f32> = (0..n)
                .map(|i| ((i * 53 % 89) as f32 - 44.0) / 13.0)
                .collect();
            let exact: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
            let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
            let yb: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
            let d = dot_f32(&x, &y);
            assert_eq!(d.to_bits(), dot_f32_bytes(&xb, &yb).to_bits());
            assert!(
                (d as f64 - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                "n={n}"
            );
        }
    }
}
