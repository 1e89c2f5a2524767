//! The numbers a session's buffers are sized from: the model's dimensions (`ModelDims`, filled in
//! by the model from its configuration and weights) and the session's own (`SessionDims`:
//! context, batch, logit rows, KV type). Memory knows only these numbers, never the model.

use lckv_kernels::{GgmlType, KvLayout};

/// What a model contributes to the size of a session's buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDims {
    pub n_embd: usize,
    pub n_head: usize,
    pub head_dim: usize,
    /// Width of all query heads together (n_head * head_dim).
    pub q_dim: usize,
    /// Width of all kv heads together (n_head_kv * head_dim).
    pub kv_dim: usize,
    pub n_ff: usize,
    /// Rows of the fused QKV projection, 0 when Q, K and V are separate matrices.
    pub qkv_rows: usize,
    /// Rows of the up projection: 2 * n_ff when gate and up are fused in one matrix.
    pub up_rows: usize,
    pub n_vocab: usize,
    /// Dimensions rotated by RoPE.
    pub n_rot: usize,
    /// The widest input of any matrix (sizes the quantized activation rows).
    pub max_cols: usize,
    /// Whether some layer reads another layer's K/V (iterative prefill keeps its input states).
    pub condensed: bool,
    /// For each layer, whether it computes and caches K/V.
    pub producers: Vec<bool>,
    /// Geometry of one cached position of one layer, for a given cache type.
    pub n_kv_head: usize,
}

impl ModelDims {
    pub fn n_producers(&self) -> usize {
        self.producers.iter().filter(|&&p| p).count()
    }

    /// The KV cache geometry for cache type `ty`, or why the type does not fit the heads.
    pub fn kv_layout(&self, ty: GgmlType) -> crate::Result<KvLayout> {
        KvLayout::new(ty, self.n_kv_head, self.head_dim).map_err(crate::Error::Usage)
    }
}

/// What a session chooses: context, batch and logits, KV cache type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionDims {
    /// Positions the KV cache holds.
    pub n_ctx: usize,
    /// Tokens one forward call takes (at most `n_ctx`).
    pub n_batch: usize,
    /// Logit rows computed at once (1 for generation; more for scoring every position).
    pub logit_rows: usize,
    pub kv_type: GgmlType,
    /// Iterative prefill may stop early, which keeps a snapshot of the producers' K/V.
    pub early_exit: bool,
}
