//! Streaming detokenization: characters split over byte-fallback tokens (SentencePiece) and
//! over byte-level BPE pieces come out whole, chunks concatenate to the full decode, and bad
//! bytes become U+FFFD instead of invalid UTF-8.

mod tokenizer_common;

use lckv::tokenizer::{StreamDecoder, Tokenizer};
use tokenizer_common::load_tokenizer;

/// Pushes every id; checks no chunk carries U+FFFD and returns the chunks.
fn stream(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    let mut d = StreamDecoder::new();
    let mut chunks: Vec<String> = ids.iter().map(|&id| d.push(tok, id).to_string()).collect();
    chunks.push(d.flush());
    for c in &chunks {
        assert!(!c.contains('\u{fffd}'), "replacement char in chunk {c:?}");
    }
    chunks
}

#[test]
fn byte_fallback_emoji_waits_for_all_four_bytes() {
    let tok = load_tokenizer("ggml-vocab-llama-spm");
    // llama.cpp's own vector: " 🦙" is "▁" then the four byte tokens of U+1F999.
    let ids = tok.encode("🦙", false, false).unwrap();
    assert_eq!(ids, vec![29871, 243, 162, 169, 156]);
    assert_eq!(tok.piece(243), &[0xF0u8][..]);
    let chunks = stream(&tok, &ids);
    assert_eq!(chunks, vec![" ", "", "", "", "🦙", ""]);
}

#[test]
fn spm_mixed_text_streams_to_the_decoded_text() {
    let tok = load_tokenizer("ggml-vocab-llama-spm");
    let text = "Hello 🦙🦙 world ฿ 在 Cửa Việt 😁 ?";
    let ids = tok.encode(text, false, false).unwrap();
    // Some of these characters are outside the vocabulary and must use byte tokens.
    assert!(
        ids.iter().any(|&id| (3..259).contains(&id)),
        "no byte-fallback token in {ids:?}"
    );
    let joined: String = stream(&tok, &ids).concat();
    assert_eq!(joined, format!(" {text}"));
    assert_eq!(tok.decode(&ids, false), text);
}

#[test]
fn byte_level_bpe_pieces_split_inside_characters() {
    let tok = load_tokenizer("ggml-vocab-gpt-2");
    let text = "我想在apple工作 😁 🚀 ✅ нещо";
    let ids = tok.encode(text, false, false).unwrap();
    // At least one piece alone is not valid UTF-8, so the decoder really has to hold bytes.
    assert!(ids
        .iter()
        .any(|&id| std::str::from_utf8(tok.piece(id)).is_err()));
    let chunks = stream(&tok, &ids);
    assert_eq!(chunks.concat(), text);
    assert!(chunks.iter().filter(|c| c.is_empty()).count() > 1);
}

#[test]
fn invalid_bytes_become_replacement_chars() {
    let tok = load_tokenizer("ggml-vocab-llama-spm");
    let byte = |b: u8| tok.token_id(&format!("<0x{b:02X}>")).unwrap();
    let a = tok.token_id("a").unwrap();
    let mut d = StreamDecoder::new();
    // A lead byte cut short by an ASCII piece.
    assert_eq!(d.push(&tok, byte(0xE4)), "");
    assert_eq!(d.push(&tok, a), "\u{fffd}a");
    // A byte that can never appear in UTF-8.
    assert_eq!(d.push(&tok, byte(0xFF)), "\u{fffd}");
    // A lone continuation byte.
    assert_eq!(d.push(&tok, byte(0x80)), "\u{fffd}");
    // An unfinished character at the end comes out of flush as U+FFFD.
    assert_eq!(d.push(&tok, byte(0xF0)), "");
    assert_eq!(d.push(&tok, byte(0x9F)), "");
    assert_eq!(d.flush(), "\u{fffd}");
    assert_eq!(d.flush(), "");
    // And the decoder is usable again: 中 = E4 B8 AD.
    assert_eq!(d.push(&tok, byte(0xE4)), "");
    assert_eq!(d.push(&tok, byte(0xB8)), "");
    assert_eq!(d.push(&tok, byte(0xAD)), "中");
}

#[test]
fn control_tokens_hidden_unless_asked() {
    let tok = load_tokenizer("ggml-vocab-llama-spm");
    let (bos, eos) = (tok.bos().unwrap(), tok.eos().unwrap());
    let hello = tok.token_id("▁Hello").unwrap();
    let mut d = StreamDecoder::new();
    assert_eq!(d.push(&tok, bos), "");
    assert_eq!(d.push(&tok, hello), " Hello");
    assert_eq!(d.push(&tok, eos), "");
    let mut d = StreamDecoder::new().show_special(true);
    assert_eq!(d.push(&tok, bos), "<s>");
    assert_eq!(d.push(&tok, eos), "</s>");
}
