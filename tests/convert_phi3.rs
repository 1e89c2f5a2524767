//! `lckv convert` on Phi-3 checkpoints against transformers' own `Phi3ForCausalLM`
//! (tests/fixtures/phi3_tiny and phi3_partial_rotary, made by
//! tests/reference/make_phi3_fixture.py): the fused QKV and gate/up matrices, NeoX RoPE with
//! LongRoPE's two factor sets and attention factor, grouped KV heads, the sliding window, and
//! Phi-4-mini's partial rotary embedding all go through the converter and lckv's forward, and
//! the logits must be PyTorch's.
//!
//! Which LongRoPE factors: transformers picks them per call by sequence length (long when the
//! sequence is longer than `original_max_position_embeddings`, 16 here), lckv and llama.cpp by
//! context size (long when n_ctx exceeds it). The fixture's 20-token prompt is scored by
//! PyTorch with the long factors, and lckv runs it with n_ctx 64: long on both sides. Its first
//! 16 tokens alone are scored with the short factors, and lckv runs them with n_ctx 16: short on
//! both sides.
//!
//! Tolerance, max |lckv - PyTorch| / max |PyTorch|: f32 GGUF 1e-4 (both compute in f32 from the
//! same weights; only summation order and libm's exp/cos/sin differ; measured 3e-7 to 1e-6 on
//! logits of up to 4.2). A q8_0 GGUF 5e-2: weights round to 8 bits per block of 32 (up to 1/254
//! of the block's largest weight) and lckv rounds activations to 8 bits before each product, as
//! llama.cpp does, through every matrix of the model; measured 2.2e-2 to 3.4e-2. What these
//! tests catch is larger: before the converter wrote LongRoPE's attention factor, the f32 error
//! was 0.2 to 0.4; before it read rope_theta and partial_rotary_factor from transformers 5's
//! `rope_parameters` too, 0.7 to 0.8.

mod common;

use std::path::PathBuf;

use common::{f32_session, prompt_logits, rel_err};
use lckv::gguf::GgufFile;
use lckv::model::forward::Logits;
use lckv::model::Model;
use lckv::session::{PrefillChoice, Session};
use lckv_kernels::GgmlType;
use serde_json::Value;

const F32_TOL: f32 = 1e-4;
const Q8_TOL: f32 = 5e-2;

struct Fixture {
    dir: PathBuf,
    prompt: Vec<u32>,
    n_short: usize,
}

fn fixture(name: &str) -> Fixture {
    let dir = common::fixture(name);
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let prompt = common::token_ids(&cases["prompt"]);
    let n_short = cases["n_short"].as_u64().unwrap() as usize;
    Fixture {
        dir,
        prompt,
        n_short,
    }
}

fn npy(f: &Fixture, name: &str) -> Vec<f32> {
    lckv::npy::read_f32(&f.dir.join(name)).unwrap().1
}

/// The fixture checkpoint converted to a GGUF of `ty` in the temp dir.
fn converted(name: &str, ty: GgmlType) -> PathBuf {
    common::convert_to_temp(&fixture(name).dir, ty)
}

fn session(m: &Model, n_ctx: usize) -> Session<'_> {
    f32_session(m, n_ctx, PrefillChoice::Sequential)
}

fn check(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let e = rel_err(got, want);
    eprintln!("{what}: max |lckv - PyTorch| / max |PyTorch| = {e:.2e}");
    assert!(e <= tol, "{what}: relative logit error {e} > {tol}");
}

/// Both factor sets, prefill and decode, at `ty`.
fn check_fixture(name: &str, ty: GgmlType, tol: f32) {
    let f = fixture(name);
    let path = converted(name, ty);
    let m = common::load_model(&path);
    let v = m.cfg.n_vocab;
    let long = npy(&f, "logits_long.npy");
    let short = npy(&f, "logits_short.npy");
    // The two factor sets must give visibly different logits, or a wrong choice would pass.
    assert!(
        rel_err(&long[..f.n_short * v], &short) > 0.1,
        "{name}: factor sets too alike"
    );
    let t = ty.name();
    check(
        &format!("{name} {t} long factors, prefill"),
        &prompt_logits(&mut session(&m, 64), &f.prompt),
        &long,
        tol,
    );
    check(
        &format!("{name} {t} short factors, prefill"),
        &prompt_logits(&mut session(&m, f.n_short), &f.prompt[..f.n_short]),
        &short,
        tol,
    );
    // The cache path: the first 8 tokens prefilled, the rest decoded one at a time (past the
    // sliding window where there is one).
    let split = 8;
    let mut s = session(&m, 64);
    s.prefill(&f.prompt[..split], Logits::Last, &mut |_, _| {})
        .unwrap();
    let mut decoded = Vec::new();
    for &tok in &f.prompt[split..] {
        decoded.extend_from_slice(s.decode(tok).unwrap());
    }
    check(
        &format!("{name} {t} long factors, decode"),
        &decoded,
        &long[split * v..],
        tol,
    );
    drop(s);
    drop(m);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn phi3_f32_matches_pytorch() {
    check_fixture("phi3_tiny", GgmlType::F32, F32_TOL);
}

#[test]
fn phi3_q8_0_stays_near_pytorch() {
    check_fixture("phi3_tiny", GgmlType::Q8_0, Q8_TOL);
}

#[test]
fn phi3_partial_rotary_f32_matches_pytorch() {
    check_fixture("phi3_partial_rotary", GgmlType::F32, F32_TOL);
}

#[test]
fn phi3_partial_rotary_q8_0_stays_near_pytorch() {
    check_fixture("phi3_partial_rotary", GgmlType::Q8_0, Q8_TOL);
}

/// The sliding window (12) is shorter than the prompt (20): the fixture's own record shows it
/// changes positions 12.. and nothing before, so matching `logits_long.npy` above means lckv
/// applies it as transformers does (each query sees its last 12 positions, itself included).
#[test]
fn phi3_window_shapes_the_fixture() {
    let f = fixture("phi3_tiny");
    let v = 256;
    let (long, nowin) = (
        npy(&f, "logits_long.npy"),
        npy(&f, "logits_long_nowindow.npy"),
    );
    let w = 12 * v;
    assert_eq!(rel_err(&long[..w], &nowin[..w]), 0.0);
    assert!(rel_err(&long[w..], &nowin[w..]) > 0.1);
}

/// The metadata llama.cpp's converter writes for Phi-3, read back from the converted file:
/// LongRoPE's attention factor sqrt(1 + ln(256/16) / ln 16) = sqrt(2), the pre-training length,
/// the window, and the rotated dimensions (all 16 of a head; 8 of 16 with
/// partial_rotary_factor 0.5). rope_theta lives only inside `rope_parameters` in
/// transformers 5 configs.
#[test]
fn phi3_metadata_follows_the_config() {
    for (name, n_rot, window, theta, attn) in [
        ("phi3_tiny", 16, Some(12), 25000.0, 2f32.sqrt()),
        (
            "phi3_partial_rotary",
            8,
            None,
            10000.0,
            (1.0 + (64f32 / 16.0).ln() / 16f32.ln()).sqrt(),
        ),
    ] {
        let path = converted(name, GgmlType::F32);
        let g = GgufFile::open(&path).unwrap();
        let u = |k: &str| g.get_u32(&format!("phi3.{k}")).unwrap();
        let fl = |k: &str| g.get_f32(&format!("phi3.{k}")).unwrap().unwrap();
        assert_eq!(u("rope.dimension_count"), Some(n_rot), "{name}");
        assert_eq!(
            u("rope.scaling.original_context_length"),
            Some(16),
            "{name}"
        );
        assert_eq!(u("attention.sliding_window"), window, "{name}");
        assert_eq!(fl("rope.freq_base"), theta, "{name}");
        assert!(
            (fl("rope.scaling.attn_factor") - attn).abs() < 1e-6,
            "{name}"
        );
        for t in ["rope_factors_long.weight", "rope_factors_short.weight"] {
            assert_eq!(g.tensor_info(t).unwrap().dims, vec![n_rot as usize / 2]);
        }
        drop(g);
        std::fs::remove_file(&path).unwrap();
    }
}
