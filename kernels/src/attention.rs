//! Attention of one query head over a range of cached positions: scores, softmax, weighted sum
//! of values. The cache is `[position][kv_head][head_dim]` in F32, F16 or Q8_0; the query is
//! converted once to the cache's dot type so every score is one `vec_dot` call.

use crate::dot::VecDotFn;
use crate::formats::GgmlType;
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

/// Working memory of [`attend_scalar`], allocated once per thread.
pub struct AttnScratch {
    scores: Vec<f32>,
    q_conv: Vec<u8>,
    v_row: Vec<f32>,
}

impl AttnScratch {
    pub fn new(max_ctx: usize, head_dim: usize) -> Self {
        AttnScratch {
            scores: vec![0.0; max_ctx],
            q_conv: vec![0; 4 * head_dim],
            v_row: vec![0.0; head_dim],
        }
    }

    /// Heap bytes [`AttnScratch::new`] allocates, for memory planning.
    pub fn bytes(max_ctx: usize, head_dim: usize) -> usize {
        4 * max_ctx + 4 * head_dim + 4 * head_dim
    }
}

/// `out = sum_t softmax_t(scale * q·K[t,g]) * V[t,g]` over `t` in `visible`, for kv head `g`.
/// An empty `visible` gives `out = 0`.
///
/// # Panics
/// When a size disagrees with `layout` or the scratch (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn attend_scalar(
    layout: &KvLayout,
    k_cache: &[u8],
    v_cache: &[u8],
    g: usize,
    visible: Range<usize>,
    q: &[f32],
    scale: f32,
    scratch: &mut AttnScratch,
    out: &mut [f32],
) {
    let ty = layout.ty;
    let fns = AttnFns {
        dot: crate::dot::dot_fn(ty),
        quant: crate::quant::activation_quant_fn(ty),
        dequant: crate::quant::dequant_fn(ty),
    };
    attend_with(
        &fns, layout, k_cache, v_cache, g, visible, q, scale, scratch, out,
    );
}

/// The kernels attention needs for one cache type.
pub(crate) struct AttnFns {
    pub dot: VecDotFn,
    pub quant: QuantFn,
    pub dequant: DequantFn,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_with(
    fns: &AttnFns,
    layout: &KvLayout,
    k_cache: &[u8],
    v_cache: &[u8],
    g: usize,
    visible: Range<usize>,
    q: &[f32],
    scale: f32,
    scratch: &mut AttnScratch,
    out: &mut [f32],
) {
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
    assert!(
        n <= scratch.scores.len() && scratch.v_row.len() >= hd && scratch.q_conv.len() >= rb,
        "attend: {n} visible positions or head_dim {hd} exceed the scratch (max_ctx {})",
        scratch.scores.len()
    );
    out.fill(0.0);
    if n == 0 {
        return;
    }
    let qc = &mut scratch.q_conv[..rb];
    (fns.quant)(q, qc);
    let scores = &mut scratch.scores[..n];
    for (s, t) in scores.iter_mut().zip(visible.clone()) {
        let k = &k_cache[t * pb + g * rb..][..rb];
        *s = scale * (fns.dot)(hd, k, qc);
    }
    crate::ops::softmax_inplace(scores);
    let v_row = &mut scratch.v_row[..hd];
    for (&p, t) in scores.iter().zip(visible) {
        let v = &v_cache[t * pb + g * rb..][..rb];
        (fns.dequant)(v, v_row);
        for (o, &x) in out.iter_mut().zip(v_row.iter()) {
            *o += p * x;
        }
    }
}
