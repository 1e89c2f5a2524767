//! `lckv convert` on the checkpoint layouts Hugging Face writes besides one f32 file: sharded
//! safetensors with a `model.safetensors.index.json`, bf16 and f16 tensors, and the inputs it
//! must refuse with an error. The f32 fixture tests/fixtures/lckv/standard is rewritten in each
//! layout. Converted to an f32 GGUF, each must equal, tensor for tensor and bit for bit, the GGUF
//! converted from the single f32 file whose values were first rounded to that dtype: widening
//! bf16/f16 to f32 is exact, so any difference is a converter bug (wrong shard, wrong byte
//! order, a dtype read as another), not rounding.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{f32_session, prompt_logits, rel_err};
use half::{bf16, f16};
use lckv::convert::{convert, ConvertOptions};
use lckv::gguf::GgufFile;
use lckv::session::PrefillChoice;
use lckv_kernels::GgmlType;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

/// One checkpoint tensor: name, shape (outermost first), values.
type Tensor = (String, Vec<usize>, Vec<f32>);

fn fixture() -> PathBuf {
    common::fixture("lckv/standard")
}

/// The fixture's tensors in a fixed (sorted) order.
fn fixture_tensors() -> Vec<Tensor> {
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<Tensor> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            assert_eq!(t.dtype(), Dtype::F32, "the fixture is f32");
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, t.shape().to_vec(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A fresh, empty folder under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lckv-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn encode(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect(),
        other => panic!("no encoder for {other:?}"),
    }
}

/// `x` rounded to `dtype` and widened back (round to nearest even, as the `half` crate and
/// PyTorch's `.to(torch.bfloat16)` do).
fn round_to(dtype: Dtype, x: f32) -> f32 {
    match dtype {
        Dtype::F32 => x,
        Dtype::F16 => f16::from_f32(x).to_f32(),
        Dtype::BF16 => bf16::from_f32(x).to_f32(),
        other => panic!("no rounding for {other:?}"),
    }
}

fn write_file(path: &Path, tensors: &[(&str, Dtype, &[usize], Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, dt, shape, data)| {
            (
                n.to_string(),
                TensorView::new(*dt, shape.to_vec(), data).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Writes config.json and the tensors as `dtype`, in one `model.safetensors` (`shards` = 1) or
/// in `shards` files named as transformers names them, with the index. Tensors go to shards
/// round-robin, so every shard holds matrices and vectors of several layers.
fn write_checkpoint(dir: &Path, tensors: &[Tensor], dtype: Dtype, shards: usize) {
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
    let encoded: Vec<(&str, Dtype, &[usize], Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), dtype, s.as_slice(), encode(dtype, v)))
        .collect();
    if shards == 1 {
        write_file(&dir.join("model.safetensors"), &encoded);
        return;
    }
    let name = |i: usize| format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
    let mut map = serde_json::Map::new();
    for i in 0..shards {
        let part: Vec<_> = encoded.iter().skip(i).step_by(shards).cloned().collect();
        for t in &part {
            map.insert(t.0.to_string(), Value::String(name(i)));
        }
        write_file(&dir.join(name(i)), &part);
    }
    let index = json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
}

fn convert_f32(dir: &Path) -> lckv::Result<PathBuf> {
    let out = dir.join("out.gguf");
    convert(
        dir,
        &out,
        &ConvertOptions {
            out_type: GgmlType::F32,
            vocab_from: None,
        },
    )?;
    Ok(out)
}

/// Every tensor (type, shape, bytes) and every metadata key but the name (the folder's name)
/// must be identical.
fn assert_same_gguf(what: &str, got: &Path, want: &Path) {
    let (a, b) = (GgufFile::open(got).unwrap(), GgufFile::open(want).unwrap());
    let meta = |g: &GgufFile| -> Vec<(String, lckv::gguf::Value)> {
        g.metadata()
            .iter()
            .filter(|(k, _)| k != "general.name")
            .cloned()
            .collect()
    };
    assert_eq!(meta(&a), meta(&b), "{what}: metadata");
    let want_tensors: HashMap<&str, _> = b.tensors().iter().map(|t| (t.name.as_str(), t)).collect();
    assert_eq!(a.tensors().len(), b.tensors().len(), "{what}: tensor count");
    for t in a.tensors() {
        let u = want_tensors
            .get(t.name.as_str())
            .unwrap_or_else(|| panic!("{what}: unexpected tensor {}", t.name));
        assert_eq!((t.ty, &t.dims), (u.ty, &u.dims), "{what}: {}", t.name);
        assert!(
            a.tensor_data(t) == b.tensor_data(u),
            "{what}: {} differs from the rounded f32 conversion",
            t.name
        );
    }
}

/// Converts `tensors` as `dtype` in `shards` files, and the same values rounded to `dtype` as
/// one f32 file, and requires the two GGUFs to be identical.
fn check_layout(tag: &str, dtype: Dtype, shards: usize) {
    let tensors = fixture_tensors();
    let dir = scratch(tag);
    write_checkpoint(&dir, &tensors, dtype, shards);
    if shards > 1 {
        assert!(!dir.join("model.safetensors").exists());
        let n = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".safetensors")
            })
            .count();
        assert_eq!(n, shards, "{tag}: shard files written");
    }
    let rounded: Vec<Tensor> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.clone(),
                v.iter().map(|&x| round_to(dtype, x)).collect(),
            )
        })
        .collect();
    if dtype != Dtype::F32 {
        // The rounding must bite, or the comparison would not tell the dtypes apart.
        let changed = tensors
            .iter()
            .zip(&rounded)
            .flat_map(|(a, b)| a.2.iter().zip(&b.2))
            .filter(|(x, y)| x != y)
            .count();
        assert!(
            changed > 1000,
            "{tag}: rounding changed only {changed} values"
        );
    }
    let ref_dir = scratch(&format!("{tag}-ref"));
    write_checkpoint(&ref_dir, &rounded, Dtype::F32, 1);
    let got = convert_f32(&dir).unwrap();
    let want = convert_f32(&ref_dir).unwrap();
    assert_same_gguf(tag, &got, &want);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&ref_dir).unwrap();
}

#[test]
fn three_f32_shards_convert_as_one_file() {
    check_layout("f32x3", Dtype::F32, 3);
}

#[test]
fn bf16_single_file_converts_as_rounded_f32() {
    check_layout("bf16x1", Dtype::BF16, 1);
}

#[test]
fn two_f16_shards_convert_as_rounded_f32() {
    check_layout("f16x2", Dtype::F16, 2);
}

/// Logits of the converted half-precision checkpoints against PyTorch's f32 logits of the
/// original (tests/fixtures/lckv/standard, the 40-token prompt).
///
/// Tolerance, max |lckv - PyTorch| / max |PyTorch|: f32 1e-4, f16 5e-3, bf16 4e-2. Only the
/// weights are rounded (bf16 keeps 8 significant bits, f16 11); the computation stays f32, and
/// the GGUFs are bit for bit those of the rounded f32 checkpoint (tests above), so what remains
/// is how much this model moves when its weights are rounded. Its 8 random layers amplify that
/// noise: measured f16 2.5e-3 and bf16 2.5e-2 (the f32 checkpoint: 8.8e-7), about 20 times the
/// formats' relative step. The 1e-2 one might expect for bf16 does not hold for this fixture.
/// The test also checks that the bf16 error is 4 to 16 times the f16 one: the steps differ by
/// 2^3 = 8, and an error that scales with the rounding step is the formats' own, where a
/// misread tensor would give errors of order 1 in both.
#[test]
fn half_precision_logits_stay_near_pytorch_f32() {
    let fx = fixture();
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("cases.json")).unwrap()).unwrap();
    let prompt = common::token_ids(&cases["cases"]["prompt_sequential"]["tokens"]);
    let (_, want) = lckv::npy::read_f32(&fx.join("prompt_sequential_logits.npy")).unwrap();
    let tensors = fixture_tensors();
    let mut errors = Vec::new();
    for (tag, dtype, tol) in [
        ("f32", Dtype::F32, 1e-4f32),
        ("bf16", Dtype::BF16, 4e-2),
        ("f16", Dtype::F16, 5e-3),
    ] {
        let dir = scratch(&format!("logits-{tag}"));
        write_checkpoint(&dir, &tensors, dtype, 1);
        let m = common::load_model(&convert_f32(&dir).unwrap());
        let mut s = f32_session(&m, 64, PrefillChoice::Sequential);
        let err = rel_err(&prompt_logits(&mut s, &prompt), &want);
        eprintln!("{tag} checkpoint: max |lckv - PyTorch f32| / max |PyTorch| = {err:.2e}");
        errors.push((tag, err, tol));
        drop(s);
        drop(m);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    for &(tag, err, tol) in &errors {
        assert!(err <= tol, "{tag}: relative logit error {err} > {tol}");
    }
    let ratio = errors[1].1 / errors[2].1;
    assert!(
        (4.0..=16.0).contains(&ratio),
        "bf16 error / f16 error = {ratio}, expected near 8"
    );
}

/// A sharded f32 copy of the fixture in a fresh folder, and its index as JSON.
fn sharded(tag: &str) -> (PathBuf, Value) {
    let dir = scratch(tag);
    write_checkpoint(&dir, &fixture_tensors(), Dtype::F32, 2);
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    (dir, index)
}

fn write_index(dir: &Path, index: &Value) {
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// Converting `dir` must fail (an error, not a panic) with a message holding every needle; and
/// write no output file.
fn expect_refused(dir: &Path, needles: &[&str]) {
    let err = match convert_f32(dir) {
        Ok(_) => panic!("{} converted, but should have been refused", dir.display()),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(err.contains(n), "message lacks {n:?}: {err}");
    }
    assert!(!dir.join("out.gguf").exists(), "an output was written");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn index_naming_a_missing_shard_is_refused() {
    let (dir, _) = sharded("missing-shard");
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    expect_refused(&dir, &["model-00002-of-00002.safetensors", "not in"]);
}

#[test]
fn shard_names_with_path_separators_are_refused() {
    let outside = format!("../lckv-{}-outside.safetensors", std::process::id());
    for (i, bad) in ["sub/model-00002-of-00002.safetensors", outside.as_str()]
        .into_iter()
        .enumerate()
    {
        let (dir, mut index) = sharded(&format!("separator-{i}"));
        // The file exists where the name points: only the rule against leaving the folder
        // (or entering another) refuses it.
        let target = dir.join(bad);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(dir.join("model-00002-of-00002.safetensors"), &target).unwrap();
        // Resolved now: `dir/..` cannot be followed once `dir` is gone.
        let target = target.canonicalize().unwrap();
        for v in index["weight_map"].as_object_mut().unwrap().values_mut() {
            if v == "model-00002-of-00002.safetensors" {
                *v = bad.into();
            }
        }
        write_index(&dir, &index);
        expect_refused(&dir, &[bad, "plain file name"]);
        if bad == outside {
            std::fs::remove_file(&target).unwrap();
        }
    }
}

#[test]
fn unsupported_dtype_is_refused() {
    let dir = scratch("i64");
    let mut tensors = fixture_tensors();
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
    let norm = tensors
        .iter()
        .position(|t| t.0 == "model.norm.weight")
        .unwrap();
    let (name, shape, v) = tensors.remove(norm);
    let ints: Vec<u8> = v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect();
    let mut encoded: Vec<(&str, Dtype, &[usize], Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), Dtype::F32, s.as_slice(), encode(Dtype::F32, v)))
        .collect();
    encoded.push((&name, Dtype::I64, &shape, ints));
    write_file(&dir.join("model.safetensors"), &encoded);
    expect_refused(&dir, &["model.norm.weight", "I64", "F32, F16 and BF16"]);
}

#[test]
fn index_disagreeing_with_its_shards_is_refused() {
    let (dir, mut index) = sharded("wrong-shard");
    let map = index["weight_map"].as_object_mut().unwrap();
    let (moved, _) = map
        .iter()
        .find(|(_, s)| *s == "model-00001-of-00002.safetensors")
        .map(|(k, s)| (k.clone(), s.clone()))
        .unwrap();
    map.insert(moved.clone(), "model-00002-of-00002.safetensors".into());
    write_index(&dir, &index);
    expect_refused(&dir, &[&moved, "does not hold it"]);
}

#[test]
fn tensor_in_two_shards_is_refused() {
    let dir = scratch("duplicate");
    let tensors = fixture_tensors();
    write_checkpoint(&dir, &tensors, Dtype::F32, 2);
    // Shard 2 gets a second copy of the first tensor, which shard 1 already holds.
    let dup = &tensors[0];
    let mut part: Vec<Tensor> = tensors.iter().skip(1).step_by(2).cloned().collect();
    part.push(dup.clone());
    let encoded: Vec<(&str, Dtype, &[usize], Vec<u8>)> = part
        .iter()
        .map(|(n, s, v)| (n.as_str(), Dtype::F32, s.as_slice(), encode(Dtype::F32, v)))
        .collect();
    write_file(&dir.join("model-00002-of-00002.safetensors"), &encoded);
    expect_refused(&dir, &[&dup.0, "in both"]);
}

#[test]
fn tensor_without_a_place_in_the_model_is_refused() {
    let dir = scratch("bias");
    let mut tensors = fixture_tensors();
    // A Llama with attention_bias: the converter has nowhere to put q_proj.bias, and dropping
    // it would change every logit.
    tensors.push((
        "model.layers.0.self_attn.q_proj.bias".into(),
        vec![32],
        vec![0.5; 32],
    ));
    write_checkpoint(&dir, &tensors, Dtype::F32, 1);
    expect_refused(&dir, &["model.layers.0.self_attn.q_proj.bias", "no place"]);
}
