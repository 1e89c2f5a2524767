//! The LCKV model shipped in models-lckv/ (SmolLM2-135M uptrained into the sandwich-middle plan):
//! it loads with its plan, keeps 3 of 30 layers of cache (a tenth of the standard KV bytes), its
//! iterative prefill equals sequential prefill on the first m + b positions as the technique
//! promises, and decoding after a sequential prefill equals running token by token.

mod common;

use common::{f32_session, prompt_logits, rel_err};
use lckv::model::kv_plan::KvPlan;
use lckv::model::Model;
use lckv::session::PrefillChoice;
use lckv_kernels::GgmlType;

fn model() -> Model {
    common::load_model(
        &common::repo_root().join("models-lckv/smollm2-135m-lckv-sandwich-middle.Q4_0.gguf"),
    )
}

fn logits(m: &Model, prefill: PrefillChoice, tokens: &[u32]) -> Vec<f32> {
    prompt_logits(&mut f32_session(m, 128, prefill), tokens)
}

#[test]
fn shipped_model_has_a_condensed_plan() {
    let m = model();
    let plan = &m.cfg.plan;
    assert_eq!(plan.producers(), vec![0, 14, 29]);
    assert!(plan.force_nodiag);
    assert_eq!(plan.passes(), 9);
    let mut standard = m.cfg.clone();
    standard.plan = KvPlan::identity(30);
    let condensed = m.cfg.kv_bytes_per_token(GgmlType::F16).unwrap();
    assert_eq!(condensed, 2304);
    assert_eq!(
        condensed * 10,
        standard.kv_bytes_per_token(GgmlType::F16).unwrap()
    );
}

#[test]
fn shipped_model_prefill_strategies_agree_where_they_must() {
    let m = model();
    let tok = m.tokenizer().unwrap();
    let ids = tok.encode("Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition", true, false).unwrap();
    assert!(ids.len() > 12);
    let v = m.cfg.n_vocab;
    let p = m.cfg.plan.passes();
    let it = logits(&m, PrefillChoice::Iterative, &ids);
    let sq = logits(&m, PrefillChoice::Sequential, &ids);
    // Same arithmetic on the first m + b positions; only batch-dependent summation differs.
    let err = rel_err(&it[..p * v], &sq[..p * v]);
    assert!(err <= 1e-3, "first {p} positions differ by {err} relative");
    // One token at a time from an empty cache is the sequential prefill.
    let mut s = f32_session(&m, 128, PrefillChoice::Sequential);
    let mut one = Vec::new();
    for &t in &ids {
        one.extend_from_slice(s.decode(t).unwrap());
    }
    let err = rel_err(&one, &sq);
    assert!(
        err <= 1e-3,
        "token-by-token vs sequential prefill differ by {err} relative"
    );
}
