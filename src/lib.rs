//! lckv: an edge inference runtime for small language models with a layer-condensed KV cache.
//!
//! Data flow: GGUF file (mmap) -> `gguf` -> `model` (config, KV plan, weights, forward per
//! architecture) -> `memory` (plan, arena, condensed KV cache) -> `session` (prefill/decode) ->
//! `sampler` -> `tokenizer` (streaming detokenization). `generate` is the loop over them.
//! Beside the session: `prefix` (reusing the cached part of a new prompt), `prompt_cache` (a
//! prompt's K/V saved to a file) and `perplexity` (scoring a text as llama-perplexity does).
//! `fs_atomic` is how every output file is written. `server` (HTTP) and `pipe` (JSON lines) are
//! the long-lived front ends; `systemd` tells the service manager how they are doing.
//!
//! # Example
//!
//! Load a model, plan one session inside a memory budget (nothing is allocated until the plan
//! fits), run a prompt and decode greedily, handing each token to a callback. This one runs on
//! a tiny LCKV checkpoint of the tests, converted to GGUF first; a program would load its own
//! `.gguf` and turn tokens into text with `model.tokenizer()` and `generate::generate`, as
//! `examples/embed.rs` does.
//!
//! ```
//! use lckv::convert::{convert, ConvertOptions};
//! use lckv::memory::plan::parse_size;
//! use lckv::model::forward::Logits;
//! use lckv::model::{LoadOptions, Model};
//! use lckv::sampler::SamplerConfig;
//! use lckv::session::{Session, SessionOptions, SessionPlan};
//!
//! # fn main() -> lckv::Result<()> {
//! let gguf = std::env::temp_dir().join(format!("lckv-doc-{}.gguf", std::process::id()));
//! let f32 = ConvertOptions { out_type: lckv_kernels::GgmlType::F32, vocab_from: None };
//! convert("tests/fixtures/lckv/lckv_top_w2".as_ref(), &gguf, &f32)?;
//! let model = Model::load(&gguf, &LoadOptions::default())?;
//!
//! // The longest context (up to the 128 tokens it was trained for) that fits 64 MiB.
//! let budget = parse_size("64M")?;
//! let opts = SessionOptions::default();
//! let n_ctx = SessionPlan::longest_context(&model, &opts, 1, budget, 128)?;
//! let plan = SessionPlan::new(&model, SessionOptions { n_ctx, ..opts }, 1)?;
//! plan.memory.check(budget)?;
//! let mut session = Session::from_plan(&model, lckv_kernels::kernels(), &plan)?;
//!
//! let mut on_token = |t: u32| print!("{t} ");
//! let mut sampler = session.sampler(SamplerConfig::greedy());
//! session.prefill(&[1, 5, 9, 2], Logits::Last, &mut |_, _| {})?;
//! for _ in 0..8 {
//!     let t = sampler.sample(session.logits());
//!     sampler.accept(t);
//!     on_token(t);
//!     session.decode(t)?;
//! }
//! assert_eq!(session.n_past(), 12);
//! std::fs::remove_file(&gguf).ok();
//! # Ok(())
//! # }
//! ```

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
pub mod systemd;
pub mod tokenizer;

pub use error::{Error, Result};
