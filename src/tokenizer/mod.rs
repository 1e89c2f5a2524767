//! Tokenizer: text <-> token ids with llama.cpp's semantics, built on the `tokenizers` crate.
//!
//! A GGUF vocabulary (`tokenizer.ggml.*`) or an HF `tokenizer.json` becomes a `tokenizers` BPE
//! model (byte-level for "gpt2" vocabularies, score-ranked merges with byte fallback for
//! SentencePiece "llama" vocabularies). Special-token splitting, BOS/EOS rules, the
//! end-of-generation set and token pieces follow llama.cpp (`llama-vocab.cpp`), which is the
//! oracle the tests compare against. Streaming detokenization lives in [`stream`].

mod build;
mod json;
mod stream;

use std::path::Path;

pub use stream::StreamDecoder;

use crate::Error;

/// Everything a GGUF (tokenizer.ggml.*) says about the vocabulary.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// "llama" (SentencePiece) | "gpt2" (BPE).
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    pub token_types: Option<Vec<i32>>,
    pub merges: Option<Vec<String>>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
}

// Token attributes, as llama.cpp's llama_token_attr (bit flags).
pub(crate) const ATTR_UNDEFINED: u8 = 0;
pub(crate) const ATTR_UNKNOWN: u8 = 1 << 0;
pub(crate) const ATTR_UNUSED: u8 = 1 << 1;
pub(crate) const ATTR_NORMAL: u8 = 1 << 2;
pub(crate) const ATTR_CONTROL: u8 = 1 << 3;
pub(crate) const ATTR_USER_DEFINED: u8 = 1 << 4;
pub(crate) const ATTR_BYTE: u8 = 1 << 5;

/// How raw text fragments are turned into ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// SentencePiece: spaces become U+2581, optional space prefix, whole fragment is one word.
    Spm,
    /// Byte-level BPE: regex pre-tokenization, bytes mapped to printable chars.
    ByteBpe,
    /// A tokenizer.json pipeline used as is (its own normalizer and pre-tokenizer).
    Json,
}

pub struct Tokenizer {
    kind: Kind,
    /// Model (+ pre-tokenizer for byte-level BPE) without any added tokens: special tokens are
    /// split out beforehand, exactly where llama.cpp splits them.
    hf: tokenizers::Tokenizer,
    texts: Vec<String>,
    attrs: Vec<u8>,
    /// All pieces back to back; piece `i` is `piece_bytes[piece_off[i]..piece_off[i + 1]]`.
    piece_bytes: Vec<u8>,
    piece_off: Vec<u32>,
    /// Candidates for special-token splitting, longest text first.
    special_order: Vec<u32>,
    eog: Vec<bool>,
    text_to_id: std::collections::HashMap<String, u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
}

enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes.
    pub fn from_gguf_vocab(v: &GgufVocab) -> Result<Tokenizer, Error> {
        build::from_gguf_vocab(v)
    }

    /// Loads an HF `tokenizer.json`, with `tokenizer_config.json` beside it (if present) for the
    /// BOS/EOS tokens and whether to add them.
    pub fn from_json_file(path: &Path) -> Result<Tokenizer, Error> {
        json::from_json_file(path)
    }

    /// Text to ids. `add_special` adds BOS/EOS as the model asks (llama_tokenize's
    /// add_special); `parse_special` turns control-token text such as `<|im_start|>` into that
    /// token instead of tokenizing it as plain text.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, Error> {
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.push(self.bos.ok_or_else(|| {
                Error::Tokenizer(
                    "the model asks for a BOS token but defines none; encode with add_special = false"
                        .into(),
                )
            })?);
        }
        let mut prev_special = true;
        let mut escaped = String::new();
        for f in &fragments {
            match *f {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(s) => {
                    if self.kind == Kind::Spm {
                        escaped.clear();
                        if self.add_space_prefix && prev_special {
                            escaped.push('\u{2581}');
                        }
                        for c in s.chars() {
                            escaped.push(if c == ' ' { '\u{2581}' } else { c });
                        }
                        self.model_encode(&escaped, &mut out)?;
                    } else {
                        self.model_encode(s, &mut out)?;
                    }
                    prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.push(self.eos.ok_or_else(|| {
                Error::Tokenizer(
                    "the model asks for an EOS token but defines none; encode with add_special = false"
                        .into(),
                )
            })?);
        }
        Ok(out)
    }

    fn model_encode(&self, s: &str, out: &mut Vec<u32>) -> Result<(), Error> {
        if s.is_empty() {
            return Ok(());
        }
        let enc = self
            .hf
            .encode_fast(s, false)
            .map_err(|e| Error::Tokenizer(format!("encoding {:?} failed: {e}", trunc(s))))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }

    /// Splits `text` around special tokens the way llama.cpp's tokenizer_st_partition does:
    /// longest candidates first, each one cutting every remaining text fragment.
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(text));
        for &id in &self.special_order {
            let attr = self.attrs[id as usize];
            if !parse_special && attr & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
                continue;
            }
            let needle = self.texts[id as usize].as_str();
            let mut i = 0;
            while i < frags.len() {
                let Fragment::Text(s) = frags[i] else {
                    i += 1;
                    continue;
                };
                if !s.contains(needle) {
                    i += 1;
                    continue;
                }
                let mut pieces = Vec::new();
                let mut rest = s;
                while let Some(pos) = rest.find(needle) {
                    if pos > 0 {
                        pieces.push(Fragment::Text(&rest[..pos]));
                    }
                    pieces.push(Fragment::Token(id));
                    rest = &rest[pos + needle.len()..];
                }
                if !rest.is_empty() {
                    pieces.push(Fragment::Text(rest));
                }
                let n = pieces.len();
                frags.splice(i..i + 1, pieces);
                i += n;
            }
        }
        frags
    }

    /// Ids to text, as llama.cpp's llama_detokenize. With `skip_special`, control tokens render
    /// as nothing and a leading BOS / trailing EOS the model adds are dropped; without it they
    /// render as their text. Invalid UTF-8 (a cut byte-fallback sequence) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if skip_special && self.add_bos && !ids.is_empty() && Some(ids[0]) == self.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if skip_special && self.add_eos && !ids.is_empty() && Some(ids[ids.len() - 1]) == self.eos {
            ids = &ids[..ids.len() - 1];
        }
        let mut text: Vec<u8> = Vec::new();
        for &id in ids {
            let mut p = if skip_special && self.is_control(id) {
                &[][..]
            } else {
                self.piece(id)
            };
            if remove_space && p.first() == Some(&b' ') {
                p = &p[1..];
            }
            remove_space = false;
            text.extend_from_slice(p);
        }
        if self.clean_spaces {
            text = clean_up_spaces(&text);
        }
        match String::from_utf8(text) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Raw bytes of one token, as llama.cpp's token_to_piece with special = true (control
    /// tokens give their text). An id outside the vocabulary gives an empty slice.
    pub fn piece(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i + 1 >= self.piece_off.len() {
            return &[];
        }
        &self.piece_bytes[self.piece_off[i] as usize..self.piece_off[i + 1] as usize]
    }

    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// End of generation: EOS, EOT, EOM and the tokens llama.cpp recognises by text
    /// (`<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`, `<|end|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.get(id as usize).copied().unwrap_or(false)
    }

    /// The id of the token whose text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.text_to_id.get(text).copied()
    }

    /// Whether the model prepends BOS when encoding with `add_special`.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Control and unknown tokens: rendered only when special text is asked for.
    pub fn is_control(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & (ATTR_CONTROL | ATTR_UNKNOWN) != 0)
    }
}

fn trunc(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// llama.cpp's clean_up_tokenization_spaces: drops the space before `?!.,`, around a lone
/// apostrophe, and before `'s 'm 're 've`.
fn clean_up_spaces(t: &[u8]) -> Vec<u8> {
    // First pass: " ?", " !", " .", " ,".
    let mut a: Vec<u8> = Vec::with_capacity(t.len());
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            a.pop();
        }
        a.push(x);
    }
    // Second pass: " ' " -> "'".
    let mut b: Vec<u8> = Vec::with_capacity(a.len());
    let mut i = 0;
    while i < a.len() {
        let x = a[i];
        if i > 0 && x == b'\'' && i + 1 < a.len() && a[i - 1] == b' ' && a[i + 1] == b' ' {
            b.pop();
            b.push(x);
            i += 2;
            continue;
        }
        b.push(x);
        i += 1;
    }
    // Third pass: " 's", " 'm", " 're", " 've".
    let mut c: Vec<u8> = Vec::with_capacity(b.len());
    for i in 0..b.len() {
        let x = b[i];
        if i > 0 && b[i - 1] == b' ' && x == b'\'' && i + 1 < b.len() {
            let x1 = b[i + 1];
            let x2 = b.get(i + 2).copied();
            let drop = matches!(x1, b's' | b'm')
                || (i + 2 < b.len() && matches!((x1, x2), (b'r', Some(b'e')) | (b'v', Some(b'e'))));
            if drop {
                c.pop();
            }
        }
        c.push(x);
    }
    c
}
