//! Construction from an HF `tokenizer.json` (and `tokenizer_config.json` beside it): the file's
//! model, normalizer and pre-tokenizer run as they are; added tokens are split out first with
//! llama.cpp's rules, so both sources behave alike around special tokens.

use std::path::Path;

use serde_json::Value;

use super::build::{finish, Parts};
use super::*;

fn err(m: impl Into<String>) -> Error {
    Error::Tokenizer(m.into())
}

fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn is_byte_level(v: &Value) -> bool {
    match v {
        Value::Object(o) => {
            o.get("type").and_then(Value::as_str) == Some("ByteLevel")
                || o.values().any(is_byte_level)
        }
        Value::Array(a) => a.iter().any(is_byte_level),
        _ => false,
    }
}

pub(crate) fn from_json_file(path: &Path) -> Result<Tokenizer, Error> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading tokenizer file {}", path.display()), e))?;
    let doc: Value = serde_json::from_str(&raw).map_err(|e| {
        err(format!(
            "{} is not valid JSON ({e}); pass an HF tokenizer.json",
            path.display()
        ))
    })?;
    let full = tokenizers::Tokenizer::from_file(path).map_err(|e| {
        err(format!(
            "{} is not a tokenizer.json the tokenizers crate can load: {e}",
            path.display()
        ))
    })?;
    let byte_level = is_byte_level(doc.get("pre_tokenizer").unwrap_or(&Value::Null))
        || is_byte_level(doc.get("decoder").unwrap_or(&Value::Null));

    let vocab = full.get_vocab(true);
    let n = vocab.values().copied().max().map_or(0, |m| m as usize + 1);
    if n == 0 {
        return Err(err(format!("{} has an empty vocabulary", path.display())));
    }
    let mut texts: Vec<Option<String>> = vec![None; n];
    for (t, &id) in &vocab {
        texts[id as usize] = Some(t.clone());
    }
    let texts: Vec<String> = texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.filter(|t| !t.is_empty())
                .unwrap_or_else(|| format!("[EMPTY_{i}]"))
        })
        .collect();
    let mut attrs = vec![ATTR_NORMAL; n];
    if !byte_level {
        for (t, a) in texts.iter().zip(attrs.iter_mut()) {
            let b = t.as_bytes();
            if b.len() == 6
                && t.starts_with("<0x")
                && t.ends_with('>')
                && b[3].is_ascii_hexdigit()
                && b[4].is_ascii_hexdigit()
            {
                *a = ATTR_BYTE;
            }
        }
    }
    for (id, tok) in full.get_added_tokens_decoder() {
        if let Some(a) = attrs.get_mut(id as usize) {
            *a = if tok.special {
                ATTR_CONTROL
            } else {
                ATTR_USER_DEFINED
            };
        }
    }

    let mut hf = tokenizers::Tokenizer::new(full.get_model().clone());
    hf.with_normalizer(full.get_normalizer().cloned())
        .map_err(|e| err(format!("normalizer of {}: {e}", path.display())))?;
    hf.with_pre_tokenizer(full.get_pre_tokenizer().cloned());
    hf.with_decoder(full.get_decoder().cloned());

    let cfg_path = path.with_file_name("tokenizer_config.json");
    let cfg: Value = match std::fs::read_to_string(&cfg_path) {
        Ok(s) => serde_json::from_str(&s)
            .map_err(|e| err(format!("{} is not valid JSON ({e})", cfg_path.display())))?,
        Err(_) => Value::Null,
    };
    let id_of = |key: &str| -> Option<u32> {
        token_text(cfg.get(key)).and_then(|t| vocab.get(&t).copied())
    };
    let bos = id_of("bos_token");
    let eos = id_of("eos_token");
    // Without explicit flags, see what the file's post-processor adds around a plain word.
    let with = full
        .encode("a", true)
        .map(|e| e.get_ids().to_vec())
        .unwrap_or_default();
    let without = full
        .encode("a", false)
        .map(|e| e.get_ids().to_vec())
        .unwrap_or_default();
    let added = with.len() > without.len();
    let add_bos = cfg
        .get("add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or(added && bos.is_some() && with.first().copied() == bos);
    let add_eos = cfg
        .get("add_eos_token")
        .and_then(Value::as_bool)
        .unwrap_or(added && eos.is_some() && with.last().copied() == eos);
    let clean_spaces = cfg
        .get("clean_up_tokenization_spaces")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // A Metaspace/Prepend pipeline puts a space before the first word; decoding drops it.
    let first_piece_spaced = hf
        .encode_fast("a", false)
        .ok()
        .and_then(|e| e.get_ids().first().copied())
        .and_then(|id| texts.get(id as usize))
        .is_some_and(|t| t.starts_with('\u{2581}'));
    let parts = Parts {
        kind: if byte_level {
            Kind::ByteBpe
        } else {
            Kind::Json
        },
        hf,
        texts,
        attrs,
        bos,
        eos,
        eot: None,
        eom: None,
        add_bos,
        add_eos,
        add_space_prefix: !byte_level && first_piece_spaced,
        clean_spaces,
    };
    Ok(finish(parts))
}
