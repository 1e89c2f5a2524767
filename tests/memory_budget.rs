//! The memory budget holds in practice: `lckv run -c auto --mem-budget B` picks the longest
//! context whose plan fits B, and the process's peak resident set (VmHWM, which `lckv run`
//! reports) stays within B + 2%, at three budgets for SmolLM2-135M and for a TinyLlama-1.1B-shape
//! Q4_0 model (random weights: memory does not depend on their values).

mod common;

fn peak_rss(model: &str, budget: &str) -> (usize, usize) {
    let out = common::lckv(&[
        "run",
        "-m",
        model,
        "-c",
        "auto",
        "--mem-budget",
        budget,
        "-p",
        "The capital of France is",
        "-n",
        "16",
        "--temp",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let rss = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("lckv: peak RSS ")?
                .strip_suffix(" bytes")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no peak RSS line in {err}"));
    let ctx = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("lckv: memory plan for ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no memory plan line in {err}"));
    (rss, ctx)
}

fn check(model: &str, budgets: &[&str]) {
    let path = common::model_path(model);
    let mut last_ctx = 0;
    for b in budgets {
        let bytes = lckv::memory::plan::parse_size(b).unwrap();
        let (rss, ctx) = peak_rss(path.to_str().unwrap(), b);
        eprintln!(
            "{model} budget {b}: context {ctx}, peak RSS {:.1} MiB",
            rss as f64 / 1048576.0
        );
        assert!(
            rss as f64 <= bytes as f64 * 1.02,
            "{model}: peak RSS {rss} exceeds the budget {b} by more than 2%"
        );
        assert!(
            ctx > last_ctx,
            "a larger budget should fit a longer context"
        );
        last_ctx = ctx;
    }
}

#[test]
fn smollm2_stays_within_budget() {
    check("SmolLM2-135M-Instruct.Q4_1.gguf", &["160M", "200M", "300M"]);
}

#[test]
fn tinyllama_shape_stays_within_budget() {
    check(
        "random/bench/tinyllama-1.1b-q4_0.gguf",
        &["660M", "680M", "700M"],
    );
}
