//! LCKV plans against the independent PyTorch reference (tests/reference/): each fixture
//! checkpoint is converted to an f32 GGUF with `lckv convert`, run by lckv with an f32 KV
//! cache, and its logits compared with the recorded ones for the 5-token prefix, the 40-token
//! prompt through iterative and sequential prefill, and 16 decode steps after each.
//!
//! Tolerance: max |lckv - reference| / max |reference| <= 1e-3 per case. Both sides compute
//! in f32 with different summation orders over 22 layers; the reference's own numpy
//! cross-check agrees with it within 1.6e-4, and the cases differ from each other by 0.26 to 4.9.

mod common;

use std::path::{Path, PathBuf};

use common::{f32_session, load_converted, max_abs_diff, prompt_logits, rel_err, token_ids};
use lckv::model::Model;
use lckv::session::PrefillChoice;
use lckv_kernels::GgmlType;
use serde_json::Value;

fn fixture_dir(plan: &str) -> PathBuf {
    common::fixture(&format!("lckv/{plan}"))
}

fn npy(dir: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    lckv::npy::read_f32(&dir.join(name)).unwrap()
}

/// Checks the relative error against the tolerance and returns it.
fn assert_close(what: &str, got: &[f32], want: &[f32]) -> f32 {
    let err = rel_err(got, want);
    assert!(err <= 1e-3, "{what}: relative error {err} exceeds 1e-3");
    err
}

fn load(plan: &str) -> Model {
    load_converted(&fixture_dir(plan), GgmlType::F32)
}

/// Prompt logits (all positions) then the decode steps, as (prompt, decode) rows.
fn run(m: &Model, prefill: PrefillChoice, prompt: &[u32], steps: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let mut s = f32_session(m, 64, prefill);
    let p = prompt_logits(&mut s, prompt);
    let mut d = Vec::new();
    for &t in steps {
        d.extend_from_slice(s.decode(t).unwrap());
    }
    (p, d)
}

fn check(plan: &str) {
    let dir = fixture_dir(plan);
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let c = &cases["cases"];
    let m = load(plan);
    let prompt = token_ids(&c["prompt_sequential"]["tokens"]);
    let prefix = token_ids(&c["prefix5"]["tokens"]);
    let (p5, _) = run(&m, PrefillChoice::Iterative, &prefix, &[]);
    let mut report = vec![assert_close(
        &format!("{plan} prefix5"),
        &p5,
        &npy(&dir, "prefix5_logits.npy").1,
    )];
    for (mode, choice) in [
        ("iterative", PrefillChoice::Iterative),
        ("sequential", PrefillChoice::Sequential),
    ] {
        let steps = token_ids(&c[format!("decode_after_{mode}")]["input_tokens"]);
        let (p, d) = run(&m, choice, &prompt, &steps);
        report.push(assert_close(
            &format!("{plan} prompt {mode}"),
            &p,
            &npy(&dir, &format!("prompt_{mode}_logits.npy")).1,
        ));
        report.push(assert_close(
            &format!("{plan} decode after {mode}"),
            &d,
            &npy(&dir, &format!("decode_after_{mode}_logits.npy")).1,
        ));
    }
    eprintln!("{plan}: relative error prefix5 {:.2e}, iterative {:.2e} / decode {:.2e}, sequential {:.2e} / decode {:.2e}", report[0], report[1], report[2], report[3], report[4]);
}

#[test]
fn standard_plan_matches_reference() {
    check("standard");
}

#[test]
fn lckv_top_w2_matches_reference() {
    check("lckv_top_w2");
}

#[test]
fn lckv_w10_matches_reference() {
    check("lckv_w10");
}

#[test]
fn sandwich_middle_matches_reference() {
    check("lckv_sandwich_middle");
}

#[test]
fn cla_pairs_match_reference() {
    check("cla_pairs");
}

#[test]
fn yoco_with_sliding_windows_matches_reference() {
    check("yoco");
}

#[test]
fn yoco_with_visible_diagonal_matches_reference() {
    check("yoco_diag");
}

/// The first m+b positions of an iterative prefill equal sequential prefill, and decoding after
/// a sequential prefill equals running the whole sequence one token at a time.
#[test]
fn iterative_prefix_and_decode_are_self_consistent() {
    let m = load("lckv_top_w2");
    let v = m.cfg.n_vocab;
    let passes = m.cfg.plan.passes();
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir("lckv_top_w2").join("cases.json")).unwrap(),
    )
    .unwrap();
    let prompt = token_ids(&cases["cases"]["prompt_sequential"]["tokens"]);
    let (it, _) = run(&m, PrefillChoice::Iterative, &prompt, &[]);
    let (sq, _) = run(&m, PrefillChoice::Sequential, &prompt, &[]);
    assert_close(
        "iterative vs sequential, first m+b",
        &it[..passes * v],
        &sq[..passes * v],
    );
    let later = max_abs_diff(&it[passes * v..], &sq[passes * v..]);
    assert!(
        later > 1e-2,
        "after m+b positions the strategies should differ, got {later}"
    );
    // Token by token from an empty cache.
    let mut s = f32_session(&m, 64, PrefillChoice::Sequential);
    let mut one = Vec::new();
    for &t in &prompt {
        one.extend_from_slice(s.decode(t).unwrap());
    }
    assert_close("sequential prefill vs one token at a time", &sq, &one);
}
