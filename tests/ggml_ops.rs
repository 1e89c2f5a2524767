//! lckv's kernels against ggml's own CPU operators (llama.cpp's build, through the `reference`
//! feature), bit for bit: RMS norm, SwiGLU and GeGLU rows, F32/F16 matrix products, RoPE in
//! both layouts, and attention over F32 and F16 caches with causal, sliding and GQA masks.
//! Bit equality is the claim lckv makes for these operators (its kernels follow ggml's x86
//! AVX2 order on every path), and every kernel path this CPU has is checked, the scalar twin
//! included. llama.cpp's reference build is AVX2 + FMA + F16C, which is the order matched.
#![cfg(feature = "reference")]

use lckv::reference_ggml as ggml;
use lckv_kernels::{AttnQuery, GgmlType, KernelPath, Kernels, KvLayout, KvView, OwnedAttnScratch};
use llama_cpp_sys_2 as sys;

/// Deterministic values with a spread like activations (a few large, most small).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            scale * u * (1.0 + 8.0 * u * u * u * u)
        })
        .collect()
}

/// The kernel crate's test helpers: `paths()` checks `LCKV_REQUIRE_PATHS` for these tests too.
#[path = "../kernels/tests/common/mod.rs"]
mod kernel_tests;

/// Every kernel path this CPU runs, the scalar twin first.
fn paths() -> Vec<Kernels> {
    kernel_tests::paths()
}

fn assert_bits(what: &str, ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    let bad: Vec<usize> = (0..ours.len())
        .filter(|&i| ours[i].to_bits() != theirs[i].to_bits())
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} values differ from ggml, first at {}: {} vs {}",
        bad.len(),
        ours.len(),
        bad[0],
        ours[bad[0]],
        theirs[bad[0]]
    );
}

#[test]
fn rms_norm_matches_ggml() {
    for (cols, rows) in [(576usize, 3usize), (64, 5), (37, 2), (2048, 1)] {
        let x = values(cols * rows, cols as u64, 4.0);
        let theirs = ggml::rms_norm(&x, cols, 1e-5);
        let ones = vec![1.0f32; cols];
        for k in paths() {
            let mut ours = vec![0f32; x.len()];
            for (xr, o) in x.chunks(cols).zip(ours.chunks_mut(cols)) {
                k.rms_norm(xr, &ones, 1e-5, o);
            }
            assert_bits(&format!("rms_norm {cols} {}", k.path()), &ours, &theirs);
        }
    }
}

#[test]
fn swiglu_and_geglu_rows_match_ggml() {
    for (cols, rows) in [(1536usize, 3usize), (37, 4), (8, 1), (2048, 2)] {
        // Gate values reach far enough out for exp to take its scaled path (|x| > 87).
        let mut gate = values(cols * rows, 7 + cols as u64, 24.0);
        gate[0] = -100.0;
        gate[1] = 95.0;
        let up = values(cols * rows, 11 + cols as u64, 2.0);
        let silu = ggml::gated(&gate, &up, cols, false);
        let gelu = ggml::gated(&gate, &up, cols, true);
        for k in paths() {
            let mut ours = gate.clone();
            for (g, u) in ours.chunks_mut(cols).zip(up.chunks(cols)) {
                k.silu_mul(g, u);
            }
            assert_bits(&format!("swiglu {cols} {}", k.path()), &ours, &silu);
            let mut ours = gate.clone();
            for (g, u) in ours.chunks_mut(cols).zip(up.chunks(cols)) {
                k.gelu_tanh_mul(g, u);
            }
            assert_bits(&format!("geglu {cols} {}", k.path()), &ours, &gelu);
        }
    }
}

#[test]
fn f32_and_f16_matrix_products_match_ggml() {
    for (cols, rows, n) in [
        (64usize, 9usize, 3usize),
        (576, 7, 2),
        (100, 5, 4),
        (33, 3, 1),
        // Row counts of a multiple of 4 with a batch: ggml's batched (tinyBLAS) order.
        (576, 8, 3),
        (64, 12, 9),
        (100, 8, 3),
        (36, 4, 2),
    ] {
        let w = values(rows * cols, 3 * cols as u64, 1.0);
        let x = values(n * cols, 5 * cols as u64, 3.0);
        for (ty, sys_ty) in [
            (GgmlType::F32, sys::GGML_TYPE_F32),
            (GgmlType::F16, sys::GGML_TYPE_F16),
        ] {
            let wb: Vec<u8> = match ty {
                GgmlType::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
                _ => w
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
            };
            let theirs = ggml::mul_mat(sys_ty, &wb, rows, cols, &x);
            for k in paths() {
                let row = ty.row_size(cols).unwrap();
                let mut xq = vec![0u8; n * row];
                for (xr, q) in x.chunks(cols).zip(xq.chunks_mut(row)) {
                    k.quantize_row(ty, xr, q);
                }
                // matmul picks the order (single-row dot or batched) as the forward pass does.
                let mut ours = vec![0f32; n * rows];
                k.matmul(ty, &wb, rows, cols, &xq, n, &mut ours);
                assert_bits(
                    &format!("mul_mat {ty} {cols}x{rows} {}", k.path()),
                    &ours,
                    &theirs,
                );
            }
        }
    }
}

/// cos/sin as ggml_rope_cache_init makes them without YaRN: the angle advances by repeated f32
/// multiplication from the position.
fn rope_table(pos: i32, n_rot: usize, base: f32) -> (Vec<f32>, Vec<f32>) {
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    let (mut c, mut s) = (vec![0f32; n_rot / 2], vec![0f32; n_rot / 2]);
    for i in 0..n_rot / 2 {
        c[i] = theta.cos();
        s[i] = theta.sin();
        theta *= theta_scale;
    }
    (c, s)
}

#[test]
fn rope_matches_ggml_in_both_layouts() {
    let (hd, nh) = (64usize, 3usize);
    let pos: Vec<i32> = vec![0, 1, 7, 100, 511, 4000];
    for (neox, n_rot) in [(false, 64usize), (true, 64), (true, 32)] {
        let x = values(hd * nh * pos.len(), 99, 2.0);
        let theirs = ggml::rope(&x, hd, nh, &pos, n_rot, 10000.0, neox);
        for k in paths() {
            let mut ours = x.clone();
            for (t, &p) in pos.iter().enumerate() {
                let (c, s) = rope_table(p, n_rot, 10000.0);
                k.rope(
                    &mut ours[t * hd * nh..(t + 1) * hd * nh],
                    nh,
                    hd,
                    n_rot,
                    &c,
                    &s,
                    neox,
                );
            }
            assert_bits(
                &format!("rope neox={neox} n_rot={n_rot} {}", k.path()),
                &ours,
                &theirs,
            );
        }
    }
}

/// One attention case: `n_tok` queries at positions `p0..p0 + n_tok` over a cache of `n_kv`
/// cells, each query seeing `window` positions back (all when None).
#[allow(clippy::too_many_arguments)]
fn check_attention(
    ty: GgmlType,
    hd: usize,
    nh: usize,
    nkh: usize,
    p0: usize,
    n_tok: usize,
    n_kv: usize,
    window: Option<usize>,
) {
    let sys_ty = match ty {
        GgmlType::F32 => sys::GGML_TYPE_F32,
        _ => sys::GGML_TYPE_F16,
    };
    let q = values(nh * n_tok * hd, 1 + hd as u64, 2.0);
    let kf = values(nkh * n_kv * hd, 2 + n_kv as u64, 2.0);
    let vf = values(nkh * n_kv * hd, 3 + p0 as u64, 1.0);
    let enc = |v: f32| -> Vec<u8> {
        match ty {
            GgmlType::F32 => v.to_le_bytes().to_vec(),
            _ => half::f16::from_f32(v).to_le_bytes().to_vec(),
        }
    };
    // ggml layouts: k [kv head][cell][dim], v^T [kv head][dim][cell].
    let k_g: Vec<u8> = kf.iter().flat_map(|&v| enc(v)).collect();
    let mut v_t = Vec::new();
    for g in 0..nkh {
        for d in 0..hd {
            for t in 0..n_kv {
                v_t.extend(enc(vf[(g * n_kv + t) * hd + d]));
            }
        }
    }
    let visible = |r: usize| {
        let end = p0 + r + 1;
        window.map_or(0, |w| end.saturating_sub(w))..end
    };
    let mut mask = vec![f32::NEG_INFINITY; n_tok * n_kv];
    for r in 0..n_tok {
        for t in visible(r) {
            mask[r * n_kv + t] = 0.0;
        }
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let theirs = ggml::attention(
        &q, &k_g, &v_t, sys_ty, &mask, hd, nh, nkh, n_tok, n_kv, scale,
    );
    // lckv's cache: [cell][kv head][dim] for both K and V.
    let layout = KvLayout::new(ty, nkh, hd).unwrap();
    let (mut kc, mut vc) = (Vec::new(), Vec::new());
    for t in 0..n_kv {
        for g in 0..nkh {
            for d in 0..hd {
                kc.extend(enc(kf[(g * n_kv + t) * hd + d]));
                vc.extend(enc(vf[(g * n_kv + t) * hd + d]));
            }
        }
    }
    for k in paths() {
        let mut scratch = OwnedAttnScratch::new(n_kv, hd);
        let mut ours = vec![0f32; theirs.len()];
        for h in 0..nh {
            for r in 0..n_tok {
                let (at, qat) = ((h * n_tok + r) * hd, (r * nh + h) * hd);
                k.attend(
                    &AttnQuery {
                        kv: KvView {
                            layout,
                            k: &kc,
                            v: &vc,
                        },
                        kv_head: h / (nh / nkh),
                        visible: visible(r),
                        q: &q[qat..qat + hd],
                        scale,
                        batched: n_tok >= 2,
                    },
                    &mut scratch.view(),
                    &mut ours[at..at + hd],
                );
            }
        }
        assert_bits(
            &format!(
                "attention {ty} hd={hd} heads={nh}/{nkh} p0={p0} n_kv={n_kv} window={window:?} {}",
                k.path()
            ),
            &ours,
            &theirs,
        );
    }
}

#[test]
fn attention_matches_ggml_on_f32_and_f16_caches() {
    for ty in [GgmlType::F32, GgmlType::F16] {
        // SmolLM2's shape (GQA 9/3, head 64), prompt and decode positions.
        check_attention(ty, 64, 9, 3, 0, 8, 64, None);
        check_attention(ty, 64, 9, 3, 40, 1, 64, None);
        check_attention(ty, 64, 9, 3, 200, 3, 256, None);
        // Gemma 3 270M's shape: head 256, 4 query heads on one kv head.
        check_attention(ty, 256, 4, 1, 0, 6, 256, None);
        if ty == GgmlType::F32 {
            // Longer batches. With an F16 cache ggml parts from lckv here from the 15th query of
            // a 20-token batch on (a known gap, not yet explained), so only F32 is claimed.
            check_attention(ty, 256, 4, 1, 0, 20, 256, None);
            check_attention(ty, 64, 9, 3, 0, 20, 256, None);
        }
        // A head size with leftovers past the 32-element steps, no GQA.
        check_attention(ty, 80, 2, 2, 5, 6, 32, None);
        // Sliding windows that start inside a group of 8 and of 32.
        check_attention(ty, 64, 4, 1, 90, 4, 128, Some(13));
        check_attention(ty, 64, 4, 2, 250, 2, 256, Some(100));
    }
}

/// Quantized weights against activations quantized on the fly, one row and batched (where ggml
/// may take llamafile's quantized GEMM): lckv's x86 dot kernels against ggml's `mul_mat` bit for
/// bit, the portable twins within 1e-5 of the largest output. A llama.cpp model repacks Q4_0/Q4_K
/// weights of a multiple of 8 rows into kernels of another order, which lckv follows there and
/// which a plain ggml context does not run: those are held to 1e-5 here and checked bit for bit
/// by the model parity tests (tests/parity_llamacpp.rs).
#[test]
fn quantized_matrix_products_match_ggml() {
    for (cols, rows) in [(512usize, 60usize), (256, 12), (1024, 36), (512, 64)] {
        quantized_products(cols, rows);
    }
}

fn quantized_products(cols: usize, rows: usize) {
    let w = values(rows * cols, 17, 1.0);
    for (ty, sys_ty) in [
        (GgmlType::Q8_0, sys::GGML_TYPE_Q8_0),
        (GgmlType::Q4_0, sys::GGML_TYPE_Q4_0),
        (GgmlType::Q4_1, sys::GGML_TYPE_Q4_1),
        (GgmlType::Q5_0, sys::GGML_TYPE_Q5_0),
        (GgmlType::Q4K, sys::GGML_TYPE_Q4_K),
        (GgmlType::Q6K, sys::GGML_TYPE_Q6_K),
    ] {
        let row = ty.row_size(cols).unwrap();
        let mut wb = vec![0u8; rows * row];
        for (src, dst) in w.chunks(cols).zip(wb.chunks_mut(row)) {
            lckv_kernels::quant::quantize_row(ty, src, dst);
        }
        // One set of activation rows, its first n taken for each batch size.
        let all = values(20 * cols, 23, 3.0);
        for n in [1usize, 2, 5, 8, 19, 20] {
            let x = &all[..n * cols];
            let theirs = ggml::mul_mat(sys_ty, &wb, rows, cols, x);
            for k in paths() {
                let aty = ty.vec_dot_type();
                let mut xq = vec![0u8; n * aty.row_size(cols).unwrap()];
                for (xr, q) in x
                    .chunks(cols)
                    .zip(xq.chunks_mut(aty.row_size(cols).unwrap()))
                {
                    k.quantize_row(aty, xr, q);
                }
                let mut ours = vec![0f32; n * rows];
                k.matmul(ty, &wb, rows, cols, &xq, n, &mut ours);
                let what = format!("mul_mat {ty} {rows}x{cols} n={n} {}", k.path());
                // Q4_0/Q4_K weights of a multiple of 8 rows take the repacked order (which a
                // plain ggml context does not run); the model parity tests check those.
                let repacked =
                    rows.is_multiple_of(8) && matches!(ty, GgmlType::Q4_0 | GgmlType::Q4K);
                let x86 = matches!(k.path(), KernelPath::Avx2 | KernelPath::Avx512);
                if x86 && !repacked {
                    assert_bits(&what, &ours, &theirs);
                } else {
                    // The portable twins add block sums in ggml's generic order instead.
                    let scale = theirs.iter().fold(1f32, |m, v| m.max(v.abs()));
                    for (a, b) in ours.iter().zip(&theirs) {
                        assert!((a - b).abs() <= 1e-5 * scale, "{what}: {a} vs {b}");
                    }
                }
            }
        }
    }
}

/// Embedding lookups: lckv's dequantization of every weight type against ggml's `get_rows`.
#[test]
fn embedding_rows_match_ggml() {
    let (cols, rows) = (512usize, 16usize);
    let w = values(rows * cols, 29, 1.0);
    for (ty, sys_ty) in [
        (GgmlType::F16, sys::GGML_TYPE_F16),
        (GgmlType::Q8_0, sys::GGML_TYPE_Q8_0),
        (GgmlType::Q4_0, sys::GGML_TYPE_Q4_0),
        (GgmlType::Q4_1, sys::GGML_TYPE_Q4_1),
        (GgmlType::Q5_0, sys::GGML_TYPE_Q5_0),
        (GgmlType::Q4K, sys::GGML_TYPE_Q4_K),
        (GgmlType::Q6K, sys::GGML_TYPE_Q6_K),
    ] {
        let row = ty.row_size(cols).unwrap();
        let mut wb = vec![0u8; rows * row];
        for (src, dst) in w.chunks(cols).zip(wb.chunks_mut(row)) {
            lckv_kernels::quant::quantize_row(ty, src, dst);
        }
        let ids: Vec<i32> = (0..rows as i32).rev().collect();
        let theirs = ggml::get_rows(sys_ty, &wb, rows, cols, &ids);
        for k in paths() {
            let mut ours = vec![0f32; ids.len() * cols];
            for (o, &i) in ours.chunks_mut(cols).zip(&ids) {
                k.dequantize_row(ty, &wb[i as usize * row..][..row], o);
            }
            assert_bits(&format!("get_rows {ty} {}", k.path()), &ours, &theirs);
        }
    }
}
