//! A session: one model, one arena, one sequence. It feeds prompts through the forward pass in
//! batches (choosing the prefill strategy for condensed plans), decodes token by token, and
//! knows where the context ends. Generation loops over it without allocating.

use std::time::Instant;

use crate::memory::plan::MemoryPlan;
use crate::model::forward::{Forward, ForwardDims, ForwardStats, Logits, Prefill};
use crate::model::kv_plan::Segment;
use crate::model::Model;
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

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    EndOfText,
    /// The requested number of tokens was generated.
    Length,
    /// The context is full.
    ContextFull,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::EndOfText => "end of text",
            FinishReason::Length => "length limit",
            FinishReason::ContextFull => "context full",
        }
    }
}

pub struct Session<'m> {
    model: &'m Model,
    fwd: Forward,
    opts: SessionOptions,
    n_past: usize,
    /// Logits of the last position run.
    last: Vec<f32>,
    /// What `auto` resolved to for this model, decided once.
    resolved: Option<Prefill>,
}

impl<'m> Session<'m> {
    pub fn new(
        model: &'m Model,
        kern: &'static Kernels,
        opts: SessionOptions,
    ) -> Result<Session<'m>> {
        let n_batch = opts.n_batch.min(opts.n_ctx).max(1);
        let dims = ForwardDims {
            n_batch,
            n_ctx: opts.n_ctx,
            logit_rows: opts.logit_rows.max(1),
            kv_type: opts.kv_type,
            early_exit: opts.early_exit.is_some(),
        };
        let fwd = Forward::new(model, kern, dims)?;
        Ok(Session {
            model,
            fwd,
            opts,
            n_past: 0,
            last: vec![0.0; model.cfg.n_vocab],
            resolved: None,
        })
    }

    pub fn dims(&self) -> ForwardDims {
        *self.fwd.dims()
    }

    pub fn memory_plan(&self) -> Result<MemoryPlan> {
        MemoryPlan::new(self.model, self.fwd.dims())
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

    pub fn forward_mut(&mut self) -> &mut Forward {
        &mut self.fwd
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
            let last = &mut self.last;
            let offset = done;
            let s = self.fwd.forward(
                self.model,
                chunk,
                self.n_past,
                strategy,
                chunk_want,
                &mut |i, l| {
                    if offset + i + 1 == total {
                        last.copy_from_slice(l);
                    }
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
        let last = &mut self.last;
        self.fwd.forward(
            self.model,
            &[token],
            self.n_past,
            Prefill::Sequential,
            Logits::Last,
            &mut |_, l| last.copy_from_slice(l),
        )?;
        self.n_past += 1;
        Ok(&self.last)
    }

    /// Logits of the last position run.
    pub fn logits(&self) -> &[f32] {
        &self.last
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
