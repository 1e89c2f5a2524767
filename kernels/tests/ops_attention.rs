//! Elementwise ops and scalar attention checked against straightforward f64 computations.

mod common;
use common::Rng;
use lckv_kernels::{
    attention, ops, quant, AttnQuery, GgmlType, KvLayout, KvView, OwnedAttnScratch,
};

fn close(a: f32, b: f64, rel: f64, what: &str) {
    assert!(
        (a as f64 - b).abs() <= rel * b.abs().max(1.0),
        "{what}: {a} vs reference {b}"
    );
}

#[test]
fn rms_norm_matches_f64() {
    let mut rng = Rng(1);
    for n in [1usize, 5, 64, 576] {
        let x = rng.vec(n, 4.0);
        let w = rng.vec(n, 2.0);
        let mut out = vec![0f32; n];
        ops::rms_norm(&x, &w, 1e-6, &mut out);
        let ms: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
        let s = 1.0 / (ms + 1e-6).sqrt();
        for i in 0..n {
            close(out[i], x[i] as f64 * s * w[i] as f64, 1e-6, "rms_norm");
        }
    }
    // Hand case: x = [3, 4], mean(x^2) = 12.5, eps = 0 => x / sqrt(12.5).
    let mut out = [0f32; 2];
    ops::rms_norm(&[3.0, 4.0], &[1.0, 2.0], 0.0, &mut out);
    close(out[0], 3.0 / 12.5f64.sqrt(), 1e-7, "rms hand");
    close(out[1], 8.0 / 12.5f64.sqrt(), 1e-7, "rms hand");
}

#[test]
fn softmax_matches_f64() {
    let mut rng = Rng(2);
    let mut x = rng.vec(100, 30.0);
    x[7] = 80.0; // large values must not overflow
    let want: Vec<f64> = {
        let m = x.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
        let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    };
    ops::softmax_inplace(&mut x);
    for (a, b) in x.iter().zip(&want) {
        assert!(
            (*a as f64 - b).abs() <= 1e-6 * b.max(1e-30) + 1e-12,
            "softmax {a} vs {b}"
        );
    }
    let mut masked = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
    ops::softmax_inplace(&mut masked);
    assert_eq!(masked, [0.0, 1.0, 0.0]);
}

#[test]
fn silu_and_gelu_match_f64() {
    let mut rng = Rng(3);
    let g = rng.vec(300, 8.0);
    let u = rng.vec(300, 2.0);
    let mut s = g.clone();
    ops::silu_mul(&mut s, &u);
    let mut ge = g.clone();
    ops::gelu_tanh_mul(&mut ge, &u);
    for i in 0..g.len() {
        let x = g[i] as f64;
        close(s[i], x / (1.0 + (-x).exp()) * u[i] as f64, 1e-6, "silu_mul");
        let gelu = 0.5
            * x
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
        // ggml evaluates gelu through f16 (input and output): 2 f16 roundings, ~1e-3 relative.
        close(ge[i], gelu * u[i] as f64, 2e-3, "gelu_tanh_mul");
    }
    // Tails are exact, as in ggml.
    assert_eq!(ops::gelu_tanh(-12.0), 0.0);
    assert_eq!(ops::gelu_tanh(11.5), 11.5);
}

#[test]
fn rope_matches_rotation() {
    let (n_heads, head_dim, n_rot) = (3, 8, 6);
    let mut rng = Rng(4);
    let x0 = rng.vec(n_heads * head_dim, 1.0);
    let theta: Vec<f64> = (0..n_rot / 2).map(|i| 0.3 + i as f64).collect();
    let cos: Vec<f32> = theta.iter().map(|t| t.cos() as f32).collect();
    let sin: Vec<f32> = theta.iter().map(|t| t.sin() as f32).collect();
    for neox in [false, true] {
        let mut x = x0.clone();
        ops::rope(&mut x, n_heads, head_dim, n_rot, &cos, &sin, neox);
        for h in 0..n_heads {
            let b = h * head_dim;
            for (i, t) in theta.iter().enumerate() {
                let (a, c) = if neox {
                    (i, i + n_rot / 2)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (p, q) = (x0[b + a] as f64, x0[b + c] as f64);
                close(x[b + a], p * t.cos() - q * t.sin(), 1e-6, "rope a");
                close(x[b + c], p * t.sin() + q * t.cos(), 1e-6, "rope b");
            }
            // Dims past n_rot are untouched.
            for d in n_rot..head_dim {
                assert_eq!(x[b + d], x0[b + d]);
            }
        }
    }
}

/// Reference attention in f64 over dequantized cache rows, with q rounded the way the kernel
/// rounds it for the cache's dot type (f16 or Q8_0), so only float accumulation differs.
fn reference_attend(
    layout: &KvLayout,
    kc: &[u8],
    vc: &[u8],
    g: usize,
    vis: std::ops::Range<usize>,
    q: &[f32],
    scale: f32,
) -> Vec<f64> {
    let hd = layout.head_dim;
    let rb = layout.row_bytes();
    let pb = layout.pos_bytes();
    let mut qb = vec![0u8; rb];
    (quant::activation_quant_fn(layout.ty))(q, &mut qb);
    let mut qd = vec![0f32; hd];
    quant::dequantize_row(layout.ty, &qb, &mut qd);
    let row = |c: &[u8], t: usize| {
        let mut r = vec![0f32; hd];
        quant::dequantize_row(layout.ty, &c[t * pb + g * rb..][..rb], &mut r);
        r
    };
    let scores: Vec<f64> = vis
        .clone()
        .map(|t| {
            scale as f64
                * row(kc, t)
                    .iter()
                    .zip(&qd)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
        })
        .collect();
    let mut out = vec![0f64; hd];
    if scores.is_empty() {
        return out;
    }
    let m = scores.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let z: f64 = e.iter().sum();
    for (t, p) in vis.zip(&e) {
        for (o, v) in out.iter_mut().zip(row(vc, t)) {
            *o += p / z * v as f64;
        }
    }
    out
}

#[test]
fn attend_scalar_matches_f64_for_every_cache_type() {
    let mut rng = Rng(6);
    let (n_kv, hd, ctx) = (3, 64, 50);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0] {
        let layout = KvLayout::new(ty, n_kv, hd).unwrap();
        assert_eq!(layout.row_bytes(), ty.row_size(hd).unwrap());
        assert_eq!(layout.pos_bytes(), n_kv * layout.row_bytes());
        let rb = layout.row_bytes();
        let mut kc = vec![0u8; ctx * layout.pos_bytes()];
        let mut vc = vec![0u8; ctx * layout.pos_bytes()];
        // Distinct statistics per kv head, so using the wrong head shows in the output.
        for t in 0..ctx {
            for g in 0..n_kv {
                let off = t * layout.pos_bytes() + g * rb;
                let kv = rng.vec(hd, 1.0 + g as f32);
                let vv: Vec<f32> = rng
                    .vec(hd, 1.0)
                    .iter()
                    .map(|v| v + 3.0 * g as f32)
                    .collect();
                quant::quantize_row(ty, &kv, &mut kc[off..off + rb]);
                quant::quantize_row(ty, &vv, &mut vc[off..off + rb]);
            }
        }
        let mut scratch = OwnedAttnScratch::new(ctx, hd);
        // GQA: 6 query heads share 3 kv heads (query head h uses kv head h / 2).
        for h in 0..6 {
            let g = h / 2;
            let q = rng.vec(hd, 1.0);
            for vis in [0..ctx, 10..11, 7..33] {
                let mut out = vec![f32::NAN; hd];
                attention::attend_scalar(
                    &AttnQuery {
                        kv: KvView {
                            layout,
                            k: &kc,
                            v: &vc,
                        },
                        kv_head: g,
                        visible: vis.clone(),
                        q: &q,
                        scale: 0.125,
                        batched: false,
                    },
                    &mut scratch.view(),
                    &mut out,
                );
                let want = reference_attend(&layout, &kc, &vc, g, vis.clone(), &q, 0.125);
                // An F16 cache rounds the probabilities to f16 as ggml does (relative 2^-11 each).
                let tol = if ty == GgmlType::F16 { 1e-3 } else { 2e-5 };
                for (a, b) in out.iter().zip(&want) {
                    assert!(
                        (*a as f64 - b).abs() <= tol * b.abs().max(1.0),
                        "{ty} h={h} {vis:?}: {a} vs {b}"
                    );
                }
            }
        }
        // Empty range: zeros.
        let mut out = vec![f32::NAN; hd];
        attention::attend_scalar(
            &AttnQuery {
                kv: KvView {
                    layout,
                    k: &kc,
                    v: &vc,
                },
                kv_head: 1,
                visible: 4..4,
                q: &[0.5; 64],
                scale: 1.0,
                batched: false,
            },
            &mut scratch.view(),
            &mut out,
        );
        assert!(out.iter().all(|&v| v == 0.0));
    }
    // Scores with a group of 8 of slack each side, q and one V row, and 32 partial sums.
    // (f32 elements, bytes): scores with a group of 8 of slack each side, one V row and 32
    // partial sums; q converted to the widest dot type (f32).
    assert_eq!(
        lckv_kernels::AttnScratch::len(50, 64),
        (50 + 16 + 64 + 32 * 64, 4 * 64)
    );
}

#[test]
fn kv_layout_rejects_bad_shapes() {
    assert!(KvLayout::new(GgmlType::Q4_0, 2, 64)
        .unwrap_err()
        .contains("f32, f16 or q8_0"));
    assert!(KvLayout::new(GgmlType::Q8_0, 2, 48)
        .unwrap_err()
        .contains("head_dim 48"));
    assert!(KvLayout::new(GgmlType::F16, 2, 48).is_ok());
}
