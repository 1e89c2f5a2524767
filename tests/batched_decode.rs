//! Sessions decoded together match sessions decoded alone. Several sessions of one arena
//! (`Forward` with slots) prefill different prompts, then decode in one batch per step, each row
//! reading its own KV cache; every step's logits are compared with the same session run by
//! itself. The batch takes the multi-token matrix kernels, which keep the one-token kernels'
//! summation order on x86, and each row's attention keeps the one-token order, so the logits are
//! the same bits (`TOLERANCE` is 0, on the largest logit difference relative to the largest
//! logit). Greedy tokens must be the same.
//! Run on the real SmolLM2 (standard plan) and on the shipped LCKV model (a condensed plan whose
//! middle layers attend up).

mod common;

use lckv::model::forward::{Forward, Logits, Prefill, Row};
use lckv::model::{LoadOptions, Model};
use lckv::session::{PrefillChoice, Session, SessionOptions};
use lckv_kernels::GgmlType;

/// Largest |logit difference| / largest |logit| allowed between a batched and a lone session.
const TOLERANCE: f32 = 0.0;

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in l.iter().enumerate() {
        if x > l[best] {
            best = i;
        }
    }
    best as u32
}

fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn opts() -> SessionOptions {
    SessionOptions {
        n_ctx: 128,
        n_batch: 32,
        kv_type: GgmlType::F16,
        prefill: PrefillChoice::Sequential,
        ..SessionOptions::default()
    }
}

/// Greedy continuation of `prompt` by a lone session: the logits of each step.
fn alone(m: &Model, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
    let mut s = Session::new(m, lckv_kernels::kernels(), opts()).unwrap();
    s.prefill(prompt, Logits::Last, &mut |_, _| {}).unwrap();
    let mut out = vec![s.logits().to_vec()];
    for _ in 1..steps {
        let t = argmax(out.last().unwrap());
        out.push(s.decode(t).unwrap().to_vec());
    }
    out
}

// `step` indexes every session's expected logits and drives the decode: a counted loop reads best.
#[allow(clippy::needless_range_loop)]
fn check(model: &str) {
    let m = Model::load(&common::model_path(model), &LoadOptions::default()).unwrap();
    let tok = m.tokenizer().unwrap();
    let prompts: Vec<Vec<u32>> = [
        "The capital of France is",
        "Once upon a time, in a small village by the sea,",
        "1, 2, 3, 4,",
        "Water boils at",
    ]
    .iter()
    .map(|p| tok.encode(p, true, false).unwrap())
    .collect();
    let steps = 12;
    let want: Vec<_> = prompts.iter().map(|p| alone(&m, p, steps)).collect();

    let dims = opts().dims();
    let kern = lckv_kernels::kernels();
    let mut fwd = Forward::new(&m, kern, dims, prompts.len()).unwrap();
    let mut n_past = vec![0; prompts.len()];
    // Prefill in a different order than the slots, so a slot's cache is not its neighbour's.
    for slot in [2, 0, 3, 1] {
        let p = &prompts[slot];
        fwd.forward(
            &m,
            slot,
            p,
            0,
            Prefill::Sequential,
            Logits::Last,
            &mut |_, _| {},
        )
        .unwrap();
        n_past[slot] = p.len();
    }
    let mut worst = 0f32;
    // Sessions leave the batch at different steps, as clients finish at their own pace:
    // session `slot` runs its first `last_step[slot]` steps.
    let last_step = [steps, steps - 2, steps - 4, steps - 5];
    for step in 0..steps {
        let mut rows = Vec::new();
        let mut tokens = Vec::new();
        for slot in (0..prompts.len()).filter(|&s| step < last_step[s]) {
            let got = fwd.last_logits(slot);
            let d = rel_diff(got, &want[slot][step]);
            worst = worst.max(d);
            assert!(
                d <= TOLERANCE,
                "{model}: session {slot} step {step}: batched logits differ by {d} (relative)"
            );
            let t = argmax(got);
            assert_eq!(
                t,
                argmax(&want[slot][step]),
                "{model}: session {slot} step {step}: greedy token differs"
            );
            rows.push(Row {
                slot,
                pos: n_past[slot],
            });
            tokens.push(t);
        }
        if step + 1 < steps {
            fwd.decode_batch(&m, &tokens, &rows, &mut |_, _| {})
                .unwrap();
            for r in &rows {
                n_past[r.slot] += 1;
            }
        }
    }
    eprintln!("{model}: largest relative logit difference, batched vs alone: {worst:.2e}");
}

#[test]
fn batched_sessions_match_lone_sessions_standard_plan() {
    check("SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn batched_sessions_match_lone_sessions_condensed_plan() {
    let shipped =
        common::repo_root().join("models-lckv/smollm2-135m-lckv-sandwich-middle.Q4_0.gguf");
    let rel = shipped.to_str().unwrap().to_string();
    check(&rel);
}

#[test]
fn a_batch_refuses_a_session_twice_or_past_its_context() {
    let m = Model::load(
        &common::model_path("SmolLM2-135M-Instruct.Q4_1.gguf"),
        &LoadOptions::default(),
    )
    .unwrap();
    let mut fwd = Forward::new(&m, lckv_kernels::kernels(), opts().dims(), 2).unwrap();
    let twice = [Row { slot: 1, pos: 0 }, Row { slot: 1, pos: 1 }];
    assert!(fwd
        .decode_batch(&m, &[1, 2], &twice, &mut |_, _| {})
        .is_err());
    let outside = [Row { slot: 2, pos: 0 }];
    assert!(fwd
        .decode_batch(&m, &[1], &outside, &mut |_, _| {})
        .is_err());
    let past = [Row { slot: 0, pos: 128 }];
    assert!(fwd.decode_batch(&m, &[1], &past, &mut |_, _| {}).is_err());
}
