//! Scalar quantization checked against independent references: the `gguf` Python package's
//! dequantize / quantize output (fixtures made by tests/reference/make_dequant_fixtures.py),
//! quantize -> dequantize error bounds, and vec_dot against a float dot of dequantized rows.

use lckv_kernels::formats::{Q4_1_BYTES, Q4_1_M, Q8_0_BYTES, Q8_0_QS, Q8_1_BYTES, Q8_1_S};
use lckv_kernels::{dot, quant, GgmlType};
use std::path::PathBuf;

mod common;
use common::{paths, Rng};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading fixture {}: {e}", p.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Dequantizes every row of fixture `name` and compares with gguf's values bit for bit
/// (both sides do the same f32 operations; -0.0 and 0.0 count as equal).
fn check_dequant(name: &str, ty: GgmlType, rows: usize) {
    let raw = fixture(&format!("{name}.bin"));
    let want = f32s(&fixture(&format!("{name}.f32")));
    assert_eq!(want.len() % rows, 0);
    let n = want.len() / rows;
    let rb = ty.row_size(n).unwrap();
    assert_eq!(raw.len(), rb * rows, "{name}: fixture size");
    let mut got = vec![0f32; n];
    for r in 0..rows {
        quant::dequantize_row(ty, &raw[r * rb..(r + 1) * rb], &mut got);
        for (i, (&g, &w)) in got.iter().zip(&want[r * n..(r + 1) * n]).enumerate() {
            assert!(g == w, "{name} row {r} elem {i}: got {g:e}, gguf {w:e}");
        }
    }
}

#[test]
fn dequant_matches_gguf_smollm() {
    check_dequant("smollm_q4_1", GgmlType::Q4_1, 2);
    check_dequant("smollm_q8_0", GgmlType::Q8_0, 3);
}

#[test]
fn dequant_matches_gguf_gemma() {
    check_dequant("gemma_q4_k", GgmlType::Q4K, 2);
    check_dequant("gemma_q5_0", GgmlType::Q5_0, 3);
    check_dequant("gemma_q6_k", GgmlType::Q6K, 2);
    check_dequant("gemma_q8_0", GgmlType::Q8_0, 3);
}

#[test]
fn dequant_matches_gguf_random() {
    check_dequant("rand_f16", GgmlType::F16, 3);
    check_dequant("rand_bf16", GgmlType::BF16, 3);
    check_dequant("rand_q4_0", GgmlType::Q4_0, 3);
    check_dequant("rand_q8_0", GgmlType::Q8_0, 3);
}

/// quantize_row must produce exactly the bytes gguf.quantize (a port of ggml's reference) writes.
#[test]
fn quantize_bytes_match_gguf() {
    for (name, ty) in [
        ("rand_q4_0", GgmlType::Q4_0),
        ("rand_q8_0", GgmlType::Q8_0),
        ("rand_f16", GgmlType::F16),
        ("rand_bf16", GgmlType::BF16),
    ] {
        let src = f32s(&fixture(&format!("{name}.src.f32")));
        let want = fixture(&format!("{name}.bin"));
        let mut got = vec![0u8; want.len()];
        let rows = 3;
        let n = src.len() / rows;
        let rb = ty.row_size(n).unwrap();
        for r in 0..rows {
            quant::quantize_row(ty, &src[r * n..(r + 1) * n], &mut got[r * rb..(r + 1) * rb]);
        }
        assert!(
            got == want,
            "{name}: quantized bytes differ from gguf.quantize"
        );
    }
}

fn roundtrip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let mut q = vec![0u8; ty.row_size(x.len()).unwrap()];
    quant::quantize_row(ty, x, &mut q);
    let mut y = vec![0f32; x.len()];
    quant::dequantize_row(ty, &q, &mut y);
    y
}

/// Error of quantize -> dequantize, per block, relative to the block's largest magnitude.
/// Bounds: half a quantization step for the direct formats, plus 2^-10 of amax for the f16
/// rounding of their scale (and min); the K-quants' 6-bit scales add up to one more step.
#[test]
fn roundtrip_error_bounds() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cases: [(GgmlType, f32); 11] = [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 1.0 / 2048.0),
        (GgmlType::BF16, 1.0 / 256.0),
        // The level opposite the signed max is clipped to 7 (15): up to one full step there.
        (GgmlType::Q4_0, 1.0 / 8.0 * 1.01),
        (GgmlType::Q4_1, 2.0 * 0.5 / 15.0 * 1.01),
        (GgmlType::Q5_0, 1.0 / 16.0 * 1.01),
        (GgmlType::Q8_0, 0.5 / 127.0 * 1.01),
        (GgmlType::Q8_1, 0.5 / 127.0 * 1.01),
        (GgmlType::Q4K, 2.0 * 1.5 / 15.0),
        (GgmlType::Q6K, 1.5 / 31.0),
        (GgmlType::Q8K, 0.5 / 127.0 * 1.0001),
    ];
    for (ty, rel) in cases {
        for trial in 0..20 {
            let n = 512;
            let mut x = rng.vec(n, 0.1 + trial as f32);
            if trial == 3 {
                x[..256].fill(0.0); // all-zero blocks must come back as zeros
            }
            let y = roundtrip(ty, &x);
            let bs = ty.block_size().max(32);
            for (b, (xb, yb)) in x.chunks(bs).zip(y.chunks(bs)).enumerate() {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (i, (&a, &c)) in xb.iter().zip(yb).enumerate() {
                    let err = (a - c).abs();
                    let f16_scale = match ty {
                        GgmlType::Q4K | GgmlType::Q6K | GgmlType::Q8K => 0.0,
                        _ => 1.0 / 1024.0,
                    };
                    let bound = if ty.is_quantized() {
                        (rel + f16_scale) * amax
                    } else {
                        rel * a.abs()
                    };
                    assert!(
                        err <= bound,
                        "{ty} trial {trial} block {b} elem {i}: {a} -> {c}, err {err} > {bound}"
                    );
                }
            }
        }
    }
}

/// vec_dot equals a float dot of the dequantized rows: both see the same quantized values, so the
/// only differences are f32 rounding of the block sums (bound: 1e-5 of sum |w_i * a_i|), and for
/// Q4_1 the Q8_1 block sum `s` that is stored as f16 (adds 2^-11 * sum over blocks |m * s|).
#[test]
fn vec_dot_matches_dequantized_dot() {
    let mut rng = Rng(12345);
    for wty in GgmlType::ALL {
        let aty = wty.vec_dot_type();
        for &n in &[256usize, 512, 1024, 2304] {
            let w = rng.vec(n, 1.5);
            let a = rng.vec(n, 3.0);
            let mut wq = vec![0u8; wty.row_size(n).unwrap()];
            let mut aq = vec![0u8; aty.row_size(n).unwrap()];
            quant::quantize_row(wty, &w, &mut wq);
            quant::quantize_row(aty, &a, &mut aq);
            let (mut wd, mut ad) = (vec![0f32; n], vec![0f32; n]);
            quant::dequantize_row(wty, &wq, &mut wd);
            quant::dequantize_row(aty, &aq, &mut ad);
            let exact: f64 = wd.iter().zip(&ad).map(|(&p, &q)| p as f64 * q as f64).sum();
            let mag: f64 = wd
                .iter()
                .zip(&ad)
                .map(|(&p, &q)| (p as f64 * q as f64).abs())
                .sum();
            let got = dot::vec_dot(wty, n, &wq, &aq) as f64;
            let mut s_term = 0.0f64;
            if wty == GgmlType::Q4_1 {
                for (wb, ab) in wq.chunks_exact(Q4_1_BYTES).zip(aq.chunks_exact(Q8_1_BYTES)) {
                    let m = half::f16::from_le_bytes([wb[Q4_1_M], wb[Q4_1_M + 1]]).to_f64();
                    let s = half::f16::from_le_bytes([ab[Q8_1_S], ab[Q8_1_S + 1]]).to_f64();
                    s_term += (m * s).abs() / 2048.0;
                }
            }
            assert!(
                (got - exact).abs() <= 1e-5 * mag + s_term + 1e-6,
                "{wty} n={n}: vec_dot {got} vs dequantized dot {exact} (mag {mag})"
            );
        }
    }
}

/// A hand-computed Q8_0 case: the block [1, 2, ..., 32] has amax 32, d = 32/127.
#[test]
fn q8_0_hand_case() {
    let x: Vec<f32> = (1..=32).map(|i| i as f32).collect();
    let mut q = vec![0u8; Q8_0_BYTES];
    quant::quantize_row(GgmlType::Q8_0, &x, &mut q);
    assert_eq!(
        half::f16::from_le_bytes([q[0], q[1]]),
        half::f16::from_f32(32.0 / 127.0)
    );
    assert_eq!(q[Q8_0_QS + 31] as i8, 127);
    // 16 * 127 / 32 = 63.5 rounds away from zero.
    assert_eq!(q[Q8_0_QS + 15] as i8, 64);
    // dot with itself: sum(q^2) * d^2
    let d = half::f16::from_f32(32.0 / 127.0).to_f32();
    let sumi: i32 = q[Q8_0_QS..].iter().map(|&v| (v as i8 as i32).pow(2)).sum();
    assert_eq!(
        dot::vec_dot(GgmlType::Q8_0, 32, &q, &q),
        sumi as f32 * (d * d)
    );
}

/// quantize_row reproduces ggml's `quantize_row_*_ref` bytes exactly (fixtures compiled from
/// ggml-quants.c by tests/reference/make_quant_fixtures.py), on the scalar path and on every
/// kernel path this CPU supports (`common::paths()`; their activation quantizers must agree too).
#[test]
fn quantize_bytes_match_ggml_reference() {
    let paths = paths();
    for name in [
        "q4_0", "q4_1", "q5_0", "q8_0", "q8_1", "q4_K", "q6_K", "q8_K",
    ] {
        let ty = GgmlType::from_name(name).unwrap();
        let src = f32s(&fixture(&format!("quant_ref/{name}.src.f32")));
        let want = fixture(&format!("quant_ref/{name}.ref.bin"));
        let (rows, n) = (3, src.len() / 3);
        let rb = ty.row_size(n).unwrap();
        assert_eq!(want.len(), rows * rb, "{name}: fixture size");
        for r in 0..rows {
            let x = &src[r * n..(r + 1) * n];
            let w = &want[r * rb..(r + 1) * rb];
            let mut got = vec![0u8; rb];
            quant::quantize_row(ty, x, &mut got);
            if let Some(i) = (0..rb).find(|&i| got[i] != w[i]) {
                panic!(
                    "{name} row {r}: byte {i} (block {}) is {:#04x}, ggml {:#04x}",
                    i / ty.type_size(),
                    got[i],
                    w[i]
                );
            }
            for k in &paths {
                got.fill(0);
                k.quantize_row(ty, x, &mut got);
                assert!(
                    got == w,
                    "{name} row {r}: {} path differs from ggml",
                    k.path()
                );
            }
        }
    }
}
