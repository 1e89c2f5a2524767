//! The crate-wide error type: every failure a user can cause ends here, with a message that
//! says what is wrong and what to do about it.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// A malformed or unsupported GGUF file.
    Gguf(crate::gguf::GgufError),
    /// A model whose metadata or tensors do not describe a runnable model.
    Model(String),
    /// Tokenizer construction or use failed.
    Tokenizer(String),
    /// The memory budget cannot hold what was asked.
    Budget(String),
    /// A request the caller can fix: a prompt longer than the context, a bad flag value.
    Usage(String),
    /// An I/O failure with the path or action it concerns.
    Io { context: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Gguf(e) => write!(f, "{e}"),
            Error::Model(m) => write!(f, "model: {m}"),
            Error::Tokenizer(m) => write!(f, "tokenizer: {m}"),
            Error::Budget(m) => write!(f, "memory budget: {m}"),
            Error::Usage(m) => write!(f, "{m}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Gguf(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<crate::gguf::GgufError> for Error {
    fn from(e: crate::gguf::GgufError) -> Self {
        Error::Gguf(e)
    }
}
