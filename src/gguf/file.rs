//! `GgufFile`: an opened, fully validated GGUF file. Owns the bytes (a read-only memory map or
//! an owned buffer), answers metadata queries and hands out zero-copy tensor views.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use lckv_kernels::GgmlType;
use zerocopy::{FromBytes, IntoBytes};

use super::error::{GgufError, GgufErrorKind};
use super::parse::{parse, Parsed};
use super::{TensorInfo, Value};

/// How to bring the file into memory.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// true: map the file read-only (pages load on demand and are shared with the page cache).
    /// false: read it into an owned buffer (for filesystems that cannot map, or to avoid faults
    /// later).
    pub mmap: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { mmap: true }
    }
}

/// Access-pattern hints passed to madvise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    Normal,
    Sequential,
    Random,
    WillNeed,
}

enum Storage {
    Map(memmap2::Mmap),
    /// An owned buffer whose start is 8-byte aligned (so f32 views work).
    Bytes(Vec<u8>),
    /// An owned buffer made aligned by storing words; `len` bytes of it are the file.
    Words(Vec<u64>, usize),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Map(m) => m,
            Storage::Bytes(b) => b,
            Storage::Words(w, len) => w.as_bytes().get(..*len).unwrap_or(&[]),
        }
    }

    /// Owned storage whose start is aligned for every element type a tensor view needs.
    fn aligned(bytes: Vec<u8>) -> Storage {
        if (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<u64>()) {
            return Storage::Bytes(bytes);
        }
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        if let Some(dst) = words.as_mut_bytes().get_mut(..bytes.len()) {
            dst.copy_from_slice(&bytes);
        }
        Storage::Words(words, bytes.len())
    }
}

pub struct GgufFile {
    storage: Storage,
    parsed: Parsed,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("mapped", &matches!(self.storage, Storage::Map(_)))
            .field("version", &self.parsed.version)
            .field("file_size", &self.file_size())
            .field("metadata", &self.parsed.metadata.len())
            .field("tensors", &self.parsed.tensors.len())
            .finish()
    }
}

#[cfg(unix)]
fn map_advice(a: Advice) -> memmap2::Advice {
    match a {
        Advice::Normal => memmap2::Advice::Normal,
        Advice::Sequential => memmap2::Advice::Sequential,
        Advice::Random => memmap2::Advice::Random,
        Advice::WillNeed => memmap2::Advice::WillNeed,
    }
}

fn wrong_type(key: &str, v: &Value, expected: &str) -> GgufError {
    GgufError::new(
        GgufErrorKind::WrongType,
        format!(
            "metadata key '{key}' is {} {v}, expected {expected}",
            v.type_name()
        ),
    )
}

fn wrong_elem(key: &str, i: usize, v: &Value, expected: &str) -> GgufError {
    GgufError::new(
        GgufErrorKind::WrongType,
        format!(
            "metadata key '{key}': element {i} is {} {v}, expected {expected}",
            v.type_name()
        ),
    )
}

impl GgufFile {
    /// Maps the file read-only and validates it.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        GgufFile::open_with(path, &OpenOptions::default())
    }

    pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<GgufFile, GgufError> {
        let mut file = File::open(path).map_err(|e| GgufError::io("cannot open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| GgufError::io("cannot read the size of", path, e))?
            .len();
        let storage = if opts.mmap && len > 0 {
            // SAFETY: read-only private mapping; like every mmap loader we rely on the file not
            // being truncated or rewritten while mapped (the writer replaces files by rename).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| {
                GgufError::io(
                    "cannot memory-map (try OpenOptions { mmap: false })",
                    path,
                    e,
                )
            })?;
            Storage::Map(map)
        } else {
            let Ok(n) = usize::try_from(len) else {
                return Err(GgufError::new(
                    GgufErrorKind::Io,
                    format!("file is {len} bytes, too large to read into memory here"),
                )
                .at_path(path));
            };
            let mut words = Vec::new();
            words.try_reserve_exact(n.div_ceil(8)).map_err(|_| {
                GgufError::new(
                    GgufErrorKind::Io,
                    format!("cannot allocate {n} bytes to read the file; open it with mmap"),
                )
                .at_path(path)
            })?;
            words.resize(n.div_ceil(8), 0u64);
            let dst = words.as_mut_bytes().get_mut(..n).unwrap_or(&mut []);
            file.read_exact(dst)
                .map_err(|e| GgufError::io("cannot read", path, e))?;
            Storage::Words(words, n)
        };
        GgufFile::from_storage(storage).map_err(|e| e.at_path(path))
    }

    /// Validates a file held in memory (copied once if the buffer is not 8-byte aligned).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::from_storage(Storage::aligned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile, GgufError> {
        let parsed = parse(storage.bytes())?;
        Ok(GgufFile { storage, parsed })
    }

    pub fn version(&self) -> u32 {
        self.parsed.version
    }

    pub fn alignment(&self) -> usize {
        self.parsed.alignment
    }

    /// All key/value pairs in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.parsed.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let i = *self.parsed.key_index.get(key)?;
        self.parsed.metadata.get(i).map(|kv| &kv.1)
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| wrong_type(key, v, expected)),
        }
    }

    /// Any integer type holding a value that fits u32.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.typed(
            key,
            "an unsigned integer that fits in 32 bits",
            Value::as_u32,
        )
    }

    /// Any integer type holding a non-negative value.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.typed(key, "an integer that fits in i64", Value::as_i64)
    }

    /// f32, f64 or an integer.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "a number", Value::as_f32)
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "a string", Value::as_str)
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "a bool", Value::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&[Value]>, GgufError> {
        self.typed(key, "an array", Value::as_array)
    }

    fn typed_array<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<Vec<T>>, GgufError> {
        let Some(items) = self.get_array(key)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            out.push(f(v).ok_or_else(|| wrong_elem(key, i, v, expected))?);
        }
        Ok(Some(out))
    }

    pub fn get_u32_array(&self, key: &str) -> Result<Option<Vec<u32>>, GgufError> {
        self.typed_array(
            key,
            "an unsigned integer that fits in 32 bits",
            Value::as_u32,
        )
    }

    pub fn get_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>, GgufError> {
        self.typed_array(key, "an integer that fits in i64", Value::as_i64)
    }

    pub fn get_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, GgufError> {
        self.typed_array(key, "a number", Value::as_f32)
    }

    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>, GgufError> {
        self.typed_array(key, "a string", Value::as_str)
    }

    /// Tensor descriptions in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.parsed.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        let i = *self.parsed.tensor_index.get(name)?;
        self.parsed.tensors.get(i)
    }

    /// Like `tensor_info`, with an error naming the missing tensor.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor_info(name).ok_or_else(|| {
            GgufError::new(
                GgufErrorKind::NotFound,
                format!(
                    "no tensor named '{name}' in the file ({} tensors); the model file does not \
                     match its architecture or is incomplete",
                    self.parsed.tensors.len()
                ),
            )
        })
    }

    /// The tensor's bytes, zero-copy. `info` should come from this file; a description whose
    /// range lies outside the file yields an empty slice.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = self.parsed.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.size as u64));
        match (start, end) {
            (Some(s), Some(e)) => match (usize::try_from(s), usize::try_from(e)) {
                (Ok(s), Ok(e)) => self.as_bytes().get(s..e).unwrap_or(&[]),
                _ => &[],
            },
            _ => &[],
        }
    }

    /// The named tensor's bytes, zero-copy.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], GgufError> {
        Ok(self.tensor_data(self.require_tensor(name)?))
    }

    /// A zero-copy `f32` view of an F32 tensor.
    pub fn tensor_f32(&self, name: &str) -> Result<&[f32], GgufError> {
        let info = self.require_tensor(name)?;
        if info.ty != GgmlType::F32 {
            return Err(GgufError::new(
                GgufErrorKind::WrongType,
                format!("tensor '{name}' is {}, expected f32", info.ty.name()),
            ));
        }
        if cfg!(target_endian = "big") {
            return Err(GgufError::new(
                GgufErrorKind::Unsupported,
                "f32 tensor views need a little-endian machine",
            ));
        }
        let bytes = self.tensor_data(info);
        <[f32]>::ref_from_bytes(bytes).map_err(|_| {
            GgufError::new(
                GgufErrorKind::Malformed,
                format!(
                    "tensor '{name}': data at file byte {} is not 4-byte aligned (file alignment \
                     {}), so it cannot be viewed as f32 in place",
                    self.parsed.data_offset.saturating_add(info.offset),
                    self.parsed.alignment
                ),
            )
        })
    }

    pub fn file_size(&self) -> u64 {
        self.as_bytes().len() as u64
    }

    /// Byte offset of the data section (tensor offsets are relative to it). In a file without
    /// tensors it may equal or, lacking final padding, exceed the file size.
    pub fn data_offset(&self) -> u64 {
        self.parsed.data_offset
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Map(_))
    }

    /// Passes an access-pattern hint to the kernel; a no-op for owned bytes and where madvise
    /// is unavailable. Hints may be ignored, so failures are not reported.
    pub fn advise(&self, a: Advice) {
        #[cfg(unix)]
        if let Storage::Map(m) = &self.storage {
            let _ = m.advise(map_advice(a));
        }
        #[cfg(not(unix))]
        let _ = a;
    }

    /// Like `advise`, for the pages holding one tensor (e.g. WillNeed on the next layer).
    pub fn advise_tensor(&self, info: &TensorInfo, a: Advice) {
        #[cfg(unix)]
        if let Storage::Map(m) = &self.storage {
            let data = self.tensor_data(info);
            if data.is_empty() {
                return;
            }
            // A non-empty slice means the range was checked to lie in the mapping.
            let start = (self.parsed.data_offset + info.offset) as usize;
            let _ = m.advise_range(map_advice(a), start, data.len());
        }
        #[cfg(not(unix))]
        let _ = (info, a);
    }

    /// Locks the mapped file into RAM (mlock) so weights are never paged out.
    pub fn lock(&self) -> Result<(), GgufError> {
        let Storage::Map(m) = &self.storage else {
            return Err(GgufError::new(
                GgufErrorKind::Lock,
                "cannot lock: the file was read into memory instead of mapped; open it with \
                 OpenOptions { mmap: true }",
            ));
        };
        #[cfg(unix)]
        {
            m.lock().map_err(|e| {
                GgufError::new(
                    GgufErrorKind::Lock,
                    format!(
                        "cannot lock the {}-byte model mapping into RAM (mlock); raise the \
                         locked-memory limit RLIMIT_MEMLOCK (`ulimit -l unlimited`, or \
                         LimitMEMLOCK=infinity in the systemd unit) or run without locking",
                        m.len()
                    ),
                )
                .with_source(e)
            })
        }
        #[cfg(not(unix))]
        {
            let _ = m;
            Err(GgufError::new(
                GgufErrorKind::Lock,
                "locking is only supported on unix",
            ))
        }
    }
}
