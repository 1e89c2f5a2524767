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

/// Working memory of [`attend_scalar`], allocated once per thread.
pub struct AttnScratch {
    scores: Vec<f32>,
    q_conv: Vec<u8>,
    v_row: Vec<f32>,
    /// `STEP` partial sums of the weighted values, `head_dim` each (see [`attend_with`]).
    lanes: Vec<f32>,
}

impl AttnScratch {
    pub fn new(max_ctx: usize, head_dim: usize) -> Self {
        AttnScratch {
            scores: vec![0.0; max_ctx + 2 * LANES],
            q_conv: vec![0; 4 * head_dim],
            v_row: vec![0.0; head_dim],
            lanes: vec![0.0; STEP * head_dim],
        }
    }

    /// Heap bytes [`AttnScratch::new`] allocates, for memory planning.
    pub fn bytes(max_ctx: usize, head_dim: usize) -> usize {
        4 * (max_ctx + 2 * LANES) + 4 * head_dim + 4 * head_dim + 4 * STEP * head_dim
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
    batched: bool,
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
        &fns, layout, k_cache, v_cache, g, visible, q, scale, batched, scratch, out,
    );
}

/// An attention implementation: [`attend_with`] compiled for one kernel path.
pub(crate) type AttendFn = fn(
    &AttnFns,
    &KvLayout,
    &[u8],
    &[u8],
    usize,
    Range<usize>,
    &[f32],
    f32,
    bool,
    &mut AttnScratch,
    &mut [f32],
);

/// [`attend_with`] compiled for the target's baseline features.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_baseline(
    fns: &AttnFns,
    layout: &KvLayout,
    k_cache: &[u8],
    v_cache: &[u8],
    g: usize,
    visible: Range<usize>,
    q: &[f32],
    scale: f32,
    batched: bool,
    scratch: &mut AttnScratch,
    out: &mut [f32],
) {
    attend_with(
        fns, layout, k_cache, v_cache, g, visible, q, scale, batched, scratch, out,
    );
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
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn attend_with(
    fns: &AttnFns,
    layout: &KvLayout,
    k_cache: &[u8],
    v_cache: &[u8],
    g: usize,
    visible: Range<usize>,
    q: &[f32],
    scale: f32,
    batched: bool,
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
    let b0 = visible.start & !(LANES - 1);
    let b1 = visible.end.next_multiple_of(LANES);
    assert!(
        b1 - b0 <= scratch.scores.len()
            && scratch.v_row.len() >= hd
            && scratch.q_conv.len() >= rb
            && scratch.lanes.len() >= STEP * hd,
        "attend: {n} visible positions or head_dim {hd} exceed the scratch (max_ctx {})",
        scratch.scores.len() - 2 * LANES
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
