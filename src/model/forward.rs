//! The forward pass, shared by every architecture and every KV plan: a standard model is just
//! the identity plan. One call processes a batch of consecutive tokens; layers that attend up
//! (a cyclic group of the plan) are run token by token (exact) or with the iterative parallel
//! prefill the LCKV models are trained with.
//!
//! Every buffer sized by the context or the batch is carved from the session's arena
//! (`memory::scratch`, `memory::kv_cache`); what is allocated here is the list of segments and of
//! their producer layers, once, when the session starts. Nothing is allocated per call.

use std::ops::Range;

use rayon::prelude::*;

use lckv_kernels::{AttnQuery, AttnScratch, GgmlType, Kernels, KvView};

use crate::memory::arena::{Arena, ArenaLayout, Buf};
use crate::memory::dims::SessionDims;
use crate::memory::kv_cache::KvCache;
use crate::memory::plan::ArenaRegions;
use crate::memory::scratch::Scratch;
use crate::model::config::{Activation, ModelConfig};
use crate::model::kv_plan::Segment;
use crate::model::weights::{LayerWeights, Matrix};
use crate::model::Model;
use crate::{Error, Result};

/// How the layers of a cyclic group process a prompt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prefill {
    /// Token by token through the cyclic layers: exact.
    Sequential,
    /// m + b passes over the whole prompt, as the models are trained. With `tolerance`, stop
    /// once no producer's K/V moves by more than it between two passes.
    Iterative { tolerance: Option<f32> },
}

/// Which positions' logits a forward call produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// What a forward call did, for reports and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Passes run over cyclic groups (0 when there were none or the batch went token by token).
    pub passes: usize,
}

/// A segment of the plan with, for a cyclic group, its producer layers (listed once here so that
/// an iterative prefill needs no list of its own).
struct Step {
    segment: Segment,
    producers: Vec<usize>,
}

/// Where a batch row comes from: a session's slot and the row's position in that session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub slot: usize,
    pub pos: usize,
}

/// One session's own state in the arena: its condensed KV cache and the logits of its last
/// position, which its sampler reads.
pub struct Slot {
    pub cache: KvCache,
    last: Buf<f32>,
}

/// The arena-backed state of `slots` sessions of one model: the scratch of the batch in flight,
/// shared, and each session's slot.
pub struct Forward {
    kern: &'static Kernels,
    dims: SessionDims,
    steps: Vec<Step>,
    s: Scratch,
    slots: Vec<Slot>,
    /// Slot and position of each batch row of the call in flight (`n_batch` long).
    rows: Vec<Row>,
}

impl Forward {
    /// Carves the buffers of `sessions` sessions from one new arena, as the memory plan
    /// reserves them.
    pub fn new(
        model: &Model,
        kern: &'static Kernels,
        dims: SessionDims,
        sessions: usize,
    ) -> Result<Forward> {
        let mut layout = ArenaLayout::new();
        let regions = ArenaRegions::reserve(&model.dims(), &dims, sessions, &mut layout)?;
        let arena = Arena::allocate(layout)?;
        let plan = &model.cfg.plan;
        let steps = plan
            .segments()
            .into_iter()
            .map(|segment| {
                let producers = match &segment {
                    Segment::Cyclic(layers) => {
                        layers.clone().filter(|&i| plan.is_producer(i)).collect()
                    }
                    Segment::Acyclic(_) => Vec::new(),
                };
                Step { segment, producers }
            })
            .collect();
        Ok(Forward {
            kern,
            dims,
            steps,
            s: regions.scratch.take(&arena),
            slots: regions
                .sessions
                .into_iter()
                .map(|r| Slot {
                    cache: KvCache::take(r.kv, &arena),
                    last: arena.take(r.last),
                })
                .collect(),
            rows: vec![Row::default(); dims.n_batch],
        })
    }

    pub fn dims(&self) -> &SessionDims {
        &self.dims
    }

    pub fn kernels(&self) -> &'static Kernels {
        self.kern
    }

    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    pub fn slot(&self, slot: usize) -> &Slot {
        &self.slots[slot]
    }

    pub fn slot_mut(&mut self, slot: usize) -> &mut Slot {
        &mut self.slots[slot]
    }

    /// Copies the first `n` positions of slot `from`'s cache into slot `to`'s (a prefix held
    /// once, given to a session that starts with it).
    pub fn copy_prefix(&mut self, from: usize, to: usize, n: usize) {
        if from == to {
            return;
        }
        let (lo, hi) = self.slots.split_at_mut(from.max(to));
        let (src, dst) = if from < to {
            (&lo[from], &mut hi[0])
        } else {
            (&hi[0], &mut lo[to])
        };
        dst.cache.copy_prefix_from(&src.cache, n);
    }

    /// The logits of the last position of `slot` a call produced logits for.
    pub fn last_logits(&self, slot: usize) -> &[f32] {
        &self.slots[slot].last
    }

    /// Runs `tokens` of session `slot` at positions `pos0..`, writing their K/V into its cache,
    /// and hands the requested logits to `sink(row, logits)`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        m: &Model,
        slot: usize,
        tokens: &[u32],
        pos0: usize,
        prefill: Prefill,
        want: Logits,
        sink: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<ForwardStats> {
        let n = tokens.len();
        self.check_batch(n)?;
        if slot >= self.slots.len() || pos0 + n > self.dims.n_ctx {
            return Err(Error::Usage(format!(
                "positions {pos0}..{} of session {slot} exceed the context of {} tokens; raise -c",
                pos0 + n,
                self.dims.n_ctx
            )));
        }
        for (r, row) in self.rows[..n].iter_mut().enumerate() {
            *row = Row {
                slot,
                pos: pos0 + r,
            };
        }
        self.run(m, tokens, false, prefill, want, sink)
    }

    /// Runs one token for each of several sessions (`rows[i]` says whose, and at which
    /// position), in one pass over the weights, and hands every row's logits to `sink`. Each
    /// row reads only its own session's cache; the sessions must be distinct.
    pub fn decode_batch(
        &mut self,
        m: &Model,
        tokens: &[u32],
        rows: &[Row],
        sink: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        let n = tokens.len();
        self.check_batch(n)?;
        if rows.len() != n {
            return Err(Error::Usage(format!(
                "{n} tokens but {} rows in a decode batch",
                rows.len()
            )));
        }
        for (r, row) in rows.iter().enumerate() {
            let clash = rows[..r].iter().any(|o| o.slot == row.slot);
            if row.slot >= self.slots.len() || row.pos >= self.dims.n_ctx || clash {
                return Err(Error::Usage(format!(
                    "decode batch row {r}: session {} at position {} is not a free slot and position of {} sessions x {} tokens",
                    row.slot,
                    row.pos,
                    self.slots.len(),
                    self.dims.n_ctx
                )));
            }
        }
        self.rows[..n].copy_from_slice(rows);
        self.run(m, tokens, true, Prefill::Sequential, Logits::All, sink)?;
        Ok(())
    }

    fn check_batch(&self, n: usize) -> Result<()> {
        if n > self.dims.n_batch {
            return Err(Error::Usage(format!(
                "a batch of {n} tokens exceeds the batch size {}",
                self.dims.n_batch
            )));
        }
        Ok(())
    }

    /// The pass over the layers for the first `tokens.len()` rows of `self.rows`. Rows of one
    /// session are consecutive positions; `independent` rows are of distinct sessions, so even
    /// layers that attend up can take them together.
    fn run(
        &mut self,
        m: &Model,
        tokens: &[u32],
        independent: bool,
        prefill: Prefill,
        want: Logits,
        sink: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<ForwardStats> {
        let n = tokens.len();
        if n == 0 {
            return Ok(ForwardStats::default());
        }
        self.embed(m, tokens)?;
        let mut stats = ForwardStats::default();
        let passes = m.cfg.plan.passes();
        for si in 0..self.steps.len() {
            match self.steps[si].segment.clone() {
                Segment::Acyclic(layers) => {
                    for il in layers {
                        self.layer(m, il, 0..n, independent);
                    }
                }
                Segment::Cyclic(layers) if independent => {
                    for il in layers {
                        self.layer(m, il, 0..n, independent);
                    }
                }
                // One token, or a prompt no longer than the pass count, goes token by token:
                // exact, and what the passes would converge to anyway.
                Segment::Cyclic(layers) => match prefill {
                    Prefill::Iterative { tolerance } if n > passes => {
                        stats.passes += self.iterate(m, si, layers, n, passes, tolerance);
                    }
                    _ => {
                        for r in 0..n {
                            for il in layers.clone() {
                                self.layer(m, il, r..r + 1, false);
                            }
                        }
                    }
                },
            }
        }
        self.output(m, n, want, sink);
        Ok(stats)
    }

    /// The iterative parallel prefill of one cyclic group (step `si`): every pass starts from the
    /// same input states; the layers that attend up read the producers' K/V of the previous pass
    /// (zeros in the first); the last pass leaves its K/V in the cache and its output in `x`.
    /// The rows are `n` consecutive positions of one session.
    fn iterate(
        &mut self,
        m: &Model,
        si: usize,
        layers: Range<usize>,
        n: usize,
        passes: usize,
        tol: Option<f32>,
    ) -> usize {
        let e = m.cfg.n_embd;
        let Row { slot, pos: pos0 } = self.rows[0];
        let positions = pos0..pos0 + n;
        self.s.x_in[..n * e].copy_from_slice(&self.s.x[..n * e]);
        for &p in &self.steps[si].producers {
            self.slots[slot].cache.zero(p, positions.clone());
        }
        let mut ran = 0;
        for pass in 0..passes {
            if pass > 0 {
                self.s.x[..n * e].copy_from_slice(&self.s.x_in[..n * e]);
            }
            if tol.is_some() {
                self.snapshot_kv(si, slot, positions.clone());
            }
            for il in layers.clone() {
                self.layer(m, il, 0..n, false);
            }
            ran += 1;
            if let Some(t) = tol {
                if pass > 0 && self.kv_change(si, slot, positions.clone()) <= t {
                    break;
                }
            }
        }
        ran
    }

    /// Copies the K/V of step `si`'s producers in `slot` at `pos` into the snapshot.
    fn snapshot_kv(&mut self, si: usize, slot: usize, pos: Range<usize>) {
        let cache = &self.slots[slot].cache;
        let per = 2 * pos.len() * cache.layout().pos_bytes();
        for (j, &p) in self.steps[si].producers.iter().enumerate() {
            cache.copy_out(p, pos.clone(), &mut self.s.snapshot[j * per..(j + 1) * per]);
        }
    }

    /// Largest absolute change of any producer K/V element of step `si` since `snapshot_kv`.
    fn kv_change(&mut self, si: usize, slot: usize, pos: Range<usize>) -> f32 {
        let cache = &self.slots[slot].cache;
        let layout = *cache.layout();
        let (rb, hd, pb) = (layout.row_bytes(), layout.head_dim, layout.pos_bytes());
        let per = 2 * pos.len() * pb;
        let mut worst = 0f32;
        let (a, b) = self.s.tmp.split_at_mut(hd);
        for (j, &p) in self.steps[si].producers.iter().enumerate() {
            let old = &self.s.snapshot[j * per..(j + 1) * per];
            let (old_k, old_v) = old.split_at(per / 2);
            let k = &cache.k(p)[pos.start * pb..pos.end * pb];
            let v = &cache.v(p)[pos.start * pb..pos.end * pb];
            for (cur, was) in [(k, old_k), (v, old_v)] {
                for (cr, wr) in cur.chunks_exact(rb).zip(was.chunks_exact(rb)) {
                    self.kern.dequantize_row(layout.ty, cr, &mut a[..hd]);
                    self.kern.dequantize_row(layout.ty, wr, &mut b[..hd]);
                    for (x, y) in a[..hd].iter().zip(&b[..hd]) {
                        worst = worst.max((x - y).abs());
                    }
                }
            }
        }
        worst
    }

    /// x[r] = embedding of tokens[r] (scaled by sqrt(n_embd) where the architecture says so).
    fn embed(&mut self, m: &Model, tokens: &[u32]) -> Result<()> {
        let cfg = &m.cfg;
        let e = cfg.n_embd;
        let emb = &m.weights.token_embd;
        let data = emb.data(&m.file);
        let rb = emb.row_bytes();
        let scale = if cfg.traits.scale_embeddings {
            (e as f32).sqrt()
        } else {
            1.0
        };
        for (r, &t) in tokens.iter().enumerate() {
            let t = t as usize;
            if t >= cfg.n_vocab {
                return Err(Error::Usage(format!(
                    "token id {t} is outside the vocabulary of {} tokens",
                    cfg.n_vocab
                )));
            }
            let row = &mut self.s.x[r * e..(r + 1) * e];
            self.kern
                .dequantize_row(emb.ty, &data[t * rb..(t + 1) * rb], row);
            if scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Ok(())
    }

    /// One transformer block over batch rows `rows` (their sessions and positions in
    /// `self.rows`): x += attention(norm(x)); x += ffn(norm(x)).
    fn layer(&mut self, m: &Model, il: usize, rows: Range<usize>, independent: bool) {
        let b = Block {
            kern: self.kern,
            m,
            cfg: &m.cfg,
            w: &m.weights.layers[il],
            il,
            n: rows.len(),
            rows: &self.rows[rows.clone()],
            independent,
            n_ctx: self.dims.n_ctx,
        };
        let (e, s) = (m.cfg.n_embd, &mut self.s);
        let rows = rows.start * e..rows.end * e;
        norm_rows(
            b.kern,
            &s.x[rows.clone()],
            &b.w.attn_norm,
            b.cfg.rms_eps,
            &mut s.xn,
        );
        b.attention(s, &mut self.slots);
        b.residual(
            s,
            &b.w.wo,
            Input::Xn(b.cfg.q_dim()),
            b.w.post_attn_norm.as_deref(),
            rows.clone(),
        );
        norm_rows(
            b.kern,
            &s.x[rows.clone()],
            &b.w.ffn_norm,
            b.cfg.rms_eps,
            &mut s.xn,
        );
        b.feed_forward(s);
        b.residual(
            s,
            &b.w.w_down,
            Input::Gate(b.cfg.n_ff),
            b.w.post_ffn_norm.as_deref(),
            rows,
        );
    }

    /// Final norm and LM head for the rows asked for, `logit_rows` at a time. The last
    /// position's logits are also kept in `last` for sampling.
    fn output(&mut self, m: &Model, n: usize, want: Logits, sink: &mut dyn FnMut(usize, &[f32])) {
        let cfg = &m.cfg;
        let (e, v) = (cfg.n_embd, cfg.n_vocab);
        let rows = match want {
            Logits::None => return,
            Logits::Last => n - 1..n,
            Logits::All => 0..n,
        };
        let s = &mut self.s;
        let chunk = self.dims.logit_rows;
        let mut start = rows.start;
        while start < rows.end {
            let end = (start + chunk).min(rows.end);
            let c = end - start;
            norm_rows(
                self.kern,
                &s.x[start * e..end * e],
                &m.weights.output_norm,
                cfg.rms_eps,
                &mut s.xn,
            );
            matmul(
                self.kern,
                m,
                &m.weights.output,
                &s.xn[..c * e],
                c,
                &mut s.act,
                &mut None,
                &mut s.logits,
            );
            for r in 0..c {
                let row = &s.logits[r * v..(r + 1) * v];
                sink(start + r, row);
                let slot = self.rows[start + r].slot;
                if slot != self.rows[n - 1].slot {
                    // Rows of other sessions in a decode batch: each is its session's last.
                    self.slots[slot].last.copy_from_slice(row);
                }
            }
            start = end;
        }
        // Row n - 1 is the last one asked for either way; it is in the logits of the last chunk.
        // A decode batch keeps every row's logits in its own slot as they are made (above).
        let last_chunk_start = rows.start + (rows.len() - 1) / chunk * chunk;
        let r = n - 1 - last_chunk_start;
        let slot = self.rows[n - 1].slot;
        self.slots[slot]
            .last
            .copy_from_slice(&s.logits[r * v..(r + 1) * v]);
    }
}

/// Where a sub-block's output projection reads its input: the attention output gathered in `xn`,
/// or the gated feed-forward activations in `gate`; with the row width.
enum Input {
    Xn(usize),
    Gate(usize),
}

/// One transformer block applied to `n` batch rows (each a session's slot and position): the
/// model, the layer's weights and where in the plan it stands. Its steps read like the math; all memory is the
/// session's scratch and cache, passed in.
struct Block<'a> {
    kern: &'static Kernels,
    m: &'a Model,
    cfg: &'a ModelConfig,
    w: &'a LayerWeights,
    il: usize,
    n: usize,
    rows: &'a [Row],
    /// The rows are of distinct sessions (a decode batch).
    independent: bool,
    n_ctx: usize,
}

impl Block<'_> {
    fn producer(&self) -> bool {
        self.cfg.plan.is_producer(self.il)
    }

    /// Attention of the rows normalised into `xn`: q, k, v = projections of xn; RoPE; producers
    /// cache k, v; each head attends over its source layer's cache. Leaves the heads' output,
    /// row by row, in `xn`.
    fn attention(&self, s: &mut Scratch, slots: &mut [Slot]) {
        self.project_qkv(s);
        self.rotate_and_cache(s, slots);
        // Phi-3 and Gemma 3 scale the queries themselves (llama.cpp does too: it changes
        // rounding); the others scale the scores.
        let qd = self.cfg.q_dim();
        let scale = if self.cfg.traits.scale_queries {
            let a = self.cfg.attn_scale;
            s.q[..self.n * qd].iter_mut().for_each(|x| *x *= a);
            1.0
        } else {
            self.cfg.attn_scale
        };
        self.attend(s, slots, scale);
        // att is [head][row][head_dim]; the output projection wants [row][head][head_dim].
        let (n, hd) = (self.n, self.cfg.head_dim);
        for r in 0..n {
            for h in 0..self.cfg.n_head {
                s.xn[r * qd + h * hd..r * qd + (h + 1) * hd]
                    .copy_from_slice(&s.att[h * n * hd + r * hd..h * n * hd + (r + 1) * hd]);
            }
        }
    }

    /// q = xn·Wq (+ bias, per-head norm); producers also k and v.
    fn project_qkv(&self, s: &mut Scratch) {
        let (n, e, hd) = (self.n, self.cfg.n_embd, self.cfg.head_dim);
        let (qd, kvd) = (self.cfg.q_dim(), self.cfg.kv_dim());
        let producer = self.producer();
        let w = self.w;
        let xn = &s.xn[..n * e];
        if let Some(wqkv) = &w.wqkv {
            self.matmul(wqkv, xn, &mut s.act, &mut None, &mut s.qkv);
            let width = wqkv.rows;
            for r in 0..n {
                let row = &s.qkv[r * width..(r + 1) * width];
                s.q[r * qd..(r + 1) * qd].copy_from_slice(&row[..qd]);
                if producer {
                    s.k[r * kvd..(r + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
                    s.v[r * kvd..(r + 1) * kvd].copy_from_slice(&row[qd + kvd..qd + 2 * kvd]);
                }
            }
        } else {
            // The activation rows quantized for Q serve K and V when the types agree.
            let mut quantized = None;
            let wq = w.wq.as_ref().expect("weights without Q projection");
            self.matmul(wq, xn, &mut s.act, &mut quantized, &mut s.q);
            if producer {
                let wk = w.wk.as_ref().expect("producer without K");
                let wv = w.wv.as_ref().expect("producer without V");
                self.matmul(wk, xn, &mut s.act, &mut quantized, &mut s.k);
                self.matmul(wv, xn, &mut s.act, &mut quantized, &mut s.v);
            }
        }
        add_bias(&mut s.q[..n * qd], w.bq.as_deref());
        if let Some(qn) = &w.q_norm {
            // Per-head RMSNorm (Gemma 3's Q/K norms): rows of head_dim.
            row_norm(
                self.kern,
                &mut s.q[..n * qd],
                qn,
                hd,
                self.cfg.rms_eps,
                &mut s.tmp,
            );
        }
        if producer {
            add_bias(&mut s.k[..n * kvd], w.bk.as_deref());
            add_bias(&mut s.v[..n * kvd], w.bv.as_deref());
            if let Some(kn) = &w.k_norm {
                row_norm(
                    self.kern,
                    &mut s.k[..n * kvd],
                    kn,
                    hd,
                    self.cfg.rms_eps,
                    &mut s.tmp,
                );
            }
        }
    }

    /// RoPE: each layer rotates its own queries; producers rotate their keys and cache k, v at
    /// their own positions.
    fn rotate_and_cache(&self, s: &mut Scratch, slots: &mut [Slot]) {
        let cfg = self.cfg;
        let (hd, nh, nkv) = (cfg.head_dim, cfg.n_head, cfg.n_head_kv);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let producer = self.producer();
        let (base, freq_scale) = if cfg.arch_sliding[self.il] && cfg.rope.base_sliding.is_some() {
            (cfg.rope_base(self.il), 1.0)
        } else {
            (cfg.rope.base, cfg.rope.freq_scale)
        };
        let factors = self.m.weights.rope_factors.for_context(self.n_ctx);
        let neox = cfg.traits.rope_neox;
        for (r, row) in self.rows.iter().enumerate() {
            let pos = row.pos;
            let (cos, sin) = s.rope.split_at_mut(cfg.rope.n_rot / 2);
            rope_angles(
                pos,
                base,
                freq_scale,
                cfg.rope.attn_factor,
                factors,
                cos,
                sin,
            );
            let q = &mut s.q[r * qd..(r + 1) * qd];
            self.kern.rope(q, nh, hd, cfg.rope.n_rot, cos, sin, neox);
            if producer {
                let k = &mut s.k[r * kvd..(r + 1) * kvd];
                self.kern.rope(k, nkv, hd, cfg.rope.n_rot, cos, sin, neox);
                let v = &s.v[r * kvd..(r + 1) * kvd];
                slots[row.slot].cache.store(self.kern, self.il, pos, k, v);
            }
        }
    }

    /// att[h][r] = softmax(scale q·K) V over the positions of the source layer that row r sees
    /// in its own session's cache, one query head per task.
    fn attend(&self, s: &mut Scratch, slots: &[Slot], scale: f32) {
        let cfg = self.cfg;
        let (n, hd, qd) = (self.n, cfg.head_dim, cfg.q_dim());
        let src = cfg.plan.sources[self.il];
        let kv = |slot: usize| {
            let cache = &slots[slot].cache;
            KvView {
                layout: *cache.layout(),
                k: cache.k(src),
                v: cache.v(src),
            }
        };
        let group = cfg.n_head / cfg.n_head_kv;
        let (n_ctx, kern, plan, il, rows) = (self.n_ctx, self.kern, &cfg.plan, self.il, self.rows);
        // llama.cpp's x86 build sums a prompt's attention values in another order than a single
        // token's (its GEMM); follow it so that parity holds for prompts and for decoding. Rows
        // of distinct sessions are each a single token of its own: they keep the one-token
        // order, so a session decodes to the same bits in a batch as alone.
        let ggml_batched = n >= 2 && !self.independent;
        let (floats, bytes) = AttnScratch::len(n_ctx, hd);
        let q = &s.q;
        s.att[..n * qd]
            .par_chunks_mut(n * hd)
            .zip(s.attn_f32.par_chunks_mut(floats))
            .zip(s.attn_u8.par_chunks_mut(bytes))
            .enumerate()
            .for_each(|(h, ((out_h, f), b))| {
                let mut scratch = AttnScratch::new(f, b, n_ctx, hd);
                for (r, row) in rows.iter().enumerate() {
                    let query = AttnQuery {
                        kv: kv(row.slot),
                        kv_head: h / group,
                        visible: plan.visible(il, row.pos),
                        q: &q[r * qd + h * hd..r * qd + (h + 1) * hd],
                        scale,
                        batched: ggml_batched,
                    };
                    kern.attend(&query, &mut scratch, &mut out_h[r * hd..(r + 1) * hd]);
                }
            });
    }

    /// gate = act(xn·Wgate) * (xn·Wup), row by row.
    fn feed_forward(&self, s: &mut Scratch) {
        let (n, e, f) = (self.n, self.cfg.n_embd, self.cfg.n_ff);
        let xn = &s.xn[..n * e];
        if let Some(wg) = &self.w.w_gate {
            let mut quantized = None;
            self.matmul(wg, xn, &mut s.act, &mut quantized, &mut s.gate);
            self.matmul(&self.w.w_up, xn, &mut s.act, &mut quantized, &mut s.up);
        } else {
            // Fused: each output row is [gate | up].
            self.matmul(&self.w.w_up, xn, &mut s.act, &mut None, &mut s.up);
            for r in 0..n {
                let (g, u) = (r * 2 * f, r * 2 * f + f);
                s.gate[r * f..(r + 1) * f].copy_from_slice(&s.up[g..g + f]);
                s.up.copy_within(u..u + f, r * f);
            }
        }
        match self.cfg.traits.activation {
            Activation::Silu => {
                // Row by row: the vector groups restart at each row, as in ggml's swiglu.
                for (g, u) in s.gate[..n * f].chunks_mut(f).zip(s.up[..n * f].chunks(f)) {
                    self.kern.silu_mul(g, u);
                }
            }
            Activation::GeluTanh => self
                .kern
                .gelu_tanh_mul(&mut s.gate[..n * f], &s.up[..n * f]),
        }
    }

    /// x[rows] += post_norm(input·W): a sub-block's output projection, its optional post-norm
    /// (Gemma 3) and the residual add.
    fn residual(
        &self,
        s: &mut Scratch,
        w: &Matrix,
        input: Input,
        post_norm: Option<&[f32]>,
        rows: Range<usize>,
    ) {
        let n = self.n;
        let input = match input {
            Input::Xn(width) => &s.xn[..n * width],
            Input::Gate(width) => &s.gate[..n * width],
        };
        self.matmul(w, input, &mut s.act, &mut None, &mut s.proj);
        let out = &mut s.proj[..n * w.rows];
        if let Some(pn) = post_norm {
            row_norm(self.kern, out, pn, w.rows, self.cfg.rms_eps, &mut s.tmp);
        }
        add_into(&mut s.x[rows], out);
    }

    fn matmul(
        &self,
        w: &Matrix,
        input: &[f32],
        act: &mut [u8],
        quantized: &mut Option<GgmlType>,
        out: &mut [f32],
    ) {
        matmul(self.kern, self.m, w, input, self.n, act, quantized, out);
    }
}

/// out[r] = W · input[r] for n rows, activations quantized to the weight's dot-product type.
/// `quantized` records the type the rows in `act` already hold, so matrices applied to the same
/// input (Q/K/V, gate/up) quantize it once; pass `&mut None` for a new input.
#[allow(clippy::too_many_arguments)]
fn matmul(
    kern: &Kernels,
    m: &Model,
    w: &Matrix,
    input: &[f32],
    n: usize,
    act: &mut [u8],
    quantized: &mut Option<GgmlType>,
    out: &mut [f32],
) {
    let vt = w.ty.vec_dot_type();
    let rs = vt
        .row_size(w.cols)
        .expect("matrix widths are validated at load");
    if *quantized != Some(vt) {
        for r in 0..n {
            kern.quantize_row(
                vt,
                &input[r * w.cols..(r + 1) * w.cols],
                &mut act[r * rs..(r + 1) * rs],
            );
        }
        *quantized = Some(vt);
    }
    kern.matmul(
        w.ty,
        w.data(&m.file),
        w.rows,
        w.cols,
        &act[..n * rs],
        n,
        &mut out[..n * w.rows],
    );
}

/// out[r] = RMSNorm(x[r]) * w for every row of `x`.
fn norm_rows(kern: &Kernels, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let e = w.len();
    for (row, o) in x.chunks_exact(e).zip(out.chunks_exact_mut(e)) {
        kern.rms_norm(row, w, eps, o);
    }
}

fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            add_into(row, b);
        }
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// RMSNorm of every `width`-long row in place.
fn row_norm(kern: &Kernels, x: &mut [f32], w: &[f32], width: usize, eps: f32, tmp: &mut [f32]) {
    for row in x.chunks_exact_mut(width) {
        kern.rms_norm(row, w, eps, &mut tmp[..width]);
        row.copy_from_slice(&tmp[..width]);
    }
}

/// cos/sin of each rotated pair at `pos`, computed as ggml does (the angle advances by repeated
/// multiplication in f32), so that positions far into the context agree with llama.cpp.
fn rope_angles(
    pos: usize,
    base: f32,
    freq_scale: f32,
    mscale: f32,
    factors: Option<&[f32]>,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    let n_rot = 2 * cos.len();
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    for i in 0..cos.len() {
        let ff = factors.map_or(1.0, |f| f[i]);
        let t = freq_scale * (theta / ff);
        cos[i] = t.cos() * mscale;
        sin[i] = t.sin() * mscale;
        theta *= theta_scale;
    }
}
