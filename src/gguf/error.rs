//! `GgufError`: every failure of reading, querying or writing a GGUF file, with a message that
//! names the key, tensor or byte offset concerned and what to do about it.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, for callers that react differently to different failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufErrorKind {
    /// Opening, reading, writing or renaming a file failed.
    Io,
    /// The bytes are not a well-formed GGUF file (bad magic, truncation, bad counts, ...).
    Malformed,
    /// A well-formed file that this reader does not handle (GGUF v1, big-endian).
    Unsupported,
    /// A metadata value or tensor exists but has another type than the one asked for.
    WrongType,
    /// A tensor that was asked for by name is not in the file.
    NotFound,
    /// The writer was given something it cannot write (bad dims, wrong data length, ...).
    InvalidInput,
    /// Locking the mapping into RAM (mlock) failed.
    Lock,
}

#[derive(Debug)]
pub struct GgufError {
    kind: GgufErrorKind,
    message: String,
    path: Option<PathBuf>,
    source: Option<std::io::Error>,
}

impl GgufError {
    pub(crate) fn new(kind: GgufErrorKind, message: impl Into<String>) -> GgufError {
        GgufError {
            kind,
            message: message.into(),
            path: None,
            source: None,
        }
    }

    pub(crate) fn malformed(message: impl Into<String>) -> GgufError {
        GgufError::new(GgufErrorKind::Malformed, message)
    }

    pub(crate) fn io(action: impl Into<String>, path: &Path, source: std::io::Error) -> GgufError {
        GgufError {
            kind: GgufErrorKind::Io,
            message: action.into(),
            path: Some(path.to_path_buf()),
            source: Some(source),
        }
    }

    pub(crate) fn with_source(mut self, source: std::io::Error) -> GgufError {
        self.source = Some(source);
        self
    }

    /// Attaches the file the error concerns (kept if one is already set).
    pub(crate) fn at_path(mut self, path: &Path) -> GgufError {
        if self.path.is_none() {
            self.path = Some(path.to_path_buf());
        }
        self
    }

    pub fn kind(&self) -> GgufErrorKind {
        self.kind
    }

    /// The description without the path prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("gguf: ")?;
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
