//! `lckv bench --parallel`: the batched generation test runs the server's decode path for
//! several sessions and reports one line per session count; bad counts get a usage error.

mod common;

#[test]
fn parallel_generation_reports_each_session_count() {
    let model = common::model_path("random/llama-tiny-f32.gguf");
    let o = common::lckv(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "0",
        "-n",
        "4",
        "-r",
        "1",
        "--threads-list",
        "1",
        "--parallel",
        "1,3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let tests: Vec<&str> = lines.iter().filter_map(|l| l["test"].as_str()).collect();
    assert_eq!(tests, ["tg4", "tg4@3"]);
    for l in lines.iter().filter(|l| l["test"].is_string()) {
        let tps = l["tps"].as_f64().unwrap();
        assert!(tps > 0.0 && tps.is_finite(), "{l}");
    }
}

#[test]
fn parallel_zero_is_a_usage_error() {
    let model = common::model_path("random/llama-tiny-f32.gguf");
    let o = common::lckv(&["bench", "-m", model.to_str().unwrap(), "--parallel", "0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--parallel"), "{err}");
}
