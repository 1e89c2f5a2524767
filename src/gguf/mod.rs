//! GGUF reading and writing (versions 2 and 3, little-endian).
//!
//! `parse` validates a whole file's header, metadata and tensor descriptions at open; `file`
//! holds the mapped (or owned) bytes and gives zero-copy tensor views and typed metadata getters;
//! `writer` produces files atomically; `value` is the metadata value tree.
//!
//! Decisions where the format leaves room (a file breaking one is rejected with a message):
//! - Tensors have 1 to 4 dimensions, none of them 0: no model has empty tensors, and a zero
//!   dimension would make row arithmetic degenerate downstream.
//! - Tensor data must be aligned, inside the file and not overlap; unlike llama.cpp, gaps
//!   between tensors and any order are accepted.
//! - Keys and tensor names must be UTF-8; invalid UTF-8 inside string *values* is replaced with
//!   U+FFFD so one bad vocabulary entry does not make a model unloadable.
//! - Bools must be 0 or 1; arrays may nest up to [`MAX_ARRAY_DEPTH`] levels.
//! - `general.alignment` may be any non-negative integer type, non-zero and a power of two.

mod error;
mod file;
mod parse;
mod value;
mod writer;

#[cfg(test)]
mod tests;

pub use error::{GgufError, GgufErrorKind};
pub use file::{Advice, GgufFile, OpenOptions};
pub use lckv_kernels::GgmlType;
pub use parse::{DEFAULT_ALIGNMENT, MAX_DIMS};
pub use value::{Value, MAX_ARRAY_DEPTH};
pub use writer::GgufWriter;

/// One tensor's description. `dims` is in ggml order: `dims[0]` is the row length (contiguous),
/// the rest count rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<usize>,
    pub ty: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: usize,
}

impl TensorInfo {
    /// Product of all dims (saturating, which only a hand-built info can reach: parsed ones are
    /// checked for overflow).
    pub fn n_elements(&self) -> usize {
        product(&self.dims)
    }

    /// Product of `dims[1..]` (1 for a vector).
    pub fn n_rows(&self) -> usize {
        product(self.dims.get(1..).unwrap_or(&[]))
    }
}

fn product(dims: &[usize]) -> usize {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX)
}
