//! `lckv logits`: every position's logits as a float32 .npy, with `--split K` processing the
//! first K tokens as a prompt and the rest one at a time; on an f32 model the two schedules give
//! the same logits (sequential prefill is exact), and on an LCKV model the split run equals the
//! sequential prefill.

mod common;

use common::rel_err;

fn logits(model: &str, extra: &[&str], out: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    let tokens = "5,17,300,42,9,81,7,1000,3,64,22,15";
    let args = [
        &["logits", "-m", model, "--tokens", tokens, "-o"],
        &[out.to_str().unwrap()][..],
        extra,
    ]
    .concat();
    let o = common::lckv(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    lckv::npy::read_f32(out).unwrap()
}

#[test]
fn split_matches_whole_prompt() {
    let dir = std::env::temp_dir().join(format!("lckv-logits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (model, extra) in [
        ("random/llama-tiny-f32.gguf", vec!["--kv-type", "f32"]),
        (
            "random/llama-lckv-0_3_3_3-f32.gguf",
            vec!["--kv-type", "f32", "--prefill", "sequential"],
        ),
    ] {
        let path = common::model_path(model);
        let p = path.to_str().unwrap();
        let (shape, whole) = logits(p, &extra, &dir.join("whole.npy"));
        assert_eq!(shape[0], 12);
        let mut split_args = extra.clone();
        split_args.extend(["--split", "4"]);
        let (shape2, split) = logits(p, &split_args, &dir.join("split.npy"));
        assert_eq!(shape, shape2);
        let e = rel_err(&split, &whole);
        assert!(
            e <= 1e-5,
            "{model}: --split 4 differs from the whole prompt by {e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
