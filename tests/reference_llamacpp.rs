//! The llama.cpp oracle itself: it must tokenize as the model's own vocabulary says, give finite,
//! causal logits, and continue a factual prompt sensibly; and every random test model the
//! generator writes must load in it (the generator's correctness is judged by llama.cpp).
#![cfg(feature = "reference")]

mod common;

use common::model_path;
use lckv::reference::{LlamaCpp, RefOptions};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

// Expected ids, looked up once by hand in SmolLM2's token list (tokenizer.ggml.tokens): these
// words are whole byte-level BPE tokens ("Hello" = 19556, "Ġworld" = 905, "The" = 504,
// "Ġcapital" = 3575, "Ġof" = 282, "ĠFrance" = 4649, "Ġis" = 314, "ĠParis" = 7042), and the
// Hugging Face tokenizer of SmolLM2 gives the same ids for these texts.
const HELLO_WORLD: [u32; 2] = [19556, 905];
const CAPITAL_PROMPT: &str = "The capital of France is";
const CAPITAL_IDS: [u32; 5] = [504, 3575, 282, 4649, 314];
const PARIS: u32 = 7042;
const IM_START: u32 = 1;

fn smollm2() -> LlamaCpp {
    LlamaCpp::load(&model_path(SMOLLM2), &RefOptions::default()).expect("load SmolLM2")
}

#[test]
fn smollm2_tokenizes_like_its_vocabulary() {
    let m = smollm2();
    assert_eq!(m.n_vocab(), 49152);
    assert_eq!(m.tokenize("Hello world", true, false), HELLO_WORLD);
    assert_eq!(m.tokenize(CAPITAL_PROMPT, true, false), CAPITAL_IDS);
    // Special-token text is one id only when asked for.
    assert_eq!(m.tokenize("<|im_start|>", false, true), [IM_START]);
    assert!(m.tokenize("<|im_start|>", false, false).len() > 1);
    assert!(m.tokenize("", false, false).is_empty());
}

#[test]
fn smollm2_logits_are_finite_and_causal() {
    let mut m = smollm2();
    let n_vocab = m.n_vocab();
    let full = m.logits(&CAPITAL_IDS);
    assert_eq!(full.len(), CAPITAL_IDS.len() * n_vocab);
    assert!(full.iter().all(|v| v.is_finite()), "non-finite logits");
    for row in full.chunks(n_vocab) {
        let (lo, hi) = row
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(hi - lo > 1.0, "a flat logit row ({lo}..{hi})");
    }
    // A prefix run on a cleared sequence gives the same rows: the memory is really cleared and
    // attention is causal. Different batch sizes may sum in another order: 1e-3 relative.
    let prefix = m.logits(&CAPITAL_IDS[..2]);
    for (i, (a, b)) in prefix.iter().zip(&full[..2 * n_vocab]).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1.0),
            "logit {i}: prefix run {a} vs full run {b}"
        );
    }
}

#[test]
fn smollm2_greedy_knows_paris() {
    let mut m = smollm2();
    let prompt = m.tokenize(CAPITAL_PROMPT, true, false);
    let out = m.greedy(&prompt, 8);
    assert_eq!(out.len(), 8);
    assert!(
        out.contains(&PARIS),
        "greedy continuation {out:?} lacks \" Paris\" ({PARIS})"
    );
    // The first greedy token is the argmax of the batch logits' last row.
    let n_vocab = m.n_vocab();
    let logits = m.logits(&prompt);
    let last = &logits[(prompt.len() - 1) * n_vocab..];
    let best = (0..n_vocab).fold(0, |b, i| if last[i] > last[b] { i } else { b });
    assert_eq!(out[0] as usize, best);
    let (pp, tg) = m.decode_timed(&prompt, 4);
    assert!(
        pp.is_finite() && pp > 0.0 && tg.is_finite() && tg > 0.0,
        "rates {pp} {tg}"
    );
}

#[test]
fn random_test_models_load_and_give_finite_logits() {
    let models = [
        "llama-tiny-f32",
        "phi3-tiny-f32",
        "qwen2-tiny-f32",
        "gemma3-tiny-f32",
        "phi3-tiny-q4_0",
        "qwen2-tiny-q8_0",
        "gemma3-tiny-q4_k",
        "llama-tiny-f16",
        "llama-tiny-q8_0",
        "llama-tiny-q4_0",
        "llama-tiny-q4_1",
        "llama-tiny-q5_0",
        "llama-tiny-q4_k",
        "llama-tiny-q6_k",
        "llama3-tiny-f32",
    ];
    for name in models {
        let path = model_path(&format!("random/{name}.gguf"));
        let mut m = LlamaCpp::load(&path, &RefOptions::default()).expect(name);
        assert_eq!(m.n_vocab(), 8192, "{name}");
        // The truncated SmolLM2 vocabulary keeps these words whole: same ids as the full one.
        let ids = m.tokenize(CAPITAL_PROMPT, true, false);
        assert_eq!(ids, CAPITAL_IDS, "{name}");
        // Longer than gemma3-tiny's sliding window (16), so that path runs too.
        let long: Vec<u32> = (0..24).map(|i| CAPITAL_IDS[i % 5]).collect();
        let logits = m.logits(&long);
        assert!(
            logits.iter().all(|v| v.is_finite()),
            "{name}: non-finite logits"
        );
        let last = &logits[23 * 8192..];
        let spread = last.iter().fold(f32::MIN, |a, &b| a.max(b))
            - last.iter().fold(f32::MAX, |a, &b| a.min(b));
        assert!(spread > 0.05, "{name}: degenerate logits (spread {spread})");
    }
}

#[test]
fn lckv_models_are_refused_not_crashed() {
    // Consumer layers have no K/V projections: plain llama.cpp must reject the file cleanly.
    let path = model_path("random/llama-lckv-0_3_3_3-f32.gguf");
    let err = LlamaCpp::load(&path, &RefOptions::default())
        .err()
        .expect("llama.cpp loaded a model without attn_k in layer 1");
    assert!(err.contains("could not load"), "{err}");
    assert!(LlamaCpp::load(
        &model_path(SMOLLM2).with_extension("missing"),
        &RefOptions::default()
    )
    .is_err());
}
