//! `lckv perplexity` and `lckv::perplexity`: an explicit `-c` is the chunk length whatever its
//! value (2048 included), no `-c` gives llama-perplexity's 512; the library function reports
//! what it scored and refuses sessions and texts it cannot score. On a random-weight model with
//! an f32 cache, so the chunks run in a second.

mod common;

use common::{f32_session, load_model, model_path};
use lckv::perplexity::{log_prob, perplexity};
use lckv::session::PrefillChoice;

const MODEL: &str = "random/llama-tiny-f32.gguf";

/// (chunks, chunk length, tokens scored) from the report line of `lckv perplexity`.
fn report(extra: &[&str]) -> (usize, usize, usize) {
    let model = model_path(MODEL);
    let text = common::fixture("text/emma_opening.txt");
    let args = [
        &["perplexity", "-m", model.to_str().unwrap()][..],
        &["-f", text.to_str().unwrap(), "--kv-type", "f32"],
        extra,
    ]
    .concat();
    let out = common::lckv(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lckv {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "perplexity: P over N chunks of C tokens (S scored), T tok/s"
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let num = |i: usize| -> usize {
        words
            .get(i)
            .and_then(|w| w.trim_start_matches('(').parse().ok())
            .unwrap_or_else(|| panic!("unexpected report {stdout}"))
    };
    (num(3), num(6), num(8))
}

#[test]
fn explicit_context_is_the_chunk_length() {
    assert_eq!(report(&["--chunks", "2"]), (2, 512, 2 * 255));
    assert_eq!(report(&["-c", "2048", "--chunks", "1"]), (1, 2048, 1023));
    assert_eq!(report(&["-c", "1024", "--chunks", "1"]), (1, 1024, 511));
}

#[test]
fn context_that_is_not_a_chunk_length_is_refused() {
    let model = model_path(MODEL);
    let text = common::fixture("text/emma_opening.txt");
    for c in ["auto", "8", "x"] {
        let out = common::lckv(&[
            "perplexity",
            "-m",
            model.to_str().unwrap(),
            "-f",
            text.to_str().unwrap(),
            "-c",
            c,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "-c {c}: {err}");
        assert!(err.contains("at least 16 tokens"), "-c {c}: {err}");
    }
}

/// The library's number is the mean negative log-likelihood of the second half of each chunk,
/// recomputed here from the session's logits chunk by chunk.
#[test]
fn library_scores_the_second_half_of_each_chunk() {
    let m = load_model(&model_path(MODEL));
    let tokens: Vec<u32> = (0..200u32).map(|i| (i * 7919 + 13) % 8192).collect();
    let n_ctx = 64;
    let mut s = f32_session(&m, n_ctx, PrefillChoice::Sequential);
    let mut seen = Vec::new();
    let r = perplexity(&mut s, &tokens, n_ctx, None, Some(1), &mut |done, ppl| {
        seen.push((done, ppl))
    })
    .unwrap();
    assert_eq!((r.n_chunks, r.n_ctx, r.scored), (3, 64, 3 * 31));
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2], (3, r.ppl));

    let mut nll = 0f64;
    for c in 0..3 {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        chunk[0] = 1;
        s.reset();
        let logits = common::prompt_logits(&mut s, &chunk);
        for i in n_ctx / 2..n_ctx - 1 {
            nll -= log_prob(&logits[i * 8192..(i + 1) * 8192], chunk[i + 1] as usize);
        }
    }
    let want = (nll / r.scored as f64).exp();
    assert!((r.ppl - want).abs() <= 1e-9 * want, "{} vs {want}", r.ppl);
    // The chunk limit.
    let r2 = perplexity(&mut s, &tokens, n_ctx, Some(1), Some(1), &mut |_, _| {}).unwrap();
    assert_eq!((r2.n_chunks, r2.scored), (1, 31));
}

#[test]
fn library_refuses_what_it_cannot_score() {
    let m = load_model(&model_path(MODEL));
    let tokens: Vec<u32> = (0..100).collect();
    let mut bad_id = tokens.clone();
    bad_id[40] = 1 << 20;
    let mut s = f32_session(&m, 32, PrefillChoice::Sequential);
    for (n_ctx, text, max_chunks, bos, why) in [
        (8, &tokens[..], None, None, "at least 16"),
        (64, &tokens, None, None, "context and batch"),
        (32, &tokens[..20], None, None, "fewer than one chunk"),
        (32, &tokens, Some(0), None, "at least one chunk"),
        (32, &tokens, None, Some(9000), "outside the vocabulary"),
        (32, &bad_id, None, None, "outside the vocabulary"),
    ] {
        match perplexity(&mut s, text, n_ctx, max_chunks, bos, &mut |_, _| {}) {
            Ok(r) => panic!("expected a refusal ({why}), got {r:?}"),
            Err(e) => assert!(e.to_string().contains(why), "{e}"),
        }
    }
}
