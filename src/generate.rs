//! The generation loop shared by `lckv run`, `lckv chat` and `lckv pipe`: prefill the prompt,
//! then sample, stream text and decode until an end-of-generation token, the token limit, a full
//! context or the caller's word (a stop string, a cancel). After the prompt it allocates nothing
//! per token.

use std::time::{Duration, Instant};

use crate::model::forward::Logits;
use crate::sampler::Sampler;
use crate::session::{FinishReason, Session};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::Result;

#[derive(Clone, Copy, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub ignore_eos: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated: usize,
    pub prompt_time: Duration,
    pub gen_time: Duration,
    pub finish: FinishReason,
}

impl GenerateStats {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }
    pub fn gen_tps(&self) -> f64 {
        self.generated as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
}

/// What the caller wants after a generated token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Go,
    /// End here (`FinishReason::Stopped`); the token just handed over is not run.
    Stop,
}

/// Runs `prompt` then generates, handing each complete piece of text to `on_text`.
pub fn generate(
    session: &mut Session,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: GenerateOptions,
    on_text: &mut (dyn FnMut(&str) + Send),
) -> Result<GenerateStats> {
    generate_with(session, tok, sampler, prompt, opts, &mut |_, piece| {
        on_text(piece);
        Flow::Go
    })
}

/// Runs `prompt` then generates, handing each token and its complete piece of text (empty while
/// a character is unfinished) to `on_token`, which says whether to go on; the bytes of a
/// character left unfinished at the end come last, with no token. It is called between
/// tokens, so a stop it asks for takes effect before the next forward pass.
///
/// The loop runs on a worker of the rayon pool: parallel kernels started from a worker push
/// their jobs onto its own deque, while jobs injected from outside the pool go through a queue
/// that allocates a block every few dozen jobs — which would be an allocation every token.
pub fn generate_with(
    session: &mut Session,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: GenerateOptions,
    on_token: &mut (dyn FnMut(Option<u32>, &str) -> Flow + Send),
) -> Result<GenerateStats> {
    let mut result = None;
    rayon::scope(|_| {
        result = Some(generate_on_worker(
            session, tok, sampler, prompt, opts, on_token,
        ))
    });
    result.expect("rayon::scope runs its closure")
}

fn generate_on_worker(
    session: &mut Session,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: GenerateOptions,
    on_token: &mut (dyn FnMut(Option<u32>, &str) -> Flow + Send),
) -> Result<GenerateStats> {
    let t0 = Instant::now();
    session.prefill(prompt, Logits::Last, &mut |_, _| {})?;
    for &t in prompt {
        sampler.accept(t);
    }
    let prompt_time = t0.elapsed();
    let t1 = Instant::now();
    let mut stream = StreamDecoder::new();
    let mut generated = 0;
    let finish = loop {
        if generated >= opts.max_tokens {
            break FinishReason::Length;
        }
        let next = sampler.sample(session.logits());
        sampler.accept(next);
        if !opts.ignore_eos && tok.is_eog(next) {
            break FinishReason::EndOfText;
        }
        generated += 1;
        if on_token(Some(next), stream.push(tok, next)) == Flow::Stop {
            break FinishReason::Stopped;
        }
        if session.n_past() >= session.n_ctx() {
            break FinishReason::ContextFull;
        }
        session.decode(next)?;
    };
    // Bytes of an unfinished character are still the answer's; the caller has the last word
    // already, so what it says here changes nothing.
    let rest = stream.flush();
    if !rest.is_empty() {
        on_token(None, &rest);
    }
    Ok(GenerateStats {
        prompt_tokens: prompt.len(),
        generated,
        prompt_time,
        gen_time: t1.elapsed(),
        finish,
    })
}
