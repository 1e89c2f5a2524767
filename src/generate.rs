//! The generation loop shared by `lckv run` and `lckv chat`: prefill the prompt, then sample,
//! stream text and decode until an end-of-generation token, the token limit or a full context.
//! After the prompt it allocates nothing per token.

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

/// Runs `prompt` then generates, handing each complete piece of text to `on_text`.
///
/// The loop runs on a worker of the rayon pool: parallel kernels started from a worker push
/// their jobs onto its own deque, while jobs injected from outside the pool go through a queue
/// that allocates a block every few dozen jobs — which would be an allocation every token.
pub fn generate(
    session: &mut Session,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: GenerateOptions,
    on_text: &mut (dyn FnMut(&str) + Send),
) -> Result<GenerateStats> {
    let mut result = None;
    rayon::scope(|_| {
        result = Some(generate_on_worker(
            session, tok, sampler, prompt, opts, on_text,
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
    on_text: &mut (dyn FnMut(&str) + Send),
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
        on_text(stream.push(tok, next));
        if session.n_past() >= session.n_ctx() {
            break FinishReason::ContextFull;
        }
        session.decode(next)?;
    };
    let rest = stream.flush();
    if !rest.is_empty() {
        on_text(&rest);
    }
    Ok(GenerateStats {
        prompt_tokens: prompt.len(),
        generated,
        prompt_time,
        gen_time: t1.elapsed(),
        finish,
    })
}
