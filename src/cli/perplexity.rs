//! `lckv perplexity`: perplexity of a text file by llama-perplexity's method (the computation
//! is `lckv::perplexity`); here the arguments, the tokenization and the report. Without `-c`
//! the chunks are 512 tokens, llama-perplexity's default.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use lckv::perplexity::{perplexity, MIN_CTX};
use lckv::{Error, Result};

use super::ModelArgs;

/// Chunk length when `-c` is not given.
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

pub fn main(a: PerplexityArgs) -> Result<()> {
    let mut args = a.model.clone();
    let n_ctx = match args.ctx.as_deref() {
        None => DEFAULT_CHUNK,
        Some(s) => s.parse().ok().filter(|&c| c >= MIN_CTX).ok_or_else(|| {
            Error::Usage(format!(
                "-c {s}: perplexity needs a chunk length of at least {MIN_CTX} tokens (not 'auto')"
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
    // As llama-perplexity: every chunk starts with BOS when the tokenizer puts one first.
    let bos = tok.bos().filter(|&b| tokens.first() == Some(&b));
    let mut session = super::session(&args, &model, 16, false)?;
    let t0 = Instant::now();
    let r = perplexity(
        &mut session,
        &tokens,
        n_ctx,
        a.chunks,
        bos,
        &mut |done, ppl| eprint!("[{done}]{ppl:.4} "),
    )?;
    eprintln!();
    println!(
        "perplexity: {:.4} over {} chunks of {} tokens ({} scored), {:.1} tok/s",
        r.ppl,
        r.n_chunks,
        r.n_ctx,
        r.scored,
        (r.n_chunks * r.n_ctx) as f64 / t0.elapsed().as_secs_f64()
    );
    Ok(())
}
