//! The weight store: typed, shape-checked references into the memory-mapped GGUF for every
//! matrix (zero-copy), and small f32 copies of the vectors (norms, biases, RoPE factors).
//! Consumer layers of a condensed KV plan have no K/V projections; a producer missing them is
//! an error naming the tensor.

use crate::gguf::GgufFile;
use crate::model::config::ModelConfig;
use crate::{Error, Result};
use lckv_kernels::GgmlType;

/// A weight matrix inside the model file: `rows` rows of `cols` elements of `ty`.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

impl Matrix {
    pub fn data<'a>(&self, file: &'a GgufFile) -> &'a [u8] {
        &file.as_bytes()[self.start..self.start + self.len]
    }

    pub fn row_bytes(&self) -> usize {
        self.len / self.rows
    }
}

#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// Separate projections, or `wqkv` for fused architectures.
    pub wq: Option<Matrix>,
    pub wk: Option<Matrix>,
    pub wv: Option<Matrix>,
    pub wqkv: Option<Matrix>,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub wo: Matrix,
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Option<Matrix>,
    /// Up projection, or gate and up stacked (gate first) when fused.
    pub w_up: Matrix,
    pub w_down: Matrix,
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// Per-pair RoPE frequency divisors: Llama 3's `rope_freqs`, or Phi-3's long and short factors,
/// of which a session uses the long ones when its context exceeds the original one (as llama.cpp).
#[derive(Clone, Debug, Default)]
pub struct RopeFactors {
    pub fixed: Option<Vec<f32>>,
    pub long: Option<Vec<f32>>,
    pub short: Option<Vec<f32>>,
    pub orig_ctx: usize,
}

impl RopeFactors {
    pub fn for_context(&self, n_ctx: usize) -> Option<&[f32]> {
        if let Some(f) = &self.fixed {
            return Some(f);
        }
        if n_ctx > self.orig_ctx {
            self.long.as_deref()
        } else {
            self.short.as_deref()
        }
    }
}

#[derive(Clone, Debug)]
pub struct Weights {
    pub token_embd: Matrix,
    pub output_norm: Vec<f32>,
    /// The LM head (the token embedding when tied).
    pub output: Matrix,
    /// Per-pair RoPE frequency divisors.
    pub rope_factors: RopeFactors,
    pub layers: Vec<LayerWeights>,
}

struct Loader<'a> {
    g: &'a GgufFile,
}

impl Loader<'_> {
    fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<Matrix> {
        self.opt_matrix(name, cols, rows)?
            .ok_or_else(|| Error::Model(format!("tensor {name} is missing")))
    }

    fn opt_matrix(&self, name: &str, cols: usize, rows: usize) -> Result<Option<Matrix>> {
        let Some(info) = self.g.tensor_info(name) else {
            return Ok(None);
        };
        let actual_rows = if info.dims.len() >= 2 {
            info.n_rows()
        } else {
            1
        };
        if info.dims.first().copied() != Some(cols) || actual_rows != rows {
            return Err(Error::Model(format!(
                "tensor {name} has shape {:?}, expected [{cols}, {rows}]",
                info.dims
            )));
        }
        if !matches!(
            info.ty,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q8_0
                | GgmlType::Q4K
                | GgmlType::Q6K
        ) {
            return Err(Error::Model(format!(
                "tensor {name} has type {}, which lckv cannot multiply",
                info.ty
            )));
        }
        let start = self.g.data_offset() as usize + info.offset as usize;
        Ok(Some(Matrix {
            name: name.to_string(),
            ty: info.ty,
            rows,
            cols,
            start,
            len: info.size,
        }))
    }

    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.opt_vector(name, n)?
            .ok_or_else(|| Error::Model(format!("tensor {name} is missing")))
    }

    /// Copies a 1-D tensor into f32 (they are tiny; owning them keeps the forward pass free of
    /// alignment concerns).
    fn opt_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        let Some(info) = self.g.tensor_info(name) else {
            return Ok(None);
        };
        if info.n_elements() != n {
            return Err(Error::Model(format!(
                "tensor {name} has {} elements, expected {n}",
                info.n_elements()
            )));
        }
        if info.ty.is_quantized() && !n.is_multiple_of(info.ty.block_size()) {
            return Err(Error::Model(format!(
                "tensor {name}: {n} elements do not fill {} blocks",
                info.ty
            )));
        }
        let mut out = vec![0f32; n];
        lckv_kernels::quant::dequantize_row(info.ty, self.g.tensor_data(info), &mut out);
        Ok(Some(out))
    }
}

impl Weights {
    /// Finds and checks every tensor the configuration calls for.
    pub fn load(g: &GgufFile, cfg: &ModelConfig) -> Result<Weights> {
        let ld = Loader { g };
        let e = cfg.n_embd;
        let q_dim = cfg.q_dim();
        let kv_dim = cfg.kv_dim();
        let t = &cfg.traits;
        let token_embd = ld.matrix("token_embd.weight", e, cfg.n_vocab)?;
        let output = ld
            .opt_matrix("output.weight", e, cfg.n_vocab)?
            .unwrap_or_else(|| token_embd.clone());
        let half_rot = cfg.rope.n_rot / 2;
        let orig_ctx = g
            .get_u32(&format!(
                "{}.rope.scaling.original_context_length",
                cfg.arch.name()
            ))?
            .map(|v| v as usize)
            .unwrap_or(cfg.n_ctx_train);
        let rope_factors = RopeFactors {
            fixed: ld.opt_vector("rope_freqs.weight", half_rot)?,
            long: ld.opt_vector("rope_factors_long.weight", half_rot)?,
            short: ld.opt_vector("rope_factors_short.weight", half_rot)?,
            orig_ctx,
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let producer = cfg.plan.is_producer(i);
            let fused =
                if t.fused_qkv && (producer || g.tensor_info(&n("attn_qkv.weight")).is_some()) {
                    let full = q_dim + 2 * kv_dim;
                    // A consumer's fused matrix holds Q alone when converted under a plan, or Q, K and
                    // V when a standard model runs with --kv-plan (K and V rows then go unused).
                    let rows = match g.tensor_info(&n("attn_qkv.weight")) {
                        Some(info) if !producer && info.n_rows() == q_dim => q_dim,
                        _ => full,
                    };
                    Some(ld.matrix(&n("attn_qkv.weight"), e, rows)?)
                } else {
                    // Consumers of fused architectures may also carry a plain `attn_q`.
                    None
                };
            let (wq, wk, wv, wqkv) = if let Some(f) = fused {
                (None, None, None, Some(f))
            } else {
                let wq = ld.matrix(&n("attn_q.weight"), e, q_dim)?;
                let (wk, wv) = if producer {
                    (
                        Some(ld.matrix(&n("attn_k.weight"), e, kv_dim)?),
                        Some(ld.matrix(&n("attn_v.weight"), e, kv_dim)?),
                    )
                } else {
                    // A consumer reads another layer's cache. Files converted under a plan have no
                    // K/V projection here; a standard model run with --kv-plan still has one, unused.
                    (None, None)
                };
                (Some(wq), wk, wv, None)
            };
            let (bq, bk, bv) = if t.qkv_bias {
                let bq = Some(ld.vector(&n("attn_q.bias"), q_dim)?);
                if producer {
                    (
                        bq,
                        Some(ld.vector(&n("attn_k.bias"), kv_dim)?),
                        Some(ld.vector(&n("attn_v.bias"), kv_dim)?),
                    )
                } else {
                    (bq, None, None)
                }
            } else {
                (None, None, None)
            };
            let (q_norm, k_norm) = if t.qk_norm {
                let qn = Some(ld.vector(&n("attn_q_norm.weight"), cfg.head_dim)?);
                let kn = if producer {
                    Some(ld.vector(&n("attn_k_norm.weight"), cfg.head_dim)?)
                } else {
                    None
                };
                (qn, kn)
            } else {
                (None, None)
            };
            let (post_attn_norm, post_ffn_norm) = if t.post_norms {
                (
                    Some(ld.vector(&n("post_attention_norm.weight"), e)?),
                    Some(ld.vector(&n("post_ffw_norm.weight"), e)?),
                )
            } else {
                (None, None)
            };
            let (w_gate, w_up) = if t.fused_gate_up {
                (None, ld.matrix(&n("ffn_up.weight"), e, 2 * cfg.n_ff)?)
            } else {
                (
                    Some(ld.matrix(&n("ffn_gate.weight"), e, cfg.n_ff)?),
                    ld.matrix(&n("ffn_up.weight"), e, cfg.n_ff)?,
                )
            };
            layers.push(LayerWeights {
                attn_norm: ld.vector(&n("attn_norm.weight"), e)?,
                wq,
                wk,
                wv,
                wqkv,
                bq,
                bk,
                bv,
                q_norm,
                k_norm,
                wo: ld.matrix(&n("attn_output.weight"), q_dim, e)?,
                post_attn_norm,
                ffn_norm: ld.vector(&n("ffn_norm.weight"), e)?,
                w_gate,
                w_up,
                w_down: ld.matrix(&n("ffn_down.weight"), cfg.n_ff, e)?,
                post_ffn_norm,
            });
        }
        Ok(Weights {
            token_embd,
            output_norm: ld.vector("output_norm.weight", e)?,
            output,
            rope_factors,
            layers,
        })
    }

    /// Bytes of the file's tensor data this model reads (they become resident as they are used).
    pub fn mapped_bytes(&self) -> usize {
        let mut total = self.token_embd.len;
        if self.output.start != self.token_embd.start {
            total += self.output.len;
        }
        for l in &self.layers {
            for m in [&l.wq, &l.wk, &l.wv, &l.wqkv, &l.w_gate]
                .into_iter()
                .flatten()
            {
                total += m.len;
            }
            total += l.wo.len + l.w_up.len + l.w_down.len;
        }
        total
    }

    /// The largest input width of any matrix (sizes the activation quantization buffer).
    pub fn max_cols(&self) -> usize {
        let mut m = self.output.cols;
        for l in &self.layers {
            m = m.max(l.wo.cols).max(l.w_down.cols);
        }
        m
    }
}
