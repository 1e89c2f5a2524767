//! Perplexity of a token sequence, computed as llama.cpp's `llama-perplexity` does so the two
//! can be compared number for number: the tokens are cut into non-overlapping chunks of the
//! context length, each chunk starts from an empty cache (its first token replaced by BOS when
//! the model adds one), and only the second half of each chunk is scored, so every scored token
//! has at least half a context of history. Likelihoods are summed in f64, as llama.cpp does.

use crate::model::forward::Logits;
use crate::session::Session;
use crate::{Error, Result};

/// The shortest chunk scored: below it the scored half is a handful of tokens, too few for
/// a meaningful number.
pub const MIN_CTX: usize = 16;

/// The outcome of [`perplexity`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    /// exp of the mean negative log-likelihood of the scored tokens.
    pub ppl: f64,
    /// Chunks processed.
    pub n_chunks: usize,
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Tokens scored (the second half of each chunk, less its last token, whose successor is in
    /// the next chunk).
    pub scored: usize,
}

/// Natural-log likelihood of `target` under `logits`, in f64 as llama-perplexity computes it.
/// `target` must index `logits`.
pub fn log_prob(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[target] as f64 - max - sum.ln()
}

/// Scores `tokens` in chunks of `n_ctx`, at most `max_chunks` of them. `bos` is the id each
/// chunk starts with when the model adds a BOS token (`None` leaves the chunks as cut).
/// `progress(chunks_done, ppl_so_far)` is called after every chunk.
///
/// The session must hold a chunk (`n_ctx` at least this `n_ctx`) and take it in one forward call
/// (`n_batch` too), since iterative prefill of a condensed KV plan gives other logits when a
/// chunk is split. Its sequence is reset before each chunk.
pub fn perplexity(
    session: &mut Session,
    tokens: &[u32],
    n_ctx: usize,
    max_chunks: Option<usize>,
    bos: Option<u32>,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Perplexity> {
    if n_ctx < MIN_CTX {
        return Err(Error::Usage(format!(
            "perplexity needs chunks of at least {MIN_CTX} tokens, not {n_ctx}"
        )));
    }
    if session.n_ctx() < n_ctx || session.dims().n_batch < n_ctx {
        return Err(Error::Usage(format!(
            "perplexity over chunks of {n_ctx} tokens needs a session whose context and batch \
             both hold {n_ctx} tokens (this one: context {}, batch {})",
            session.n_ctx(),
            session.dims().n_batch
        )));
    }
    if max_chunks == Some(0) {
        return Err(Error::Usage(
            "a limit of 0 chunks scores nothing; allow at least one chunk (--chunks)".into(),
        ));
    }
    let mut n_chunks = tokens.len() / n_ctx;
    if let Some(c) = max_chunks {
        n_chunks = n_chunks.min(c);
    }
    if n_chunks == 0 {
        return Err(Error::Usage(format!(
            "the text has {} tokens, fewer than one chunk of {n_ctx}; give a longer text or a smaller context (-c)",
            tokens.len()
        )));
    }
    // Checked here, not left to the forward pass, because the targets index the logits below.
    let vocab = session.model().cfg.n_vocab;
    let scored_ids = &tokens[..n_chunks * n_ctx];
    if let Some(&bad) = scored_ids
        .iter()
        .chain(&bos)
        .find(|&&t| t as usize >= vocab)
    {
        return Err(Error::Usage(format!(
            "token id {bad} is outside the vocabulary of {vocab} tokens"
        )));
    }
    let first = n_ctx / 2;
    let (mut nll, mut scored) = (0f64, 0usize);
    let mut chunk = vec![0u32; n_ctx];
    for c in 0..n_chunks {
        chunk.copy_from_slice(&tokens[c * n_ctx..(c + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.reset();
        session.prefill(&chunk, Logits::All, &mut |i, l| {
            // Position i predicts token i + 1; the chunk's last position has no target in it.
            if i >= first && i + 1 < n_ctx {
                nll -= log_prob(l, chunk[i + 1] as usize);
                scored += 1;
            }
        })?;
        progress(c + 1, (nll / scored as f64).exp());
    }
    Ok(Perplexity {
        ppl: (nll / scored as f64).exp(),
        n_chunks,
        n_ctx,
        scored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prob_is_a_log_softmax() {
        let l = [1.0f32, 2.0, 3.0];
        let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        for (i, &x) in l.iter().enumerate() {
            assert!((log_prob(&l, i) - (x as f64 - z.ln())).abs() < 1e-12);
        }
        // Large logits do not overflow: the maximum is subtracted first.
        let big = [1000.0f32, 1000.0];
        assert!((log_prob(&big, 0) - 0.5f64.ln()).abs() < 1e-12);
    }
}
