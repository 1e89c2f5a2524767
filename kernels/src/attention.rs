//! Attention of one query head over a range of cached positions: scores, softmax, weighted sum
//! of values. The cache is `[position][kv_head][head_dim]` in F32, F16 or Q8_0; the query is
//! converted once to the cache's dot type so every score is one `vec_dot` call. The arithmetic
//! follows llama.cpp's order (see `attend_with`).

use crate::dot::VecDotFn;
use crate::formats::GgmlType;
use crate::fp_order::{self, ACCS, LANES, STEP};
use crate::quant::{DequantFn, QuantFn};
use std::ops::Range;

/// Element type and shape of a KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    /// F32, F16 or Q8_0.
    pub ty: GgmlType,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

impl KvLayout {
    /// Checks that the type is a cache type and `head_dim` fits its blocks.
    pub fn new(ty: GgmlType, n_kv_head: usize, head_dim: usize) -> Result<KvLayout, String> {
        if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0) {
            return Err(format!(
                "KV cache type {ty} is not supported: use f32, f16 or q8_0"
            ));
        }
        if head_dim == 0 || ty.row_size(head_dim).is_none() {
            return Err(format!(
                "head_dim {head_dim} does not fit {ty} blocks of {}: use an f16 or f32 KV cache",
                ty.block_size()
            ));
        }
        Ok(KvLayout {
            ty,
            n_kv_head,
            head_dim,
        })
    }

    /// Bytes of one (position, kv head) row.
    ///
    /// # Panics
    /// When `head_dim` is not a whole number of blocks (use [`KvLayout::new`] to check first).
    pub fn row_bytes(&self) -> usize {
        self.ty.row_size(self.head_dim).unwrap_or_else(|| {
            panic!(
                "KvLayout: head_dim {} does not fit {}",
                self.head_dim, self.ty
            )
        })
    }

    /// Bytes of all kv heads of one position.
    pub fn pos_bytes(&self) -> usize {
        self.row_bytes() * self.n_kv_head
    }
}

/// The keys and values a query reads: one producer layer's cache, `[position][kv head]` rows.
#[derive(Clone, Copy, Debug)]
pub struct KvView<'a> {
    pub layout: KvLayout,
    pub k: &'a [u8],
    pub v: &'a [u8],
}

/// One query head's attention: `softmax(scale * q·K[t]) V[t]` over the `visible` positions of
/// kv head `kv_head` in `kv`.
#[derive(Clone, Debug)]
pub struct AttnQuery<'a> {
    pub kv: KvView<'a>,
    pub kv_head: usize,
    pub visible: Range<usize>,
    pub q: &'a [f32],
    pub scale: f32,
    /// The query is one of two or more computed together: ggml's x86 build sums the weighted
    /// values in its GEMM order then, and so does [`attend_with`].
    pub batched: bool,
}

/// Working memory of one attention call, borrowed from the caller (the session arena): scores
/// over the context, the query converted to the cache's dot type, a dequantized V row and the
/// partial sums of the weighted values.
pub struct AttnScratch<'a> {
    scores: &'a mut [f32],
    q_conv: &'a mut [u8],
    v_row: &'a mut [f32],
    lanes: &'a mut [f32],
}

/// Element counts of each part of an [`AttnScratch`]: the one statement of its size.
struct ScratchParts {
    scores: usize,
    q_conv: usize,
    v_row: usize,
    lanes: usize,
}

impl ScratchParts {
    fn new(max_ctx: usize, head_dim: usize) -> ScratchParts {
        ScratchParts {
            // Softmax works on whole groups of LANES positions on either side of the range.
            scores: max_ctx + 2 * LANES,
            // The widest cache type's dot type (f32) takes 4 bytes per element.
            q_conv: 4 * head_dim,
            v_row: head_dim,
            lanes: STEP * head_dim,
        }
    }
}

impl<'a> AttnScratch<'a> {
    /// The f32 elements and bytes one scratch needs for `max_ctx` positions of `head_dim`.
    pub fn len(max_ctx: usize, head_dim: usize) -> (usize, usize) {
        let p = ScratchParts::new(max_ctx, head_dim);
        (p.scores + p.v_row + p.lanes, p.q_conv)
    }

    /// Carves a scratch from `floats` and `bytes`, at least [`AttnScratch::len`] long.
    ///
    /// # Panics
    /// When a buffer is shorter than [`AttnScratch::len`] says (a caller bug).
    pub fn new(
        floats: &'a mut [f32],
        bytes: &'a mut [u8],
        max_ctx: usize,
        head_dim: usize,
    ) -> AttnScratch<'a> {
        let p = ScratchParts::new(max_ctx, head_dim);
        let (nf, nb) = Self::len(max_ctx, head_dim);
        assert!(
            floats.len() >= nf && bytes.len() >= nb,
            "attention scratch: {} floats and {} bytes given, {nf} and {nb} needed",
            floats.len(),
            bytes.len()
        );
        let (scores, rest) = floats.split_at_mut(p.scores);
        let (v_row, rest) = rest.split_at_mut(p.v_row);
        AttnScratch {
            scores,
            q_conv: &mut bytes[..p.q_conv],
            v_row,
            lanes: &mut rest[..p.lanes],
        }
    }

    /// Positions this scratch can score at once.
    fn max_ctx(&self) -> usize {
        self.scores.len() - 2 * LANES
    }
}

/// An attention scratch that owns its memory, for callers outside an arena (tests, tools).
pub struct OwnedAttnScratch {
    floats: Vec<f32>,
    bytes: Vec<u8>,
    max_ctx: usize,
    head_dim: usize,
}

impl OwnedAttnScratch {
    pub fn new(max_ctx: usize, head_dim: usize) -> Self {
        let (nf, nb) = AttnScratch::len(max_ctx, head_dim);
        OwnedAttnScratch {
            floats: vec![0.0; nf],
            bytes: vec![0; nb],
            max_ctx,
            head_dim,
        }
    }

    pub fn view(&mut self) -> AttnScratch<'_> {
        AttnScratch::new(
            &mut self.floats,
            &mut self.bytes,
            self.max_ctx,
            self.head_dim,
        )
    }
}

/// `out = sum_t softmax_t(scale * q·K[t,g]) * V[t,g]` over `t` in `query.visible`, for kv head
/// `g = query.kv_head`. An empty `visible` gives `out = 0`.
///
/// # Panics
/// When a size disagrees with the layout or the scratch (a caller bug).
pub fn attend_scalar(query: &AttnQuery, scratch: &mut AttnScratch, out: &mut [f32]) {
    let ty = query.kv.layout.ty;
    let fns = AttnFns {
        dot: crate::dot::dot_fn(ty),
        quant: crate::quant::activation_quant_fn(ty),
        dequant: crate::quant::dequant_fn(ty),
    };
    attend_with(&fns, query, scratch, out);
}

/// An attention implementation: [`attend_with`] compiled for one kernel path.
pub(crate) type AttendFn = fn(&AttnFns, &AttnQuery, &mut AttnScratch, &mut [f32]);

/// [`attend_with`] compiled for the target's baseline features.
pub(crate) fn attend_baseline(
    fns: &AttnFns,
    query: &AttnQuery,
    scratch: &mut AttnScratch,
    out: &mut [f32],
) {
    attend_with(fns, query, scratch, out);
}

/// The kernels attention needs for one cache type.
pub(crate) struct AttnFns {
    pub dot: VecDotFn,
    pub quant: QuantFn,
    pub dequant: DequantFn,
}

/// The attention of one query, in the order llama.cpp's CPU graph computes it (`mul_mat(k, q)`,
/// `soft_max_ext`, `mul_mat(v^T, kq)`), so that an F32 or F16 cache gives its bits:
/// - scores `scale * q·K[t]` by the cache type's dot kernel (ggml order for F32/F16);
/// - softmax over groups of 8 positions counted from position 0, masked positions in a group
///   being -inf, with [`fp_order::expf`] and the f64 sum of [`fp_order::exp_rows8`];
/// - the weighted sum of values as `ggml_vec_dot` over positions: position `t` goes to partial
///   sum `t % 32` by FMA, and the 32 partial sums reduce as [`fp_order::reduce_step`]. When
///   `batched` (the query is one of two or more computed together, where ggml's x86 build takes
///   its GEMM for this product) and `head_dim % 4 == 0`, as [`fp_order::dot_gemm`] instead:
///   partial sum `t % 8`, reduced by [`fp_order::hsum8`]. With an F16 cache the probabilities
///   are rounded to f16 first, as ggml converts them for its F16 products.
///
/// `#[inline(always)]` so that SIMD paths recompile it under their target features.
#[inline(always)]
pub(crate) fn attend_with(
    fns: &AttnFns,
    query: &AttnQuery,
    scratch: &mut AttnScratch,
    out: &mut [f32],
) {
    let AttnQuery {
        kv: KvView {
            layout,
            k: k_cache,
            v: v_cache,
        },
        kv_head: g,
        ref visible,
        q,
        scale,
        batched,
    } = *query;
    let visible = visible.clone();
    let hd = layout.head_dim;
    let rb = layout.row_bytes();
    let pb = layout.pos_bytes();
    assert!(
        matches!(layout.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0),
        "attend: KV cache type {} is not supported",
        layout.ty
    );
    assert!(
        g < layout.n_kv_head,
        "attend: kv head {g} >= {}",
        layout.n_kv_head
    );
    assert!(
        q.len() == hd && out.len() == hd,
        "attend: q has {} and out {} elements, head_dim is {hd}",
        q.len(),
        out.len()
    );
    assert!(
        visible.end * pb <= k_cache.len() && visible.end * pb <= v_cache.len(),
        "attend: positions up to {} exceed the cache ({} / {} bytes, {pb} per position)",
        visible.end,
        k_cache.len(),
        v_cache.len()
    );
    let n = visible.len();
    let b0 = visible.start & !(LANES - 1);
    let b1 = visible.end.next_multiple_of(LANES);
    assert!(
        b1 - b0 <= scratch.scores.len()
            && scratch.v_row.len() >= hd
            && scratch.q_conv.len() >= rb
            && scratch.lanes.len() >= STEP * hd,
        "attend: {n} visible positions or head_dim {hd} exceed the scratch (max_ctx {})",
        scratch.max_ctx()
    );
    out.fill(0.0);
    if n == 0 {
        return;
    }
    let qc = &mut scratch.q_conv[..rb];
    (fns.quant)(q, qc);
    let scores = &mut scratch.scores[..b1 - b0];
    scores.fill(f32::NEG_INFINITY);
    let mut max = f32::NEG_INFINITY;
    for t in visible.clone() {
        let k = &k_cache[t * pb + g * rb..][..rb];
        let s = (fns.dot)(hd, k, qc) * scale;
        scores[t - b0] = s;
        max = max.max(s);
    }
    let sum = fp_order::exp_rows8(scores, max);
    let inv = (1.0 / sum) as f32;
    let f16_probs = layout.ty == GgmlType::F16;
    let parts = if batched && hd.is_multiple_of(4) {
        LANES
    } else {
        STEP
    };
    let lanes = &mut scratch.lanes[..parts * hd];
    lanes.fill(0.0);
    let v_row = &mut scratch.v_row[..hd];
    for t in visible {
        let mut p = scores[t - b0] * inv;
        if f16_probs {
            p = half::f16::from_f32(p).to_f32();
        }
        (fns.dequant)(&v_cache[t * pb + g * rb..][..rb], v_row);
        let acc = &mut lanes[(t % parts) * hd..][..hd];
        for (a, &v) in acc.iter_mut().zip(v_row.iter()) {
            *a = v.mul_add(p, *a);
        }
    }
    if parts == LANES {
        for (d, o) in out.iter_mut().enumerate() {
            let acc: [f32; LANES] = std::array::from_fn(|l| lanes[l * hd + d]);
            *o = fp_order::hsum8(&acc);
        }
        return;
    }
    for (d, o) in out.iter_mut().enumerate() {
        let mut acc = [[0f32; LANES]; ACCS];
        for (j, accj) in acc.iter_mut().enumerate() {
            for (l, a) in accj.iter_mut().enumerate() {
                *a = lanes[(j * LANES + l) * hd + d];
            }
        }
        *o = fp_order::reduce_step(&acc);
    }
}
