//! Gemma 3: embeddings scaled by sqrt(n_embd), per-head RMSNorm of Q and K, RMSNorm after
//! attention and after the FFN, GELU gating, and interleaved local/global layers — five
//! sliding-window layers (RoPE base 10 000) for every global one (the model's own base).

use crate::gguf::GgufFile;
use crate::model::config::{Activation, ArchTraits, ModelConfig};
use crate::{Error, Result};

pub const TRAITS: ArchTraits = ArchTraits {
    fused_qkv: false,
    fused_gate_up: false,
    qkv_bias: false,
    qk_norm: true,
    post_norms: true,
    activation: Activation::GeluTanh,
    rope_neox: true,
    scale_embeddings: true,
    scale_queries: true,
};

/// Every `PATTERN`-th layer is global, the others slide.
const PATTERN: usize = 6;
const SLIDING_ROPE_BASE: f32 = 10_000.0;

pub fn configure(cfg: &mut ModelConfig, g: &GgufFile) -> Result<()> {
    // Gemma's query scale is 1/sqrt(head_dim) except for the 27B (62 layers), which uses
    // 1/sqrt(n_embd / n_head).
    if cfg.n_layer == 62 {
        cfg.attn_scale = 1.0 / ((cfg.n_embd / cfg.n_head) as f32).sqrt();
    }
    let window = g.get_u32("gemma3.attention.sliding_window")?.unwrap_or(0) as usize;
    if window > 0 {
        cfg.sliding_window = window;
        let pattern = match g.get("gemma3.attention.sliding_window_pattern") {
            Some(v) if v.as_array().is_some() => {
                let arr = v.as_array().unwrap_or(&[]);
                if arr.len() != cfg.n_layer {
                    return Err(Error::Model(format!(
                        "gemma3.attention.sliding_window_pattern has {} entries, expected {}",
                        arr.len(),
                        cfg.n_layer
                    )));
                }
                cfg.arch_sliding = arr.iter().map(|b| b.as_bool().unwrap_or(false)).collect();
                None
            }
            Some(v) => Some(v.as_u32().ok_or_else(|| {
                Error::Model(
                    "gemma3.attention.sliding_window_pattern must be an integer or bool array"
                        .into(),
                )
            })? as usize),
            None => Some(PATTERN),
        };
        if let Some(p) = pattern {
            cfg.arch_sliding = (0..cfg.n_layer).map(|i| p == 0 || i % p < p - 1).collect();
        }
        cfg.rope.base_sliding = Some(
            g.get_f32("gemma3.rope.freq_base_swa")?
                .unwrap_or(SLIDING_ROPE_BASE),
        );
    }
    if let Some(cap) = g.get_f32("gemma3.final_logit_softcapping")? {
        if cap != 0.0 {
            return Err(Error::Model(
                "gemma3.final_logit_softcapping is not supported".into(),
            ));
        }
    }
    Ok(())
}
