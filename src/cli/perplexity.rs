//! `lckv perplexity`: perplexity of a text computed as llama-perplexity does — the tokens are
//! cut into non-overlapping chunks of the context length, each chunk starts from an empty
//! cache (its first token replaced by BOS when the model adds one), and only the second half of
//! each chunk is scored, so every scored token has at least half a context of history.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use lckv::model::forward::Logits;
use lckv::{Error, Result};

use super::ModelArgs;

/// Chunk length when `-c` is not given (llama-perplexity's default).
const DEFAULT_CHUNK: usize = 512;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Score at most this many chunks.
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
}

/// Natural-log likelihood of `target` under `logits`, in f64 as llama-perplexity computes it.
pub fn log_prob(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[target] as f64 - max - sum.ln()
}

pub fn main(a: PerplexityArgs) -> Result<()> {
    let mut args = a.model.clone();
    let n_ctx = match args.ctx.as_deref() {
        None => DEFAULT_CHUNK,
        Some(s) => s.parse().ok().filter(|&c| c >= 16).ok_or_else(|| {
            Error::Usage(format!(
                "-c {s}: perplexity needs a chunk length of at least 16 tokens (not 'auto')"
            ))
        })?,
    };
    args.ctx = Some(n_ctx.to_string());
    // A chunk goes through in one call so that iterative prefill sees it whole.
    args.batch = n_ctx;
    let text = std::fs::read_to_string(&a.file)
        .map_err(|e| Error::io(format!("reading {}", a.file.display()), e))?;
    let model = super::open(&args)?;
    let tok = model.tokenizer()?;
    let tokens = tok.encode(&text, true, false)?;
    let add_bos = tokens.first().is_some_and(|&t| Some(t) == tok.bos());
    let mut n_chunks = tokens.len() / n_ctx;
    if let Some(c) = a.chunks {
        n_chunks = n_chunks.min(c);
    }
    if n_chunks == 0 {
        return Err(Error::Usage(format!(
            "the text has {} tokens, fewer than one chunk of {n_ctx}; give a longer text or a smaller -c",
            tokens.len()
        )));
    }
    let mut session = super::session(&args, &model, 16, false)?;
    let first = n_ctx / 2;
    let (mut nll, mut count) = (0f64, 0usize);
    let t0 = Instant::now();
    for c in 0..n_chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if add_bos {
            chunk[0] = tok.bos().unwrap_or(chunk[0]);
        }
        session.reset();
        let (mut chunk_nll, mut chunk_count) = (0f64, 0usize);
        session.prefill(&chunk, Logits::All, &mut |i, l| {
            if i >= first && i + 1 < n_ctx {
                chunk_nll -= log_prob(l, chunk[i + 1] as usize);
                chunk_count += 1;
            }
        })?;
        nll += chunk_nll;
        count += chunk_count;
        eprint!("[{}]{:.4} ", c + 1, (nll / count as f64).exp());
    }
    eprintln!();
    let ppl = (nll / count as f64).exp();
    println!(
        "perplexity: {ppl:.4} over {n_chunks} chunks of {n_ctx} tokens ({count} scored), {:.1} tok/s",
        (n_chunks * n_ctx) as f64 / t0.elapsed().as_secs_f64()
    );
    Ok(())
}
