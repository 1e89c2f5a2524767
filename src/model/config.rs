//! Model hyper-parameters read from GGUF metadata, and the per-architecture traits that tell the
//! shared forward pass what differs from Llama. The architecture files in `arch/` fill these in;
//! nothing else looks at the architecture name.

use lckv_kernels::{GgmlType, KvLayout};

use crate::gguf::GgufFile;
use crate::memory::kv_cache::bytes_per_token;
use crate::model::arch;
use crate::model::kv_plan::{KvPlan, DEFAULT_BACKWARD_PASSES, DEFAULT_FORWARD_PASSES};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Phi3,
    Qwen2,
    Gemma3,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Arch> {
        Ok(match name {
            "llama" => Arch::Llama,
            "phi3" => Arch::Phi3,
            "qwen2" => Arch::Qwen2,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(Error::Model(format!(
                "architecture '{other}' is not supported; lckv runs llama, phi3, qwen2 and gemma3"
            )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Phi3 => "phi3",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// Feed-forward gate activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    GeluTanh,
}

/// What an architecture changes in the Llama block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchTraits {
    /// Q, K and V come from one `attn_qkv` matrix.
    pub fused_qkv: bool,
    /// Gate and up come from one `ffn_up` matrix of 2 * n_ff rows (gate first).
    pub fused_gate_up: bool,
    /// Q/K/V projections have biases.
    pub qkv_bias: bool,
    /// Per-head RMSNorm of queries and keys before RoPE.
    pub qk_norm: bool,
    /// RMSNorm of the attention and FFN outputs before the residual add.
    pub post_norms: bool,
    pub activation: Activation,
    /// RoPE pairs (i, i + n_rot/2) instead of adjacent pairs.
    pub rope_neox: bool,
    /// Multiply token embeddings by sqrt(n_embd).
    pub scale_embeddings: bool,
    /// Multiply the queries by the attention scale before q·k (instead of scaling the scores).
    pub scale_queries: bool,
}

/// Rotary position embedding parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    /// Dimensions rotated per head.
    pub n_rot: usize,
    pub base: f32,
    /// Base for sliding-window layers where it differs (Gemma 3).
    pub base_sliding: Option<f32>,
    /// Position scale (1 / linear scaling factor).
    pub freq_scale: f32,
    /// Multiplies cos and sin (long-context Phi-3).
    pub attn_factor: f32,
}

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Arch,
    pub traits: ArchTraits,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope: RopeConfig,
    /// Scale applied to q·k.
    pub attn_scale: f32,
    /// Sliding window of the architecture's own sliding layers (0 = none).
    pub sliding_window: usize,
    /// Layers the architecture itself makes sliding-window (Gemma 3's local layers).
    pub arch_sliding: Vec<bool>,
    pub plan: KvPlan,
}

impl ModelConfig {
    /// Reads the configuration of a GGUF model, including its KV plan (identity when the file
    /// has no `kv_plan` keys).
    pub fn from_gguf(g: &GgufFile) -> Result<ModelConfig> {
        let arch_name = g.get_str("general.architecture")?.ok_or_else(|| {
            Error::Model("general.architecture is missing; is this a model GGUF?".into())
        })?;
        let arch = Arch::from_name(arch_name)?;
        let a = arch.name();
        let req_u32 = |key: &str| -> Result<usize> {
            let full = format!("{a}.{key}");
            g.get_u32(&full)?
                .map(|v| v as usize)
                .ok_or_else(|| Error::Model(format!("required metadata key {full} is missing")))
        };
        let opt_u32 = |key: &str| -> Result<Option<usize>> {
            Ok(g.get_u32(&format!("{a}.{key}"))?.map(|v| v as usize))
        };
        let opt_f32 = |key: &str| -> Result<Option<f32>> { Ok(g.get_f32(&format!("{a}.{key}"))?) };

        let n_layer = req_u32("block_count")?;
        let n_embd = req_u32("embedding_length")?;
        let n_head = req_u32("attention.head_count")?;
        let n_head_kv = opt_u32("attention.head_count_kv")?.unwrap_or(n_head);
        let n_ff = req_u32("feed_forward_length")?;
        if n_layer == 0 || n_embd == 0 || n_head == 0 || n_head_kv == 0 || n_ff == 0 {
            return Err(Error::Model(format!(
                "{a}: block_count, embedding_length, head counts and feed_forward_length must be non-zero"
            )));
        }
        if n_layer > 1024 || n_embd > 65536 || n_head > 1024 || n_ff > 1 << 20 {
            return Err(Error::Model(format!(
                "{a}: hyper-parameters out of any supported range"
            )));
        }
        if n_head % n_head_kv != 0 {
            return Err(Error::Model(format!(
                "{a}: head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            )));
        }
        let head_dim = match opt_u32("attention.key_length")? {
            Some(k) => k,
            None => {
                if n_embd % n_head != 0 {
                    return Err(Error::Model(format!(
                        "{a}: embedding_length {n_embd} not divisible by head_count {n_head}"
                    )));
                }
                n_embd / n_head
            }
        };
        if let Some(v) = opt_u32("attention.value_length")? {
            if v != head_dim {
                return Err(Error::Model(format!(
                    "{a}: value_length {v} differs from key_length {head_dim}; not supported"
                )));
            }
        }
        let n_rot = opt_u32("rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(Error::Model(format!("{a}: rope.dimension_count {n_rot} must be even and at most the head size {head_dim}")));
        }
        let n_vocab = match opt_u32("vocab_size")? {
            Some(v) => v,
            None => g
                .get_array("tokenizer.ggml.tokens")?
                .map(|t| t.len())
                .ok_or_else(|| {
                    Error::Model(format!(
                        "{a}.vocab_size and tokenizer.ggml.tokens are both missing"
                    ))
                })?,
        };
        let rms_eps = opt_f32("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5);
        let freq_scale = match (
            g.get_str(&format!("{a}.rope.scaling.type"))?,
            opt_f32("rope.scaling.factor")?,
        ) {
            (Some("linear"), Some(f)) if f > 0.0 => 1.0 / f,
            _ => 1.0,
        };
        let rope = RopeConfig {
            n_rot,
            base: opt_f32("rope.freq_base")?.unwrap_or(10000.0),
            base_sliding: None,
            freq_scale,
            // llama.cpp multiplies cos/sin by this whenever the file sets it (Phi-3 LongRoPE).
            attn_factor: opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0),
        };
        let mut cfg = ModelConfig {
            arch,
            traits: arch::traits(arch),
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_vocab,
            n_ctx_train: opt_u32("context_length")?.unwrap_or(2048),
            rms_eps,
            rope,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            sliding_window: 0,
            arch_sliding: vec![false; n_layer],
            plan: KvPlan::identity(n_layer),
        };
        arch::configure(&mut cfg, g)?;
        cfg.plan = read_plan(g, a, &cfg)?;
        Ok(cfg)
    }

    /// Replaces the plan (for `--kv-plan` on standard models).
    pub fn set_plan(&mut self, spec: &str) -> Result<()> {
        let mut plan =
            KvPlan::from_spec(spec, self.n_layer, self.sliding_window).map_err(Error::Usage)?;
        for (s, &a) in plan.sliding.iter_mut().zip(&self.arch_sliding) {
            *s |= a;
        }
        if plan.window == 0 {
            plan.window = self.sliding_window;
        }
        self.plan = plan;
        Ok(())
    }

    /// The KV cache geometry of this model for cache type `ty`, or why the type does not fit.
    pub fn kv_layout(&self, ty: GgmlType) -> Result<KvLayout> {
        KvLayout::new(ty, self.n_head_kv, self.head_dim).map_err(Error::Usage)
    }

    /// Bytes of K and V one token adds to the cache under this model's KV plan.
    pub fn kv_bytes_per_token(&self, ty: GgmlType) -> Result<usize> {
        Ok(bytes_per_token(
            &self.kv_layout(ty)?,
            self.plan.producers().len(),
        ))
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// The RoPE base for a layer.
    pub fn rope_base(&self, layer: usize) -> f32 {
        match self.rope.base_sliding {
            Some(b) if self.arch_sliding[layer] => b,
            _ => self.rope.base,
        }
    }
}

/// Reads the `{arch}.kv_plan.*` keys (documented in README, "GGUF extensions").
fn read_plan(g: &GgufFile, a: &str, cfg: &ModelConfig) -> Result<KvPlan> {
    let key = |k: &str| format!("{a}.kv_plan.{k}");
    let l = cfg.n_layer;
    let mut plan = KvPlan::identity(l);
    plan.sliding = cfg.arch_sliding.clone();
    plan.window = cfg.sliding_window;
    let Some(sources) = g.get_u32_array(&key("sources"))? else {
        return Ok(plan);
    };
    if sources.len() != l {
        return Err(Error::Model(format!(
            "{} has {} entries but the model has {l} layers; it needs one source layer per layer",
            key("sources"),
            sources.len()
        )));
    }
    plan.sources = sources.iter().map(|&s| s as usize).collect();
    if let Some(sliding) = g.get_array(&key("sliding"))? {
        if sliding.len() != l {
            return Err(Error::Model(format!(
                "{} has {} entries, expected {l}",
                key("sliding"),
                sliding.len()
            )));
        }
        for (i, v) in sliding.iter().enumerate() {
            plan.sliding[i] |= v.as_bool().ok_or_else(|| {
                Error::Model(format!(
                    "{}[{i}] is a {}, expected bool",
                    key("sliding"),
                    v.type_name()
                ))
            })?;
        }
    }
    if let Some(w) = g.get_u32(&key("sliding_window"))? {
        plan.window = w as usize;
    }
    plan.force_nodiag = g.get_bool(&key("force_nodiag"))?.unwrap_or(true);
    plan.forward_passes = g
        .get_u32(&key("forward_passes"))?
        .map(|v| v as usize)
        .unwrap_or(DEFAULT_FORWARD_PASSES);
    plan.backward_passes = g
        .get_u32(&key("backward_passes"))?
        .map(|v| v as usize)
        .unwrap_or(DEFAULT_BACKWARD_PASSES);
    plan.validate()
        .map_err(|e| Error::Model(format!("{a}.kv_plan: {e}")))?;
    Ok(plan)
}
