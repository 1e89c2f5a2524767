//! `lckv logits`: the logits of every position as a float32 `.npy` (positions x vocab), for
//! comparing lckv with other implementations. `--split K` processes the first K tokens as one
//! prompt and the rest one token at a time, as generation does.

use std::path::PathBuf;

use clap::Args;

use lckv::model::forward::Logits;
use lckv::{npy, Error, Result};

use super::ModelArgs;

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to tokenize (with the model's BOS rule).
    #[arg(short = 'p', long = "prompt", conflicts_with = "tokens")]
    pub prompt: Option<String>,
    /// Token ids, comma separated.
    #[arg(long = "tokens", value_delimiter = ',')]
    pub tokens: Option<Vec<u32>>,
    /// Process the first K tokens as a prompt and the rest one by one.
    #[arg(long = "split")]
    pub split: Option<usize>,
    /// Output .npy file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

pub fn main(a: LogitsArgs) -> Result<()> {
    let model = super::open(&a.model)?;
    let tokens = match (&a.prompt, &a.tokens) {
        (Some(p), None) => model.tokenizer()?.encode(p, true, false)?,
        (None, Some(t)) => t.clone(),
        _ => {
            return Err(Error::Usage(
                "give the input as -p TEXT or --tokens ID,ID,...".into(),
            ))
        }
    };
    if tokens.is_empty() {
        return Err(Error::Usage("no tokens to run".into()));
    }
    let split = a.split.unwrap_or(tokens.len()).min(tokens.len());
    if split == 0 {
        return Err(Error::Usage("--split must be at least 1".into()));
    }
    // The prompt part must go through in one forward call for iterative prefill to see it whole.
    let mut args = a.model.clone();
    args.batch = args.batch.max(split);
    if args.ctx.is_none() {
        args.ctx = Some(tokens.len().max(super::DEFAULT_CTX).to_string());
    }
    let mut session = super::session(&args, &model, 8, false)?;
    let v = model.cfg.n_vocab;
    let mut out = vec![0f32; tokens.len() * v];
    session.prefill(&tokens[..split], Logits::All, &mut |i, l| {
        out[i * v..(i + 1) * v].copy_from_slice(l)
    })?;
    for (i, &t) in tokens.iter().enumerate().skip(split) {
        let l = session.decode(t)?;
        out[i * v..(i + 1) * v].copy_from_slice(l);
    }
    npy::write_f32(&a.output, tokens.len(), v, &out)?;
    eprintln!(
        "lckv: wrote {} x {v} logits to {}",
        tokens.len(),
        a.output.display()
    );
    Ok(())
}
