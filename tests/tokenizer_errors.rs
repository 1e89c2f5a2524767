//! Hand-built vocabularies: bad input gives errors that name the problem, and a tiny
//! SentencePiece vocabulary tokenizes as worked out by hand from llama.cpp's algorithm
//! (merge the adjacent pair whose concatenation scores highest; bytes for unknown chars).

use lckv::tokenizer::{GgufVocab, Tokenizer};

fn tiny_spm() -> GgufVocab {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u32 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    // ids 259.. : pieces with scores chosen so that "▁ab" forms via "▁a" (not "ab").
    for (t, _) in [
        ("▁", 0),
        ("a", 0),
        ("b", 0),
        ("▁a", 0),
        ("ab", 0),
        ("▁ab", 0),
        ("<x>", 0),
    ] {
        tokens.push(t.into());
        types.push(if t == "<x>" { 4 } else { 1 });
    }
    let mut scores = vec![0.0f32; tokens.len()];
    let id = |t: &str| tokens.iter().position(|x| x == t).unwrap();
    scores[id("▁")] = -1.0;
    scores[id("a")] = -2.0;
    scores[id("b")] = -3.0;
    scores[id("▁a")] = -4.0;
    scores[id("ab")] = -5.0;
    scores[id("▁ab")] = -6.0;
    GgufVocab {
        model: "llama".into(),
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        ..Default::default()
    }
}

#[test]
fn tiny_spm_by_hand() {
    let tok = Tokenizer::from_gguf_vocab(&tiny_spm()).unwrap();
    let (sp, a, b, sp_a, ab, sp_ab, x) = (259, 260, 261, 262, 263, 264, 265);
    // "▁ab": pairs "▁a" (-4) and "ab" (-5): "▁a" wins, then "▁a"+"b" = "▁ab".
    assert_eq!(tok.encode("ab", false, false).unwrap(), vec![sp_ab]);
    // User-defined tokens split out even without parse_special; the text after a special
    // token gets the space prefix again.
    assert_eq!(tok.encode("<x>ab", false, false).unwrap(), vec![x, sp_ab]);
    assert_eq!(
        tok.encode("a<x>ab", false, false).unwrap(),
        vec![sp_a, x, sp_ab]
    );
    // "▁ba": no "ba"/"▁b" token: "▁" "b" "a"; 'é' is unknown -> its UTF-8 bytes C3 A9.
    assert_eq!(
        tok.encode("bé", true, false).unwrap(),
        vec![1, sp, b, 3 + 0xC3, 3 + 0xA9]
    );
    assert_eq!(
        tok.encode("b ab", false, false).unwrap(),
        vec![sp, b, sp_ab]
    );
    let _ = (a, ab);
    // Control text is plain text unless parse_special.
    assert_eq!(tok.encode("</s>", false, true).unwrap(), vec![2]);
    assert_ne!(tok.encode("</s>", false, false).unwrap(), vec![2]);
    assert_eq!(tok.decode(&[1, sp, b, 3 + 0xC3, 3 + 0xA9, 2], true), " bé");
    assert_eq!(tok.decode(&[sp, b, 3 + 0xC3, 3 + 0xA9], true), "bé");
    assert_eq!(tok.piece(3 + 0xC3), &[0xC3u8][..]);
    assert!(tok.is_eog(2) && !tok.is_eog(1));
    assert_eq!(tok.piece(9999), &[] as &[u8]);
}

#[test]
fn errors_name_the_problem() {
    let mut v = tiny_spm();
    v.model = "t5".into();
    let e = Tokenizer::from_gguf_vocab(&v).err().unwrap().to_string();
    assert!(e.contains("'t5'"), "{e}");

    let gpt2 = GgufVocab {
        model: "gpt2".into(),
        pre: Some("no-such-pre".into()),
        tokens: vec!["a".into(), "b".into(), "ab".into()],
        merges: Some(vec!["a b".into()]),
        ..Default::default()
    };
    let e = Tokenizer::from_gguf_vocab(&gpt2).err().unwrap().to_string();
    assert!(
        e.contains("'no-such-pre'") && e.contains("supported"),
        "{e}"
    );

    let no_merges = GgufVocab {
        pre: Some("gpt-2".into()),
        merges: None,
        ..gpt2.clone()
    };
    let e = Tokenizer::from_gguf_vocab(&no_merges)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("merges"), "{e}");

    let bad_bos = GgufVocab {
        pre: Some("gpt-2".into()),
        bos: Some(7),
        ..gpt2.clone()
    };
    let e = Tokenizer::from_gguf_vocab(&bad_bos)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bos") && e.contains('7'), "{e}");

    let e = Tokenizer::from_gguf_vocab(&GgufVocab {
        model: "llama".into(),
        ..Default::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("no tokens"), "{e}");

    let mut short = tiny_spm();
    short.scores.as_mut().unwrap().truncate(3);
    let e = Tokenizer::from_gguf_vocab(&short)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("scores"), "{e}");

    // A SentencePiece model wants BOS; with no BOS id (default id 1 is out of range here)
    // encoding with add_special fails cleanly, without it works.
    let one = GgufVocab {
        model: "llama".into(),
        tokens: vec!["a".into()],
        ..Default::default()
    };
    let t = Tokenizer::from_gguf_vocab(&one).unwrap();
    assert_eq!(t.bos(), None);
    let e = t.encode("a", true, false).err().unwrap().to_string();
    assert!(e.contains("BOS"), "{e}");
    assert!(t.encode("a", false, false).is_ok());
}
