//! lckv: an edge inference runtime for small language models with a layer-condensed KV cache.
//!
//! Data flow: GGUF file (mmap) -> `gguf` -> `model` (config, KV plan, weights, forward per
//! architecture) -> `memory` (plan, arena, condensed KV cache) -> `session` (prefill/decode) ->
//! `sampler` -> `tokenizer` (streaming detokenization). `generate` is the loop over them.
//! Beside the session: `prefix` (reusing the cached part of a new prompt), `prompt_cache` (a
//! prompt's K/V saved to a file) and `perplexity` (scoring a text as llama-perplexity does).
//! `fs_atomic` is how every output file is written. `server` (HTTP) and `pipe` (JSON lines) are
//! the long-lived front ends.

pub mod chat;
pub mod convert;
pub mod error;
pub mod fs_atomic;
pub mod generate;
pub mod gguf;
pub mod memory;
pub mod model;
pub mod npy;
pub mod perplexity;
pub mod pipe;
pub mod prefix;
pub mod prompt_cache;
#[cfg(feature = "reference")]
pub mod reference;
#[cfg(feature = "reference")]
pub mod reference_ggml;
pub mod sampler;
pub mod server;
pub mod session;
pub mod stop;
pub mod tokenizer;

pub use error::{Error, Result};
