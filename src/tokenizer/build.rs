//! Construction from a GGUF vocabulary: the `tokenizers` model, the pre-tokenizer regexes
//! llama.cpp uses per `tokenizer.ggml.pre`, token attributes, the end-of-generation set and
//! the piece table, in the order llama.cpp's llama_vocab::load derives them.

use std::collections::HashMap;

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use super::*;

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How llama.cpp pre-tokenizes one `tokenizer.ggml.pre` value.
struct PreSpec {
    regexes: &'static [&'static str],
    ignore_merges: bool,
    /// Default for add_bos before the GGUF key overrides it.
    add_bos: bool,
    clean_spaces: bool,
}

/// The `pre` values supported, grouped as in llama.cpp's llama_vocab::load.
fn pre_spec(pre: &str) -> Option<PreSpec> {
    let s = |regexes, ignore_merges, add_bos, clean_spaces| {
        Some(PreSpec {
            regexes,
            ignore_merges,
            add_bos,
            clean_spaces,
        })
    };
    match pre {
        "default" => s(
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
            false,
            false,
            true,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => s(&[LLAMA3], true, true, true),
        "dbrx" | "smaug-bpe" => s(&[LLAMA3], false, false, true),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "jina-v2-es" | "jina-v2-de" | "gigachat"
        | "mpt" | "olmo" | "jais" | "exaone4" => s(&[GPT2], false, false, true),
        "trillion" | "granite-docling" => s(&[GPT2], false, false, false),
        "qwen2" | "deepseek-r1-qwen" | "hunyuan" => s(&[QWEN2], false, false, false),
        "stablelm2" | "megrez" => s(&[QWEN2], false, false, true),
        "qwen35" => s(&[QWEN35], false, false, false),
        "smollm" | "command-r" => s(&[r"\p{N}", GPT2], false, false, false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" => {
            s(&[r"\p{N}", GPT2], false, false, true)
        }
        "falcon" => s(
            &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
            false,
            false,
            true,
        ),
        _ => None,
    }
}

const SUPPORTED_PRE: &str = "default, llama3/llama-bpe, gpt-2, qwen2, qwen35, smollm, starcoder, \
     refact, command-r, stablelm2, dbrx, mpt, olmo, falcon";

// Token texts llama.cpp recognises (llama_vocab::load), matched exactly.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "<end_of_utterance>",
];
const FIM_PRE: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<\u{ff5c}fim\u{2581}begin\u{ff5c}>",
    "<PRE>",
    "\u{2581}<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<\u{ff5c}fim\u{2581}hole\u{ff5c}>",
    "<SUF>",
    "\u{2581}<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<\u{ff5c}fim\u{2581}end\u{ff5c}>",
    "<MID>",
    "\u{2581}<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP: &[&str] = &["<|file_sep|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
];

/// Everything the shared finishing step needs, whatever the source.
pub(crate) struct Parts {
    pub kind: Kind,
    pub hf: tokenizers::Tokenizer,
    pub texts: Vec<String>,
    pub attrs: Vec<u8>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub clean_spaces: bool,
}

fn err(m: impl Into<String>) -> Error {
    Error::Tokenizer(m.into())
}

pub(crate) fn from_gguf_vocab(v: &GgufVocab) -> Result<Tokenizer, Error> {
    let n = v.tokens.len();
    if n == 0 {
        return Err(err(
            "the vocabulary has no tokens (tokenizer.ggml.tokens is empty)",
        ));
    }
    if n > u32::MAX as usize / 2 {
        return Err(err(format!(
            "the vocabulary has {n} tokens, more than ids can address"
        )));
    }
    // llama.cpp replaces empty texts so that no token can match the empty string.
    let texts: Vec<String> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            }
        })
        .collect();
    let mut attrs = vec![ATTR_NORMAL; n];
    if let Some(tt) = &v.token_types {
        if tt.len() < n {
            return Err(err(format!(
                "tokenizer.ggml.token_type has {} entries for {n} tokens; the file is damaged",
                tt.len()
            )));
        }
        for (a, &t) in attrs.iter_mut().zip(tt) {
            *a = match t {
                1 => ATTR_NORMAL,
                2 => ATTR_UNKNOWN,
                3 => ATTR_CONTROL,
                4 => ATTR_USER_DEFINED,
                5 => ATTR_UNUSED,
                6 => ATTR_BYTE,
                _ => ATTR_UNDEFINED,
            };
        }
    }
    if let Some(sc) = &v.scores {
        if sc.len() < n {
            return Err(err(format!(
                "tokenizer.ggml.scores has {} entries for {n} tokens; the file is damaged",
                sc.len()
            )));
        }
    }
    // Later duplicates win, as in llama.cpp's token_to_id map.
    let vocab: Vocab = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let check = |name: &str, id: Option<u32>| -> Result<Option<u32>, Error> {
        match id {
            Some(i) if i as usize >= n => Err(err(format!(
                "tokenizer.ggml.{name}_token_id = {i} is outside the vocabulary of {n} tokens"
            ))),
            _ => Ok(id),
        }
    };
    let in_range = |id: u32| if (id as usize) < n { Some(id) } else { None };

    let (kind, hf, def_bos, def_eos, add_bos, add_eos, add_space_prefix, clean_spaces) =
        match v.model.as_str() {
            "gpt2" => {
                let pre_name = v.pre.as_deref().unwrap_or("default");
                let spec = pre_spec(pre_name).ok_or_else(|| {
                    err(format!(
                        "unknown pre-tokenizer type '{pre_name}' (tokenizer.ggml.pre); supported: {SUPPORTED_PRE}"
                    ))
                })?;
                let merges = v.merges.as_ref().ok_or_else(|| {
                    err("a gpt2 (BPE) vocabulary needs tokenizer.ggml.merges, which is missing")
                })?;
                let hf = byte_bpe(vocab, merges, &spec)?;
                (
                    Kind::ByteBpe,
                    hf,
                    in_range(11),
                    in_range(11),
                    spec.add_bos,
                    false,
                    false,
                    spec.clean_spaces,
                )
            }
            "llama" => {
                let hf = spm_bpe(vocab, &texts, v.scores.as_deref(), v.unk)?;
                (Kind::Spm, hf, in_range(1), in_range(2), true, false, true, false)
            }
            other => {
                return Err(err(format!(
                    "unsupported tokenizer model '{other}' (tokenizer.ggml.model); supported: llama (SentencePiece), gpt2 (BPE)"
                )))
            }
        };

    let bos = check("bos", v.bos)?.or(def_bos);
    let eos = check("eos", v.eos)?.or(def_eos);
    check("unknown", v.unk)?;
    check("padding", v.pad)?;
    let parts = Parts {
        kind,
        hf,
        texts,
        attrs,
        bos,
        eos,
        eot: check("eot", v.eot)?,
        eom: check("eom", v.eom)?,
        add_bos: v.add_bos.unwrap_or(add_bos),
        add_eos: v.add_eos.unwrap_or(add_eos),
        add_space_prefix: v.add_space_prefix.unwrap_or(add_space_prefix),
        clean_spaces,
    };
    Ok(finish(parts))
}

fn byte_bpe(
    vocab: Vocab,
    merges: &[String],
    spec: &PreSpec,
) -> Result<tokenizers::Tokenizer, Error> {
    let mut pairs = Vec::with_capacity(merges.len());
    for m in merges {
        // llama.cpp splits at the first space after the first byte.
        let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
            continue;
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        // A merge whose parts or result are not tokens can never fire in llama.cpp either
        // (its result would be split to bytes again); `tokenizers` rejects such merges.
        if vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&format!("{a}{b}"))
        {
            pairs.push((a.to_string(), b.to_string()));
        }
    }
    let model = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .ignore_merges(spec.ignore_merges)
        .build()
        .map_err(|e| err(format!("building the BPE model failed: {e}")))?;
    let mut pre: Vec<PreTokenizerWrapper> = Vec::new();
    for r in spec.regexes {
        let split = Split::new(
            SplitPattern::Regex((*r).to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| err(format!("pre-tokenizer regex {r:?} does not compile: {e}")))?;
        pre.push(split.into());
    }
    pre.push(ByteLevel::new(false, false, false).into());
    let mut hf = tokenizers::Tokenizer::new(model);
    hf.with_pre_tokenizer(Some(Sequence::new(pre)));
    hf.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    Ok(hf)
}

/// SentencePiece as llama.cpp runs it: repeatedly merge the adjacent pair whose concatenation
/// is the highest-scoring token. Expressed as BPE merges ranked by that score, with byte
/// fallback for characters outside the vocabulary.
fn spm_bpe(
    vocab: Vocab,
    texts: &[String],
    scores: Option<&[f32]>,
    unk: Option<u32>,
) -> Result<tokenizers::Tokenizer, Error> {
    let score = |id: u32| scores.map_or(0.0, |s| s[id as usize]);
    let mut cands: Vec<(f32, u32, u32)> = Vec::new(); // (score, merged id, split byte offset)
    for (text, &id) in vocab.iter() {
        for (k, _) in text.char_indices().skip(1) {
            if vocab.contains_key(&text[..k]) && vocab.contains_key(&text[k..]) {
                cands.push((score(id), id, k as u32));
            }
        }
    }
    // Highest score first; equal scores by id, then split point (llama.cpp takes the leftmost
    // position, which a rank order cannot express; ties are rare outside padding tokens).
    cands.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let merges: Vec<(String, String)> = cands
        .iter()
        .map(|&(_, id, k)| {
            let t = &texts[id as usize];
            (t[..k as usize].to_string(), t[k as usize..].to_string())
        })
        .collect();
    let mut b = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true);
    if let Some(u) = unk {
        b = b.unk_token(texts[u as usize].clone());
    }
    let model = b
        .build()
        .map_err(|e| err(format!("building the SentencePiece model failed: {e}")))?;
    Ok(tokenizers::Tokenizer::new(model))
}

fn find_first(texts: &[String], names: &[&str]) -> Option<u32> {
    texts
        .iter()
        .position(|t| names.contains(&t.as_str()))
        .map(|i| i as u32)
}

/// Special-token detection, EOG set, special split order and pieces (llama_vocab::load).
pub(crate) fn finish(p: Parts) -> Tokenizer {
    let Parts {
        kind,
        hf,
        texts,
        mut attrs,
        bos,
        eos,
        eot,
        eom,
        ..
    } = p;
    let n = texts.len();
    let mut eot = eot;
    let mut eom = eom;
    let mark = |attrs: &mut Vec<u8>, id: u32| attrs[id as usize] |= ATTR_CONTROL;
    if eot.is_none() {
        eot = find_first(&texts, EOT_TEXTS);
        if let Some(id) = eot {
            mark(&mut attrs, id);
        }
    }
    if eom.is_none() {
        eom = find_first(&texts, &["<|eom_id|>"]);
        if let Some(id) = eom {
            mark(&mut attrs, id);
        }
    }
    let mut fim = [None; 6];
    for (slot, names) in fim
        .iter_mut()
        .zip([FIM_PRE, FIM_SUF, FIM_MID, FIM_PAD, FIM_REP, FIM_SEP])
    {
        *slot = find_first(&texts, names);
        if let Some(id) = *slot {
            mark(&mut attrs, id);
        }
    }
    for (t, a) in texts.iter().zip(attrs.iter_mut()) {
        if *a & ATTR_CONTROL != 0 && t.contains("unused") {
            *a |= ATTR_UNUSED;
        }
    }
    let mut eog = vec![false; n];
    for id in fim[3..].iter().flatten() {
        eog[*id as usize] = true;
    }
    for (i, t) in texts.iter().enumerate() {
        if EOG_TEXTS.contains(&t.as_str()) {
            eog[i] = true;
            attrs[i] |= ATTR_CONTROL;
        }
        if matches!(
            t.as_str(),
            "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>"
        ) {
            attrs[i] = ATTR_USER_DEFINED;
        }
    }
    for id in [eos, eot, eom].into_iter().flatten() {
        eog[id as usize] = true;
    }
    let eog_with = |eog: &[bool], s: &str| (0..n).find(|&i| eog[i] && texts[i] == s);
    let (ret, call, calls, flush) = (
        eog_with(&eog, "<|return|>"),
        eog_with(&eog, "<|call|>"),
        eog_with(&eog, "<|calls|>"),
        eog_with(&eog, "<|flush|>"),
    );
    let has_call = call.is_some() || calls.is_some();
    if let Some(end) = eog_with(&eog, "<|end|>") {
        if has_call && (ret.is_some() || flush.is_some()) {
            eog[end] = false;
            attrs[end] = ATTR_USER_DEFINED;
        }
    }
    if eog_with(&eog, "<|tool_response>").is_some() || eog_with(&eog, "<|plamo:eos|>").is_some() {
        if let Some(s) = eog_with(&eog, "</s>") {
            eog[s] = false;
            attrs[s] = ATTR_NORMAL;
        }
    }

    let mut special_order: Vec<u32> = (0..n as u32)
        .filter(|&i| attrs[i as usize] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0)
        .collect();
    special_order.sort_by(|&a, &b| texts[b as usize].len().cmp(&texts[a as usize].len()));

    let mut piece_bytes = Vec::new();
    let mut piece_off = Vec::with_capacity(n + 1);
    piece_off.push(0u32);
    for (t, &a) in texts.iter().zip(&attrs) {
        if a & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED) != 0 {
            piece_bytes.extend_from_slice(t.as_bytes());
        } else if a & ATTR_NORMAL != 0 {
            match kind {
                Kind::ByteBpe => byte_decode(t, &mut piece_bytes),
                Kind::Spm | Kind::Json => {
                    piece_bytes.extend_from_slice(t.replace('\u{2581}', " ").as_bytes())
                }
            }
        } else if a & ATTR_BYTE != 0 {
            let hex = t.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok());
            piece_bytes.push(hex.unwrap_or(0));
        }
        piece_off.push(piece_bytes.len() as u32);
    }
    let text_to_id: HashMap<String, u32> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    Tokenizer {
        kind,
        hf,
        texts,
        attrs,
        piece_bytes,
        piece_off,
        special_order,
        eog,
        text_to_id,
        bos,
        eos,
        add_bos: p.add_bos,
        add_eos: p.add_eos,
        add_space_prefix: p.add_space_prefix,
        clean_spaces: p.clean_spaces,
    }
}

/// GPT-2's byte <-> printable char table: printable Latin-1 bytes map to themselves, the rest
/// to U+0100 upwards in byte order.
pub(crate) fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            let c = char::from_u32(next).unwrap_or('\0');
            next += 1;
            c
        };
    }
    table
}

/// llama_decode_text: each char back to its byte; a char outside the table is kept visible as
/// llama.cpp does ("[UNK_BYTE_0x..<text>]").
fn byte_decode(t: &str, out: &mut Vec<u8>) {
    thread_local! {
        static INV: HashMap<char, u8> =
            byte_to_char().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
    }
    INV.with(|inv| {
        for c in t.chars() {
            match inv.get(&c) {
                Some(&b) => out.push(b),
                None => {
                    out.extend_from_slice(b"[UNK_BYTE_0x");
                    let mut buf = [0u8; 4];
                    for byte in c.encode_utf8(&mut buf).bytes() {
                        out.extend_from_slice(format!("{byte:02x}").as_bytes());
                    }
                    out.extend_from_slice(t.as_bytes());
                    out.push(b']');
                }
            }
        }
    });
}
