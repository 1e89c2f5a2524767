//! Shared helpers for the tokenizer tests: locating the vocabulary dumps written by
//! scripts/fetch_vocab_tests.sh and turning them into `GgufVocab`s.
#![allow(dead_code)]

use std::path::PathBuf;

use lckv::tokenizer::{GgufVocab, Tokenizer};
use serde::Deserialize;

/// The JSON the fetch script writes: GGUF `tokenizer.ggml.*` fields under short names.
#[derive(Deserialize)]
struct VocabJson {
    model: String,
    pre: Option<String>,
    tokens: Vec<String>,
    scores: Option<Vec<f32>>,
    token_types: Option<Vec<i32>>,
    merges: Option<Vec<String>>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    add_space_prefix: Option<bool>,
}

pub fn vocab_dir() -> PathBuf {
    let models = std::env::var_os("LCKV_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    models.join("vocab")
}

/// Reads `<vocab_dir>/<name>.json`; a missing file fails the test with the fix.
pub fn load_vocab(name: &str) -> GgufVocab {
    let path = vocab_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/fetch_vocab_tests.sh first",
            path.display()
        )
    });
    let j: VocabJson = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: bad vocabulary dump: {e}", path.display()));
    GgufVocab {
        model: j.model,
        pre: j.pre,
        tokens: j.tokens,
        scores: j.scores,
        token_types: j.token_types,
        merges: j.merges,
        bos: j.bos,
        eos: j.eos,
        eot: j.eot,
        eom: j.eom,
        unk: j.unk,
        pad: j.pad,
        add_bos: j.add_bos,
        add_eos: j.add_eos,
        add_space_prefix: j.add_space_prefix,
    }
}

pub fn load_tokenizer(name: &str) -> Tokenizer {
    Tokenizer::from_gguf_vocab(&load_vocab(name))
        .unwrap_or_else(|e| panic!("building the {name} tokenizer: {e}"))
}

/// llama.cpp's test-tokenizer-0 cases: inputs separated by "\n__ggml_vocab_test__\n" in
/// `.inp`, expected ids one line per case (space separated) in `.out`.
pub fn vocab_cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let dir = vocab_dir();
    let inp_path = dir.join(format!("{name}.gguf.inp"));
    let out_path = dir.join(format!("{name}.gguf.out"));
    let inp = std::fs::read_to_string(&inp_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/fetch_vocab_tests.sh first",
            inp_path.display()
        )
    });
    let out = std::fs::read_to_string(&out_path)
        .unwrap_or_else(|e| panic!("{}: {e}", out_path.display()));
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(k) => {
                inputs.push(inp[pos..pos + k].to_string());
                pos += k + sep.len();
            }
            None => {
                inputs.push(inp[pos..].to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: .inp and .out disagree on the case count"
    );
    inputs.into_iter().zip(outputs).collect()
}
