//! Shared helpers of the integration tests: where the test models live and which Python runs the
//! reference scripts. Models are not in git: scripts/fetch_models.sh downloads the real ones and
//! scripts/make_test_models.sh generates the random ones, both into `models_dir()`.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

/// The repository root (where Cargo.toml of the `lckv` package is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

/// The Python of the project venv (`<repo>/.venv`, made by scripts/setup_venv.sh).
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
