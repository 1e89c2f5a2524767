//! Parity with llama.cpp (feature `reference`): on the real SmolLM2 and Gemma 3 files and on
//! random-weight GGUFs of every architecture, for five varied prompts, lckv must tokenize
//! identically, produce the same logits at every prompt position within the stated tolerance,
//! and produce the identical 64-token greedy continuation.
//!
//! Tolerances, as max |lckv - llama.cpp| / max(1, max |llama.cpp|) over all positions:
//! - F32 weights: 1e-4. Both compute in f32 from the same weights; what differs is summation
//!   order (llama.cpp's tiled GEMM for batches) and libm's exp/cos.
//! - Quantized weights: 2e-2. Activations are quantized to 8 bits before each product (in both
//!   implementations, with the same rounding rule); a last-bit difference in an activation can
//!   move it to the neighbouring 8-bit level, an error of up to 1/127 of the row's largest value
//!   that then propagates through the layers. Greedy continuations must still be identical.
//! Both sides keep the KV cache in f32 so that cache rounding does not blur the comparison.
#![cfg(feature = "reference")]

mod common;

use lckv::model::forward::Logits;
use lckv::model::{LoadOptions, Model};
use lckv::reference::{LlamaCpp, RefOptions};
use lckv::session::{Session, SessionOptions};
use lckv_kernels::GgmlType;

const PROMPTS: [&str; 5] = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Once upon a time, in a small village by the sea, there lived",
    "1, 2, 3, 5, 8, 13, 21,",
    "Explain why the sky is blue in one sentence. Über café 東京 🙂",
];
const N_GREEDY: usize = 64;

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in l.iter().enumerate() {
        if v > l[best] {
            best = i;
        }
    }
    best as u32
}

fn session(m: &Model) -> Session<'_> {
    let opts = SessionOptions { n_ctx: 256, n_batch: 128, kv_type: GgmlType::F32, logit_rows: 8, ..SessionOptions::default() };
    Session::new(m, lckv_kernels::kernels(), opts).unwrap()
}

/// Returns the worst relative logit error over the prompts.
fn check(rel: &str, tol: f32) -> f32 {
    let path = common::model_path(rel);
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let tok = model.tokenizer().unwrap();
    let mut reference = LlamaCpp::load(&path, &RefOptions { n_ctx: 256, n_threads: 2, kv_f32: true, flash_attn: false }).unwrap();
    let v = model.cfg.n_vocab;
    assert_eq!(reference.n_vocab(), v, "{rel}: vocabulary size");
    let mut worst = 0f32;
    for prompt in PROMPTS {
        let ids = tok.encode(prompt, true, false).unwrap();
        assert_eq!(ids, reference.tokenize(prompt, true, false), "{rel}: tokens of {prompt:?}");
        let want = reference.logits(&ids);
        let mut s = session(&model);
        let mut got = vec![0f32; ids.len() * v];
        s.prefill(&ids, Logits::All, &mut |i, l| got[i * v..(i + 1) * v].copy_from_slice(l)).unwrap();
        let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
        let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err <= tol, "{rel}: logits of {prompt:?} differ by {err:.3e} relative, above {tol:.0e}");
        worst = worst.max(err);

        let ref_greedy = reference.greedy(&ids, N_GREEDY);
        let mut ours = Vec::with_capacity(N_GREEDY);
        let mut next = argmax(s.logits());
        for step in 0..N_GREEDY {
            ours.push(next);
            if step + 1 < N_GREEDY {
                next = argmax(s.decode(next).unwrap());
            }
        }
        assert_eq!(ours, ref_greedy, "{rel}: greedy continuation of {prompt:?}");
    }
    eprintln!("parity {rel}: {} prompts, {N_GREEDY} greedy tokens identical, max relative logit error {worst:.3e}", PROMPTS.len());
    worst
}

#[test]
fn smollm2_q4_1_matches_llamacpp() {
    check("SmolLM2-135M-Instruct.Q4_1.gguf", 2e-2);
}

#[test]
fn gemma3_q4_k_m_matches_llamacpp() {
    check("gemma-3-270m-Q4_K_M.gguf", 2e-2);
}

#[test]
fn llama_f32_matches_llamacpp() {
    check("random/llama-tiny-f32.gguf", 1e-4);
}

#[test]
fn llama3_rope_freqs_f32_matches_llamacpp() {
    check("random/llama3-tiny-f32.gguf", 1e-4);
}

#[test]
fn phi3_f32_matches_llamacpp() {
    check("random/phi3-tiny-f32.gguf", 1e-4);
}

#[test]
fn qwen2_f32_matches_llamacpp() {
    check("random/qwen2-tiny-f32.gguf", 1e-4);
}

#[test]
fn gemma3_f32_matches_llamacpp() {
    check("random/gemma3-tiny-f32.gguf", 1e-4);
}

#[test]
fn quantized_random_models_match_llamacpp() {
    for rel in [
        "random/llama-tiny-f16.gguf",
        "random/llama-tiny-q8_0.gguf",
        "random/llama-tiny-q4_0.gguf",
        "random/llama-tiny-q4_1.gguf",
        "random/llama-tiny-q5_0.gguf",
        "random/llama-tiny-q4_k.gguf",
        "random/llama-tiny-q6_k.gguf",
        "random/phi3-tiny-q4_0.gguf",
        "random/qwen2-tiny-q8_0.gguf",
        "random/gemma3-tiny-q4_k.gguf",
    ] {
        check(rel, 2e-2);
    }
}
