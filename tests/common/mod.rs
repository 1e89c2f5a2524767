//! Shared helpers of the integration tests: where the test models and fixtures live, loading
//! and converting models, running the `lckv` binary, the logits of a prompt, and the error
//! measures the tolerances are stated in. Models are not in git: scripts/fetch_models.sh
//! downloads the real ones and scripts/make_test_models.sh generates the random ones, both into
//! `models_dir()`.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use lckv::convert::{convert, ConvertOptions};
use lckv::model::forward::Logits;
use lckv::model::{LoadOptions, Model};
use lckv::session::{PrefillChoice, Session, SessionOptions};
use lckv_kernels::GgmlType;

/// The repository root (where Cargo.toml of the `lckv` package is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A folder or file under tests/fixtures, e.g. `fixture("lckv/standard")`.
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

/// `$LCKV_MODELS` when set (and not empty), else `<repo>/models`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("LCKV_MODELS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join("models"),
    }
}

/// A model under `models_dir()`, e.g. `model_path("random/llama-tiny-f32.gguf")`. A missing
/// model is a setup mistake, not a pass: the test fails and says how to get it.
pub fn model_path(rel: &str) -> PathBuf {
    let path = models_dir().join(rel);
    if !path.is_file() {
        panic!(
            "missing test model {}: run scripts/fetch_models.sh && scripts/make_test_models.sh",
            path.display()
        );
    }
    path
}

/// Loads a GGUF model with the default options (mapped, its own KV plan).
pub fn load_model(path: &Path) -> Model {
    Model::load(path, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// Converts a Hugging Face checkpoint folder with `lckv convert` to a GGUF of `ty` in the temp
/// dir, under a name no other test of this run uses (tests run in parallel and may convert the
/// same checkpoint). The caller removes the file.
pub fn convert_to_temp(checkpoint: &Path, ty: GgmlType) -> PathBuf {
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let name = checkpoint
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = std::env::temp_dir().join(format!(
        "lckv-{name}-{}-{}-{}.gguf",
        ty.name(),
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    convert(
        checkpoint,
        &out,
        &ConvertOptions {
            out_type: ty,
            vocab_from: None,
        },
    )
    .unwrap_or_else(|e| panic!("converting {}: {e}", checkpoint.display()));
    out
}

/// A checkpoint converted to `ty` and loaded; the converted file is removed at once (the model
/// keeps its mapping of it).
pub fn load_converted(checkpoint: &Path, ty: GgmlType) -> Model {
    let path = convert_to_temp(checkpoint, ty);
    let m = load_model(&path);
    std::fs::remove_file(&path).unwrap();
    m
}

/// Token ids from a JSON array of numbers (the fixtures' `cases.json`).
pub fn token_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of token ids, got {v}"))
        .iter()
        .map(|x| x.as_u64().expect("a token id") as u32)
        .collect()
}

/// A session for comparing logits with a reference: f32 KV cache (so cache rounding does not
/// blur the comparison), a batch as long as the context (a prompt goes through in one call, as
/// iterative prefill needs), every position's logits available.
pub fn f32_session(m: &Model, n_ctx: usize, prefill: PrefillChoice) -> Session<'_> {
    let opts = SessionOptions {
        n_ctx,
        n_batch: n_ctx,
        kv_type: GgmlType::F32,
        prefill,
        early_exit: None,
        logit_rows: 8,
    };
    Session::new(m, lckv_kernels::kernels(), opts).unwrap()
}

/// The logits of every position of `tokens`, prefilled after what `s` holds: positions x
/// vocabulary, row-major.
pub fn prompt_logits(s: &mut Session, tokens: &[u32]) -> Vec<f32> {
    let v = s.model().cfg.n_vocab;
    let mut out = vec![0f32; tokens.len() * v];
    s.prefill(tokens, Logits::All, &mut |i, l| {
        out[i * v..(i + 1) * v].copy_from_slice(l)
    })
    .unwrap();
    out
}

/// max |a - b| over the elements; NaN if any difference is NaN (`f32::max` alone would skip
/// it, and a NaN logit would pass every tolerance).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "comparing arrays of different lengths");
    a.iter().zip(b).fold(0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(d)
        }
    })
}

/// max |a - b| / max |b|: the error of `a` relative to the largest magnitude of the reference
/// `b`, the measure the tests' tolerances are stated in. An all-zero reference gives NaN or
/// infinity, which fails every tolerance: relative to nothing, an error means nothing.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    max_abs_diff(a, b) / scale
}

/// Runs the `lckv` binary built for these tests.
pub fn lckv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lckv"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run lckv: {e}"))
}

/// A program the test needs from the system (jq, espeak-ng, sox...), found on PATH. A missing
/// tool is a setup mistake, not a pass: the test fails and says how to install it.
pub fn required_tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("missing tool {name}: run scripts/install_deps.sh"))
}

/// The Python of the project venv (`<repo>/.venv`, made by scripts/setup_venv.sh). A missing venv
/// is a setup mistake, not a pass: the test fails and says how to make it.
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv").join("bin").join("python");
    if !python.is_file() {
        panic!(
            "missing Python venv {}: run scripts/setup_venv.sh",
            python.display()
        );
    }
    python
}
