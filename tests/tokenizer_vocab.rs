//! llama.cpp's own tokenizer vectors (test-tokenizer-0): every case of the vocabularies used by
//! the llama, phi3, qwen2 and gpt2 architectures must encode to llama.cpp's ids
//! (add_special = false, parse_special = false, as the upstream test runs them). The other
//! byte-level vocabularies whose pre-tokenizer is supported are checked too.

mod tokenizer_common;

use tokenizer_common::{load_tokenizer, vocab_cases};

fn check(name: &str) {
    let tok = load_tokenizer(name);
    let cases = vocab_cases(name);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false, false).expect("encode");
        if &got != want {
            failures.push(format!("  {text:?}\n    want {want:?}\n    got  {got:?}"));
        }
    }
    println!(
        "{name}: {}/{} cases pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn llama_spm() {
    check("ggml-vocab-llama-spm");
}

#[test]
fn llama_bpe() {
    check("ggml-vocab-llama-bpe");
}

#[test]
fn phi_3() {
    check("ggml-vocab-phi-3");
}

#[test]
fn qwen2() {
    check("ggml-vocab-qwen2");
}

#[test]
fn gpt_2() {
    check("ggml-vocab-gpt-2");
}

#[test]
fn starcoder() {
    check("ggml-vocab-starcoder");
}

#[test]
fn refact() {
    check("ggml-vocab-refact");
}

#[test]
fn mpt() {
    check("ggml-vocab-mpt");
}

#[test]
fn command_r() {
    check("ggml-vocab-command-r");
}

#[test]
fn falcon() {
    check("ggml-vocab-falcon");
}

#[test]
fn qwen35() {
    check("ggml-vocab-qwen35");
}
