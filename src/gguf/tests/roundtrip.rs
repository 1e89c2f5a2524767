//! Writer -> reader round trips, typed getters, tensor views and the writer's own checks.

use super::*;
use lckv_kernels::formats::Q8_0_BYTES;

#[test]
fn every_value_type_and_tensor_type_round_trips() {
    let w = full_writer(1);
    let bytes = w.to_bytes();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.metadata(), &all_values()[..]);
    assert_eq!(f.file_size(), bytes.len() as u64);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.tensors().len(), ALL_TYPES.len());

    let mut rng = XorShift(1);
    for (i, (ty, t)) in ALL_TYPES.iter().zip(f.tensors()).enumerate() {
        let dims = vec![ty.block_size() * 2, 1 + i % 3];
        let n = ty.row_size(dims[0]).unwrap() * dims[1];
        assert_eq!(t.name, format!("tensor.{}", ty.name()));
        assert_eq!(t.ty, *ty);
        assert_eq!(t.dims, dims);
        assert_eq!(t.size, n);
        assert_eq!(t.n_elements(), dims[0] * dims[1]);
        assert_eq!(t.n_rows(), dims[1]);
        assert_eq!(t.offset % 32, 0, "{}", t.name);
        assert_eq!(f.tensor_data(t), &rng.bytes(n)[..], "{}", t.name);
        assert_eq!(f.tensor_info(&t.name), Some(t));
    }
}

#[test]
fn custom_alignment_is_used_for_data_section_and_offsets() {
    let mut w = GgufWriter::new();
    w.try_add("general.alignment", Value::U32(64)).unwrap();
    w.add_tensor("a", GgmlType::F32, &[3], vec![1; 12]).unwrap();
    w.add_tensor("b", GgmlType::F16, &[5, 2], vec![2; 20])
        .unwrap();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.tensors()[1].offset, 64);
    assert_eq!(f.tensor_data(&f.tensors()[1]), &[2u8; 20][..]);
}

#[test]
fn alignment_larger_than_the_padding_chunk() {
    let mut w = GgufWriter::new();
    w.try_add("general.alignment", Value::U32(8192)).unwrap();
    w.add_tensor("a", GgmlType::F32, &[3], vec![1; 12]).unwrap();
    w.add_tensor("b", GgmlType::F32, &[1], vec![2; 4]).unwrap();
    let bytes = w.to_bytes();
    assert_eq!(bytes.len(), 3 * 8192);
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!((f.data_offset(), f.tensors()[1].offset), (8192, 8192));
    assert_eq!(f.tensor_data(&f.tensors()[1]), &[2u8; 4][..]);
}

#[test]
fn version_2_files_read_like_version_3() {
    let mut bytes = full_writer(2).to_bytes();
    bytes[4] = 2;
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.metadata(), &all_values()[..]);
}

#[test]
fn typed_getters_convert_or_name_the_key() {
    let f = GgufFile::from_bytes(full_writer(3).to_bytes()).unwrap();
    assert_eq!(f.get_u32("t.u16").unwrap(), Some(65535));
    assert_eq!(f.get_u32("t.u32").unwrap(), Some(u32::MAX));
    assert_eq!(f.get_u64("t.u64").unwrap(), Some(u64::MAX));
    assert_eq!(f.get_i64("t.i32").unwrap(), Some(i32::MIN as i64));
    assert_eq!(f.get_f32("t.f32").unwrap(), Some(-0.15625));
    assert_eq!(f.get_f32("t.f64").unwrap(), Some(f32::INFINITY)); // 1e308 rounds to inf in f32
    assert_eq!(f.get_f32("t.u16").unwrap(), Some(65535.0));
    assert_eq!(f.get_bool("t.bool").unwrap(), Some(true));
    assert_eq!(f.get_str("t.str").unwrap(), Some("ünïcødé ✓ \u{1F600}"));
    assert_eq!(f.get_u32("no.such.key").unwrap(), None);
    assert_eq!(f.get_str_array("no.such.key").unwrap(), None);
    assert_eq!(f.get_u32_array("t.a_u8").unwrap(), Some(vec![1, 2, 255]));
    assert_eq!(
        f.get_f32_array("t.a_i32").unwrap(),
        Some(vec![-1.0, 0.0, 1.0])
    );
    assert_eq!(
        f.get_str_array("t.a_str").unwrap(),
        Some(vec!["a", "", "<|im_end|>"])
    );
    assert_eq!(f.get_array("t.a_empty").unwrap(), Some(&[][..]));
    assert_eq!(
        f.get_i64_array("t.a_i64").unwrap(),
        Some(vec![i64::MAX, i64::MIN])
    );

    let e = f.get_u32("t.str").unwrap_err();
    assert_eq!(e.kind(), GgufErrorKind::WrongType);
    assert!(e.to_string().contains("'t.str' is string"), "{e}");
    let e = f.get_u32("t.i8").unwrap_err().to_string();
    assert!(
        e.contains("'t.i8' is i8 -128") && e.contains("unsigned"),
        "{e}"
    );
    let e = f.get_u32("t.u64").unwrap_err().to_string();
    assert!(e.contains("fits in 32 bits"), "{e}");
    let e = f.get_bool("t.u8").unwrap_err().to_string();
    assert!(e.contains("'t.u8'") && e.contains("expected a bool"), "{e}");
    let e = f.get_str("t.a_str").unwrap_err().to_string();
    assert!(e.contains("is array of 3 elements"), "{e}");
    let e = f.get_u32_array("t.a_str").unwrap_err().to_string();
    assert!(e.contains("'t.a_str': element 0 is string"), "{e}");
    let e = f.get_str_array("t.u8").unwrap_err().to_string();
    assert!(e.contains("expected an array"), "{e}");
}

#[test]
fn value_accessors() {
    assert_eq!(Value::I32(-1).as_u64(), None);
    assert_eq!(Value::I64(7).as_u64(), Some(7));
    assert_eq!(Value::U64(1 << 32).as_u32(), None);
    assert_eq!(Value::U64(u64::MAX).as_i64(), None);
    assert_eq!(Value::F32(1.5).as_u32(), None);
    assert_eq!(Value::F64(0.5).as_f32(), Some(0.5));
    assert_eq!(Value::Bool(true).as_u32(), None);
    assert_eq!(Value::String("x".into()).as_str(), Some("x"));
    assert_eq!(Value::U8(1).as_bool(), None);
    assert_eq!(Value::Array(vec![]).type_name(), "array");
}

#[test]
fn tensor_f32_is_a_zero_copy_view() {
    let vals: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
    let mut w = GgufWriter::new();
    w.add_tensor(
        "w",
        GgmlType::F32,
        &[4, 3],
        vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
    .unwrap();
    w.add_tensor("q", GgmlType::Q8_0, &[32], vec![0; Q8_0_BYTES])
        .unwrap();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let view = f.tensor_f32("w").unwrap();
    assert_eq!(view, &vals[..]);
    let data = f.tensor_data(f.tensor_info("w").unwrap());
    assert_eq!(
        view.as_ptr() as *const u8,
        data.as_ptr(),
        "view must alias the file bytes"
    );

    let e = f.tensor_f32("q").unwrap_err();
    assert_eq!(e.kind(), GgufErrorKind::WrongType);
    assert!(
        e.to_string().contains("tensor 'q' is q8_0, expected f32"),
        "{e}"
    );
    let e = f.tensor_f32("missing").unwrap_err();
    assert_eq!(e.kind(), GgufErrorKind::NotFound);
    assert!(e.to_string().contains("no tensor named 'missing'"), "{e}");
}

#[test]
fn tensor_f32_reports_misaligned_data() {
    // Alignment 2 lets an f32 tensor start at an odd multiple of 2.
    let mut r = Raw::header(3, 2, 1);
    r.str("general.alignment").u32(4).u32(2);
    r.tensor("a", &[1], 1, 0); // f16, 2 bytes
    r.tensor("b", &[2], 0, 2); // f32 at data offset 2
    r.pad(2).data(2 + 8);
    let f = GgufFile::from_bytes(r.bytes()).unwrap();
    assert_eq!(f.alignment(), 2);
    // Header and descriptions take 123 bytes, so data starts at 124 and "b" at 126.
    assert_eq!(f.data_offset(), 124);
    let e = f.tensor_f32("b").unwrap_err().to_string();
    assert!(
        e.contains("tensor 'b': data at file byte 126 is not 4-byte aligned"),
        "{e}"
    );
}

#[test]
fn foreign_tensor_info_gives_empty_slice_not_panic() {
    let f = GgufFile::from_bytes(full_writer(4).to_bytes()).unwrap();
    let mut t = f.tensors()[0].clone();
    t.offset = u64::MAX - 3;
    assert!(f.tensor_data(&t).is_empty());
    t.offset = 0;
    t.size = usize::MAX;
    assert!(f.tensor_data(&t).is_empty());
}

#[test]
fn writer_rejects_bad_tensors_with_reasons() {
    let mut w = GgufWriter::new();
    let e = w
        .add_tensor("x", GgmlType::Q4_0, &[32, 2], vec![0; 35])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor 'x': data is 35 bytes but [32, 2] of q4_0 needs 36"),
        "{e}"
    );
    let e = w
        .add_tensor("x", GgmlType::Q4K, &[100], vec![])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("row length 100 is not a multiple of the q4_K block size 256"),
        "{e}"
    );
    let e = w
        .add_tensor("x", GgmlType::F32, &[1, 1, 1, 1, 1], vec![0; 4])
        .unwrap_err();
    assert!(e.to_string().contains("has 5 dimensions"), "{e}");
    let e = w.add_tensor("x", GgmlType::F32, &[], vec![]).unwrap_err();
    assert!(e.to_string().contains("has 0 dimensions"), "{e}");
    let e = w
        .add_tensor("x", GgmlType::F32, &[4, 0], vec![])
        .unwrap_err();
    assert!(e.to_string().contains("contain 0"), "{e}");
    let e = w
        .add_tensor("x", GgmlType::F32, &[1 << 20, usize::MAX / 2], vec![])
        .unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
    w.add_tensor("x", GgmlType::F32, &[1], vec![0; 4]).unwrap();
    let e = w
        .add_tensor("x", GgmlType::F32, &[1], vec![0; 4])
        .unwrap_err();
    assert!(e.to_string().contains("already added"), "{e}");
}

#[test]
fn writer_refuses_unwritable_values_and_write_atomic_reports_it() {
    let mut w = GgufWriter::new();
    let e = w
        .try_add("mixed", Value::Array(vec![Value::U8(1), Value::I8(1)]))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("element 1 is i8 but element 0 is u8"),
        "{e}"
    );
    let e = w.try_add("general.alignment", Value::U32(48)).unwrap_err();
    assert!(e.to_string().contains("power of two"), "{e}");
    let deep = Value::Array(vec![Value::Array(vec![Value::Array(vec![Value::Array(
        vec![Value::Array(vec![Value::U8(1)])],
    )])])]);
    let e = w.try_add("deep", deep).unwrap_err();
    assert!(e.to_string().contains("deeper than 4"), "{e}");

    w.add("ok", Value::U8(1));
    w.add(
        "mixed",
        Value::Array(vec![Value::U8(1), Value::String("a".into())]),
    );
    // The refused value is left out; the rest is a valid file.
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.metadata().len(), 1);
    let dir = temp_dir("refused");
    let path = dir.join("m.gguf");
    let e = w.write_atomic(&path).unwrap_err().to_string();
    assert!(e.contains("not writing") && e.contains("'mixed'"), "{e}");
    assert!(!path.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn add_replaces_an_existing_key_in_place() {
    let mut w = GgufWriter::new();
    w.add("a", Value::U8(1));
    w.add("b", Value::U8(2));
    w.add("a", Value::String("new".into()));
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(
        f.metadata()[0],
        ("a".to_owned(), Value::String("new".into()))
    );
    assert_eq!(f.metadata().len(), 2);
}

#[test]
fn write_atomic_then_open_mapped_and_read() {
    let dir = temp_dir("atomic");
    let path = dir.join("model.gguf");
    let w = full_writer(5);
    w.write_atomic(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), w.to_bytes());
    let mapped = GgufFile::open(&path).unwrap();
    assert!(mapped.is_mapped());
    let owned = GgufFile::open_with(&path, &OpenOptions { mmap: false }).unwrap();
    assert!(!owned.is_mapped());
    assert_eq!(mapped.as_bytes(), owned.as_bytes());
    assert_eq!(mapped.metadata(), owned.metadata());
    assert_eq!(mapped.tensors(), owned.tensors());
    mapped.advise(Advice::WillNeed);
    mapped.advise(Advice::Random);
    owned.advise(Advice::Sequential);
    for t in mapped.tensors() {
        mapped.advise_tensor(t, Advice::WillNeed);
    }

    // Overwriting replaces the file; only the final file remains in the directory.
    full_writer(6).write_atomic(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), full_writer(6).to_bytes());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.gguf")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_write_atomic_leaves_no_partial_file() {
    let dir = temp_dir("atomic-fail");
    // The target is a non-empty directory: the rename fails after the data was written.
    let target = dir.join("taken");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let e = full_writer(7).write_atomic(&target).unwrap_err();
    assert_eq!(e.kind(), GgufErrorKind::Io);
    assert!(e.to_string().contains("cannot rename"), "{e}");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("taken")]);

    // A missing directory fails before anything is written.
    let e = full_writer(7)
        .write_atomic(&dir.join("no/such/dir/m.gguf"))
        .unwrap_err();
    assert!(
        e.to_string().contains("cannot create temporary file"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lock_on_owned_bytes_says_to_map() {
    let f = GgufFile::from_bytes(full_writer(8).to_bytes()).unwrap();
    let e = f.lock().unwrap_err();
    assert_eq!(e.kind(), GgufErrorKind::Lock);
    assert!(e.to_string().contains("mmap: true"), "{e}");
}

#[test]
fn open_missing_file_names_the_path() {
    let e = GgufFile::open(Path::new("/nonexistent/dir/model.gguf")).unwrap_err();
    assert_eq!(e.kind(), GgufErrorKind::Io);
    let s = e.to_string();
    assert!(
        s.contains("/nonexistent/dir/model.gguf") && s.contains("cannot open"),
        "{s}"
    );
}

#[test]
fn open_error_for_bad_content_names_the_path() {
    let dir = temp_dir("badpath");
    let path = dir.join("bad.gguf");
    std::fs::write(&path, b"GGML and more bytes here").unwrap();
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(e.contains("bad.gguf: not a GGUF file"), "{e}");
    std::fs::write(&path, b"").unwrap();
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(e.contains("file is 0 bytes"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
