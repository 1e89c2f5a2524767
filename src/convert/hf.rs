//! Reading Hugging Face checkpoints: `config.json` (llama, phi3 and the published LCKV
//! `lckv-llama` layout) and single or sharded safetensors in f32/f16/bf16.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use crate::model::kv_plan::{KvPlan, DEFAULT_BACKWARD_PASSES, DEFAULT_FORWARD_PASSES};
use crate::{Error, Result};

/// The supported `model_type`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfKind {
    Llama,
    Phi3,
    LckvLlama,
}

/// What the converter needs from `config.json`.
#[derive(Clone, Debug)]
pub struct HfConfig {
    pub kind: HfKind,
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub max_pos: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub tie_embeddings: bool,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub sliding_window: Option<usize>,
    /// Phi-3 long-context RoPE: (long factors, short factors, original context).
    pub rope_factors: Option<(Vec<f32>, Vec<f32>, usize)>,
    /// Llama `rope_scaling` of type linear.
    pub linear_scale: Option<f64>,
    /// LCKV plan (None: standard).
    pub plan: Option<KvPlan>,
}

fn bad(dir: &Path, msg: String) -> Error {
    Error::Model(format!("{}: {msg}", dir.join("config.json").display()))
}

impl HfConfig {
    pub fn read(dir: &Path) -> Result<HfConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let j: Json =
            serde_json::from_str(&text).map_err(|e| bad(dir, format!("not valid JSON: {e}")))?;
        let get_usize = |k: &str| -> Result<usize> {
            j.get(k)
                .and_then(Json::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| {
                    bad(
                        dir,
                        format!("'{k}' is missing or not a non-negative integer"),
                    )
                })
        };
        let opt_usize = |k: &str| j.get(k).and_then(Json::as_u64).map(|v| v as usize);
        let kind = match j.get("model_type").and_then(Json::as_str) {
            Some("llama") => HfKind::Llama,
            Some("phi3") => HfKind::Phi3,
            Some("lckv-llama") => HfKind::LckvLlama,
            Some(other) => return Err(bad(dir, format!("model_type '{other}' is not supported; convert handles llama, phi3 and lckv-llama"))),
            None => return Err(bad(dir, "'model_type' is missing".into())),
        };
        let hidden = get_usize("hidden_size")?;
        let n_head = get_usize("num_attention_heads")?;
        let n_layer = get_usize("num_hidden_layers")?;
        if hidden == 0
            || n_head == 0
            || n_layer == 0
            || hidden % n_head != 0 && opt_usize("head_dim").is_none()
        {
            return Err(bad(dir, "hidden_size, num_attention_heads and num_hidden_layers must be positive, hidden_size a multiple of the head count".into()));
        }
        let n_head_kv = opt_usize("num_key_value_heads").unwrap_or(n_head);
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(bad(
                dir,
                format!("num_key_value_heads {n_head_kv} must divide num_attention_heads {n_head}"),
            ));
        }
        let id = |k: &str| j.get(k).and_then(Json::as_u64).map(|v| v as u32);
        let sliding_window = opt_usize("sliding_window").filter(|&w| w > 0);
        let mut rope_factors = None;
        let mut linear_scale = None;
        if let Some(rs) = j.get("rope_scaling").filter(|v| !v.is_null()) {
            let ty = rs
                .get("type")
                .or_else(|| rs.get("rope_type"))
                .and_then(Json::as_str)
                .unwrap_or("");
            match ty {
                "linear" => linear_scale = rs.get("factor").and_then(Json::as_f64),
                "su" | "longrope" => {
                    let list = |k: &str| -> Result<Vec<f32>> {
                        rs.get(k)
                            .and_then(Json::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(Json::as_f64)
                                    .map(|x| x as f32)
                                    .collect()
                            })
                            .ok_or_else(|| bad(dir, format!("rope_scaling.{k} is missing")))
                    };
                    let orig = opt_usize("original_max_position_embeddings").unwrap_or(4096);
                    rope_factors = Some((list("long_factor")?, list("short_factor")?, orig));
                }
                other => {
                    return Err(bad(
                        dir,
                        format!("rope_scaling type '{other}' is not supported"),
                    ))
                }
            }
        }
        let plan = if kind == HfKind::LckvLlama {
            let spec = j
                .get("layer_types")
                .and_then(Json::as_str)
                .ok_or_else(|| bad(dir, "an lckv-llama config needs 'layer_types'".into()))?;
            let mut p = KvPlan::parse_layer_types(spec, n_layer).map_err(|e| bad(dir, e))?;
            p.forward_passes = opt_usize("forward_passes").unwrap_or(DEFAULT_FORWARD_PASSES);
            p.backward_passes = opt_usize("backward_passes").unwrap_or(DEFAULT_BACKWARD_PASSES);
            p.force_nodiag = j
                .get("force_nodiag")
                .and_then(Json::as_bool)
                .unwrap_or(true);
            if p.sliding.iter().any(|&s| s) {
                p.window = sliding_window.ok_or_else(|| {
                    bad(
                        dir,
                        "layer_types marks sliding layers but 'sliding_window' is not set".into(),
                    )
                })?;
            }
            p.validate().map_err(|e| bad(dir, e))?;
            Some(p)
        } else {
            None
        };
        Ok(HfConfig {
            kind,
            vocab: get_usize("vocab_size")?,
            hidden,
            intermediate: get_usize("intermediate_size")?,
            n_layer,
            n_head,
            n_head_kv,
            head_dim: opt_usize("head_dim").unwrap_or(hidden / n_head),
            max_pos: opt_usize("max_position_embeddings").unwrap_or(2048),
            rope_theta: j
                .get("rope_theta")
                .and_then(Json::as_f64)
                .unwrap_or(10000.0),
            rms_eps: j.get("rms_norm_eps").and_then(Json::as_f64).unwrap_or(1e-5),
            tie_embeddings: j
                .get("tie_word_embeddings")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            bos: id("bos_token_id"),
            eos: id("eos_token_id"),
            sliding_window,
            rope_factors,
            linear_scale,
            plan,
        })
    }
}

/// All tensors of a checkpoint, by name, converted to f32 on demand.
pub struct Checkpoint {
    files: Vec<(PathBuf, Vec<u8>)>,
    index: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| Error::io(format!("reading {}", index_path.display()), e))?;
            let j: Json = serde_json::from_str(&text).map_err(|e| {
                Error::Model(format!("{}: not valid JSON: {e}", index_path.display()))
            })?;
            let map = j
                .get("weight_map")
                .and_then(Json::as_object)
                .ok_or_else(|| Error::Model(format!("{}: no weight_map", index_path.display())))?;
            let mut shards: Vec<String> = map
                .values()
                .filter_map(Json::as_str)
                .map(str::to_string)
                .collect();
            shards.sort();
            shards.dedup();
            for s in &shards {
                if s.contains('/') || s.contains("..") {
                    return Err(Error::Model(format!(
                        "{}: shard name '{s}' must be a plain file name",
                        index_path.display()
                    )));
                }
            }
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else {
            return Err(Error::Model(format!(
                "{} has neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            )));
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, p) in paths.into_iter().enumerate() {
            let bytes =
                std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
            let st = SafeTensors::deserialize(&bytes).map_err(|e| {
                Error::Model(format!("{}: not a safetensors file: {e}", p.display()))
            })?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            files.push((p, bytes));
        }
        Ok(Checkpoint { files, index })
    }

    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    /// A tensor as f32 with its shape (outermost first, as PyTorch).
    pub fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| Error::Model(format!("checkpoint tensor {name} is missing")))?;
        let (path, bytes) = &self.files[i];
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
        let t = st
            .tensor(name)
            .map_err(|e| Error::Model(format!("{}: {name}: {e}", path.display())))?;
        let data = t.data();
        let values: Vec<f32> = match t.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::Model(format!(
                    "{name} has dtype {other:?}; convert reads f32, f16 and bf16"
                )))
            }
        };
        Ok((t.shape().to_vec(), values))
    }
}
