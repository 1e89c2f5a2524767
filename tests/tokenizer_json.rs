//! `Tokenizer::from_json_file`: GPT-2's vocabulary written as a standard HF tokenizer.json
//! (byte-level BPE) plus tokenizer_config.json must reproduce llama.cpp's gpt-2 vectors, and
//! the config's BOS/EOS settings must be honoured.

mod tokenizer_common;

use lckv::tokenizer::Tokenizer;
use serde_json::json;
use tokenizer_common::{load_vocab, vocab_cases};

fn write_gpt2_json(dir: &std::path::Path, add_bos: bool) -> std::path::PathBuf {
    let v = load_vocab("ggml-vocab-gpt-2");
    let vocab: serde_json::Map<String, serde_json::Value> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{
            "id": 50256, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
            "vocab": vocab, "merges": v.merges.unwrap()
        }
    });
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let cfg = json!({
        "bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"},
        "add_bos_token": add_bos, "clean_up_tokenization_spaces": true
    });
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    path
}

#[test]
fn gpt2_tokenizer_json_matches_llama_cpp_vectors() {
    let dir = std::env::temp_dir().join(format!("lckv-tokjson-{}", std::process::id()));
    let tok = Tokenizer::from_json_file(&write_gpt2_json(&dir, true)).unwrap();
    let cases = vocab_cases("ggml-vocab-gpt-2");
    let mut bad = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false, false).unwrap();
        if &got != want {
            bad.push(format!("{text:?}: want {want:?} got {got:?}"));
        }
    }
    println!(
        "gpt-2 via tokenizer.json: {}/{} cases pass",
        cases.len() - bad.len(),
        cases.len()
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));

    assert_eq!(tok.bos(), Some(50256));
    assert_eq!(tok.eos(), Some(50256));
    assert!(tok.is_eog(50256));
    assert_eq!(
        tok.encode("Hello", true, false).unwrap(),
        vec![50256, 15496]
    );
    // The special token is split out only with parse_special.
    assert_eq!(
        tok.encode("a<|endoftext|>", false, true).unwrap(),
        vec![64, 50256]
    );
    assert_ne!(
        tok.encode("a<|endoftext|>", false, false).unwrap(),
        vec![64, 50256]
    );
    assert_eq!(tok.decode(&[15496, 11, 995, 0], false), "Hello, world!");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_or_broken_file_is_an_error() {
    let dir = std::env::temp_dir().join(format!("lckv-tokjson-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = Tokenizer::from_json_file(&dir.join("nope.json"))
        .err()
        .unwrap();
    assert!(missing.to_string().contains("nope.json"), "{missing}");
    std::fs::write(dir.join("tokenizer.json"), "{ not json").unwrap();
    let broken = Tokenizer::from_json_file(&dir.join("tokenizer.json"))
        .err()
        .unwrap();
    assert!(broken.to_string().contains("not valid JSON"), "{broken}");
    std::fs::remove_dir_all(&dir).ok();
}
