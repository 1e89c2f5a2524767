//! `lckv convert` on a checkpoint whose tokenizer.json is SentencePiece-style (Llama, TinyLlama,
//! the published LCKV checkpoints): BPE with byte fallback, `<0xXX>` byte tokens, U+2581 for
//! spaces. The tokenizer.json is written from llama.cpp's ggml-vocab-llama-spm vocabulary as
//! transformers would write it (tests/spm_fixture), in both of transformers' spellings. The
//! converted GGUF must carry llama.cpp's own vocabulary fields (tokens, scores, types, special
//! ids, flags) and tokenize llama.cpp's test strings (test-tokenizer-0's .inp/.out) to
//! llama.cpp's ids. Unsupported or malformed tokenizer.json files must be refused with an error
//! that names the problem, and no output written.

mod common;
mod spm_fixture;
mod tokenizer_common;

use std::path::{Path, PathBuf};

use lckv::gguf::GgufFile;
use serde_json::{json, Value};
use spm_fixture::{scratch, tokenizer_config, tokenizer_json, write_checkpoint, Style};
use tokenizer_common::{load_vocab, vocab_cases};

const VOCAB: &str = "ggml-vocab-llama-spm";

/// The checkpoint of `style` in a fresh folder, converted with the `lckv` binary to f32.
fn convert_fixture(style: Style) -> (PathBuf, PathBuf) {
    let v = load_vocab(VOCAB);
    let dir = scratch(&format!("{style:?}"));
    write_checkpoint(&dir, v.tokens.len());
    let write = |name: &str, j: &Value| std::fs::write(dir.join(name), j.to_string()).unwrap();
    write("tokenizer.json", &tokenizer_json(&v, style));
    write("tokenizer_config.json", &tokenizer_config(&v));
    let out = dir.join("out.gguf");
    let run = common::lckv(&[
        "convert",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "f32",
    ]);
    assert!(
        run.status.success(),
        "lckv convert failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    (dir, out)
}

/// Every tokenizer field llama.cpp's GGUF has must be in the converted one with the same value,
/// plus the chat template; nothing but the template may be added.
fn check_fields(out: &Path) {
    let v = load_vocab(VOCAB);
    let g = GgufFile::open(out).unwrap();
    let key = |k: &str| format!("tokenizer.ggml.{k}");
    assert_eq!(g.get_str(&key("model")).unwrap(), Some("llama"));
    let tokens = g.get_str_array(&key("tokens")).unwrap().expect("tokens");
    assert_eq!(tokens.len(), v.tokens.len(), "token count");
    let bad_tokens = (0..tokens.len())
        .filter(|&i| tokens[i] != v.tokens[i])
        .count();
    assert_eq!(bad_tokens, 0, "tokens that differ from llama.cpp's");
    let types: Vec<i64> = g
        .get_array(&key("token_type"))
        .unwrap()
        .expect("token_type")
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    let want_types = v.token_types.as_ref().unwrap();
    let bad_types: Vec<usize> = (0..types.len())
        .filter(|&i| types[i] != i64::from(want_types[i]))
        .collect();
    assert!(
        bad_types.is_empty(),
        "token types differ at ids {bad_types:?}"
    );
    // A one-character token's score never counts: llama.cpp merges pairs of symbols by the
    // score of their concatenation, which is longer. tokenizer.json cannot tell such scores
    // (its merges hold no one-character result), so these may differ; all others must not.
    let scores = g.get_f32_array(&key("scores")).unwrap().expect("scores");
    let want_scores = v.scores.as_ref().unwrap();
    let differ: Vec<(usize, f32, f32)> = (0..scores.len())
        .filter(|&i| scores[i].to_bits() != want_scores[i].to_bits())
        .map(|i| (i, scores[i], want_scores[i]))
        .collect();
    let (unused, bad): (Vec<(usize, f32, f32)>, Vec<_>) = differ
        .into_iter()
        .partition(|d| v.tokens[d.0].chars().count() == 1);
    assert!(
        bad.is_empty(),
        "{} scores differ (id, got, llama.cpp's): {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    println!(
        "scores: {} of {} equal llama.cpp's; one-character tokens that differ: {unused:?}",
        scores.len() - unused.len(),
        scores.len()
    );
    let u32_key = |k: &str| g.get_u32(&key(k)).unwrap();
    assert_eq!(u32_key("bos_token_id"), v.bos, "bos");
    assert_eq!(u32_key("eos_token_id"), v.eos, "eos");
    assert_eq!(u32_key("unknown_token_id"), v.unk, "unk");
    assert_eq!(u32_key("padding_token_id"), v.pad, "pad");
    let bool_key = |k: &str| g.get_bool(&key(k)).unwrap();
    assert_eq!(bool_key("add_bos_token"), v.add_bos, "add_bos");
    assert_eq!(bool_key("add_eos_token"), v.add_eos, "add_eos");
    assert_eq!(bool_key("add_space_prefix"), v.add_space_prefix);
    assert_eq!(
        g.get_str("tokenizer.chat_template").unwrap(),
        Some(spm_fixture::CHAT_TEMPLATE)
    );
    let extra: Vec<&str> = g
        .metadata()
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("tokenizer.") && *k != "tokenizer.chat_template")
        .filter(|k| {
            let short = k.trim_start_matches("tokenizer.ggml.");
            ![
                "model",
                "pre",
                "tokens",
                "scores",
                "token_type",
                "bos_token_id",
                "eos_token_id",
                "unknown_token_id",
                "add_bos_token",
                "add_eos_token",
            ]
            .contains(&short)
        })
        .collect();
    assert!(extra.is_empty(), "keys llama.cpp's file lacks: {extra:?}");
}

/// The converted model's tokenizer on llama.cpp's test strings, as test-tokenizer-0 runs them.
fn check_tokenization(out: &Path) -> usize {
    let m = common::load_model(out);
    let tok = m.tokenizer().unwrap();
    let cases = vocab_cases(VOCAB);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false, false).unwrap();
        if &got != want {
            failures.push(format!("  {text:?}\n    want {want:?}\n    got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} strings tokenize unlike llama.cpp:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // add_special puts BOS in front, as the file asks.
    assert_eq!(tok.encode("Hello", true, false).unwrap()[0], 1);
    cases.len()
}

#[test]
fn normalizer_style_converts_to_llama_cpp_vocabulary() {
    let (dir, out) = convert_fixture(Style::Normalizer);
    check_fields(&out);
    let n = check_tokenization(&out);
    println!("normalizer style: fields equal, {n}/{n} strings as llama.cpp");
    // The fixture itself must be a faithful Llama tokenizer.json: the tokenizers crate (what
    // transformers runs) gives llama.cpp's ids on it too.
    let hf = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let cases = vocab_cases(VOCAB);
    let differ: Vec<&str> = cases
        .iter()
        .filter(|(t, want)| hf.encode(t.as_str(), false).unwrap().get_ids() != want.as_slice())
        .map(|(t, _)| t.as_str())
        .collect();
    assert!(
        differ.is_empty(),
        "the fixture tokenizer.json disagrees with llama.cpp on {differ:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn metaspace_style_converts_to_llama_cpp_vocabulary() {
    let (dir, out) = convert_fixture(Style::Metaspace);
    check_fields(&out);
    let n = check_tokenization(&out);
    println!("metaspace style: fields equal, {n}/{n} strings as llama.cpp");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small SentencePiece-style tokenizer.json for the refusal tests, over the tiny checkpoint's
/// 300 ids.
fn small_spm() -> Value {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(t.to_string(), json!(i));
    }
    for b in 0..256 {
        vocab.insert(format!("<0x{b:02X}>"), json!(3 + b));
    }
    for (i, t) in ["\u{2581}", "a", "b", "\u{2581}a", "ab"].iter().enumerate() {
        vocab.insert(t.to_string(), json!(259 + i));
    }
    json!({
        "added_tokens": [{"id": 1, "content": "<s>", "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}",
                          "prepend_scheme": "first", "split": false},
        "decoder": {"type": "Metaspace", "replacement": "\u{2581}",
                    "prepend_scheme": "first", "split": false},
        "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true,
                  "vocab": vocab, "merges": [["\u{2581}", "a"], ["a", "b"]]}
    })
}

/// Converting a tiny checkpoint whose tokenizer.json is `text` must fail with an error holding
/// every needle, and write nothing.
fn expect_refused(tag: &str, text: &str, needles: &[&str]) {
    let dir = scratch(tag);
    write_checkpoint(&dir, 300);
    std::fs::write(dir.join("tokenizer.json"), text).unwrap();
    let out = dir.join("out.gguf");
    let run = common::lckv(&[
        "convert",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{tag}: converted, should be refused");
    assert!(!err.contains("panicked"), "{tag}: panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{tag}: message lacks {n:?}: {err}");
    }
    assert!(!out.exists(), "{tag}: an output was written");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn small_spm_tokenizer_converts_and_tokenizes() {
    // The positive control of the refusals below: the unmodified file converts.
    let dir = scratch("small");
    write_checkpoint(&dir, 300);
    std::fs::write(dir.join("tokenizer.json"), small_spm().to_string()).unwrap();
    let out = dir.join("out.gguf");
    let run = common::lckv(&[
        "convert",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "f32",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let m = common::load_model(&out);
    let tok = m.tokenizer().unwrap();
    // "▁a" "b" beats "▁" "ab": the merge "▁ a" is ranked first. "c" is not a token: its byte.
    assert_eq!(
        tok.encode("ab c", false, false).unwrap(),
        vec![262, 261, 259, 3 + 0x63]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_or_unsupported_tokenizers_are_refused() {
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut j = small_spm();
        f(&mut j);
        j.to_string()
    };
    expect_refused("not-json", "{\"model\": ", &["tokenizer.json"]);
    expect_refused(
        "unigram",
        &edit(&|j| j["model"]["type"] = json!("Unigram")),
        &["only byte-level BPE and SentencePiece-style"],
    );
    expect_refused(
        "split",
        &edit(&|j| j["pre_tokenizer"]["split"] = json!(true)),
        &["tokenizer.json", "splits at spaces", "--vocab-from"],
    );
    expect_refused(
        "beyond",
        &edit(&|j| j["model"]["vocab"]["zz"] = json!(300)),
        &["\"zz\"", "id 300", "vocab_size 300"],
    );
    expect_refused(
        "vocab-list",
        &edit(&|j| j["model"]["vocab"] = json!(["a", "b"])),
        &["model.vocab is not an object"],
    );
    expect_refused(
        "nfkc",
        &edit(&|j| j["normalizer"] = json!({"type": "NFKC"})),
        &["normalizer step", "NFKC"],
    );
    expect_refused(
        "merge",
        &edit(&|j| j["model"]["merges"] = json!([7])),
        &["merge 7"],
    );
    expect_refused(
        "no-spaces",
        &edit(&|j| j["pre_tokenizer"] = Value::Null),
        &["U+2581"],
    );
    expect_refused(
        "bad-id",
        &edit(&|j| j["model"]["vocab"]["zz"] = json!("x")),
        &["\"zz\"", "no integer id"],
    );
}
