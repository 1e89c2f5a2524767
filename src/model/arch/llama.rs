//! Llama (SmolLM2, TinyLlama, Llama 3): the baseline every other architecture is described
//! against. RoPE on adjacent pairs, because llama.cpp's converter permutes Q/K rows for it;
//! Llama 3's `rope_freqs` tensor and a missing `output` (tied embeddings) are handled by the
//! weight loader for every architecture.

use crate::model::config::{Activation, ArchTraits};

pub const TRAITS: ArchTraits = ArchTraits {
    fused_qkv: false,
    fused_gate_up: false,
    qkv_bias: false,
    qk_norm: false,
    post_norms: false,
    activation: Activation::Silu,
    rope_neox: false,
    scale_embeddings: false,
    scale_queries: false,
};
