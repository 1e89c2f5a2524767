//! A session: one model, one arena, one sequence. Its plan (`SessionPlan`) turns the options into
//! the buffer sizes and the memory plan before anything is allocated; the session is built from
//! that plan. It feeds prompts through the forward pass in batches (choosing the prefill strategy
//! for condensed plans), decodes token by token, and knows where the context ends. Generation
//! loops over it without allocating.

use std::time::Instant;

use crate::memory::dims::SessionDims;
use crate::memory::kv_cache::KvCache;
use crate::memory::plan::{longest_context, MemoryPlan, Resident};
use crate::model::forward::{Forward, ForwardStats, Logits, Prefill};
use crate::model::kv_plan::Segment;
use crate::model::Model;
use crate::sampler::{Sampler, SamplerConfig};
use crate::{Error, Result};
use lckv_kernels::{GgmlType, Kernels};

/// The `--prefill` choice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PrefillChoice {
    Auto,
    Sequential,
    Iterative,
}

impl PrefillChoice {
    pub fn parse(s: &str) -> Result<PrefillChoice> {
        match s {
            "auto" => Ok(PrefillChoice::Auto),
            "sequential" => Ok(PrefillChoice::Sequential),
            "iterative" => Ok(PrefillChoice::Iterative),
            other => Err(Error::Usage(format!(
                "unknown prefill strategy '{other}': use auto, sequential or iterative"
            ))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub n_ctx: usize,
    pub n_batch: usize,
    pub kv_type: GgmlType,
    pub prefill: PrefillChoice,
    /// Early exit of iterative prefill: stop when producers' K/V move less than this.
    pub early_exit: Option<f32>,
    /// Logit rows computed at once (1 for generation; more for scoring every position).
    pub logit_rows: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: 2048,
            n_batch: 256,
            kv_type: GgmlType::F16,
            prefill: PrefillChoice::Auto,
            early_exit: None,
            logit_rows: 1,
        }
    }
}

impl SessionOptions {
    /// The buffer sizes these options ask for: the one place where they are derived (a batch no
    /// larger than the context, at least one row of everything).
    pub fn dims(&self) -> SessionDims {
        SessionDims {
            n_ctx: self.n_ctx,
            n_batch: self.n_batch.min(self.n_ctx).max(1),
            logit_rows: self.logit_rows.max(1),
            kv_type: self.kv_type,
            early_exit: self.early_exit.is_some(),
        }
    }
}

/// Everything `sessions` sessions of a model will hold, computed before any is built: the
/// options, and the memory plan with every part (weights, each session's KV cache, scratch,
/// logits, attention and sampler, the tokenizer, the process). Sessions are built from it.
#[derive(Clone, Debug)]
pub struct SessionPlan {
    pub opts: SessionOptions,
    pub memory: MemoryPlan,
}

impl SessionPlan {
    pub fn new(model: &Model, opts: SessionOptions, sessions: usize) -> Result<SessionPlan> {
        let dims = opts.dims();
        let memory = MemoryPlan::new(
            &model.dims(),
            &dims,
            sessions,
            Resident {
                weights: model.weights.mapped_bytes(),
                tokenizer: model.tokenizer_bytes(),
                sampler: Sampler::heap_bytes(model.cfg.n_vocab, dims.n_ctx),
            },
        )?;
        Ok(SessionPlan { opts, memory })
    }

    /// The most sessions (up to `max`) with these options that fit `budget`: every session adds
    /// the same bytes to a plan, so this is what is left after the shared parts, divided by one
    /// session's share. Fails, listing the plan, when not even one fits.
    pub fn most_sessions(
        model: &Model,
        opts: &SessionOptions,
        budget: usize,
        max: usize,
    ) -> Result<usize> {
        let one = SessionPlan::new(model, opts.clone(), 1)?.memory;
        one.check(budget)?;
        let each = one.per_session.total().max(1);
        let shared = one.total() - each;
        Ok(((budget - shared) / each).clamp(1, max.max(1)))
    }

    /// The longest context (up to `max_ctx`) at which `sessions` sessions with these options
    /// fit `budget`.
    pub fn longest_context(
        model: &Model,
        opts: &SessionOptions,
        sessions: usize,
        budget: usize,
        max_ctx: usize,
    ) -> Result<usize> {
        longest_context(budget, max_ctx, |n_ctx| {
            let opts = SessionOptions {
                n_ctx,
                ..opts.clone()
            };
            Ok(SessionPlan::new(model, opts, sessions)?.memory)
        })
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    EndOfText,
    /// The requested number of tokens was generated.
    Length,
    /// The context is full.
    ContextFull,
    /// The caller asked to stop (a stop string, a cancel).
    Stopped,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::EndOfText => "end of text",
            FinishReason::Length => "length limit",
            FinishReason::ContextFull => "context full",
            FinishReason::Stopped => "stopped",
        }
    }
}

pub struct Session<'m> {
    model: &'m Model,
    fwd: Forward,
    opts: SessionOptions,
    n_past: usize,
    /// What `auto` resolved to for this model, decided once.
    resolved: Option<Prefill>,
}

impl<'m> Session<'m> {
    /// A session with its own plan (one session, no budget check).
    pub fn new(
        model: &'m Model,
        kern: &'static Kernels,
        opts: SessionOptions,
    ) -> Result<Session<'m>> {
        Session::from_plan(model, kern, &SessionPlan::new(model, opts, 1)?)
    }

    /// A session of a plan already made (and checked against a budget).
    pub fn from_plan(
        model: &'m Model,
        kern: &'static Kernels,
        plan: &SessionPlan,
    ) -> Result<Session<'m>> {
        Ok(Session {
            model,
            fwd: Forward::new(model, kern, plan.memory.dims, 1)?,
            opts: plan.opts.clone(),
            n_past: 0,
            resolved: None,
        })
    }

    pub fn dims(&self) -> SessionDims {
        *self.fwd.dims()
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    pub fn n_past(&self) -> usize {
        self.n_past
    }

    pub fn n_ctx(&self) -> usize {
        self.opts.n_ctx
    }

    /// A sampler for this session (see [`Sampler::for_context`]).
    pub fn sampler(&self, cfg: SamplerConfig) -> Sampler {
        Sampler::for_context(cfg, self.model.cfg.n_vocab, self.opts.n_ctx)
    }

    /// Forgets the sequence (the cache is overwritten as new tokens arrive).
    pub fn reset(&mut self) {
        self.n_past = 0;
    }

    /// Rewinds to `n` tokens (they must still be in the cache), e.g. after restoring a prefix.
    pub fn set_n_past(&mut self, n: usize) -> Result<()> {
        if n > self.opts.n_ctx {
            return Err(Error::Usage(format!(
                "position {n} is beyond the context of {}",
                self.opts.n_ctx
            )));
        }
        self.n_past = n;
        Ok(())
    }

    /// The session's condensed KV cache.
    pub fn cache(&self) -> &KvCache {
        &self.fwd.slot(0).cache
    }

    pub fn cache_mut(&mut self) -> &mut KvCache {
        &mut self.fwd.slot_mut(0).cache
    }

    /// The strategy for cyclic groups: fixed by the user, or chosen once by `auto`.
    pub fn prefill_strategy(&mut self) -> Prefill {
        match self.opts.prefill {
            PrefillChoice::Sequential => Prefill::Sequential,
            PrefillChoice::Iterative => Prefill::Iterative {
                tolerance: self.opts.early_exit,
            },
            PrefillChoice::Auto => *self.resolved.get_or_insert_with(|| {
                auto_strategy(self.model, self.fwd.kernels(), self.opts.early_exit)
            }),
        }
    }

    /// Runs prompt tokens after what is already in the context. `sink(i, logits)` receives the
    /// logits of prompt position i as `want` asks; the last position's are kept for sampling.
    pub fn prefill(
        &mut self,
        tokens: &[u32],
        want: Logits,
        sink: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<ForwardStats> {
        if tokens.is_empty() {
            return Err(Error::Usage(
                "the prompt is empty: nothing to process".into(),
            ));
        }
        if self.n_past + tokens.len() > self.opts.n_ctx {
            return Err(Error::Usage(format!(
                "the prompt has {} tokens but only {} of the {}-token context are free; raise -c or shorten the prompt",
                tokens.len(),
                self.opts.n_ctx - self.n_past,
                self.opts.n_ctx
            )));
        }
        let strategy = self.prefill_strategy();
        let mut stats = ForwardStats::default();
        let n_batch = self.fwd.dims().n_batch;
        let total = tokens.len();
        let mut done = 0;
        for chunk in tokens.chunks(n_batch) {
            let last_chunk = done + chunk.len() == total;
            let chunk_want = match want {
                Logits::All => Logits::All,
                _ if last_chunk => Logits::Last,
                _ => Logits::None,
            };
            let offset = done;
            let s = self.fwd.forward(
                self.model,
                0,
                chunk,
                self.n_past,
                strategy,
                chunk_want,
                &mut |i, l| {
                    if want != Logits::None {
                        sink(offset + i, l);
                    }
                },
            )?;
            stats.passes += s.passes;
            self.n_past += chunk.len();
            done += chunk.len();
        }
        Ok(stats)
    }

    /// Runs one token and returns the logits of the next.
    pub fn decode(&mut self, token: u32) -> Result<&[f32]> {
        if self.n_past >= self.opts.n_ctx {
            return Err(Error::Usage(format!(
                "the context of {} tokens is full",
                self.opts.n_ctx
            )));
        }
        self.fwd.forward(
            self.model,
            0,
            &[token],
            self.n_past,
            Prefill::Sequential,
            Logits::Last,
            &mut |_, _| {},
        )?;
        self.n_past += 1;
        Ok(self.fwd.last_logits(0))
    }

    /// Logits of the last position run.
    pub fn logits(&self) -> &[f32] {
        self.fwd.last_logits(0)
    }
}

/// Chooses iterative or sequential prefill for a model on this machine. Iterative costs about
/// `passes` batched passes over the cyclic layers; sequential one single-token pass per token.
/// The ratio of their per-token costs is measured once on the largest matrix of a cyclic layer:
/// a matrix-vector product (bandwidth-bound) against a matrix-matrix product (compute-bound).
pub fn auto_strategy(model: &Model, kern: &Kernels, tolerance: Option<f32>) -> Prefill {
    let cfg = &model.cfg;
    let Some(layer) = cfg.plan.segments().into_iter().find_map(|s| match s {
        Segment::Cyclic(r) => Some(r.start),
        Segment::Acyclic(_) => None,
    }) else {
        return Prefill::Sequential;
    };
    let w = &model.weights.layers[layer].w_down;
    let batch = 32;
    let vt = w.ty.vec_dot_type();
    let rs = vt.row_size(w.cols).unwrap_or(0);
    let acts = vec![0u8; rs * batch];
    let mut out = vec![0f32; w.rows * batch];
    let data = w.data(&model.file);
    let time = |n: usize, out: &mut [f32]| {
        let reps = 3;
        kern.matmul(
            w.ty,
            data,
            w.rows,
            w.cols,
            &acts[..n * rs],
            n,
            &mut out[..n * w.rows],
        );
        let t = Instant::now();
        for _ in 0..reps {
            kern.matmul(
                w.ty,
                data,
                w.rows,
                w.cols,
                &acts[..n * rs],
                n,
                &mut out[..n * w.rows],
            );
        }
        t.elapsed().as_secs_f64() / reps as f64
    };
    let per_token_single = time(1, &mut out);
    let per_token_batched = time(batch, &mut out) / batch as f64;
    if cfg.plan.passes() as f64 * per_token_batched < per_token_single {
        Prefill::Iterative { tolerance }
    } else {
        Prefill::Sequential
    }
}
