//! `lckv perplexity`: an explicit `-c` is the chunk length whatever its value (2048 included),
//! no `-c` gives llama-perplexity's 512. On a random-weight model with an f32 cache, so the
//! chunks run in a second.

mod common;

use common::model_path;

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
