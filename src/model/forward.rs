//! The forward pass, shared by every architecture and every KV plan: a standard model is just
//! the identity plan. One call processes a batch of consecutive tokens; layers that attend up
//! (a cyclic group of the plan) are run token by token (exact) or with the iterative parallel
//! prefill the LCKV models are trained with. All buffers come from the session arena: nothing
//! is allocated here.

use std::ops::Range;

use rayon::prelude::*;

use lckv_kernels::{AttnScratch, GgmlType, Kernels};

use crate::memory::arena::{Arena, ArenaLayout, Buf, Region};
use crate::memory::kv_cache::{KvCache, KvRegions};
use crate::model::config::{Activation, ModelConfig};
use crate::model::kv_plan::Segment;
use crate::model::weights::Matrix;
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

/// Sizes of the session's buffers: the one source of truth for the arena and the memory plan.
#[derive(Clone, Copy, Debug)]
pub struct ForwardDims {
    pub n_batch: usize,
    pub n_ctx: usize,
    pub logit_rows: usize,
    pub kv_type: GgmlType,
    pub early_exit: bool,
}

struct Regions {
    x: Region<f32>,
    x_in: Region<f32>,
    xn: Region<f32>,
    q: Region<f32>,
    k: Region<f32>,
    v: Region<f32>,
    qkv: Region<f32>,
    att: Region<f32>,
    gate: Region<f32>,
    up: Region<f32>,
    proj: Region<f32>,
    act: Region<u8>,
    logits: Region<f32>,
    rope: Region<f32>,
    tmp: Region<f32>,
    snapshot: Region<u8>,
    kv: KvRegions,
}

/// The arena-backed state of one session: scratch buffers and the condensed KV cache.
pub struct Forward {
    kern: &'static Kernels,
    dims: ForwardDims,
    segments: Vec<Segment>,
    x: Buf<f32>,
    x_in: Buf<f32>,
    xn: Buf<f32>,
    q: Buf<f32>,
    k: Buf<f32>,
    v: Buf<f32>,
    qkv: Buf<f32>,
    att: Buf<f32>,
    gate: Buf<f32>,
    up: Buf<f32>,
    proj: Buf<f32>,
    act: Buf<u8>,
    logits: Buf<f32>,
    rope: Buf<f32>,
    tmp: Buf<f32>,
    snapshot: Buf<u8>,
    attn: Vec<AttnScratch>,
    pub cache: KvCache,
}

fn reserve(
    cfg: &ModelConfig,
    max_cols: usize,
    d: &ForwardDims,
    l: &mut ArenaLayout,
) -> Result<Regions> {
    let b = d.n_batch;
    let e = cfg.n_embd;
    let fused_qkv = cfg.traits.fused_qkv;
    let up_rows = if cfg.traits.fused_gate_up {
        2 * cfg.n_ff
    } else {
        cfg.n_ff
    };
    // Activations are quantized per row; F32 weights take them as f32, the widest case.
    let act_row = max_cols * 4;
    let kv_pos_bytes = crate::memory::kv_cache::kv_layout(cfg, d.kv_type)?.pos_bytes();
    let n_producers = cfg.plan.producers().len();
    Ok(Regions {
        x: l.reserve(b * e)?,
        x_in: l.reserve(if cfg.plan.is_identity() { 0 } else { b * e })?,
        xn: l.reserve(b * e.max(cfg.q_dim()))?,
        q: l.reserve(b * cfg.q_dim())?,
        k: l.reserve(b * cfg.kv_dim())?,
        v: l.reserve(b * cfg.kv_dim())?,
        qkv: l.reserve(if fused_qkv {
            b * (cfg.q_dim() + 2 * cfg.kv_dim())
        } else {
            0
        })?,
        att: l.reserve(b * cfg.q_dim())?,
        gate: l.reserve(b * cfg.n_ff)?,
        up: l.reserve(b * up_rows)?,
        proj: l.reserve(b * e)?,
        act: l.reserve(b * act_row)?,
        logits: l.reserve(d.logit_rows * cfg.n_vocab)?,
        rope: l.reserve(cfg.rope.n_rot)?,
        tmp: l.reserve(2 * e.max(cfg.head_dim))?,
        snapshot: l.reserve(if d.early_exit {
            2 * b * kv_pos_bytes * n_producers
        } else {
            0
        })?,
        kv: KvCache::reserve(cfg, d.n_ctx, d.kv_type, l)?,
    })
}

impl Forward {
    /// Bytes of the arena and of the attention scratch for these dimensions.
    pub fn arena_bytes(
        cfg: &ModelConfig,
        max_cols: usize,
        d: &ForwardDims,
    ) -> Result<(usize, usize)> {
        let mut l = ArenaLayout::new();
        reserve(cfg, max_cols, d, &mut l)?;
        Ok((
            l.size(),
            cfg.n_head * AttnScratch::bytes(d.n_ctx, cfg.head_dim),
        ))
    }

    pub fn new(model: &Model, kern: &'static Kernels, dims: ForwardDims) -> Result<Forward> {
        let cfg = &model.cfg;
        if dims.n_batch == 0 || dims.n_ctx == 0 || dims.logit_rows == 0 {
            return Err(Error::Usage(
                "context, batch size and logit rows must be at least 1".into(),
            ));
        }
        let mut layout = ArenaLayout::new();
        let r = reserve(cfg, model.weights.max_cols(), &dims, &mut layout)?;
        let arena = Arena::allocate(&layout)?;
        Ok(Forward {
            kern,
            dims,
            segments: cfg.plan.segments(),
            x: arena.take(r.x),
            x_in: arena.take(r.x_in),
            xn: arena.take(r.xn),
            q: arena.take(r.q),
            k: arena.take(r.k),
            v: arena.take(r.v),
            qkv: arena.take(r.qkv),
            att: arena.take(r.att),
            gate: arena.take(r.gate),
            up: arena.take(r.up),
            proj: arena.take(r.proj),
            act: arena.take(r.act),
            logits: arena.take(r.logits),
            rope: arena.take(r.rope),
            tmp: arena.take(r.tmp),
            snapshot: arena.take(r.snapshot),
            attn: (0..cfg.n_head)
                .map(|_| AttnScratch::new(dims.n_ctx, cfg.head_dim))
                .collect(),
            cache: KvCache::take(r.kv, &arena),
        })
    }

    pub fn dims(&self) -> &ForwardDims {
        &self.dims
    }

    pub fn kernels(&self) -> &'static Kernels {
        self.kern
    }

    /// Runs `tokens` at positions `pos0..`, writing their K/V into the cache, and hands the
    /// requested logits to `sink(row, logits)`.
    pub fn forward(
        &mut self,
        m: &Model,
        tokens: &[u32],
        pos0: usize,
        prefill: Prefill,
        want: Logits,
        sink: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<ForwardStats> {
        let cfg = &m.cfg;
        let n = tokens.len();
        if n == 0 {
            return Ok(ForwardStats::default());
        }
        if n > self.dims.n_batch {
            return Err(Error::Usage(format!(
                "a batch of {n} tokens exceeds the batch size {}",
                self.dims.n_batch
            )));
        }
        if pos0 + n > self.dims.n_ctx {
            return Err(Error::Usage(format!(
                "positions {pos0}..{} exceed the context of {} tokens; raise -c",
                pos0 + n,
                self.dims.n_ctx
            )));
        }
        self.embed(m, tokens)?;
        let mut stats = ForwardStats::default();
        for si in 0..self.segments.len() {
            let seg = self.segments[si].clone();
            match seg {
                Segment::Acyclic(layers) => {
                    for il in layers {
                        self.layer(m, il, 0..n, pos0);
                    }
                }
                Segment::Cyclic(layers) => {
                    let passes = cfg.plan.passes();
                    match prefill {
                        // One token, or a prompt no longer than the pass count: token by token
                        // is exact and is what the passes would converge to anyway.
                        Prefill::Iterative { tolerance } if n > passes => {
                            stats.passes += self.iterate(m, layers, n, pos0, passes, tolerance);
                        }
                        _ => {
                            for r in 0..n {
                                for il in layers.clone() {
                                    self.layer(m, il, r..r + 1, pos0 + r);
                                }
                            }
                        }
                    }
                }
            }
        }
        self.output(m, n, want, sink);
        Ok(stats)
    }

    /// The iterative parallel prefill of one cyclic group: every pass starts from the same input
    /// states; the layers that attend up read the producers' K/V of the previous pass (zeros in
    /// the first); the last pass leaves its K/V in the cache and its output in `x`.
    fn iterate(
        &mut self,
        m: &Model,
        layers: Range<usize>,
        n: usize,
        pos0: usize,
        passes: usize,
        tol: Option<f32>,
    ) -> usize {
        let e = m.cfg.n_embd;
        self.x_in[..n * e].copy_from_slice(&self.x[..n * e]);
        let producers: Vec<usize> = layers
            .clone()
            .filter(|&i| m.cfg.plan.is_producer(i))
            .collect();
        for &p in &producers {
            self.cache.zero(p, pos0..pos0 + n);
        }
        let mut ran = 0;
        for pass in 0..passes {
            if pass > 0 {
                self.x[..n * e].copy_from_slice(&self.x_in[..n * e]);
            }
            if tol.is_some() {
                self.snapshot_kv(&producers, pos0..pos0 + n);
            }
            for il in layers.clone() {
                self.layer(m, il, 0..n, pos0);
            }
            ran += 1;
            if let Some(t) = tol {
                if pass > 0 && self.kv_change(&producers, pos0..pos0 + n) <= t {
                    break;
                }
            }
        }
        ran
    }

    fn snapshot_kv(&mut self, producers: &[usize], pos: Range<usize>) {
        let per = 2 * (pos.end - pos.start) * self.cache.layout().pos_bytes();
        for (j, &p) in producers.iter().enumerate() {
            self.cache
                .copy_out(p, pos.clone(), &mut self.snapshot[j * per..(j + 1) * per]);
        }
    }

    /// Largest absolute change of any producer K/V element since `snapshot_kv`.
    fn kv_change(&mut self, producers: &[usize], pos: Range<usize>) -> f32 {
        let layout = *self.cache.layout();
        let rb = layout.row_bytes();
        let hd = layout.head_dim;
        let per = 2 * (pos.end - pos.start) * layout.pos_bytes();
        let mut worst = 0f32;
        let (a, b) = self.tmp.split_at_mut(hd);
        for (j, &p) in producers.iter().enumerate() {
            let old = &self.snapshot[j * per..(j + 1) * per];
            let n = per / 2;
            let k = &self.cache.k(p)[pos.start * layout.pos_bytes()..pos.end * layout.pos_bytes()];
            let v = &self.cache.v(p)[pos.start * layout.pos_bytes()..pos.end * layout.pos_bytes()];
            for (cur, was) in [(k, &old[..n]), (v, &old[n..])] {
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
            let row = &mut self.x[r * e..(r + 1) * e];
            self.kern
                .dequantize_row(emb.ty, &data[t * rb..(t + 1) * rb], row);
            if scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Ok(())
    }

    /// One transformer block over batch rows `rows` (positions pos0, pos0+1, ...).
    fn layer(&mut self, m: &Model, il: usize, rows: Range<usize>, pos0: usize) {
        let cfg = &m.cfg;
        let w = &m.weights.layers[il];
        let kern = self.kern;
        let (e, hd, nh, nkv) = (cfg.n_embd, cfg.head_dim, cfg.n_head, cfg.n_head_kv);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let n = rows.len();
        let producer = cfg.plan.is_producer(il);
        let x = &mut self.x[rows.start * e..rows.end * e];

        // Attention: xn = norm(x); q, k, v = projections of xn.
        norm_rows(kern, x, &w.attn_norm, cfg.rms_eps, &mut self.xn);
        if let Some(wqkv) = &w.wqkv {
            matmul(
                kern,
                m,
                wqkv,
                &self.xn[..n * e],
                n,
                &mut self.act,
                &mut self.qkv,
            );
            let width = wqkv.rows;
            for r in 0..n {
                let row = &self.qkv[r * width..(r + 1) * width];
                self.q[r * qd..(r + 1) * qd].copy_from_slice(&row[..qd]);
                if producer {
                    self.k[r * kvd..(r + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
                    self.v[r * kvd..(r + 1) * kvd].copy_from_slice(&row[qd + kvd..qd + 2 * kvd]);
                }
            }
        } else {
            let wq = w.wq.as_ref().expect("weights without Q projection");
            let mut quantized = None;
            matmul_shared(
                kern,
                m,
                wq,
                &self.xn[..n * e],
                n,
                &mut self.act,
                &mut quantized,
                &mut self.q,
            );
            if producer {
                let (wk, wv) = (
                    w.wk.as_ref().expect("producer without K"),
                    w.wv.as_ref().expect("producer without V"),
                );
                // The activation rows quantized for Q serve K and V when the types agree.
                matmul_shared(
                    kern,
                    m,
                    wk,
                    &self.xn[..n * e],
                    n,
                    &mut self.act,
                    &mut quantized,
                    &mut self.k,
                );
                matmul_shared(
                    kern,
                    m,
                    wv,
                    &self.xn[..n * e],
                    n,
                    &mut self.act,
                    &mut quantized,
                    &mut self.v,
                );
            }
        }
        add_bias(&mut self.q[..n * qd], w.bq.as_deref());
        if producer {
            add_bias(&mut self.k[..n * kvd], w.bk.as_deref());
            add_bias(&mut self.v[..n * kvd], w.bv.as_deref());
        }
        if let Some(qn) = &w.q_norm {
            // Per-head RMSNorm (Gemma 3's Q/K norms): rows of head_dim.
            row_norm(
                kern,
                &mut self.q[..n * qd],
                qn,
                hd,
                cfg.rms_eps,
                &mut self.tmp,
            );
        }
        if producer {
            if let Some(kn) = &w.k_norm {
                row_norm(
                    kern,
                    &mut self.k[..n * kvd],
                    kn,
                    hd,
                    cfg.rms_eps,
                    &mut self.tmp,
                );
            }
        }
        // RoPE: each layer rotates its own queries; producers rotate keys before caching them.
        let (base, freq_scale) = if cfg.arch_sliding[il] && cfg.rope.base_sliding.is_some() {
            (cfg.rope_base(il), 1.0)
        } else {
            (cfg.rope.base, cfg.rope.freq_scale)
        };
        let half = cfg.rope.n_rot / 2;
        for r in 0..n {
            let pos = pos0 + r;
            let (cos, sin) = self.rope.split_at_mut(half);
            rope_angles(
                pos,
                base,
                freq_scale,
                cfg.rope.attn_factor,
                m.weights.rope_factors.for_context(self.dims.n_ctx),
                cos,
                sin,
            );
            kern.rope(
                &mut self.q[r * qd..(r + 1) * qd],
                nh,
                hd,
                cfg.rope.n_rot,
                cos,
                sin,
                cfg.traits.rope_neox,
            );
            if producer {
                kern.rope(
                    &mut self.k[r * kvd..(r + 1) * kvd],
                    nkv,
                    hd,
                    cfg.rope.n_rot,
                    cos,
                    sin,
                    cfg.traits.rope_neox,
                );
                self.cache.store(
                    kern,
                    il,
                    pos,
                    &self.k[r * kvd..(r + 1) * kvd],
                    &self.v[r * kvd..(r + 1) * kvd],
                );
            }
        }

        // Phi-3 and Gemma 3 scale the queries themselves (llama.cpp does too: it changes rounding).
        let scale = if cfg.traits.scale_queries {
            self.q[..n * qd]
                .iter_mut()
                .for_each(|x| *x *= cfg.attn_scale);
            1.0
        } else {
            cfg.attn_scale
        };
        // att[h][r] = softmax(scale q·K) V over the visible positions of the source layer.
        let src = cfg.plan.sources[il];
        let layout = *self.cache.layout();
        let (kc, vc) = (self.cache.k(src), self.cache.v(src));
        let q = &self.q;
        let plan = &cfg.plan;
        let group = nh / nkv;
        // llama.cpp's x86 build sums a batch's attention values in another order than a single
        // token's (its GEMM); follow it so that parity holds for prompts and for decoding.
        let batched = n >= 2;
        self.att[..n * qd]
            .par_chunks_mut(n * hd)
            .zip(self.attn.par_iter_mut())
            .enumerate()
            .for_each(|(h, (out_h, scratch))| {
                for r in 0..n {
                    let qh = &q[r * qd + h * hd..r * qd + (h + 1) * hd];
                    let vis = plan.visible(il, pos0 + r);
                    kern.attend(
                        &layout,
                        kc,
                        vc,
                        h / group,
                        vis,
                        qh,
                        scale,
                        batched,
                        scratch,
                        &mut out_h[r * hd..(r + 1) * hd],
                    );
                }
            });
        for r in 0..n {
            for h in 0..nh {
                self.xn[r * qd + h * hd..r * qd + (h + 1) * hd]
                    .copy_from_slice(&self.att[h * n * hd + r * hd..h * n * hd + (r + 1) * hd]);
            }
        }
        residual(
            kern,
            m,
            &w.wo,
            &self.xn[..n * qd],
            w.post_attn_norm.as_deref(),
            cfg.rms_eps,
            (&mut self.act, &mut self.proj, &mut self.tmp),
            x,
        );

        // Feed-forward: x += down(act(gate(norm(x))) * up(norm(x))).
        norm_rows(kern, x, &w.ffn_norm, cfg.rms_eps, &mut self.xn);
        let f = cfg.n_ff;
        if let Some(wg) = &w.w_gate {
            let mut quantized = None;
            matmul_shared(
                kern,
                m,
                wg,
                &self.xn[..n * e],
                n,
                &mut self.act,
                &mut quantized,
                &mut self.gate,
            );
            matmul_shared(
                kern,
                m,
                &w.w_up,
                &self.xn[..n * e],
                n,
                &mut self.act,
                &mut quantized,
                &mut self.up,
            );
        } else {
            // Fused: each output row is [gate | up].
            matmul(
                kern,
                m,
                &w.w_up,
                &self.xn[..n * e],
                n,
                &mut self.act,
                &mut self.up,
            );
            for r in 0..n {
                let (g, u) = (r * 2 * f, r * 2 * f + f);
                self.gate[r * f..(r + 1) * f].copy_from_slice(&self.up[g..g + f]);
                self.up.copy_within(u..u + f, r * f);
            }
        }
        match cfg.traits.activation {
            Activation::Silu => {
                // Row by row: the vector groups restart at each row, as in ggml's swiglu.
                for (g, u) in self.gate[..n * f]
                    .chunks_mut(f)
                    .zip(self.up[..n * f].chunks(f))
                {
                    kern.silu_mul(g, u);
                }
            }
            Activation::GeluTanh => kern.gelu_tanh_mul(&mut self.gate[..n * f], &self.up[..n * f]),
        }
        residual(
            kern,
            m,
            &w.w_down,
            &self.gate[..n * f],
            w.post_ffn_norm.as_deref(),
            cfg.rms_eps,
            (&mut self.act, &mut self.proj, &mut self.tmp),
            x,
        );
    }

    /// Final norm and LM head for the rows asked for, `logit_rows` at a time.
    fn output(&mut self, m: &Model, n: usize, want: Logits, sink: &mut dyn FnMut(usize, &[f32])) {
        let cfg = &m.cfg;
        let e = cfg.n_embd;
        let v = cfg.n_vocab;
        let rows = match want {
            Logits::None => return,
            Logits::Last => n - 1..n,
            Logits::All => 0..n,
        };
        let chunk = self.dims.logit_rows;
        let mut start = rows.start;
        while start < rows.end {
            let end = (start + chunk).min(rows.end);
            let c = end - start;
            norm_rows(
                self.kern,
                &self.x[start * e..end * e],
                &m.weights.output_norm,
                cfg.rms_eps,
                &mut self.xn,
            );
            matmul(
                self.kern,
                m,
                &m.weights.output,
                &self.xn[..c * e],
                c,
                &mut self.act,
                &mut self.logits,
            );
            for r in 0..c {
                sink(start + r, &self.logits[r * v..(r + 1) * v]);
            }
            start = end;
        }
    }
}

/// out[r] = W · input[r] for n rows, activations quantized to the weight's dot-product type.
fn matmul(
    kern: &Kernels,
    m: &Model,
    w: &Matrix,
    input: &[f32],
    n: usize,
    act: &mut [u8],
    out: &mut [f32],
) {
    matmul_shared(kern, m, w, input, n, act, &mut None, out);
}

/// `matmul` for several matrices applied to the same input: `quantized` records the type the
/// rows in `act` already hold, so Q/K/V (or gate/up) quantize their shared input once.
#[allow(clippy::too_many_arguments)]
fn matmul_shared(
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

/// x += post_norm(W · input): a sub-block's output projection, its optional post-norm (Gemma 3)
/// and the residual add. `x` holds the rows; `scratch` is (activations, projection, tmp).
#[allow(clippy::too_many_arguments)]
fn residual(
    kern: &Kernels,
    m: &Model,
    w: &Matrix,
    input: &[f32],
    post_norm: Option<&[f32]>,
    eps: f32,
    scratch: (&mut [u8], &mut [f32], &mut [f32]),
    x: &mut [f32],
) {
    let (act, proj, tmp) = scratch;
    let n = input.len() / w.cols;
    matmul(kern, m, w, input, n, act, proj);
    let out = &mut proj[..n * w.rows];
    if let Some(pn) = post_norm {
        row_norm(kern, out, pn, w.rows, eps, tmp);
    }
    add_into(x, out);
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
