//! Qwen2: Llama with biases on the Q, K and V projections and NeoX-style RoPE.

use crate::model::config::{Activation, ArchTraits};

pub const TRAITS: ArchTraits = ArchTraits {
    fused_qkv: false,
    fused_gate_up: false,
    qkv_bias: true,
    qk_norm: false,
    post_norms: false,
    activation: Activation::Silu,
    rope_neox: true,
    scale_embeddings: false,
    scale_queries: false,
};
