//! Files from independent writers: the fixture written by llama.cpp's `gguf` Python package
//! (tests/reference/make_gguf_fixture.py; the expected values below are the script's literals)
//! and the real SmolLM2 and Gemma 3 models (expected facts read with the Python `GGUFReader`).

use super::*;
use half::{bf16, f16};
use lckv_kernels::formats::{Q8_0_BYTES, Q8_0_QS};

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/gguf_fixture.gguf")
}

/// x[i] = (i - 32) / 8, as in the script.
fn ramp(i: usize) -> f32 {
    (i as f32 - 32.0) / 8.0
}

#[test]
fn python_fixture_metadata() {
    let f = GgufFile::open(&fixture_path()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 23);
    assert_eq!(keys[0], "general.architecture");
    assert_eq!(keys[22], "test.arr_nested");
    let g = |k: &str| f.get(k).unwrap_or_else(|| panic!("{k} missing")).clone();
    assert_eq!(g("general.architecture"), Value::String("fixture".into()));
    assert_eq!(g("test.u8"), Value::U8(200));
    assert_eq!(g("test.i8"), Value::I8(-100));
    assert_eq!(g("test.u16"), Value::U16(60000));
    assert_eq!(g("test.i16"), Value::I16(-30000));
    assert_eq!(g("test.u32"), Value::U32(4_000_000_000));
    assert_eq!(g("test.i32"), Value::I32(-2_000_000_000));
    assert_eq!(g("test.u64"), Value::U64(18_000_000_000_000_000_000));
    assert_eq!(g("test.i64"), Value::I64(-9_000_000_000_000_000_000));
    assert_eq!(g("test.f32"), Value::F32(3.25));
    assert_eq!(g("test.f64"), Value::F64(-1.0e-300));
    assert_eq!(g("test.bool_true"), Value::Bool(true));
    assert_eq!(g("test.bool_false"), Value::Bool(false));
    assert_eq!(
        g("test.string"),
        Value::String("h\u{e9}llo \u{2713}".into())
    );
    assert_eq!(g("test.empty_string"), Value::String(String::new()));
    assert_eq!(g("test.arr_i32"), Value::from(vec![1i32, -2, 3]));
    assert_eq!(g("test.arr_u8"), Value::from(vec![0u8, 127, 255]));
    assert_eq!(g("test.arr_u64"), Value::from(vec![1u64, 1 << 40]));
    assert_eq!(g("test.arr_f32"), Value::from(vec![0.5f32, -1.5]));
    assert_eq!(g("test.arr_f64"), Value::from(vec![2.5f64]));
    assert_eq!(g("test.arr_str"), Value::from(vec!["a", "", "\u{fc}"]));
    assert_eq!(g("test.arr_bool"), Value::from(vec![true, false, true]));
    assert_eq!(
        g("test.arr_nested"),
        Value::Array(vec![vec![1i32, 2].into(), vec![3i32].into()])
    );
}

#[test]
fn python_fixture_tensors() {
    let f = GgufFile::open(&fixture_path()).unwrap();
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["t.f32", "t.f16", "t.bf16", "t.q8_0", "t.q4_0"]);
    // Offsets and sizes as the Python reader reports them.
    let layout: Vec<(u64, usize)> = f.tensors().iter().map(|t| (t.offset, t.size)).collect();
    assert_eq!(layout, [(0, 48), (64, 16), (96, 16), (128, 68), (224, 18)]);
    assert_eq!(f.data_offset(), 1056);
    assert_eq!(f.file_size(), 1312);

    let t = f.tensor_info("t.f32").unwrap();
    assert_eq!(
        (t.dims.as_slice(), t.ty, t.n_rows()),
        (&[4usize, 3][..], GgmlType::F32, 3)
    );
    let want: Vec<f32> = (0..12).map(ramp).collect();
    assert_eq!(f.tensor_f32("t.f32").unwrap(), &want[..]);

    // f16 and bf16 hold the ramp exactly (multiples of 1/8 in a small range).
    let d = f.tensor_bytes("t.f16").unwrap();
    let got: Vec<f32> = d
        .chunks(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    assert_eq!(got, (0..8).map(ramp).collect::<Vec<_>>());
    let d = f.tensor_bytes("t.bf16").unwrap();
    let got: Vec<f32> = d
        .chunks(2)
        .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    assert_eq!(got, (0..8).map(ramp).collect::<Vec<_>>());

    // q8_0 blocks: f16 scale then 32 i8; dequantized values are within half a step of the ramp.
    let t = f.tensor_info("t.q8_0").unwrap();
    assert_eq!(
        (t.dims.as_slice(), t.ty),
        (&[32usize, 2][..], GgmlType::Q8_0)
    );
    let d = f.tensor_data(t);
    for (b, block) in d.chunks(Q8_0_BYTES).enumerate() {
        let scale = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let amax = (0..32).map(|j| ramp(b * 32 + j).abs()).fold(0.0, f32::max);
        assert!(
            (scale - amax / 127.0).abs() <= amax / 127.0 * 1e-3,
            "block {b} scale {scale}"
        );
        // Error bound: half a step plus the f16 rounding of the scale times the largest quant.
        let tol = amax / 127.0 * 0.5 + 127.0 * (scale - amax / 127.0).abs() + 1e-6;
        for j in 0..32 {
            let x = scale * (block[Q8_0_QS + j] as i8) as f32;
            assert!(
                (x - ramp(b * 32 + j)).abs() <= tol,
                "block {b} elem {j}: {x}"
            );
        }
    }
    // q4_0: one block of 32 = f16 scale + 16 bytes of nibbles.
    let t = f.tensor_info("t.q4_0").unwrap();
    assert_eq!((t.size, t.n_elements()), (18, 32));
}

/// Our writer, given the fixture's values and tensor bytes in the same order, produces the very
/// bytes the Python writer produced: same encoding, padding and offsets.
#[test]
fn writer_matches_python_writer_byte_for_byte() {
    let py = std::fs::read(fixture_path()).unwrap();
    let f = GgufFile::from_bytes(py.clone()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.try_add(k, v.clone()).unwrap();
    }
    for t in f.tensors() {
        w.add_tensor(&t.name, t.ty, &t.dims, f.tensor_data(t).to_vec())
            .unwrap();
    }
    assert_eq!(w.to_bytes(), py);
}

#[test]
fn lock_a_small_mapped_file() {
    let f = GgufFile::open(&fixture_path()).unwrap();
    // A 1.3 KB mapping fits any default RLIMIT_MEMLOCK; when it does not, the message must
    // tell how to raise the limit.
    if let Err(e) = f.lock() {
        let s = e.to_string();
        assert!(
            s.contains("RLIMIT_MEMLOCK") && s.contains("LimitMEMLOCK="),
            "{s}"
        );
    }
}

fn model_path(file: &str) -> PathBuf {
    let dir = std::env::var_os("LCKV_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    let p = dir.join(file);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch_models.sh (or set LCKV_MODELS to the directory that \
         holds the models)",
        p.display()
    );
    p
}

/// Sum of bytes and a position-weighted sum. The expected values come from the Python reader:
/// `b = np.frombuffer(t.data.tobytes(), np.uint8).astype(np.uint64)`,
/// `(b.sum(), (b * (np.arange(len(b), dtype=np.uint64) % 251 + 1)).sum())`.
fn sums(d: &[u8]) -> (u64, u64) {
    d.iter().enumerate().fold((0, 0), |(s, w), (i, &b)| {
        (s + b as u64, w + b as u64 * ((i % 251) as u64 + 1))
    })
}

#[test]
fn smollm2_opens_with_expected_layout() {
    let path = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.tensors().len(), 272);
    assert_eq!(f.metadata().len(), 33);
    assert_eq!(f.data_offset(), 1_785_664);
    assert_eq!(f.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(f.get_u32("llama.block_count").unwrap(), Some(30));
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), Some(576));
    assert_eq!(f.get_u32("llama.attention.head_count_kv").unwrap(), Some(3));
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), Some(100000.0));
    assert_eq!(
        f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        Some(1e-5)
    );
    assert_eq!(
        f.get_bool("tokenizer.ggml.add_bos_token").unwrap(),
        Some(false)
    );
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(
        &tokens[..3],
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    );
    assert_eq!(tokens[49151], "ectable");
    assert_eq!(
        f.get_u32_array("tokenizer.ggml.token_type")
            .unwrap()
            .unwrap()
            .len(),
        49152
    );

    let count = |ty| f.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!(
        (
            count(GgmlType::Q4_1),
            count(GgmlType::F32),
            count(GgmlType::Q8_0)
        ),
        (210, 61, 1)
    );

    let t = f.tensor_info("token_embd.weight").unwrap();
    assert_eq!(
        (t.dims.as_slice(), t.ty, t.offset, t.size),
        (&[576, 49152][..], GgmlType::Q8_0, 0, 30_081_024)
    );
    assert_eq!(sums(f.tensor_data(t)), (3_670_375_898, 462_444_211_255));
    let t = f.tensor_info("blk.9.attn_v.weight").unwrap();
    assert_eq!(
        (t.dims.as_slice(), t.ty, t.offset, t.size),
        (&[576, 192][..], GgmlType::Q4_1, 96_505_344, 69_120)
    );
    let norm = f.tensor_f32("blk.0.attn_norm.weight").unwrap();
    assert_eq!(norm.len(), 576);
    // Exact f32 values, as Python prints them in f64.
    let first: Vec<f64> = norm[..3].iter().map(|&x| x as f64).collect();
    assert_eq!(first, [0.01397705078125, 0.0238037109375, -0.019775390625]);
    assert_eq!(
        sums(f.tensor_bytes("output_norm.weight").unwrap()),
        (156_277, 19_260_292)
    );
    assert_eq!(
        &f.tensor_f32("output_norm.weight").unwrap()[..3],
        [1.7578125, 1.8203125, 1.78125]
    );

    // Reading into memory gives the same file.
    let owned = GgufFile::open_with(&path, &OpenOptions { mmap: false }).unwrap();
    assert_eq!(owned.tensors(), f.tensors());
    assert_eq!(owned.as_bytes(), f.as_bytes());
}

#[test]
fn gemma3_opens_with_expected_layout() {
    let f = GgufFile::open(&model_path("gemma-3-270m-Q4_K_M.gguf")).unwrap();
    assert_eq!((f.tensors().len(), f.metadata().len()), (236, 33));
    assert_eq!(f.data_offset(), 6_525_120);
    assert_eq!(f.get_str("general.architecture").unwrap(), Some("gemma3"));
    assert_eq!(
        f.get_u32("gemma3.attention.sliding_window").unwrap(),
        Some(512)
    );
    let count = |ty| f.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!(
        [
            GgmlType::F32,
            GgmlType::Q5_0,
            GgmlType::Q4K,
            GgmlType::Q8_0,
            GgmlType::Q6K
        ]
        .map(count),
        [109, 81, 27, 10, 9]
    );
    let t = f.tensor_info("token_embd.weight").unwrap();
    assert_eq!(
        (t.dims.as_slice(), t.offset, t.size),
        (&[640, 262144][..], 2560, 178_257_920)
    );
    assert_eq!(sums(f.tensor_data(t)), (22_086_537_498, 2_782_950_438_227));
    assert_eq!(
        &f.tensor_f32("blk.17.post_ffw_norm.weight").unwrap()[..3],
        [377.0, 339.0, 67.0]
    );
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap();
    assert_eq!(
        (tokens.len(), tokens[2], tokens[262143]),
        (262144, "<bos>", "<unused6241>")
    );
}
