//! Parsing and validation of the GGUF header, key/value section and tensor descriptions from a
//! byte slice. Every length and count is checked against the bytes that are left before anything
//! is allocated, every sum and product is checked, and nothing here can index out of bounds.

use std::collections::HashMap;

use lckv_kernels::GgmlType;

use super::error::{GgufError, GgufErrorKind};
use super::value::{type_id, type_id_name, Value, MAX_ARRAY_DEPTH};
use super::TensorInfo;

pub(crate) const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Most dimensions a tensor may have (GGML_MAX_DIMS).
pub const MAX_DIMS: usize = 4;
/// Smallest tensor description: empty name (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
const MIN_TENSOR_INFO: usize = 8 + 4 + 8 + 4 + 8;
/// Smallest key/value entry: empty key (8) + type (4) + a one-byte value.
const MIN_KV: usize = 8 + 4 + 1;
/// Most elements reserved up front. A count passed the size bounds can still be far larger than
/// what parses (a cut file); larger collections grow as entries actually parse.
const MAX_RESERVE: usize = 1 << 14;

/// What the header and descriptions say; the data section stays in the caller's bytes.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub version: u32,
    pub alignment: usize,
    pub metadata: Vec<(String, Value)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// What is being read, for messages ("metadata key 'x'", "tensor 'y'").
    ctx: String,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn err(&self, what: impl std::fmt::Display) -> GgufError {
        GgufError::malformed(format!("at byte {}: {}: {}", self.pos, self.ctx, what))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end.and_then(|e| self.buf.get(self.pos..e).map(|s| (s, e))) {
            Some((s, e)) => {
                self.pos = e;
                Ok(s)
            }
            None => Err(self.err(format_args!(
                "file truncated: {what} needs {n} bytes but only {} are left \
                 (incomplete download or copy? fetch the file again)",
                self.left()
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A length-prefixed byte string whose length is bounded by the bytes left.
    fn bytes_with_len(&mut self, what: &str) -> Result<&'a [u8], GgufError> {
        let len = self.u64(what)?;
        if len > self.left() as u64 {
            return Err(self.err(format_args!(
                "{what} length {len} exceeds the {} bytes left in the file (truncated or corrupt)",
                self.left()
            )));
        }
        // Fits: len <= left <= usize::MAX.
        self.take(len as usize, what)
    }

    /// Keys and tensor names must be UTF-8: they are compared against names in code.
    fn name(&mut self, what: &str) -> Result<String, GgufError> {
        let b = self.bytes_with_len(what)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.err(format_args!("{what} is not valid UTF-8 ({e})"))),
        }
    }
}

fn unsupported(msg: String) -> GgufError {
    GgufError::new(GgufErrorKind::Unsupported, msg)
}

/// ggml type names for ids lckv does not load, so the message can say what the file holds.
fn foreign_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        4 | 5 => "q4_2/q4_3 (removed from ggml)",
        7 => "q5_1",
        10 => "q2_K",
        11 => "q3_K",
        13 => "q5_K",
        16..=23 | 29 => "an i-quant (iq*)",
        24 => "i8",
        25 => "i16",
        26 => "i32",
        27 => "i64",
        28 => "f64",
        34 | 35 => "a ternary quant (tq*)",
        39 => "mxfp4",
        _ => return None,
    })
}

const SUPPORTED_TYPES: &str = "f32, f16, bf16, q4_0, q4_1, q5_0, q8_0, q8_1, q4_K, q6_K, q8_K";

/// Smallest encoding of one array element of the given type (for bounding counts).
fn min_encoded_size(ty: u32) -> Option<usize> {
    Some(match ty {
        type_id::U8 | type_id::I8 | type_id::BOOL => 1,
        type_id::U16 | type_id::I16 => 2,
        type_id::U32 | type_id::I32 | type_id::F32 => 4,
        type_id::U64 | type_id::I64 | type_id::F64 => 8,
        type_id::STRING => 8,
        type_id::ARRAY => 4 + 8,
        _ => return None,
    })
}

fn unknown_value_type(cur: &Cursor, ty: u32, what: &str) -> GgufError {
    cur.err(format_args!(
        "unknown {what} {ty} (GGUF defines 0 to 12); the file is corrupt or from an \
         incompatible writer"
    ))
}

fn read_value(cur: &mut Cursor, ty: u32, depth: usize) -> Result<Value, GgufError> {
    Ok(match ty {
        type_id::U8 => Value::U8(cur.array::<1>("u8 value")?[0]),
        type_id::I8 => Value::I8(i8::from_le_bytes(cur.array("i8 value")?)),
        type_id::U16 => Value::U16(u16::from_le_bytes(cur.array("u16 value")?)),
        type_id::I16 => Value::I16(i16::from_le_bytes(cur.array("i16 value")?)),
        type_id::U32 => Value::U32(cur.u32("u32 value")?),
        type_id::I32 => Value::I32(i32::from_le_bytes(cur.array("i32 value")?)),
        type_id::U64 => Value::U64(cur.u64("u64 value")?),
        type_id::I64 => Value::I64(i64::from_le_bytes(cur.array("i64 value")?)),
        type_id::F32 => Value::F32(f32::from_le_bytes(cur.array("f32 value")?)),
        type_id::F64 => Value::F64(f64::from_le_bytes(cur.array("f64 value")?)),
        type_id::BOOL => match cur.array::<1>("bool value")?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => return Err(cur.err(format_args!("bool value is {b}, must be 0 or 1"))),
        },
        // Values are text for people and tokenizers; a stray invalid byte becomes U+FFFD
        // rather than making the whole model unloadable.
        type_id::STRING => {
            Value::String(String::from_utf8_lossy(cur.bytes_with_len("string")?).into_owned())
        }
        type_id::ARRAY => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(cur.err(format_args!(
                    "arrays nested more than {MAX_ARRAY_DEPTH} deep; lckv rejects deeper nesting"
                )));
            }
            let elem = cur.u32("array element type")?;
            let Some(min) = min_encoded_size(elem) else {
                return Err(unknown_value_type(cur, elem, "array element type"));
            };
            let count = cur.u64("array length")?;
            let max = cur.left() / min;
            if count > max as u64 {
                return Err(cur.err(format_args!(
                    "array length {count} is impossible: the {} bytes left hold at most {max} \
                     {} elements (truncated or corrupt)",
                    cur.left(),
                    type_id_name(elem).unwrap_or("?"),
                )));
            }
            let count = count as usize;
            let mut items = Vec::with_capacity(count.min(MAX_RESERVE));
            for _ in 0..count {
                items.push(read_value(cur, elem, depth + 1)?);
            }
            Value::Array(items)
        }
        other => return Err(unknown_value_type(cur, other, "value type")),
    })
}

fn read_header(cur: &mut Cursor) -> Result<(u32, u64, u64), GgufError> {
    if cur.buf.len() < 4 {
        return Err(GgufError::malformed(format!(
            "file is {} bytes, too short to be GGUF (a GGUF file starts with the 4-byte magic \
             'GGUF'); truncated? fetch the file again",
            cur.buf.len()
        )));
    }
    let magic = cur.array::<4>("magic")?;
    if magic != MAGIC {
        return Err(GgufError::malformed(format!(
            "not a GGUF file: it starts with bytes {:02x?} ({:?}), GGUF files start with \
             47 47 55 46 (\"GGUF\"); pass a .gguf model file",
            magic,
            String::from_utf8_lossy(&magic)
        )));
    }
    let version = cur.u32("version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(unsupported(
                "GGUF version 1 is not supported (only versions 2 and 3): this is an early-2023 \
                 file; convert the model again with a current llama.cpp"
                    .to_owned(),
            ))
        }
        v if matches!(v.swap_bytes(), 1..=3) => {
            return Err(unsupported(format!(
                "big-endian GGUF file (version field reads {} when byte-swapped); lckv reads \
                 little-endian files only: convert the model without --bigendian",
                v.swap_bytes()
            )))
        }
        v => {
            return Err(unsupported(format!(
                "GGUF version {v} is not supported (only versions 2 and 3); the file comes from \
                 a newer or foreign writer"
            )))
        }
    }
    cur.ctx = "header".to_owned();
    let n_tensors = cur.u64("tensor count")?;
    let n_kv = cur.u64("metadata count")?;
    let left = cur.left();
    if n_tensors > (left / MIN_TENSOR_INFO) as u64 {
        return Err(cur.err(format_args!(
            "tensor count {n_tensors} is impossible: the {left} bytes after the header hold at \
             most {} tensor descriptions (truncated or corrupt file)",
            left / MIN_TENSOR_INFO
        )));
    }
    if n_kv > (left / MIN_KV) as u64 {
        return Err(cur.err(format_args!(
            "metadata count {n_kv} is impossible: the {left} bytes after the header hold at most \
             {} key/value entries (truncated or corrupt file)",
            left / MIN_KV
        )));
    }
    // Both fit in usize now; their sum of minimal sizes must fit too.
    if (n_tensors as usize) * MIN_TENSOR_INFO + (n_kv as usize) * MIN_KV > left {
        return Err(cur.err(format_args!(
            "{n_tensors} tensor descriptions and {n_kv} key/value entries cannot fit in the \
             {left} bytes after the header (truncated or corrupt file)"
        )));
    }
    Ok((version, n_tensors, n_kv))
}

fn read_alignment(
    metadata: &[(String, Value)],
    index: &HashMap<String, usize>,
) -> Result<usize, GgufError> {
    let Some(v) = index
        .get("general.alignment")
        .and_then(|&i| metadata.get(i))
        .map(|kv| &kv.1)
    else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let bad = |why: String| GgufError::malformed(format!("metadata key 'general.alignment' {why}"));
    let Some(a) = v.as_u64() else {
        return Err(bad(format!(
            "is {} {v}, must be an unsigned integer",
            v.type_name()
        )));
    };
    if a == 0 || !a.is_power_of_two() {
        return Err(bad(format!(
            "is {a}, must be a non-zero power of two (usually 32)"
        )));
    }
    usize::try_from(a).map_err(|_| bad(format!("is {a}, too large for this platform")))
}

fn read_tensor_info(cur: &mut Cursor, i: usize, alignment: usize) -> Result<TensorInfo, GgufError> {
    cur.ctx = format!("tensor description {i}");
    let name = cur.name("tensor name")?;
    cur.ctx = format!("tensor '{name}'");
    let n_dims = cur.u32("dimension count")?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(cur.err(format_args!(
            "has {n_dims} dimensions; GGUF tensors have 1 to {MAX_DIMS}"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        let v = cur.u64("dimension")?;
        if v == 0 {
            return Err(cur.err(format_args!(
                "dimension {d} is 0; lckv does not load empty tensors"
            )));
        }
        let Ok(v) = usize::try_from(v) else {
            return Err(cur.err(format_args!(
                "dimension {d} = {v} is too large for this platform"
            )));
        };
        dims.push(v);
    }
    let Some(n_elements) = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
        return Err(cur.err(format_args!(
            "dimensions {dims:?} overflow: their product does not fit in {} bits",
            usize::BITS
        )));
    };
    let type_id = cur.u32("tensor type")?;
    let Some(ty) = GgmlType::from_id(type_id) else {
        let what = match foreign_type_name(type_id) {
            Some(n) => format!("type {n} (ggml id {type_id}) is not supported by lckv"),
            None => format!("unknown tensor type id {type_id}"),
        };
        return Err(cur.err(format_args!(
            "{what}; supported types: {SUPPORTED_TYPES} (re-quantize the model to one of them)"
        )));
    };
    let row_len = dims[0];
    let Some(row_bytes) = ty.row_size(row_len) else {
        return Err(cur.err(format_args!(
            "row length {row_len} is not a multiple of the {} block size {}",
            ty.name(),
            ty.block_size()
        )));
    };
    let n_rows = n_elements / row_len;
    let Some(size) = row_bytes.checked_mul(n_rows) else {
        return Err(cur.err(format_args!(
            "dimensions {dims:?} of type {} overflow: the byte size does not fit in {} bits",
            ty.name(),
            usize::BITS
        )));
    };
    let offset = cur.u64("data offset")?;
    if offset % alignment as u64 != 0 {
        return Err(cur.err(format_args!(
            "data offset {offset} is not a multiple of the file's alignment {alignment}"
        )));
    }
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset,
        size,
    })
}

/// Checks every tensor lies inside the file and no two share bytes.
fn check_placement(
    tensors: &[TensorInfo],
    data_offset: u64,
    file_len: u64,
) -> Result<(), GgufError> {
    if tensors.is_empty() {
        return Ok(());
    }
    if data_offset > file_len {
        return Err(GgufError::malformed(format!(
            "file truncated: the tensor data section starts at byte {data_offset} but the file \
             is {file_len} bytes (incomplete download or copy? fetch the file again)"
        )));
    }
    let data_len = file_len - data_offset;
    for t in tensors {
        if t.offset >= data_len {
            return Err(GgufError::malformed(format!(
                "tensor '{}': data offset {} is outside the file (the data section is {data_len} \
                 bytes, from byte {data_offset} of a {file_len}-byte file); truncated or corrupt",
                t.name, t.offset
            )));
        }
        // size <= usize::MAX fits in u64 on every supported platform.
        if t.size as u64 > data_len - t.offset {
            return Err(GgufError::malformed(format!(
                "tensor '{}': {} bytes of data at offset {} run past the end of the data section \
                 ({data_len} bytes, file {file_len} bytes); truncated or corrupt",
                t.name, t.size, t.offset
            )));
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    for w in order.windows(2) {
        let (a, b) = (w[0], w[1]);
        // Both ends are inside the file, so the sum cannot overflow.
        if a.offset + a.size as u64 > b.offset {
            return Err(GgufError::malformed(format!(
                "tensors '{}' (bytes {}..{}) and '{}' (bytes {}..{}) overlap in the data section",
                a.name,
                a.offset,
                a.offset + a.size as u64,
                b.name,
                b.offset,
                b.offset + b.size as u64
            )));
        }
    }
    Ok(())
}

pub(crate) fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut cur = Cursor {
        buf,
        pos: 0,
        ctx: "header".to_owned(),
    };
    let (version, n_tensors, n_kv) = read_header(&mut cur)?;
    // Bounded by the file size in read_header.
    let (n_tensors, n_kv) = (n_tensors as usize, n_kv as usize);

    let mut metadata = Vec::with_capacity(n_kv.min(MAX_RESERVE));
    let mut key_index = HashMap::with_capacity(n_kv.min(MAX_RESERVE));
    for i in 0..n_kv {
        cur.ctx = format!("metadata entry {i}");
        let key = cur.name("key")?;
        if let Some(&j) = key_index.get(&key) {
            return Err(cur.err(format_args!(
                "duplicate metadata key '{key}' (also entry {j}); the file is corrupt"
            )));
        }
        cur.ctx = format!("metadata key '{key}'");
        let ty = cur.u32("value type")?;
        let value = read_value(&mut cur, ty, 0)?;
        key_index.insert(key.clone(), i);
        metadata.push((key, value));
    }
    let alignment = read_alignment(&metadata, &key_index)?;

    let mut tensors = Vec::with_capacity(n_tensors.min(MAX_RESERVE));
    let mut tensor_index = HashMap::with_capacity(n_tensors.min(MAX_RESERVE));
    for i in 0..n_tensors {
        let info = read_tensor_info(&mut cur, i, alignment)?;
        if let Some(&j) = tensor_index.get(&info.name) {
            return Err(cur.err(format_args!(
                "duplicate tensor name (also tensor description {j}); the file is corrupt"
            )));
        }
        tensor_index.insert(info.name.clone(), i);
        tensors.push(info);
    }

    let end = cur.pos as u64;
    let align = alignment as u64;
    let Some(data_offset) = end.checked_next_multiple_of(align) else {
        return Err(GgufError::malformed(format!(
            "alignment {alignment} puts the data section past the largest possible offset"
        )));
    };
    check_placement(&tensors, data_offset, buf.len() as u64)?;
    Ok(Parsed {
        version,
        alignment,
        metadata,
        key_index,
        tensors,
        tensor_index,
        data_offset,
    })
}
