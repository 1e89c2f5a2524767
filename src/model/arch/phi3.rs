//! Phi-3: one fused `attn_qkv` matrix, gate and up fused in `ffn_up`, NeoX RoPE with
//! per-dimension long/short factors (the weight loader picks them by context length), and an
//! optional sliding window over every layer.

use crate::gguf::GgufFile;
use crate::model::config::{Activation, ArchTraits, ModelConfig};
use crate::Result;

pub const TRAITS: ArchTraits = ArchTraits {
    fused_qkv: true,
    fused_gate_up: true,
    qkv_bias: false,
    qk_norm: false,
    post_norms: false,
    activation: Activation::Silu,
    rope_neox: true,
    scale_embeddings: false,
    scale_queries: true,
};

pub fn configure(cfg: &mut ModelConfig, g: &GgufFile) -> Result<()> {
    if let Some(w) = g.get_u32("phi3.attention.sliding_window")? {
        // Phi-3's window covers every layer. It only differs from full attention beyond the
        // window (2047 for Phi-3-mini-4k), so short contexts match llama.cpp, which ignores it.
        if w > 0 {
            cfg.sliding_window = w as usize;
            cfg.arch_sliding = vec![true; cfg.n_layer];
        }
    }
    Ok(())
}
