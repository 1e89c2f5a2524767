//! The tokenizers of the real models (SmolLM2, pre `smollm`; Gemma 3, SentencePiece) against
//! ids recorded from llama.cpp's `llama-tokenize` (tests/fixtures/tokenizer/*.json): English,
//! code, numbers, emoji, CJK, whitespace runs and chat-template special tokens, with and
//! without add_special / parse_special. Plain-text cases must also decode back to the input.

mod tokenizer_common;

use serde::Deserialize;
use tokenizer_common::load_tokenizer;

#[derive(Deserialize)]
struct Case {
    text: String,
    add_special: bool,
    parse_special: bool,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Fixture {
    /// Name of the vocabulary dump (the model file's stem) in models/vocab.
    vocab: String,
    cases: Vec<Case>,
}

fn check(fixture: &str) {
    let path = format!(
        "{}/tests/fixtures/tokenizer/{fixture}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let f: Fixture = serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture"))
        .expect("fixture JSON");
    let tok = load_tokenizer(&f.vocab);
    let mut failures = Vec::new();
    for c in &f.cases {
        let got = tok
            .encode(&c.text, c.add_special, c.parse_special)
            .expect("encode");
        if got != c.ids {
            failures.push(format!(
                "  {:?} (add_special {}, parse_special {})\n    want {:?}\n    got  {:?}",
                c.text, c.add_special, c.parse_special, c.ids, got
            ));
        }
        // Round trip: without added BOS/EOS the pieces spell the input again.
        if !c.add_special {
            let back = tok.decode(&c.ids, false);
            if back != c.text {
                failures.push(format!("  decode of {:?} gave {back:?}", c.text));
            }
        }
    }
    println!(
        "{fixture}: {} cases, {} failures",
        f.cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{fixture}:\n{}", failures.join("\n"));
}

#[test]
fn smollm2_matches_llama_cpp() {
    check("smollm2");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check("gemma3");
}

#[test]
fn smollm2_special_tokens() {
    let tok = load_tokenizer("SmolLM2-135M-Instruct.Q4_1");
    let im_end = tok.token_id("<|im_end|>").unwrap();
    let im_start = tok.token_id("<|im_start|>").unwrap();
    assert!(tok.is_eog(im_end));
    assert!(tok.is_eog(tok.eos().unwrap()));
    assert!(tok.is_eog(tok.token_id("<|endoftext|>").unwrap()));
    assert!(!tok.is_eog(im_start));
    assert!(!tok.is_eog(tok.token_id("Hello").unwrap()));
    assert_eq!(
        tok.encode("<|im_start|>", false, true).unwrap(),
        vec![im_start]
    );
    assert_ne!(
        tok.encode("<|im_start|>", false, false).unwrap(),
        vec![im_start]
    );
    assert_eq!(tok.decode(&[im_start], true), "");
    assert_eq!(tok.decode(&[im_start], false), "<|im_start|>");
    assert_eq!(tok.vocab_size(), 49152);
}

#[test]
fn gemma3_special_tokens() {
    let tok = load_tokenizer("gemma-3-270m-Q4_K_M");
    let eot = tok.token_id("<end_of_turn>").unwrap();
    assert!(tok.is_eog(eot));
    assert!(tok.is_eog(tok.eos().unwrap()));
    assert!(!tok.is_eog(tok.token_id("<start_of_turn>").unwrap()));
    let ids = tok.encode("Hi", true, false).unwrap();
    assert_eq!(ids[0], tok.bos().unwrap());
    assert_eq!(tok.decode(&ids, true), "Hi");
    assert_eq!(tok.vocab_size(), 262144);
}
