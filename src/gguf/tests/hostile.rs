//! Hostile input: one test per validation rule, each checking the message says what is wrong,
//! plus every truncation of a valid file and a fixed-seed byte-flipping fuzz loop.

use super::*;

const F32: u32 = 0;
const Q8_0: u32 = 8;

/// A small valid file: one key, an f32 [4] at 0 and a q8_0 [32, 2] at 32.
fn valid() -> Raw {
    let mut r = Raw::header(3, 2, 1);
    r.kv_str("general.architecture", "llama");
    r.tensor("a", &[4], F32, 0).tensor("b", &[32, 2], Q8_0, 32);
    r.pad(32).data(32 + 68);
    r
}

/// A file with the given tensor descriptions and `data` bytes of data section.
fn with_tensors(tensors: &[(&str, &[u64], u32, u64)], data: usize) -> Vec<u8> {
    let mut r = Raw::header(3, tensors.len() as u64, 0);
    for &(name, dims, ty, off) in tensors {
        r.tensor(name, dims, ty, off);
    }
    r.pad(32).data(data);
    r.bytes()
}

/// A file whose only content is one key with the raw value bytes `value` after the type id.
fn with_value(ty: u32, value: &Raw) -> Vec<u8> {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(ty);
    r.b.extend_from_slice(&value.b);
    r.data(64); // room, so that counts are bounded by content rather than by size alone
    r.bytes()
}

#[track_caller]
fn rejects(bytes: Vec<u8>, needles: &[&str]) -> GgufError {
    let e = GgufFile::from_bytes(bytes).expect_err("hostile file was accepted");
    let s = e.to_string();
    for n in needles {
        assert!(s.contains(n), "message lacks {n:?}: {s}");
    }
    e
}

#[test]
fn the_base_file_is_valid() {
    let f = GgufFile::from_bytes(valid().bytes()).unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(f.tensor_info("b").unwrap().size, 68);
    // and so are the building blocks the other tests use
    GgufFile::from_bytes(with_tensors(&[("a", &[4], F32, 0)], 16)).unwrap();
    let v = GgufFile::from_bytes(with_value(4, Raw::default().u32(7))).unwrap();
    assert_eq!(v.get("k"), Some(&Value::U32(7)));
}

/// Every proper prefix of a file that ends with its last tensor's data is rejected.
#[test]
fn every_truncation_is_an_error() {
    let full = valid().bytes();
    GgufFile::from_bytes(full.clone()).unwrap();
    for n in 0..full.len() {
        match GgufFile::from_bytes(full[..n].to_vec()) {
            Ok(_) => panic!("prefix of {n} of {} bytes accepted", full.len()),
            Err(e) => assert!(e.to_string().contains("truncated"), "prefix {n}: {e}"),
        }
    }
}

/// A writer's file ends with padding after the last tensor. Cutting into the data is an error;
/// cutting only that padding is accepted (as llama.cpp's mmap loader does), with the same tensors.
#[test]
fn truncation_of_a_padded_file() {
    let full = full_writer(9).to_bytes();
    let f = GgufFile::from_bytes(full.clone()).unwrap();
    let last = f.tensors().iter().max_by_key(|t| t.offset).unwrap();
    let data_end = (f.data_offset() + last.offset) as usize + last.size;
    assert!(data_end < full.len(), "the writer pads the last tensor");
    for n in 0..full.len() {
        let r = GgufFile::from_bytes(full[..n].to_vec());
        if n < data_end {
            let e = r
                .err()
                .unwrap_or_else(|| panic!("prefix {n} of {} accepted", full.len()));
            assert!(e.to_string().contains("truncated"), "prefix {n}: {e}");
        } else {
            let g = r.unwrap();
            assert_eq!(g.tensors(), f.tensors());
            assert_eq!(g.tensor_data(last), f.tensor_data(last));
        }
    }
}

#[test]
fn wrong_magic() {
    let mut b = valid().bytes();
    b[..4].copy_from_slice(b"GGML");
    let e = rejects(b, &["not a GGUF file", "\"GGML\""]);
    assert_eq!(e.kind(), GgufErrorKind::Malformed);
}

#[test]
fn version_1_is_rejected() {
    let mut b = valid().bytes();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    let e = rejects(
        b,
        &["GGUF version 1 is not supported", "convert the model again"],
    );
    assert_eq!(e.kind(), GgufErrorKind::Unsupported);
}

#[test]
fn version_4_is_rejected() {
    let mut b = valid().bytes();
    b[4..8].copy_from_slice(&4u32.to_le_bytes());
    let e = rejects(
        b,
        &["GGUF version 4 is not supported (only versions 2 and 3)"],
    );
    assert_eq!(e.kind(), GgufErrorKind::Unsupported);
}

#[test]
fn big_endian_is_rejected() {
    let mut b = valid().bytes();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    rejects(b, &["big-endian", "little-endian files only"]);
}

#[test]
fn absurd_tensor_count() {
    let mut b = valid().bytes();
    b[8..16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    rejects(b, &["tensor count 9223372036854775807 is impossible"]);
}

#[test]
fn absurd_kv_count() {
    let mut b = valid().bytes();
    b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    rejects(b, &["metadata count 1152921504606846976 is impossible"]);
}

#[test]
fn counts_that_only_fail_together() {
    // Each count alone fits the bytes left; both together cannot.
    let mut r = Raw::header(3, 2, 4);
    r.data(2 * 32 + 4 * 13 - 1);
    rejects(
        r.bytes(),
        &["2 tensor descriptions and 4 key/value entries cannot fit"],
    );
}

#[test]
fn absurd_key_length() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).data(40);
    rejects(
        r.bytes(),
        &[
            "metadata entry 0",
            "key length 18446744073709551615 exceeds",
        ],
    );
}

#[test]
fn absurd_string_length() {
    let b = with_value(8, Raw::default().u64(1 << 40));
    rejects(
        b,
        &[
            "metadata key 'k'",
            "string length 1099511627776 exceeds the 64 bytes left",
        ],
    );
}

#[test]
fn absurd_array_length() {
    let b = with_value(9, Raw::default().u32(4).u64(1 << 62));
    rejects(
        b,
        &[
            "metadata key 'k'",
            "array length 4611686018427387904 is impossible",
            "16 u32",
        ],
    );
}

#[test]
fn absurd_nested_array_length() {
    let b = with_value(9, Raw::default().u32(9).u64(1).u32(8).u64(u64::MAX));
    rejects(b, &["array length 18446744073709551615 is impossible"]);
}

#[test]
fn unknown_value_type() {
    rejects(
        with_value(13, &Raw::default()),
        &["metadata key 'k'", "unknown value type 13"],
    );
}

#[test]
fn unknown_array_element_type() {
    let b = with_value(9, Raw::default().u32(77).u64(1));
    rejects(b, &["metadata key 'k'", "unknown array element type 77"]);
}

#[test]
fn arrays_nested_too_deep() {
    let mut v = Raw::default();
    for _ in 0..MAX_ARRAY_DEPTH {
        v.u32(9).u64(1);
    }
    v.u32(0).u64(1).u8(5);
    // Depth MAX_ARRAY_DEPTH + 1 is refused...
    rejects(with_value(9, &v), &["nested more than 4 deep"]);
    // ...and depth MAX_ARRAY_DEPTH is accepted.
    let mut v = Raw::default();
    for _ in 0..MAX_ARRAY_DEPTH - 1 {
        v.u32(9).u64(1);
    }
    v.u32(0).u64(1).u8(5);
    let f = GgufFile::from_bytes(with_value(9, &v)).unwrap();
    assert_eq!(f.get("k").unwrap().depth(), MAX_ARRAY_DEPTH);
}

#[test]
fn bool_other_than_0_or_1() {
    rejects(
        with_value(7, Raw::default().u8(2)),
        &["metadata key 'k'", "bool value is 2"],
    );
}

#[test]
fn key_not_utf8() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(2).u8(0xff).u8(0xfe).u32(0).u8(1);
    rejects(r.bytes(), &["metadata entry 0", "key is not valid UTF-8"]);
}

#[test]
fn invalid_utf8_in_string_value_is_replaced() {
    let mut v = Raw::default();
    v.u64(3).u8(b'a').u8(0xff).u8(b'b');
    let f = GgufFile::from_bytes(with_value(8, &v)).unwrap();
    assert_eq!(f.get_str("k").unwrap(), Some("a\u{fffd}b"));
}

#[test]
fn duplicate_key() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("dup.key", 1).kv_u32("dup.key", 2);
    rejects(r.bytes(), &["duplicate metadata key 'dup.key'"]);
}

#[test]
fn duplicate_tensor_name() {
    let b = with_tensors(&[("w", &[4], F32, 0), ("w", &[4], F32, 32)], 64);
    rejects(b, &["tensor 'w'", "duplicate tensor name"]);
}

#[test]
fn unknown_tensor_type() {
    let b = with_tensors(&[("w", &[32], 99, 0)], 64);
    let e = rejects(
        b,
        &[
            "tensor 'w'",
            "unknown tensor type id 99",
            "supported types: f32",
        ],
    );
    assert_eq!(e.kind(), GgufErrorKind::Malformed);
}

#[test]
fn known_but_unsupported_tensor_type_is_named() {
    let b = with_tensors(&[("w", &[256], 13, 0)], 256);
    rejects(
        b,
        &[
            "tensor 'w'",
            "type q5_K (ggml id 13) is not supported",
            "re-quantize",
        ],
    );
}

#[test]
fn five_dimensions() {
    let b = with_tensors(&[("w", &[1, 1, 1, 1, 1], F32, 0)], 32);
    rejects(
        b,
        &["tensor 'w'", "has 5 dimensions; GGUF tensors have 1 to 4"],
    );
}

#[test]
fn zero_dimensions() {
    let b = with_tensors(&[("w", &[], F32, 0)], 32);
    rejects(b, &["tensor 'w'", "has 0 dimensions"]);
}

#[test]
fn a_zero_dimension() {
    let b = with_tensors(&[("w", &[4, 0], F32, 0)], 32);
    rejects(b, &["tensor 'w'", "dimension 1 is 0", "empty tensors"]);
}

#[test]
fn dims_overflowing() {
    let b = with_tensors(&[("w", &[65536, 65536, 65536, 65536], F32, 0)], 32);
    rejects(
        b,
        &[
            "tensor 'w'",
            "dimensions [65536, 65536, 65536, 65536] overflow",
        ],
    );
}

#[test]
fn byte_size_overflowing() {
    // The element count fits in 64 bits, its f32 byte size does not.
    let b = with_tensors(&[("w", &[1 << 31, 1 << 31], F32, 0)], 32);
    if usize::BITS == 64 {
        rejects(b, &["tensor 'w'", "the byte size does not fit in 64 bits"]);
    } else {
        rejects(b, &["tensor 'w'", "overflow"]);
    }
}

#[test]
fn row_not_a_multiple_of_block_size() {
    let b = with_tensors(&[("w", &[33, 2], Q8_0, 0)], 128);
    rejects(
        b,
        &[
            "tensor 'w'",
            "row length 33 is not a multiple of the q8_0 block size 32",
        ],
    );
}

#[test]
fn misaligned_offset() {
    let b = with_tensors(&[("w", &[4], F32, 4)], 64);
    rejects(
        b,
        &[
            "tensor 'w'",
            "data offset 4 is not a multiple of the file's alignment 32",
        ],
    );
}

#[test]
fn offset_outside_the_file() {
    let b = with_tensors(&[("w", &[4], F32, 1 << 20)], 64);
    rejects(
        b,
        &["tensor 'w'", "data offset 1048576 is outside the file"],
    );
}

#[test]
fn data_running_past_the_end() {
    let b = with_tensors(&[("w", &[32], F32, 32)], 64);
    rejects(
        b,
        &[
            "tensor 'w'",
            "128 bytes of data at offset 32 run past the end",
        ],
    );
}

#[test]
fn overlapping_tensors() {
    let b = with_tensors(&[("x", &[16], F32, 0), ("y", &[16], F32, 32)], 128);
    rejects(
        b,
        &["tensors 'x' (bytes 0..64) and 'y' (bytes 32..96) overlap"],
    );
}

#[test]
fn overlap_found_regardless_of_description_order() {
    let b = with_tensors(
        &[
            ("late", &[8], F32, 64),
            ("z", &[4], F32, 0),
            ("early", &[32], F32, 32),
        ],
        256,
    );
    rejects(
        b,
        &["tensors 'early' (bytes 32..160) and 'late' (bytes 64..96) overlap"],
    );
}

fn with_alignment(ty: u32, value: &Raw) -> Vec<u8> {
    let mut r = Raw::header(3, 1, 1);
    r.str("general.alignment").u32(ty);
    r.b.extend_from_slice(&value.b);
    r.tensor("w", &[4], F32, 0).pad(64).data(64);
    r.bytes()
}

#[test]
fn alignment_not_a_power_of_two() {
    rejects(
        with_alignment(4, Raw::default().u32(48)),
        &["'general.alignment' is 48", "power of two"],
    );
}

#[test]
fn alignment_zero() {
    rejects(
        with_alignment(4, Raw::default().u32(0)),
        &["'general.alignment' is 0", "non-zero"],
    );
}

#[test]
fn alignment_not_an_integer() {
    let b = with_alignment(8, Raw::default().str("32"));
    rejects(
        b,
        &[
            "'general.alignment' is string",
            "must be an unsigned integer",
        ],
    );
    let b = with_alignment(5, Raw::default().u32((-32i32) as u32));
    rejects(b, &["'general.alignment' is i32 -32"]);
}

#[test]
fn alignment_of_other_integer_types_is_accepted() {
    let f = GgufFile::from_bytes(with_alignment(10, Raw::default().u64(64))).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
}

#[test]
fn huge_alignment_puts_data_outside_the_file() {
    let b = with_alignment(4, Raw::default().u32(1 << 31));
    rejects(b, &["data section starts at byte 2147483648", "truncated"]);
}

/// Flips 1 to 4 random bytes of a valid file 2000 times (and truncates some); whatever parses
/// must then be usable without panics and with consistent tensor slices.
#[test]
fn fuzz_byte_flips_never_panic() {
    let base = full_writer(10).to_bytes();
    let small = valid().bytes();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut rejected) = (0, 0);
    for i in 0..2000 {
        let mut b = if i % 2 == 0 {
            base.clone()
        } else {
            small.clone()
        };
        // Flips in the header and descriptions are the interesting ones: aim half of them there.
        let region = if rng.next().is_multiple_of(2) {
            b.len().min(600)
        } else {
            b.len()
        };
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(region);
            b[at] ^= 1 << rng.below(8);
            if rng.below(4) == 0 {
                b[at] = rng.next() as u8;
            }
        }
        if rng.below(10) == 0 {
            let keep = rng.below(b.len());
            b.truncate(keep);
        }
        match GgufFile::from_bytes(b) {
            Err(e) => {
                assert!(!e.to_string().is_empty());
                rejected += 1;
            }
            Ok(f) => {
                ok += 1;
                for (k, _) in f.metadata() {
                    let _ = (f.get_u32(k), f.get_f32(k), f.get_str(k), f.get_bool(k));
                    let _ = (f.get_u32_array(k), f.get_f32_array(k), f.get_str_array(k));
                }
                for t in f.tensors() {
                    assert_eq!(f.tensor_data(t).len(), t.size);
                    assert_eq!(t.offset % f.alignment() as u64, 0);
                    let _ = f.tensor_f32(&t.name);
                }
            }
        }
    }
    eprintln!("fuzz: {ok} parsed, {rejected} rejected");
    // Both outcomes must occur, or the loop is not exercising the validator.
    assert!(ok > 50 && rejected > 50, "ok {ok}, rejected {rejected}");
}
