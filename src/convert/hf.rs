//! Reading Hugging Face checkpoints: `config.json` (llama, phi3 and the published LCKV
//! `lckv-llama` layout) and single or sharded safetensors in f32/f16/bf16.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

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

impl HfKind {
    /// The `model_type` spelling.
    pub fn name(self) -> &'static str {
        match self {
            HfKind::Llama => "llama",
            HfKind::Phi3 => "phi3",
            HfKind::LckvLlama => "lckv-llama",
        }
    }
}

/// Phi-3's LongRoPE: per-dimension frequency divisors for contexts up to and beyond the
/// pre-training length, and the factor cos/sin are multiplied by.
#[derive(Clone, Debug)]
pub struct LongRope {
    pub long: Vec<f32>,
    pub short: Vec<f32>,
    pub orig_ctx: usize,
    pub attn_factor: f32,
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
    /// Dimensions of each head that RoPE rotates (`partial_rotary_factor` x head_dim).
    pub n_rot: usize,
    pub max_pos: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub tie_embeddings: bool,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub sliding_window: Option<usize>,
    /// Phi-3 long-context RoPE.
    pub rope_factors: Option<LongRope>,
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
        let max_pos = opt_usize("max_position_embeddings").unwrap_or(2048);
        // transformers 4.x writes `rope_scaling` with `rope_theta` and `partial_rotary_factor`
        // beside it; 5.x writes one `rope_parameters` object holding all of them.
        let rope = ["rope_scaling", "rope_parameters"]
            .into_iter()
            .find_map(|k| j.get(k).filter(|v| v.is_object()));
        let rope_get = |k: &str| {
            j.get(k)
                .filter(|v| !v.is_null())
                .or_else(|| rope.and_then(|r| r.get(k)))
        };
        let rope_theta = rope_get("rope_theta")
            .and_then(Json::as_f64)
            .unwrap_or(10000.0);
        let partial = rope_get("partial_rotary_factor")
            .and_then(Json::as_f64)
            .unwrap_or(1.0);
        let head_dim = opt_usize("head_dim").unwrap_or(hidden / n_head);
        // As transformers: int(head_dim * partial_rotary_factor) dimensions of each head rotate.
        let n_rot = (head_dim as f64 * partial) as usize;
        if !(partial > 0.0 && partial <= 1.0) || n_rot == 0 || !n_rot.is_multiple_of(2) {
            return Err(bad(
                dir,
                format!("partial_rotary_factor {partial} leaves {n_rot} of {head_dim} dimensions to rotate; need an even, positive count"),
            ));
        }
        let mut rope_factors = None;
        let mut linear_scale = None;
        if let Some(rs) = rope {
            let ty = rs
                .get("rope_type")
                .or_else(|| rs.get("type"))
                .and_then(Json::as_str)
                .unwrap_or("default");
            match ty {
                "default" => {}
                "linear" => linear_scale = rs.get("factor").and_then(Json::as_f64),
                "su" | "longrope" => {
                    let list = |k: &str| -> Result<Vec<f32>> {
                        let a = rs
                            .get(k)
                            .and_then(Json::as_array)
                            .ok_or_else(|| bad(dir, format!("rope scaling needs '{k}'")))?;
                        let v: Vec<f32> = a
                            .iter()
                            .map(|x| x.as_f64().map(|x| x as f32))
                            .collect::<Option<_>>()
                            .ok_or_else(|| bad(dir, format!("rope scaling '{k}' holds a non-number")))?;
                        if v.len() != n_rot / 2 {
                            return Err(bad(
                                dir,
                                format!("rope scaling '{k}' has {} entries; {n_rot} rotated dimensions need {}", v.len(), n_rot / 2),
                            ));
                        }
                        Ok(v)
                    };
                    // Phi-3 keeps the pre-training length at the top level, and transformers
                    // prefers it there; 5.x also copies it into rope_parameters. 4096 is
                    // Phi3Config's default.
                    let orig = rope_get("original_max_position_embeddings")
                        .and_then(Json::as_u64)
                        .map_or(4096, |v| v as usize);
                    if orig < 2 {
                        return Err(bad(
                            dir,
                            format!("original_max_position_embeddings {orig} is too small"),
                        ));
                    }
                    // transformers' _compute_longrope_parameters: an explicit attention_factor
                    // wins; else the scale (rope `factor`, or the ratio of the two lengths, as
                    // llama.cpp's converter always takes) gives sqrt(1 + ln s / ln orig).
                    let scale = rs
                        .get("factor")
                        .and_then(Json::as_f64)
                        .unwrap_or(max_pos as f64 / orig as f64);
                    let attn_factor = match rs.get("attention_factor").and_then(Json::as_f64) {
                        Some(a) => a,
                        None if scale > 1.0 => (1.0 + scale.ln() / (orig as f64).ln()).sqrt(),
                        None => 1.0,
                    };
                    rope_factors = Some(LongRope {
                        long: list("long_factor")?,
                        short: list("short_factor")?,
                        orig_ctx: orig,
                        attn_factor: attn_factor as f32,
                    });
                }
                other => {
                    return Err(bad(
                        dir,
                        format!("rope scaling type '{other}' is not supported; convert handles linear and longrope"),
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
            head_dim,
            n_rot,
            max_pos,
            rope_theta,
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

/// All tensors of a checkpoint, by name, converted to f32 on demand. It remembers which
/// tensors were read, so the converter can refuse a checkpoint holding weights it would drop.
pub struct Checkpoint {
    files: Vec<(PathBuf, Vec<u8>)>,
    index: HashMap<String, usize>,
    used: RefCell<HashSet<String>>,
}

/// A shard name from `weight_map` must name a file in the checkpoint's folder, nothing else:
/// the index is input, and `../x` or `/x` would read outside it.
fn plain_file_name(s: &str) -> bool {
    let mut c = Path::new(s).components();
    matches!(c.next(), Some(Component::Normal(_))) && c.next().is_none() && !s.contains('\\')
}

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        // For a sharded checkpoint: tensor name -> the shard the index puts it in.
        let mut weight_map: Vec<(String, String)> = Vec::new();
        let names: Vec<String> = if single.exists() {
            vec!["model.safetensors".into()]
        } else if index_path.exists() {
            let ctx = index_path.display();
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| Error::io(format!("reading {ctx}"), e))?;
            let j: Json = serde_json::from_str(&text)
                .map_err(|e| Error::Model(format!("{ctx}: not valid JSON: {e}")))?;
            let map = j
                .get("weight_map")
                .and_then(Json::as_object)
                .ok_or_else(|| Error::Model(format!("{ctx}: no weight_map object")))?;
            for (tensor, shard) in map {
                let shard = shard.as_str().ok_or_else(|| {
                    Error::Model(format!("{ctx}: weight_map[{tensor}] is not a file name"))
                })?;
                if !plain_file_name(shard) {
                    return Err(Error::Model(format!(
                        "{ctx}: shard name '{shard}' must be a plain file name in {}",
                        dir.display()
                    )));
                }
                weight_map.push((tensor.clone(), shard.to_string()));
            }
            let mut shards: Vec<String> = weight_map.iter().map(|(_, s)| s.clone()).collect();
            shards.sort();
            shards.dedup();
            if shards.is_empty() {
                return Err(Error::Model(format!("{ctx}: weight_map is empty")));
            }
            for s in &shards {
                if !dir.join(s).is_file() {
                    return Err(Error::Model(format!(
                        "{ctx} names shard '{s}', which is not in {}",
                        dir.display()
                    )));
                }
            }
            shards
        } else {
            return Err(Error::Model(format!(
                "{} has neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            )));
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let p = dir.join(name);
            let bytes =
                std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
            let st = SafeTensors::deserialize(&bytes).map_err(|e| {
                Error::Model(format!("{}: not a safetensors file: {e}", p.display()))
            })?;
            for t in st.names() {
                if let Some(j) = index.insert(t.to_string(), i) {
                    return Err(Error::Model(format!(
                        "tensor {t} is in both {} and {name}",
                        names[j]
                    )));
                }
            }
            files.push((p, bytes));
        }
        // The index must describe the shards: a tensor it places in a shard that lacks it
        // means the files and the index are from different checkpoints.
        for (tensor, shard) in &weight_map {
            if index.get(tensor).map(|&i| &names[i]) != Some(shard) {
                return Err(Error::Model(format!(
                    "{}: weight_map puts {tensor} in {shard}, which does not hold it",
                    index_path.display()
                )));
            }
        }
        Ok(Checkpoint {
            files,
            index,
            used: RefCell::new(HashSet::new()),
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    /// Marks a tensor as deliberately left out (e.g. a tied `lm_head.weight`).
    pub fn skip(&self, name: &str) {
        self.used.borrow_mut().insert(name.to_string());
    }

    /// Tensors never read nor skipped, sorted. RoPE's `inv_freq` buffers, which older
    /// checkpoints saved, are derived from the config and never count.
    pub fn unused(&self) -> Vec<&String> {
        let used = self.used.borrow();
        let mut v: Vec<&String> = self
            .index
            .keys()
            .filter(|n| !used.contains(*n) && !n.ends_with("rotary_emb.inv_freq"))
            .collect();
        v.sort();
        v
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
                    "{}: {name} has dtype {other:?}; convert reads F32, F16 and BF16",
                    path.display()
                )))
            }
        };
        self.used.borrow_mut().insert(name.to_string());
        Ok((t.shape().to_vec(), values))
    }
}
