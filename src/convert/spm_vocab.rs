//! A SentencePiece-style `tokenizer.json` (Llama, TinyLlama and the LCKV checkpoints built on
//! it: a BPE model with `byte_fallback`, `<0xXX>` byte tokens, spaces written as U+2581 by a
//! Metaspace pre-tokenizer or a Prepend/Replace normalizer) to the GGUF vocabulary llama.cpp
//! reads as `tokenizer.ggml.model = "llama"`: tokens, scores, token types, special ids.
//!
//! The file holds no scores, and llama.cpp's SentencePiece tokenizer merges by score, so they
//! are rebuilt. SentencePiece stores a BPE model's pieces best first and scores the k-th
//! ordinary piece -k; transformers' converter keeps those ids and orders the merges by the same
//! scores. So an ordinary token scores minus its rank in id order, except the tokens whose first
//! merge comes after that of a token with a larger id: the merge list ranks them below every
//! ordinary piece (Llama's model scores its runs of U+2581 -1e9, for one), and they get that one
//! shared floor score. llama.cpp's own `LlamaHfVocab` writes -1000 for every token instead, which
//! turns its merging into leftmost-first and tokenizes unlike the checkpoint.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;

use super::special_vocab::SpecialVocab;
use crate::gguf::{GgufWriter, Value};
use crate::{Error, Result};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
pub const NORMAL: i32 = 1;
pub const UNKNOWN: i32 = 2;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const UNUSED: i32 = 5;
pub const BYTE: i32 = 6;

/// The score of tokens the merge list ranks below every ordinary piece (see the top).
pub const FLOOR_SCORE: f32 = -1e9;
/// llama.cpp's score for added tokens and padding slots.
const ADDED_SCORE: f32 = -1000.0;

const SPACE: &str = "\u{2581}";

/// Whether `j` is a tokenizer.json of this kind (the rest is checked by `add`).
pub fn is_spm(j: &Json) -> bool {
    j["model"]["type"].as_str() == Some("BPE")
        && j["model"]["byte_fallback"].as_bool() == Some(true)
}

/// What is wrong with the file; `add` names the file and the way out.
type Bad<T> = std::result::Result<T, String>;

fn bad(msg: impl std::fmt::Display) -> String {
    msg.to_string()
}

/// Whether the pipeline puts U+2581 before the text. Refuses steps llama.cpp's SentencePiece
/// tokenizer does not take (it maps spaces to U+2581, optionally prefixes one, and runs the
/// model on each fragment between special tokens whole).
fn space_prefix(j: &Json) -> Bad<bool> {
    let mut prefix = false;
    let mut spaces_mapped = false;
    let norm = &j["normalizer"];
    let steps: Vec<&Json> = match (norm["type"].as_str(), norm["normalizers"].as_array()) {
        (None, _) if norm.is_null() => vec![],
        (Some("Sequence"), Some(list)) => list.iter().collect(),
        _ => vec![norm],
    };
    for n in steps {
        match n["type"].as_str() {
            Some("Prepend") if n["prepend"].as_str() == Some(SPACE) => prefix = true,
            Some("Replace")
                if n["pattern"]["String"].as_str() == Some(" ")
                    && n["content"].as_str() == Some(SPACE) =>
            {
                spaces_mapped = true
            }
            _ => return Err(bad(format!("normalizer step {n} is not supported"))),
        }
    }
    let pre = &j["pre_tokenizer"];
    if !pre.is_null() {
        if pre["type"].as_str() != Some("Metaspace") || pre["replacement"].as_str() != Some(SPACE) {
            return Err(bad(format!(
                "pre-tokenizer {pre} is not supported (a SentencePiece vocabulary takes a Metaspace with U+2581 or none)"
            )));
        }
        if pre["split"].as_bool() == Some(true) || pre["split"].is_null() {
            // Splitting at every space keeps merges from crossing words, which llama.cpp's
            // SentencePiece tokenizer does not do (older files without `split` split too).
            return Err(bad(
                "a Metaspace pre-tokenizer that splits at spaces is not supported (llama.cpp tokenizes the text unsplit)",
            ));
        }
        spaces_mapped = true;
        prefix |= match pre["prepend_scheme"].as_str() {
            Some("always") | Some("first") => true,
            Some("never") => false,
            _ => pre["add_prefix_space"].as_bool().unwrap_or(true),
        };
    }
    if !spaces_mapped {
        return Err(bad(
            "neither its normalizer nor its pre-tokenizer writes spaces as U+2581",
        ));
    }
    Ok(prefix)
}

/// `<0xXX>`, as llama.cpp's converter recognises byte tokens.
fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && t.starts_with("<0x")
        && b[5] == b'>'
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}

/// The merges as (left, right) pairs, in rank order; both spellings ("a b" and ["a", "b"]).
fn merge_pairs(model: &Json) -> Bad<Vec<(String, String)>> {
    let list = match &model["merges"] {
        Json::Null => return Ok(vec![]),
        Json::Array(a) => a,
        _ => return Err(bad("model.merges is not a list")),
    };
    list.iter()
        .map(|m| {
            let pair = match m {
                Json::String(s) => s.split_once(' ').map(|(a, b)| (a.into(), b.into())),
                Json::Array(p) if p.len() == 2 => p[0]
                    .as_str()
                    .zip(p[1].as_str())
                    .map(|(a, b)| (a.into(), b.into())),
                _ => None,
            };
            pair.ok_or_else(|| bad(format!("merge {m} is neither \"a b\" nor [\"a\", \"b\"]")))
        })
        .collect()
}

/// Scores of `n` tokens of types `types` (see the top): ordinary tokens minus their rank in id
/// order, those the merges rank late `FLOOR_SCORE`, other tokens of the model 0 (as
/// SentencePiece scores control and byte pieces), added and padding tokens -1000.
pub fn scores(
    types: &[i32],
    in_model: &[bool],
    ids: &HashMap<&str, u32>,
    merges: &[(String, String)],
) -> Vec<f32> {
    let mut late = vec![false; types.len()];
    let mut seen = vec![false; types.len()];
    let mut highest = None;
    for (a, b) in merges {
        let Some(&id) = ids.get(format!("{a}{b}").as_str()) else {
            continue;
        };
        let id = id as usize;
        if std::mem::replace(&mut seen[id], true) {
            continue;
        }
        if highest.is_some_and(|h| id < h) {
            late[id] = true;
        } else {
            highest = Some(id);
        }
    }
    let mut rank = 0usize;
    (0..types.len())
        .map(|i| match types[i] {
            NORMAL => {
                rank += 1;
                if late[i] {
                    FLOOR_SCORE
                } else {
                    // 0.0 - x, not -x: the first piece scores +0.0 as SentencePiece writes it.
                    0.0 - (rank - 1) as f32
                }
            }
            _ if in_model[i] => 0.0,
            _ => ADDED_SCORE,
        })
        .collect()
}

/// The vocabulary a tokenizer.json describes, as the GGUF arrays.
pub struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    /// Whether the pipeline puts U+2581 before the text (llama.cpp's add_space_prefix).
    pub space_prefix: bool,
    /// The model's `unk_token`, if it is a token.
    pub unk: Option<u32>,
}

/// Reads the vocabulary of the SentencePiece-style tokenizer.json `j`, sized to `n_vocab` ids
/// (config.json's vocab_size; ids no token takes become unused `[PADi]` tokens).
pub fn vocabulary(j: &Json, n_vocab: usize) -> Bad<SpmVocab> {
    let model = &j["model"];
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab is not an object of token -> id"))?;
    let space_prefix = space_prefix(j)?;
    let merges = merge_pairs(model)?;
    let mut tokens: Vec<Option<String>> = vec![None; n_vocab];
    let mut types = vec![UNUSED; n_vocab];
    let mut in_model = vec![false; n_vocab];
    // Places token `t` at `id` with type `ty`.
    let put = |tokens: &mut Vec<Option<String>>,
               types: &mut Vec<i32>,
               t: &str,
               id: Option<u64>,
               ty: i32|
     -> Bad<usize> {
        let id = id.ok_or_else(|| bad(format!("token {t:?} has no integer id")))?;
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            bad(format!(
                "token {t:?} has id {id}, beyond config.json's vocab_size {n_vocab}"
            ))
        })?;
        *slot = Some(t.to_string());
        types[id as usize] = ty;
        Ok(id as usize)
    };
    let unk_text = model["unk_token"].as_str();
    for (t, id) in vocab {
        let ty = if Some(t.as_str()) == unk_text {
            UNKNOWN
        } else if is_byte_token(t) {
            BYTE
        } else {
            NORMAL
        };
        let i = put(&mut tokens, &mut types, t, id.as_u64(), ty)?;
        in_model[i] = true;
    }
    for a in j["added_tokens"].as_array().into_iter().flatten() {
        let t = a["content"]
            .as_str()
            .ok_or_else(|| bad(format!("added token {a} has no text")))?;
        let special = a["special"].as_bool().unwrap_or(false);
        // The model's own unknown and byte tokens keep their type when listed again.
        let id = a["id"].as_u64();
        let keep = id
            .and_then(|i| types.get(i as usize))
            .is_some_and(|&ty| ty == UNKNOWN || ty == BYTE);
        if !keep {
            let ty = if special { CONTROL } else { USER_DEFINED };
            put(&mut tokens, &mut types, t, id, ty)?;
        }
    }
    let ids: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.as_deref().map(|t| (t, i as u32)))
        .collect();
    let scores = scores(&types, &in_model, &ids, &merges);
    let unk = unk_text.and_then(|t| ids.get(t).copied());
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    Ok(SpmVocab {
        tokens,
        scores,
        types,
        space_prefix,
        unk,
    })
}

/// Writes the vocabulary of the SentencePiece-style tokenizer.json `j` at `path` (in the
/// checkpoint folder `dir`) and its special tokens.
pub fn add(w: &mut GgufWriter, dir: &Path, path: &Path, j: &Json, n_vocab: usize) -> Result<()> {
    let v = vocabulary(j, n_vocab).map_err(|m| {
        Error::Tokenizer(format!(
            "{}: {m}; pass --vocab-from a GGUF with the same vocabulary",
            path.display()
        ))
    })?;
    let mut special = SpecialVocab::read(dir, j, n_vocab)?;
    special.unk = special.unk.or(v.unk);
    w.add("tokenizer.ggml.model", Value::String("llama".into()));
    w.add("tokenizer.ggml.pre", Value::String("default".into()));
    w.add(
        "tokenizer.ggml.tokens",
        Value::Array(v.tokens.into_iter().map(Value::String).collect()),
    );
    w.add(
        "tokenizer.ggml.scores",
        Value::Array(v.scores.into_iter().map(Value::F32).collect()),
    );
    w.add(
        "tokenizer.ggml.token_type",
        Value::Array(v.types.into_iter().map(Value::I32).collect()),
    );
    // llama.cpp prefixes a space unless told not to.
    if !v.space_prefix {
        w.add("tokenizer.ggml.add_space_prefix", Value::Bool(false));
    }
    special.add_to(w);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_id_order_and_late_merges_get_the_floor() {
        // 0 <unk>, 1 <0x41>, 2 a, 3 b, 4 ab, 5 ba, 6 aa: "aa" is merged last though its id
        // is the largest, so it is in order; "ab" is merged after "ba", so it is late.
        let texts = ["<unk>", "<0x41>", "a", "b", "ab", "ba", "aa"];
        let types = [UNKNOWN, BYTE, NORMAL, NORMAL, NORMAL, NORMAL, NORMAL];
        let in_model = [true; 7];
        let ids: HashMap<&str, u32> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, i as u32))
            .collect();
        let m = |a: &str, b: &str| (a.to_string(), b.to_string());
        let merges = [m("b", "a"), m("a", "b"), m("a", "a")];
        let s = scores(&types, &in_model, &ids, &merges);
        assert_eq!(s, vec![0.0, 0.0, 0.0, -1.0, FLOOR_SCORE, -3.0, -4.0]);
    }

    #[test]
    fn byte_tokens_are_exactly_six_chars() {
        assert!(is_byte_token("<0x0A>"));
        assert!(is_byte_token("<0xfF>"));
        assert!(!is_byte_token("<0x0A"));
        assert!(!is_byte_token("<0xZZ>"));
        assert!(!is_byte_token("<0x0AB>"));
    }
}
