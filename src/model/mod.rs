//! A loaded model: the mapped GGUF file, its configuration (with the KV plan), and the weight
//! store pointing into the file. The forward pass lives in `forward`, one file per
//! architecture's differences in `arch/`.

pub mod arch;
pub mod config;
pub mod forward;
pub mod kv_plan;
pub mod weights;

use std::path::Path;

use crate::gguf::{GgufFile, OpenOptions};
use crate::memory::dims::ModelDims;
use crate::tokenizer::{GgufVocab, Tokenizer};
use crate::{Error, Result};
use config::ModelConfig;
use weights::Weights;

/// How to open a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Read the file into memory instead of mapping it.
    pub no_mmap: bool,
    /// Lock the weights in RAM (mlock).
    pub mlock: bool,
    /// Override the file's KV plan (`--kv-plan`).
    pub kv_plan: Option<String>,
}

pub struct Model {
    pub file: GgufFile,
    pub cfg: ModelConfig,
    pub weights: Weights,
}

impl Model {
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model> {
        let file = GgufFile::open_with(
            path,
            &OpenOptions {
                mmap: !opts.no_mmap,
            },
        )
        .map_err(|e| Error::Model(format!("cannot open {}: {e}", path.display())))?;
        Model::from_file(file, opts)
    }

    pub fn from_file(file: GgufFile, opts: &LoadOptions) -> Result<Model> {
        let mut cfg = ModelConfig::from_gguf(&file)?;
        if let Some(spec) = &opts.kv_plan {
            cfg.set_plan(spec)?;
        }
        let weights = Weights::load(&file, &cfg)?;
        if opts.mlock {
            file.lock()?;
        }
        Ok(Model { file, cfg, weights })
    }

    /// The dimensions a session's buffers are sized from.
    pub fn dims(&self) -> ModelDims {
        let c = &self.cfg;
        ModelDims {
            n_embd: c.n_embd,
            n_head: c.n_head,
            head_dim: c.head_dim,
            q_dim: c.q_dim(),
            kv_dim: c.kv_dim(),
            n_ff: c.n_ff,
            qkv_rows: if c.traits.fused_qkv {
                c.q_dim() + 2 * c.kv_dim()
            } else {
                0
            },
            up_rows: if c.traits.fused_gate_up {
                2 * c.n_ff
            } else {
                c.n_ff
            },
            n_vocab: c.n_vocab,
            n_rot: c.rope.n_rot,
            max_cols: self.weights.max_cols(),
            condensed: !c.plan.is_identity(),
            producers: (0..c.n_layer).map(|i| c.plan.is_producer(i)).collect(),
            n_kv_head: c.n_head_kv,
        }
    }

    /// Bytes of vocabulary strings, merges and the tokenizer's maps held in memory: about 40
    /// bytes of bookkeeping per token and merge on top of their text, held twice (GGUF metadata
    /// and the tokenizer).
    pub fn tokenizer_bytes(&self) -> usize {
        let text: usize = self
            .file
            .metadata()
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .map(|(_, v)| match v.as_array() {
                Some(a) => a
                    .iter()
                    .map(|x| x.as_str().map_or(8, |s| s.len() + 40))
                    .sum(),
                None => v.as_str().map_or(8, str::len),
            })
            .sum();
        3 * text
    }

    /// The tokenizer stored in the file.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_gguf_vocab(&gguf_vocab(&self.file)?)
    }
}

/// Collects the `tokenizer.ggml.*` keys.
pub fn gguf_vocab(g: &GgufFile) -> Result<GgufVocab> {
    let tok = |k: &str| format!("tokenizer.ggml.{k}");
    let model = g
        .get_str(&tok("model"))?
        .ok_or_else(|| {
            Error::Tokenizer("tokenizer.ggml.model is missing: the file has no vocabulary".into())
        })?
        .to_string();
    let strings = |k: &str| -> Result<Option<Vec<String>>> {
        Ok(g.get_str_array(&tok(k))?
            .map(|v| v.into_iter().map(str::to_string).collect()))
    };
    let tokens = strings("tokens")?
        .ok_or_else(|| Error::Tokenizer("tokenizer.ggml.tokens is missing".into()))?;
    let token_types = match g.get_array(&tok("token_type"))? {
        Some(a) => Some(
            a.iter()
                .map(|v| v.as_i64().map(|x| x as i32))
                .collect::<Option<Vec<i32>>>()
                .ok_or_else(|| {
                    Error::Tokenizer("tokenizer.ggml.token_type must hold integers".into())
                })?,
        ),
        None => None,
    };
    Ok(GgufVocab {
        model,
        pre: g.get_str(&tok("pre"))?.map(str::to_string),
        tokens,
        scores: g.get_f32_array(&tok("scores"))?,
        token_types,
        merges: strings("merges")?,
        bos: g.get_u32(&tok("bos_token_id"))?,
        eos: g.get_u32(&tok("eos_token_id"))?,
        eot: g.get_u32(&tok("eot_token_id"))?,
        eom: g.get_u32(&tok("eom_token_id"))?,
        unk: g.get_u32(&tok("unknown_token_id"))?,
        pad: g.get_u32(&tok("padding_token_id"))?,
        add_bos: g.get_bool(&tok("add_bos_token"))?,
        add_eos: g.get_bool(&tok("add_eos_token"))?,
        add_space_prefix: g.get_bool(&tok("add_space_prefix"))?,
    })
}
