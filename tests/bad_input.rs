//! Bad input through the `lckv` binary: each case exits with status 1 and a message that says
//! what is wrong and what to do, never a panic (exit 101) or a signal.

mod common;

use std::path::{Path, PathBuf};

fn lckv(args: &[&str]) -> (i32, String) {
    let out = common::lckv(args);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

fn expect_error(args: &[&str], needles: &[&str]) {
    let (code, text) = lckv(args);
    assert_eq!(
        code, 1,
        "lckv {args:?} should fail cleanly, got {code}: {text}"
    );
    assert!(!text.contains("panicked"), "lckv {args:?} panicked: {text}");
    for n in needles {
        assert!(
            text.contains(n),
            "lckv {args:?}: message lacks {n:?}:\n{text}"
        );
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lckv-bad-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn tiny() -> PathBuf {
    common::model_path("random/llama-tiny-f32.gguf")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn truncated_model_file() {
    let bytes = std::fs::read(tiny()).unwrap();
    for cut in [3, 24, 1000, bytes.len() / 2, bytes.len() - 1] {
        let p = tmp(&format!("cut{cut}.gguf"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let (code, text) = lckv(&["run", "-m", s(&p), "-p", "hi", "-n", "1"]);
        assert_eq!(code, 1, "cut at {cut}: {text}");
        assert!(
            text.contains("cannot open") && !text.contains("panicked"),
            "cut at {cut}: {text}"
        );
    }
}

#[test]
fn not_a_gguf() {
    let p = tmp("text.gguf");
    std::fs::write(&p, b"this is not a model file at all, just text").unwrap();
    expect_error(&["inspect", s(&p)], &["not a GGUF file"]);
}

#[test]
fn missing_file() {
    expect_error(
        &["run", "-m", "/nonexistent/model.gguf", "-p", "x"],
        &["/nonexistent/model.gguf"],
    );
}

#[test]
fn missing_tensor() {
    // Rename one tensor's name in place (same length) so the file stays valid GGUF.
    let mut bytes = std::fs::read(tiny()).unwrap();
    let needle = b"blk.1.ffn_up.weight";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at..at + needle.len()].copy_from_slice(b"blk.1.ffn_xx.weight");
    let p = tmp("missing.gguf");
    std::fs::write(&p, &bytes).unwrap();
    expect_error(
        &["run", "-m", s(&p), "-p", "hi"],
        &["blk.1.ffn_up.weight", "missing"],
    );
}

#[test]
fn prompt_longer_than_context() {
    let long = "word ".repeat(200);
    expect_error(
        &["run", "-m", s(&tiny()), "-c", "32", "-p", &long, "-n", "1"],
        &["prompt has", "raise -c"],
    );
}

#[test]
fn bad_kv_plans() {
    expect_error(
        &["run", "-m", s(&tiny()), "--kv-plan", "0_1", "-p", "hi"],
        &["names 2 layers but the model has 4"],
    );
    expect_error(
        &["run", "-m", s(&tiny()), "--kv-plan", "0_2_3_3", "-p", "hi"],
        &["must read its own"],
    );
    expect_error(
        &["inspect", s(&tiny()), "--kv-plan", "banana"],
        &["unknown KV plan 'banana'"],
    );
}

#[test]
fn budgets() {
    expect_error(
        &["run", "-m", s(&tiny()), "--mem-budget", "lots", "-p", "hi"],
        &["cannot read 'lots' as a size"],
    );
    expect_error(
        &["run", "-m", s(&tiny()), "--mem-budget", "1M", "-p", "hi"],
        &["short by", "KV cache", "weights"],
    );
    expect_error(
        &["run", "-m", s(&tiny()), "-c", "auto", "-p", "hi"],
        &["needs --mem-budget"],
    );
}

#[test]
fn bad_flags() {
    expect_error(
        &["run", "-m", s(&tiny()), "--kv-type", "q3", "-p", "hi"],
        &["unknown KV cache type 'q3'"],
    );
    expect_error(
        &["run", "-m", s(&tiny()), "--prefill", "fast", "-p", "hi"],
        &["unknown prefill strategy 'fast'"],
    );
    expect_error(
        &["run", "-m", s(&tiny()), "--temp=-1", "-p", "hi"],
        &["temperature"],
    );
    expect_error(&["run", "-m", s(&tiny()), "-c", "0", "-p", "hi"], &["-c 0"]);
    expect_error(
        &[
            "logits",
            "-m",
            s(&tiny()),
            "--tokens",
            "1,99999999",
            "-o",
            s(&tmp("x.npy")),
        ],
        &["outside the vocabulary"],
    );
}

#[test]
fn damaged_prompt_cache_is_rebuilt() {
    let pc = tmp("prompt.cache");
    let model = tiny();
    let args = [
        "run",
        "-m",
        s(&model),
        "-p",
        "You are a kiosk assistant. Hello",
        "-n",
        "2",
        "--temp",
        "0",
        "--prompt-cache",
        s(&pc),
    ];
    let (code, text) = lckv(&args);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("saved"), "{text}");
    let (code, text) = lckv(&args);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("restored"), "{text}");
    // Flip a byte: the checksum catches it and the cache is rebuilt.
    let mut b = std::fs::read(&pc).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(&pc, &b).unwrap();
    let (code, text) = lckv(&args);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("damaged") && text.contains("saved"), "{text}");
    // Truncated.
    std::fs::write(&pc, &b[..b.len() / 3]).unwrap();
    let (code, text) = lckv(&args);
    assert!(code == 0 && text.contains("damaged"), "{text}");
    // Another plan: the identity check refuses it.
    let (code, text) = lckv(&[&args[..], &["--kv-plan", "cla2"]].concat());
    assert!(code == 0 && text.contains("KV plan"), "{text}");
    // Another model.
    let other = common::model_path("random/llama-tiny-f16.gguf");
    let mut args2 = args.to_vec();
    args2[2] = s(&other);
    let (code, text) = lckv(&args2);
    assert!(code == 0 && text.contains("another model"), "{text}");
}

/// A repetition window far beyond the context is capped at it (the memory plan counts the
/// sampler's history at the context's length), rather than allocating what was asked.
#[test]
fn absurd_repeat_window_is_capped_at_the_context() {
    let (code, text) = lckv(&[
        "run",
        "-m",
        s(&tiny()),
        "-c",
        "64",
        "--repeat-last-n",
        "100000000000",
        "--repeat-penalty",
        "1.1",
        "-p",
        "hi",
        "-n",
        "4",
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

/// `--prompt-cache` replaces only a prompt cache: a model given by mistake, a symbolic link or a
/// directory is refused before the model loads and left as it was.
#[test]
fn prompt_cache_never_replaces_other_files() {
    let model = tiny();
    let run = |pc: &Path| {
        lckv(&[
            "run",
            "-m",
            s(&model),
            "-p",
            "Hello",
            "-n",
            "2",
            "--prompt-cache",
            s(pc),
        ])
    };
    let gguf = tmp("model-by-mistake.gguf");
    std::fs::copy(&model, &gguf).unwrap();
    let before = std::fs::read(&gguf).unwrap();
    let (code, text) = run(&gguf);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("holds something else"), "{text}");
    assert_eq!(
        std::fs::read(&gguf).unwrap(),
        before,
        "the file was changed"
    );

    let link = tmp("cache-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&gguf, &link).unwrap();
    let (code, text) = run(&link);
    assert!(code == 1 && text.contains("symbolic link"), "{text}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    let dir = tmp("cache-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let (code, text) = run(&dir);
    assert!(code == 1 && text.contains("not a regular file"), "{text}");
    assert!(dir.is_dir());
}

/// A prompt cache whose checksum is right but whose K/V hold a NaN is rejected and rebuilt.
#[test]
fn prompt_cache_with_nan_values_is_rejected() {
    let pc = tmp("nan.cache");
    let _ = std::fs::remove_file(&pc);
    let model = tiny();
    let args = [
        "run",
        "-m",
        s(&model),
        "-p",
        "One two three four",
        "-n",
        "2",
        "--temp",
        "0",
        "--prompt-cache",
        s(&pc),
    ];
    let (code, text) = lckv(&args);
    assert!(code == 0 && text.contains("saved"), "{text}");
    // The last two bytes before the checksum are the last f16 of the last V row.
    let mut b = std::fs::read(&pc).unwrap();
    let end = b.len() - 4;
    b[end - 2..end].copy_from_slice(&0x7e00u16.to_le_bytes());
    let crc = crc32fast::hash(&b[..end]);
    b[end..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&pc, &b).unwrap();
    let (code, text) = lckv(&args);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("NaN") && text.contains("saved"), "{text}");
}
