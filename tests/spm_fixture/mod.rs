//! Builds the Hugging Face side of the SentencePiece conversion tests: a Llama-style
//! `tokenizer.json` written from a GGUF vocabulary (llama.cpp's ggml-vocab-llama-spm, so the
//! test vocabulary is llama.cpp's own) the way transformers' `LlamaConverter` writes one from a
//! SentencePiece model, its `tokenizer_config.json`, and a tiny random Llama checkpoint around
//! it. Nothing here is committed: it is all derived from the vocabulary dump that
//! scripts/fetch_vocab_tests.sh writes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use lckv::tokenizer::GgufVocab;
use safetensors::tensor::TensorView;
use serde_json::{json, Value};

/// How the file spells "spaces are U+2581, one goes in front": transformers' older files use a
/// Prepend + Replace normalizer, newer ones a Metaspace pre-tokenizer and decoder.
#[derive(Clone, Copy, Debug)]
pub enum Style {
    Normalizer,
    Metaspace,
}

pub const CHAT_TEMPLATE: &str = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// The merges transformers' SentencePieceExtractor derives: every split of a token into two
/// tokens, grouped by token in id order, each group ordered by the parts' ids, then all sorted
/// by the token's score, best first (a stable sort).
pub fn merges(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let id: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut all: Vec<(usize, usize, f32, String, String)> = Vec::new();
    for (t, &s) in tokens.iter().zip(scores) {
        let mut local: Vec<(usize, usize, f32, String, String)> = t
            .char_indices()
            .skip(1)
            .filter_map(|(k, _)| {
                let (a, b) = (id.get(&t[..k])?, id.get(&t[k..])?);
                Some((*a, *b, s, t[..k].to_string(), t[k..].to_string()))
            })
            .collect();
        local.sort_by_key(|x| (x.0, x.1));
        all.extend(local);
    }
    all.sort_by(|x, y| y.2.total_cmp(&x.2));
    all.into_iter().map(|x| (x.3, x.4)).collect()
}

/// A Llama tokenizer.json for the SentencePiece vocabulary `v`.
pub fn tokenizer_json(v: &GgufVocab, style: Style) -> Value {
    let scores = v.scores.as_ref().expect("an SPM vocabulary has scores");
    let types = v.token_types.as_ref().expect("and token types");
    let vocab: serde_json::Map<String, Value> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let merges: Vec<Value> = merges(&v.tokens, scores)
        .into_iter()
        .map(|(a, b)| json!([a, b]))
        .collect();
    // unknown and control pieces are the added tokens transformers lists.
    let added: Vec<Value> = types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == 2 || t == 3)
        .map(|(i, _)| {
            json!({"id": i, "content": v.tokens[i], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let bos = &v.tokens[v.bos.expect("bos") as usize];
    let unk = &v.tokens[v.unk.expect("unk") as usize];
    let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}",
                           "prepend_scheme": "first", "split": false});
    let (normalizer, pre, decoder) = match style {
        Style::Normalizer => (
            json!({"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]}),
            Value::Null,
            json!({"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}),
        ),
        Style::Metaspace => (Value::Null, metaspace.clone(), metaspace),
    };
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [v.bos], "tokens": [bos]}}},
        "decoder": decoder,
        "model": {"type": "BPE", "dropout": null, "unk_token": unk,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
}

/// tokenizer_config.json as transformers saves a Llama tokenizer with a chat template.
pub fn tokenizer_config(v: &GgufVocab) -> Value {
    let text = |id: Option<u32>| v.tokens[id.expect("special id") as usize].clone();
    json!({
        "add_bos_token": true, "add_eos_token": false,
        "bos_token": {"content": text(v.bos), "lstrip": false, "normalized": false,
                      "rstrip": false, "single_word": false, "__type": "AddedToken"},
        "eos_token": text(v.eos), "unk_token": text(v.unk), "pad_token": null,
        "chat_template": CHAT_TEMPLATE, "legacy": false, "model_max_length": 2048,
        "tokenizer_class": "LlamaTokenizer"
    })
}

/// A one-layer Llama checkpoint (hidden 8, 2 heads, tied embeddings) with `n_vocab` tokens and
/// fixed pseudo-random weights: config.json and model.safetensors in `dir`.
pub fn write_checkpoint(dir: &Path, n_vocab: usize) {
    let (hidden, ffn) = (8usize, 16usize);
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": n_vocab,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "float32"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = [
        ("model.embed_tokens.weight", vec![n_vocab, hidden]),
        ("model.norm.weight", vec![hidden]),
        ("model.layers.0.input_layernorm.weight", vec![hidden]),
        (
            "model.layers.0.post_attention_layernorm.weight",
            vec![hidden],
        ),
        (
            "model.layers.0.self_attn.q_proj.weight",
            vec![hidden, hidden],
        ),
        (
            "model.layers.0.self_attn.k_proj.weight",
            vec![hidden, hidden],
        ),
        (
            "model.layers.0.self_attn.v_proj.weight",
            vec![hidden, hidden],
        ),
        (
            "model.layers.0.self_attn.o_proj.weight",
            vec![hidden, hidden],
        ),
        ("model.layers.0.mlp.gate_proj.weight", vec![ffn, hidden]),
        ("model.layers.0.mlp.up_proj.weight", vec![ffn, hidden]),
        ("model.layers.0.mlp.down_proj.weight", vec![hidden, ffn]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .enumerate()
        .map(|(k, (_, s))| {
            let n: usize = s.iter().product();
            (0..n)
                .flat_map(|i| {
                    let x = ((i * 7919 + k * 104729) % 1000) as f32 / 1000.0 - 0.5;
                    (x * 0.2).to_le_bytes()
                })
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView)> = shapes
        .iter()
        .zip(&data)
        .map(|((n, s), d)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
}

/// A fresh, empty folder under the system temp dir.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lckv-spm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
