//! `GgufWriter`: builds a GGUF v3 file from metadata and tensors and writes it atomically
//! (through `crate::fs_atomic`: temporary file in the target directory, fsync, rename), laid out
//! as llama.cpp does: tensors in insertion order, each padded to the alignment.

use std::io::{self, Write};
use std::path::Path;

use lckv_kernels::GgmlType;

use super::error::{GgufError, GgufErrorKind};
use super::parse::{DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use super::value::{type_id, Value, MAX_ARRAY_DEPTH};
use crate::fs_atomic;

const VERSION: u32 = 3;

struct PendingTensor {
    name: String,
    ty: GgmlType,
    dims: Vec<usize>,
    data: Vec<u8>,
}

#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
    /// The first value `add` refused; reported by `write_atomic`.
    refused: Option<String>,
}

fn invalid(msg: String) -> GgufError {
    GgufError::new(GgufErrorKind::InvalidInput, msg)
}

/// Checks that every array is homogeneous, so the file can state one element type per array.
fn check_value(key: &str, v: &Value) -> Result<(), GgufError> {
    if v.depth() > MAX_ARRAY_DEPTH {
        return Err(invalid(format!(
            "metadata key '{key}': arrays nest deeper than {MAX_ARRAY_DEPTH} levels"
        )));
    }
    fn walk(key: &str, v: &Value) -> Result<(), GgufError> {
        if let Value::Array(items) = v {
            if let Some(first) = items.first() {
                for (i, item) in items.iter().enumerate() {
                    if item.type_id() != first.type_id() {
                        return Err(invalid(format!(
                            "metadata key '{key}': array element {i} is {} but element 0 is {}; \
                             GGUF arrays hold one type",
                            item.type_name(),
                            first.type_name()
                        )));
                    }
                    walk(key, item)?;
                }
            }
        }
        Ok(())
    }
    walk(key, v)
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter::default()
    }

    /// Sets `key` (replacing an earlier value in place). A value that cannot be written
    /// (a mixed-type array, too deep nesting, an invalid `general.alignment`) is not stored and
    /// makes `write_atomic` fail; use `try_add` to see the error at once.
    pub fn add(&mut self, key: &str, value: Value) {
        if let Err(e) = self.try_add(key, value) {
            self.refused.get_or_insert_with(|| e.message().to_owned());
        }
    }

    pub fn try_add(&mut self, key: &str, value: Value) -> Result<(), GgufError> {
        check_value(key, &value)?;
        if key == "general.alignment" {
            match value {
                Value::U32(a) if a.is_power_of_two() => {}
                ref v => {
                    return Err(invalid(format!(
                        "metadata key 'general.alignment' must be a u32 non-zero power of two, \
                         got {} {v}",
                        v.type_name()
                    )))
                }
            }
        }
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_owned(), value)),
        }
        Ok(())
    }

    /// Adds a tensor; `dims` in ggml order (`dims[0]` = row length). `data` must hold exactly
    /// the rows' bytes for `ty`.
    pub fn add_tensor(
        &mut self,
        name: &str,
        ty: GgmlType,
        dims: &[usize],
        data: Vec<u8>,
    ) -> Result<(), GgufError> {
        let bad = |why: String| invalid(format!("tensor '{name}': {why}"));
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(bad("a tensor with this name was already added".to_owned()));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(bad(format!(
                "has {} dimensions, must have 1 to {MAX_DIMS}",
                dims.len()
            )));
        }
        if dims.contains(&0) {
            return Err(bad(format!(
                "dimensions {dims:?} contain 0; empty tensors are not written"
            )));
        }
        let row_bytes = ty.row_size(dims[0]).ok_or_else(|| {
            bad(format!(
                "row length {} is not a multiple of the {} block size {}",
                dims[0],
                ty.name(),
                ty.block_size()
            ))
        })?;
        let expected = dims[1..]
            .iter()
            .try_fold(row_bytes, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
        if data.len() != expected {
            return Err(bad(format!(
                "data is {} bytes but {dims:?} of {} needs {expected}",
                data.len(),
                ty.name()
            )));
        }
        self.tensors.push(PendingTensor {
            name: name.to_owned(),
            ty,
            dims: dims.to_vec(),
            data,
        });
        Ok(())
    }

    /// `general.alignment` when set, else 32.
    pub fn alignment(&self) -> usize {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .and_then(|a| usize::try_from(a).ok())
            .filter(|a| a.is_power_of_two())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Streams the file to `w`.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let align = self.alignment() as u64;
        let mut pos = 0u64;
        fn put(w: &mut impl Write, pos: &mut u64, b: &[u8]) -> io::Result<()> {
            *pos += b.len() as u64;
            w.write_all(b)
        }
        // Alignments up to 2^31 are legal: pad in chunks, not with one huge buffer.
        fn put_zeros(w: &mut impl Write, pos: &mut u64, mut n: u64) -> io::Result<()> {
            const ZEROS: [u8; 4096] = [0; 4096];
            while n > 0 {
                let k = n.min(ZEROS.len() as u64) as usize;
                put(w, pos, &ZEROS[..k])?;
                n -= k as u64;
            }
            Ok(())
        }
        put(w, &mut pos, &MAGIC)?;
        put(w, &mut pos, &VERSION.to_le_bytes())?;
        put(w, &mut pos, &(self.tensors.len() as u64).to_le_bytes())?;
        put(w, &mut pos, &(self.metadata.len() as u64).to_le_bytes())?;
        let mut buf = Vec::new();
        for (k, v) in &self.metadata {
            buf.clear();
            encode_str(&mut buf, k);
            buf.extend_from_slice(&v.type_id().to_le_bytes());
            encode_payload(&mut buf, v);
            put(w, &mut pos, &buf)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            buf.clear();
            encode_str(&mut buf, &t.name);
            buf.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                buf.extend_from_slice(&(d as u64).to_le_bytes());
            }
            buf.extend_from_slice(&t.ty.id().to_le_bytes());
            buf.extend_from_slice(&offset.to_le_bytes());
            put(w, &mut pos, &buf)?;
            offset = (offset + t.data.len() as u64).next_multiple_of(align);
        }
        let pad = |p: u64| p.next_multiple_of(align) - p;
        let p = pad(pos);
        put_zeros(w, &mut pos, p)?;
        for t in &self.tensors {
            put(w, &mut pos, &t.data)?;
            put_zeros(w, &mut pos, pad(t.data.len() as u64))?;
        }
        Ok(())
    }

    /// The whole file in memory. Values refused by `add` are absent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_to(&mut out);
        out
    }

    /// Writes the file to `path` through a temporary file in the same directory, synced and then
    /// renamed over `path` (`crate::fs_atomic`): readers see the old file or the complete new
    /// one, never a part.
    pub fn write_atomic(&self, path: &Path) -> Result<(), GgufError> {
        if let Some(msg) = &self.refused {
            return Err(invalid(format!("not writing {}: {msg}", path.display())));
        }
        if path.file_name().is_none() {
            return Err(invalid(format!(
                "output path '{}' does not name a file",
                path.display()
            )));
        }
        fs_atomic::write_atomic_with(path, |mut w| self.write_to(&mut w))
            .map_err(|e| GgufError::io(e.what, &e.path, e.source))
    }
}

fn encode_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn encode_payload(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(u8::from(*x)),
        Value::String(s) => encode_str(buf, s),
        Value::Array(items) => {
            // An empty array has no element to take the type from; u8 is as good as any.
            let elem = items.first().map_or(type_id::U8, Value::type_id);
            buf.extend_from_slice(&elem.to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                encode_payload(buf, item);
            }
        }
    }
}
