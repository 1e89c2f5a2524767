//! `lckv convert` and `lckv quantize`: Hugging Face checkpoints (llama, phi3, lckv-llama) to
//! GGUF, and GGUF to GGUF at another type. The output follows llama.cpp's converter (tensor
//! names, metadata keys, the Q/K row permutation of Llama checkpoints for its RoPE layout), so a
//! standard model converted here also loads in llama.cpp; LCKV models add the `kv_plan` keys
//! (README, "GGUF extensions") and have no K/V projections on consumer layers.

pub mod hf;
pub mod special_vocab;
pub mod spm_vocab;

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use lckv_kernels::{quant, GgmlType};

use crate::gguf::{GgufFile, GgufWriter, Value};
use crate::{Error, Result};
use hf::{Checkpoint, HfConfig, HfKind};

/// Output types `convert` and `quantize` accept.
pub fn parse_out_type(s: &str) -> Result<GgmlType> {
    let t = match s.to_ascii_lowercase().as_str() {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::BF16,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        "q5_0" => GgmlType::Q5_0,
        "q4_k" => GgmlType::Q4K,
        "q6_k" => GgmlType::Q6K,
        other => {
            return Err(Error::Usage(format!(
                "unknown type '{other}': use f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q4_k or q6_k"
            )))
        }
    };
    Ok(t)
}

/// llama.cpp's `general.file_type` for a file whose matrices are mostly `t`.
fn file_type(t: GgmlType) -> u32 {
    match t {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q4K => 14,
        GgmlType::Q6K => 18,
        GgmlType::BF16 => 32,
        _ => 0,
    }
}

/// The type a matrix with rows of `cols` elements gets when `want` is asked for: `want` if the
/// rows split into its blocks, else the nearest type whose blocks fit (as llama.cpp falls back).
pub fn matrix_type(want: GgmlType, cols: usize) -> GgmlType {
    [want, GgmlType::Q8_0, GgmlType::F16]
        .into_iter()
        .find(|t| cols.is_multiple_of(t.block_size()))
        .unwrap_or(GgmlType::F32)
}

fn quantize_matrix(ty: GgmlType, cols: usize, values: &[f32]) -> Vec<u8> {
    let rs = ty
        .row_size(cols)
        .expect("matrix_type picks a type whose blocks fit");
    let rows = values.len() / cols;
    let mut out = vec![0u8; rs * rows];
    for (src, dst) in values.chunks_exact(cols).zip(out.chunks_exact_mut(rs)) {
        quant::quantize_row(ty, src, dst);
    }
    out
}

fn progress(n: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} tensors") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub out_type: GgmlType,
    /// Copy the tokenizer (tokenizer.* keys) from this GGUF instead of reading tokenizer.json.
    pub vocab_from: Option<PathBuf>,
}

/// Reorders the rows of each head from Hugging Face's rotate-half layout to the adjacent-pair
/// layout llama.cpp's Llama RoPE expects (what its converter's `permute` does).
fn permute_heads(w: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + j * half + i;
                let dst = h * hd + 2 * i + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

pub fn convert(dir: &Path, out: &Path, opts: &ConvertOptions) -> Result<()> {
    let cfg = HfConfig::read(dir)?;
    let ckpt = Checkpoint::open(dir)?;
    let arch = if cfg.kind == HfKind::Phi3 {
        "phi3"
    } else {
        "llama"
    };
    let mut w = GgufWriter::new();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    w.add("general.architecture", Value::String(arch.into()));
    w.add("general.name", Value::String(name));
    w.add("general.file_type", Value::U32(file_type(opts.out_type)));
    w.add("general.quantization_version", Value::U32(2));
    let k = |s: &str| format!("{arch}.{s}");
    w.add(&k("block_count"), Value::U32(cfg.n_layer as u32));
    w.add(&k("context_length"), Value::U32(cfg.max_pos as u32));
    w.add(&k("embedding_length"), Value::U32(cfg.hidden as u32));
    w.add(
        &k("feed_forward_length"),
        Value::U32(cfg.intermediate as u32),
    );
    w.add(&k("attention.head_count"), Value::U32(cfg.n_head as u32));
    w.add(
        &k("attention.head_count_kv"),
        Value::U32(cfg.n_head_kv as u32),
    );
    w.add(&k("rope.freq_base"), Value::F32(cfg.rope_theta as f32));
    w.add(
        &k("attention.layer_norm_rms_epsilon"),
        Value::F32(cfg.rms_eps as f32),
    );
    w.add(&k("rope.dimension_count"), Value::U32(cfg.n_rot as u32));
    w.add(&k("vocab_size"), Value::U32(cfg.vocab as u32));
    if cfg.head_dim * cfg.n_head != cfg.hidden {
        w.add(&k("attention.key_length"), Value::U32(cfg.head_dim as u32));
        w.add(
            &k("attention.value_length"),
            Value::U32(cfg.head_dim as u32),
        );
    }
    if let Some(f) = cfg.linear_scale {
        w.add(&k("rope.scaling.type"), Value::String("linear".into()));
        w.add(&k("rope.scaling.factor"), Value::F32(f as f32));
    }
    if let Some(win) = cfg.sliding_window {
        if cfg.kind == HfKind::Phi3 {
            w.add(&k("attention.sliding_window"), Value::U32(win as u32));
        }
    }
    if let Some(p) = &cfg.plan {
        w.add(
            &k("kv_plan.sources"),
            Value::Array(p.sources.iter().map(|&s| Value::U32(s as u32)).collect()),
        );
        w.add(
            &k("kv_plan.sliding"),
            Value::Array(p.sliding.iter().map(|&s| Value::Bool(s)).collect()),
        );
        w.add(&k("kv_plan.sliding_window"), Value::U32(p.window as u32));
        w.add(&k("kv_plan.force_nodiag"), Value::Bool(p.force_nodiag));
        w.add(
            &k("kv_plan.forward_passes"),
            Value::U32(p.forward_passes as u32),
        );
        w.add(
            &k("kv_plan.backward_passes"),
            Value::U32(p.backward_passes as u32),
        );
    }
    add_vocab(&mut w, dir, &cfg, opts)?;

    let n_tensors = ckpt.names().count();
    let pb = progress(n_tensors, "converting");
    let matrix = |w: &mut GgufWriter, hf: &str, gguf: &str, permute: Option<usize>| -> Result<()> {
        let (shape, mut v) = ckpt.get(hf)?;
        if shape.len() != 2 {
            return Err(Error::Model(format!(
                "{hf} has shape {shape:?}, expected a matrix"
            )));
        }
        let (rows, cols) = (shape[0], shape[1]);
        if let Some(nh) = permute {
            if rows % (2 * nh) != 0 {
                return Err(Error::Model(format!(
                    "{hf}: {rows} rows do not split into {nh} heads of even size"
                )));
            }
            v = permute_heads(&v, nh, cols);
        }
        let ty = matrix_type(opts.out_type, cols);
        w.add_tensor(gguf, ty, &[cols, rows], quantize_matrix(ty, cols, &v))?;
        pb.inc(1);
        Ok(())
    };
    let vector = |w: &mut GgufWriter, hf: &str, gguf: &str| -> Result<()> {
        let (shape, v) = ckpt.get(hf)?;
        if shape.len() != 1 {
            return Err(Error::Model(format!(
                "{hf} has shape {shape:?}, expected a vector"
            )));
        }
        w.add_tensor(
            gguf,
            GgmlType::F32,
            &[shape[0]],
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )?;
        Ok(())
    };
    matrix(
        &mut w,
        "model.embed_tokens.weight",
        "token_embd.weight",
        None,
    )?;
    vector(&mut w, "model.norm.weight", "output_norm.weight")?;
    if ckpt.has("lm_head.weight") {
        if cfg.tie_embeddings {
            // transformers ties it to the embedding whatever the file holds.
            ckpt.skip("lm_head.weight");
        } else {
            matrix(&mut w, "lm_head.weight", "output.weight", None)?;
        }
    }
    let llama_rope = cfg.kind != HfKind::Phi3;
    for i in 0..cfg.n_layer {
        let hf = |s: &str| format!("model.layers.{i}.{s}");
        let gg = |s: &str| format!("blk.{i}.{s}");
        vector(
            &mut w,
            &hf("input_layernorm.weight"),
            &gg("attn_norm.weight"),
        )?;
        vector(
            &mut w,
            &hf("post_attention_layernorm.weight"),
            &gg("ffn_norm.weight"),
        )?;
        matrix(
            &mut w,
            &hf("self_attn.o_proj.weight"),
            &gg("attn_output.weight"),
            None,
        )?;
        matrix(
            &mut w,
            &hf("mlp.down_proj.weight"),
            &gg("ffn_down.weight"),
            None,
        )?;
        let producer = cfg.plan.as_ref().is_none_or(|p| p.is_producer(i));
        if cfg.kind == HfKind::Phi3 {
            matrix(
                &mut w,
                &hf("self_attn.qkv_proj.weight"),
                &gg("attn_qkv.weight"),
                None,
            )?;
            matrix(
                &mut w,
                &hf("mlp.gate_up_proj.weight"),
                &gg("ffn_up.weight"),
                None,
            )?;
        } else {
            let perm = |n| if llama_rope { Some(n) } else { None };
            matrix(
                &mut w,
                &hf("self_attn.q_proj.weight"),
                &gg("attn_q.weight"),
                perm(cfg.n_head),
            )?;
            if producer {
                matrix(
                    &mut w,
                    &hf("self_attn.k_proj.weight"),
                    &gg("attn_k.weight"),
                    perm(cfg.n_head_kv),
                )?;
                matrix(
                    &mut w,
                    &hf("self_attn.v_proj.weight"),
                    &gg("attn_v.weight"),
                    None,
                )?;
            } else if ckpt.has(&hf("self_attn.k_proj.weight")) {
                return Err(Error::Model(format!(
                    "layer {i} reads layer {}'s cache under layer_types, yet the checkpoint has {}",
                    cfg.plan.as_ref().map_or(i, |p| p.sources[i]),
                    hf("self_attn.k_proj.weight")
                )));
            }
            matrix(
                &mut w,
                &hf("mlp.gate_proj.weight"),
                &gg("ffn_gate.weight"),
                None,
            )?;
            matrix(
                &mut w,
                &hf("mlp.up_proj.weight"),
                &gg("ffn_up.weight"),
                None,
            )?;
        }
    }
    if let Some(lr) = &cfg.rope_factors {
        // The keys and tensors llama.cpp's converter writes for Phi-3 LongRoPE.
        w.add(
            &k("rope.scaling.original_context_length"),
            Value::U32(lr.orig_ctx as u32),
        );
        w.add(&k("rope.scaling.attn_factor"), Value::F32(lr.attn_factor));
        for (n, f) in [
            ("rope_factors_long.weight", &lr.long),
            ("rope_factors_short.weight", &lr.short),
        ] {
            w.add_tensor(
                n,
                GgmlType::F32,
                &[f.len()],
                f.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )?;
        }
    }
    // A tensor the mapping above never read (a bias, an extra norm) would silently change the
    // model; refuse rather than write a file that computes something else.
    let unused = ckpt.unused();
    if !unused.is_empty() {
        let shown: Vec<&str> = unused.iter().take(8).map(|s| s.as_str()).collect();
        return Err(Error::Model(format!(
            "{} holds {} tensor(s) that a {} model has no place for: {}{}",
            dir.display(),
            unused.len(),
            cfg.kind.name(),
            shown.join(", "),
            if unused.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        )));
    }
    pb.finish_and_clear();
    w.write_atomic(out)?;
    Ok(())
}

/// Tokenizer metadata: copied from a GGUF, or built from a byte-level BPE or a
/// SentencePiece-style (BPE with byte fallback) `tokenizer.json`.
fn add_vocab(w: &mut GgufWriter, dir: &Path, cfg: &HfConfig, opts: &ConvertOptions) -> Result<()> {
    if let Some(src) = &opts.vocab_from {
        let g = GgufFile::open(src)?;
        for (key, v) in g.metadata() {
            if key.starts_with("tokenizer.") {
                w.add(key, v.clone());
            }
        }
        return Ok(());
    }
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        eprintln!(
            "lckv convert: no tokenizer.json in {}; the model will take token ids only",
            dir.display()
        );
        // llama.cpp's marker for a vocabulary-less model: it then sizes the vocabulary from
        // `{arch}.vocab_size`.
        w.add("tokenizer.ggml.model", Value::String("no_vocab".into()));
        return Ok(());
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let j: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
    if spm_vocab::is_spm(&j) {
        return spm_vocab::add(w, dir, &path, &j, cfg.vocab);
    }
    let model = &j["model"];
    if model["type"].as_str() != Some("BPE") || j["decoder"]["type"].as_str() != Some("ByteLevel") {
        return Err(Error::Tokenizer(format!(
            "{}: only byte-level BPE and SentencePiece-style (BPE with byte_fallback) tokenizers are converted; pass --vocab-from a GGUF with the same vocabulary",
            path.display()
        )));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| Error::Tokenizer("tokenizer.json has no model.vocab".into()))?;
    let mut tokens = vec![String::new(); cfg.vocab];
    let mut types = vec![1i32; cfg.vocab];
    let mut put = |t: &str, id: u64, ty: i32| -> Result<()> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            Error::Tokenizer(format!(
                "token '{t}' has id {id}, beyond vocab_size {}",
                cfg.vocab
            ))
        })?;
        *slot = t.to_string();
        types[id as usize] = ty;
        Ok(())
    };
    for (t, id) in vocab {
        put(t, id.as_u64().unwrap_or(u64::MAX), 1)?;
    }
    for a in j["added_tokens"].as_array().into_iter().flatten() {
        let special = a["special"].as_bool().unwrap_or(false);
        put(
            a["content"].as_str().unwrap_or(""),
            a["id"].as_u64().unwrap_or(u64::MAX),
            if special { 3 } else { 4 },
        )?;
    }
    for (i, t) in tokens.iter_mut().enumerate() {
        if t.is_empty() {
            *t = format!("[PAD{i}]");
            types[i] = 5;
        }
    }
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            serde_json::Value::Array(p) => Value::String(format!(
                "{} {}",
                p[0].as_str().unwrap_or(""),
                p.get(1).and_then(|x| x.as_str()).unwrap_or("")
            )),
            other => Value::String(other.as_str().unwrap_or("").to_string()),
        })
        .collect();
    w.add("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add("tokenizer.ggml.pre", Value::String("default".into()));
    w.add(
        "tokenizer.ggml.tokens",
        Value::Array(tokens.into_iter().map(Value::String).collect()),
    );
    w.add(
        "tokenizer.ggml.token_type",
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    w.add("tokenizer.ggml.merges", Value::Array(merges));
    if let Some(b) = cfg.bos {
        w.add("tokenizer.ggml.bos_token_id", Value::U32(b));
    }
    if let Some(e) = cfg.eos {
        w.add("tokenizer.ggml.eos_token_id", Value::U32(e));
    }
    Ok(())
}

/// Re-encodes every matrix of a GGUF at `ty` (vectors stay f32), keeping all metadata.
pub fn quantize(input: &Path, out: &Path, ty: GgmlType) -> Result<()> {
    let g = GgufFile::open(input)?;
    let mut w = GgufWriter::new();
    for (key, v) in g.metadata() {
        if key == "general.file_type" {
            w.add(key, Value::U32(file_type(ty)));
        } else {
            w.add(key, v.clone());
        }
    }
    if g.get("general.file_type").is_none() {
        w.add("general.file_type", Value::U32(file_type(ty)));
    }
    let pb = progress(g.tensors().len(), "quantizing");
    for t in g.tensors() {
        let data = g.tensor_data(t);
        if t.dims.len() < 2 || t.ty == GgmlType::F32 && t.dims[1] == 1 {
            w.add_tensor(&t.name, t.ty, &t.dims, data.to_vec())?;
        } else {
            let cols = t.dims[0];
            let mut values = vec![0f32; t.n_elements()];
            let rb =
                t.ty.row_size(cols)
                    .ok_or_else(|| Error::Model(format!("{}: bad row size", t.name)))?;
            for (src, dst) in data.chunks_exact(rb).zip(values.chunks_exact_mut(cols)) {
                quant::dequantize_row(t.ty, src, dst);
            }
            let out_ty = matrix_type(ty, cols);
            w.add_tensor(
                &t.name,
                out_ty,
                &t.dims,
                quantize_matrix(out_ty, cols, &values),
            )?;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    w.write_atomic(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_halves_per_head() {
        // 2 heads of 4 rows, 1 column: rows [a0 a1 b0 b1] per head become [a0 b0 a1 b1].
        let w: Vec<f32> = (0..8).map(|x| x as f32).collect();
        assert_eq!(
            permute_heads(&w, 2, 1),
            vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
        );
    }

    #[test]
    fn fallback_types_fit_rows() {
        assert_eq!(matrix_type(GgmlType::Q4K, 64), GgmlType::Q8_0);
        assert_eq!(matrix_type(GgmlType::Q4K, 512), GgmlType::Q4K);
        assert_eq!(matrix_type(GgmlType::Q4_0, 48), GgmlType::F16);
    }
}
