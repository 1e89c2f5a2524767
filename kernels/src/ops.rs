//! Scalar elementwise operations of a transformer layer: RMS norm, softmax, the gated activations
//! (SiLU, tanh-GELU) and rotary position embedding. Reductions accumulate in f64 as ggml does,
//! and SiLU uses ggml's vector `exp` (see `fp_order`), so results are ggml's bits.

use std::sync::OnceLock;

/// `out = x / sqrt(mean(x^2) + eps) * w`.
///
/// # Panics
/// When `w` or `out` is not as long as `x` (a caller bug).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        w.len() == x.len() && out.len() == x.len(),
        "rms_norm: x has {} elements, weight {}, out {}",
        x.len(),
        w.len(),
        out.len()
    );
    if x.is_empty() {
        return;
    }
    // The square is rounded to f32 before the f64 sum, as in ggml_compute_forward_rms_norm_f32.
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = (v * scale) * g;
    }
}

/// Numerically stable softmax in place. An empty slice is left as is.
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if x.is_empty() || max == f32::NEG_INFINITY {
        // All -inf (everything masked): no mass anywhere.
        x.fill(0.0);
        return;
    }
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `gate[i] = silu(gate[i]) * up[i]`, silu(x) = x / (1 + e^-x), for one row of the
/// feed-forward (ggml's `swiglu` treats each row alike: groups of 8 from the row's start through
/// the vector `exp`, the remainder through libm's).
///
/// # Panics
/// When the slices differ in length (a caller bug).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: gate and up lengths differ");
    crate::fp_order::silu_mul_row(gate, up);
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_COEF_A: f32 = 0.044715;

/// GELU of an f16 value, rounded to f16: one entry of ggml's `ggml_table_gelu_f16`.
fn gelu_f16_entry(bits: u16) -> u16 {
    let h = half::f16::from_bits(bits).to_f32();
    let g = 0.5 * h * (1.0 + (SQRT_2_OVER_PI * h * (1.0 + GELU_COEF_A * h * h)).tanh());
    half::f16::from_f32(g).to_bits()
}

/// The 65536-entry table, built once on first use (128 KiB; a `tanh` per element otherwise).
fn gelu_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(gelu_f16_entry).collect())
}

/// tanh-approximation GELU as ggml evaluates it on the CPU: through its f16 table, i.e. the input
/// rounded to f16 and the result rounded to f16, with the tails |x| >= 10 taken exactly (0 or x).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let i = half::f16::from_f32(x).to_bits() as usize;
        half::f16::from_bits(gelu_table()[i]).to_f32()
    }
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]` (ggml's `geglu`).
///
/// # Panics
/// When the slices differ in length (a caller bug).
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(
        gate.len(),
        up.len(),
        "gelu_tanh_mul: gate and up lengths differ"
    );
    for (g, &u) in gate.iter_mut().zip(up) {
        // ggml writes a plain +0 below -10 (not 0 * up, which may be -0).
        *g = if *g <= -10.0 { 0.0 } else { gelu_tanh(*g) * u };
    }
}

/// Rotates the first `n_rot` dims of each of `n_heads` heads (`head_dim` apart) in `x`. `cos` and
/// `sin` have `n_rot / 2` entries (one per pair). `neox == false`: pairs (2i, 2i+1) (llama GGUF
/// layout); `neox == true`: pairs (i, i + n_rot/2).
///
/// # Panics
/// When the sizes disagree (a caller bug).
pub fn rope(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    n_rot: usize,
    cos: &[f32],
    sin: &[f32],
    neox: bool,
) {
    let half = n_rot / 2;
    assert!(
        n_rot.is_multiple_of(2) && n_rot <= head_dim && x.len() >= n_heads * head_dim,
        "rope: n_rot {n_rot} must be even and <= head_dim {head_dim}; x has {} < {n_heads} heads",
        x.len()
    );
    assert!(
        cos.len() >= half && sin.len() >= half,
        "rope: cos/sin need {half} entries, have {} / {}",
        cos.len(),
        sin.len()
    );
    for h in x.chunks_exact_mut(head_dim).take(n_heads) {
        for i in 0..half {
            let (a, b) = if neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (h[a], h[b]);
            // ggml's rotate_pairs as its compiler contracts it: the first product fused.
            h[a] = x0.mul_add(cos[i], -(x1 * sin[i]));
            h[b] = x0.mul_add(sin[i], x1 * cos[i]);
        }
    }
}
