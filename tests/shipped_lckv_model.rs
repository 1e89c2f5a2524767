//! The LCKV model shipped in models-lckv/ (SmolLM2-135M uptrained into the sandwich-middle plan):
//! it loads with its plan, keeps 3 of 30 layers of cache (a tenth of the standard KV bytes), its
//! iterative prefill equals sequential prefill on the first m + b positions as the technique
//! promises, and decoding after a sequential prefill equals running token by token.

use std::path::Path;

use lckv::model::forward::Logits;
use lckv::model::kv_plan::KvPlan;
use lckv::model::{LoadOptions, Model};
use lckv::session::{PrefillChoice, Session, SessionOptions};
use lckv_kernels::GgmlType;

fn model() -> Model {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models-lckv/smollm2-135m-lckv-sandwich-middle.Q4_0.gguf");
    Model::load(&p, &LoadOptions::default()).unwrap()
}

fn logits(m: &Model, prefill: PrefillChoice, tokens: &[u32]) -> Vec<f32> {
    let v = m.cfg.n_vocab;
    let opts = SessionOptions {
        n_ctx: 128,
        n_batch: 128,
        kv_type: GgmlType::F32,
        prefill,
        early_exit: None,
        logit_rows: 8,
    };
    let mut s = Session::new(m, lckv_kernels::kernels(), opts).unwrap();
    let mut out = vec![0f32; tokens.len() * v];
    s.prefill(tokens, Logits::All, &mut |i, l| {
        out[i * v..(i + 1) * v].copy_from_slice(l)
    })
    .unwrap();
    out
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
    let scale = sq.iter().fold(1f32, |a, x| a.max(x.abs()));
    let err = it[..p * v]
        .iter()
        .zip(&sq[..p * v])
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    // Same arithmetic on the first m + b positions; only batch-dependent summation differs.
    assert!(err <= 1e-3 * scale, "first {p} positions differ by {err}");
    // One token at a time from an empty cache is the sequential prefill.
    let mut s = Session::new(
        &m,
        lckv_kernels::kernels(),
        SessionOptions {
            n_ctx: 128,
            kv_type: GgmlType::F32,
            ..Default::default()
        },
    )
    .unwrap();
    let mut one = Vec::new();
    for &t in &ids {
        one.extend_from_slice(s.decode(t).unwrap());
    }
    let err = one
        .iter()
        .zip(&sq)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(
        err <= 1e-3 * scale,
        "token-by-token vs sequential prefill differ by {err}"
    );
}
