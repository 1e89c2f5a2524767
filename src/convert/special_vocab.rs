//! The special-token metadata of a converted vocabulary: BOS/EOS/UNK/PAD ids, whether BOS/EOS
//! are added, and the chat template, read from a checkpoint's `tokenizer.json`,
//! `tokenizer_config.json`, `chat_template.jinja`/`.json` and `config.json` with the precedence
//! of llama.cpp's `gguf.SpecialVocab`: a token named in tokenizer_config.json wins over a
//! `*_token_id` in config.json; what the tokenizer's post-processor adds wins over the
//! `add_*_token` flags.

use std::path::Path;

use serde_json::Value as Json;

use crate::gguf::{GgufWriter, Value};
use crate::{Error, Result};

/// What `add_to` writes.
#[derive(Debug, Default, PartialEq)]
pub struct SpecialVocab {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub chat_template: Option<String>,
}

fn read_json(path: &Path) -> Result<Option<Json>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Tokenizer(format!("{}: not valid JSON: {e}", path.display()))),
        Err(_) => Ok(None),
    }
}

/// A token named in tokenizer_config.json: a string, or an object with `content`.
fn named_token(v: Option<&Json>) -> Option<&str> {
    match v? {
        Json::String(s) => Some(s),
        Json::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

impl SpecialVocab {
    /// `tokenizer` is the parsed tokenizer.json of `dir`; `n_vocab` bounds the ids.
    pub fn read(dir: &Path, tokenizer: &Json, n_vocab: usize) -> Result<SpecialVocab> {
        let cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Json::Null);
        let config = read_json(&dir.join("config.json"))?.unwrap_or(Json::Null);
        let added: Vec<(&str, u64)> = tokenizer["added_tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a["content"].as_str()?, a["id"].as_u64()?)))
            .collect();
        // As SpecialVocab: the first added token with the configured text; then config.json's id.
        let id = |typ: &str| -> Option<u32> {
            let by_name = named_token(cfg.get(format!("{typ}_token")))
                .and_then(|t| added.iter().find(|(c, _)| *c == t).map(|&(_, i)| i));
            by_name
                .or_else(|| config[format!("{typ}_token_id")].as_u64())
                .filter(|&i| i < n_vocab as u64)
                .map(|i| i as u32)
        };
        let mut sv = SpecialVocab {
            bos: id("bos"),
            eos: id("eos"),
            unk: id("unk"),
            pad: id("pad"),
            add_bos: cfg["add_bos_token"].as_bool(),
            add_eos: cfg["add_eos_token"].as_bool(),
            chat_template: None,
        };
        // A TemplateProcessing post-processor says what encoding with special tokens adds around
        // one sequence; what it does is what the model was trained with.
        let post = &tokenizer["post_processor"];
        let procs: Vec<&Json> = match post["processors"].as_array() {
            Some(a) => a.iter().collect(),
            None => vec![post],
        };
        let text_of = |id: Option<u32>| -> Option<&str> {
            let id = u64::from(id?);
            added.iter().find(|&&(_, i)| i == id).map(|&(c, _)| c)
        };
        for p in procs {
            if p["type"].as_str() != Some("TemplateProcessing") {
                continue;
            }
            let single = p["single"].as_array().map_or(&[][..], |v| v.as_slice());
            if single.len() < 2 {
                continue;
            }
            let special = |e: &Json| e["SpecialToken"]["id"].as_str().map(str::to_string);
            if let Some(first) = special(&single[0]) {
                sv.add_bos = Some(text_of(sv.bos) == Some(first.as_str()));
            }
            if let Some(last) = special(&single[single.len() - 1]) {
                sv.add_eos = Some(text_of(sv.eos) == Some(last.as_str()));
            }
        }
        sv.chat_template = match cfg.get("chat_template") {
            Some(t) => template_of(t),
            None => match std::fs::read_to_string(dir.join("chat_template.jinja")) {
                Ok(t) => Some(t),
                Err(_) => read_json(&dir.join("chat_template.json"))?
                    .and_then(|j| j.get("chat_template").and_then(template_of)),
            },
        };
        Ok(sv)
    }

    pub fn add_to(&self, w: &mut GgufWriter) {
        let ids = [
            ("bos", self.bos),
            ("eos", self.eos),
            ("unknown", self.unk),
            ("padding", self.pad),
        ];
        for (name, id) in ids {
            if let Some(id) = id {
                w.add(&format!("tokenizer.ggml.{name}_token_id"), Value::U32(id));
            }
        }
        for (name, flag) in [("bos", self.add_bos), ("eos", self.add_eos)] {
            if let Some(f) = flag {
                w.add(&format!("tokenizer.ggml.add_{name}_token"), Value::Bool(f));
            }
        }
        if let Some(t) = &self.chat_template {
            w.add("tokenizer.chat_template", Value::String(t.clone()));
        }
    }
}

/// A template string, or from a list of named templates the one named "default" (the one
/// llama.cpp stores as `tokenizer.chat_template`).
fn template_of(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => list
            .iter()
            .find(|t| t["name"].as_str() == Some("default"))
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    }
}
