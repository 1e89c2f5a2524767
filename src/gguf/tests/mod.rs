//! GGUF tests: writer/reader round trips, files from independent writers (the `gguf` Python
//! package, the real models), and hostile input. `Raw` builds files byte by byte, independently
//! of `GgufWriter`, so the reader is not only tested against its own writer.

mod hostile;
mod reference;
mod roundtrip;

use super::*;
use std::path::{Path, PathBuf};

/// A GGUF file assembled field by field (little-endian), for hand-made and broken files.
#[derive(Clone, Default)]
pub(super) struct Raw {
    pub b: Vec<u8>,
}

impl Raw {
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.b.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    pub fn u8(&mut self, v: u8) -> &mut Raw {
        self.b.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Raw {
        self.b.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Raw {
        self.b.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Raw {
        self.u64(s.len() as u64);
        self.b.extend_from_slice(s.as_bytes());
        self
    }
    /// A key with a u32 value.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
        self.str(key).u32(4).u32(v)
    }
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Raw {
        self.str(key).u32(8).str(v)
    }
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    pub fn pad(&mut self, align: usize) -> &mut Raw {
        while !self.b.len().is_multiple_of(align) {
            self.b.push(0);
        }
        self
    }
    /// `n` data bytes with a recognisable pattern.
    pub fn data(&mut self, n: usize) -> &mut Raw {
        self.b.extend((0..n).map(|i| (i * 7 + 3) as u8));
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.b.clone()
    }
}

/// Deterministic xorshift64* so random tests repeat exactly.
pub(super) struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Every element type lckv knows.
pub(super) const ALL_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q4K,
    GgmlType::Q6K,
    GgmlType::Q8K,
    GgmlType::BF16,
];

/// A value of every type, including arrays of every element type, an empty and a nested array.
pub(super) fn all_values() -> Vec<(String, Value)> {
    let v: Vec<(&str, Value)> = vec![
        ("general.architecture", "test".into()),
        ("t.u8", Value::U8(255)),
        ("t.i8", Value::I8(-128)),
        ("t.u16", Value::U16(65535)),
        ("t.i16", Value::I16(-32768)),
        ("t.u32", Value::U32(u32::MAX)),
        ("t.i32", Value::I32(i32::MIN)),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f32", Value::F32(-0.15625)),
        ("t.f32_inf", Value::F32(f32::INFINITY)),
        ("t.f64", Value::F64(1.0e308)),
        ("t.bool", Value::Bool(true)),
        ("t.bool_f", Value::Bool(false)),
        ("t.str", "ünïcødé ✓ \u{1F600}".into()),
        ("t.str_empty", "".into()),
        ("t.a_u8", vec![1u8, 2, 255].into()),
        ("t.a_i8", vec![-1i8, 2].into()),
        ("t.a_u16", vec![7u16].into()),
        ("t.a_i16", vec![-7i16, 8].into()),
        ("t.a_u32", vec![0u32, 49152].into()),
        ("t.a_i32", vec![-1i32, 0, 1].into()),
        ("t.a_u64", vec![u64::MAX].into()),
        ("t.a_i64", vec![i64::MAX, i64::MIN].into()),
        ("t.a_f32", vec![0.5f32, -2.0].into()),
        ("t.a_f64", vec![0.25f64].into()),
        ("t.a_bool", vec![true, false].into()),
        ("t.a_str", vec!["a", "", "<|im_end|>"].into()),
        ("t.a_empty", Value::Array(vec![])),
        (
            "t.a_nested",
            Value::Array(vec![vec![1u32, 2].into(), vec!["x"].into()]),
        ),
    ];
    v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A writer holding every value type and one small tensor of every element type.
pub(super) fn full_writer(seed: u64) -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in all_values() {
        w.try_add(&k, v).unwrap();
    }
    let mut rng = XorShift(seed);
    for (i, ty) in ALL_TYPES.iter().enumerate() {
        let dims = [ty.block_size() * 2, 1 + i % 3];
        let n = ty.row_size(dims[0]).unwrap() * dims[1];
        w.add_tensor(&format!("tensor.{}", ty.name()), *ty, &dims, rng.bytes(n))
            .unwrap();
    }
    w
}

/// A fresh empty directory under the target dir's temp area.
pub(super) fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lckv-gguf-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
