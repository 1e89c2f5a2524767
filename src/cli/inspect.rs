//! `lckv inspect`: what a GGUF file holds (metadata, tensors, types, sizes), the model's KV plan
//! layer by layer with the KV bytes per token, the kernel path, and the memory plan. With
//! --mem-budget, also the `MemoryMax=` line to paste into the systemd unit.

use std::path::PathBuf;

use clap::Args;

use lckv::gguf::{GgufFile, Value};
use lckv::memory::kv_cache::parse_kv_type;
use lckv::memory::plan::{human, parse_size};
use lckv::model::config::ModelConfig;
use lckv::model::{LoadOptions, Model};
use lckv::session::{SessionOptions, SessionPlan};
use lckv::{Error, Result};

/// The most sessions `--parallel auto` reports: far more than any board serves.
const MOST_SESSIONS: usize = 100_000;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// GGUF file.
    pub file: PathBuf,
    /// Show the plan this override would give.
    #[arg(long = "kv-plan")]
    pub kv_plan: Option<String>,
    /// KV cache type for the memory figures.
    #[arg(long = "kv-type", default_value = "f16")]
    pub kv_type: String,
    /// Context for the memory plan.
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<usize>,
    /// Print the memory plan for this budget and the longest context that fits.
    #[arg(long = "mem-budget")]
    pub mem_budget: Option<String>,
    /// Search contexts up to this length for --mem-budget (default: the model's training context).
    #[arg(long = "ctx-limit")]
    pub ctx_limit: Option<usize>,
    /// List every tensor.
    #[arg(long = "tensors")]
    pub tensors: bool,
    /// Plan for N sessions served together, or `auto`: the most sessions of the context (-c,
    /// default 2048) that fit --mem-budget.
    #[arg(long = "parallel")]
    pub parallel: Option<String>,
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.len() > 80 => format!(
            "{:?}... ({} chars)",
            &s[..s.char_indices().nth(60).map_or(s.len(), |c| c.0)],
            s.len()
        ),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) if a.len() > 8 => format!(
            "[{} x {}]",
            a.len(),
            a.first().map_or("?", |x| x.type_name())
        ),
        Value::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(", ")),
        other => format!("{other:?}")
            .split('(')
            .nth(1)
            .map(|s| s.trim_end_matches(')').to_string())
            .unwrap_or_default(),
    }
}

pub fn main(a: InspectArgs) -> Result<()> {
    let kern = super::kernels()?;
    let file = GgufFile::open(&a.file)
        .map_err(|e| Error::Model(format!("cannot open {}: {e}", a.file.display())))?;
    println!(
        "file: {} (GGUF v{}, {} bytes, alignment {})",
        a.file.display(),
        file.version(),
        file.file_size(),
        file.alignment()
    );
    println!("kernels: {}", kern.path());
    println!("\nmetadata ({} keys):", file.metadata().len());
    for (k, v) in file.metadata() {
        println!("  {k:<48} {}", show(v));
    }
    let mut by_type = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for t in file.tensors() {
        let e = by_type.entry(t.ty.name().to_string()).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    println!("\ntensors: {}", file.tensors().len());
    for (ty, (n, b)) in &by_type {
        println!("  {ty:<6} {n:>5} tensors  {:>12}", human(*b));
    }
    if a.tensors {
        for t in file.tensors() {
            println!(
                "  {:<40} {:<6} {:?} {} bytes",
                t.name,
                t.ty.name(),
                t.dims,
                t.size
            );
        }
    }
    let mut cfg = ModelConfig::from_gguf(&file)?;
    if let Some(spec) = &a.kv_plan {
        cfg.set_plan(spec)?;
    }
    let kv_type = parse_kv_type(&a.kv_type)?;
    let per_token = cfg.kv_bytes_per_token(kv_type)?;
    let mut std_cfg = cfg.clone();
    std_cfg.plan = lckv::model::kv_plan::KvPlan::identity(cfg.n_layer);
    let std_per_token = std_cfg.kv_bytes_per_token(kv_type)?;
    println!("\nKV plan: {}", cfg.plan);
    for i in 0..cfg.n_layer {
        let src = cfg.plan.sources[i];
        let role = if cfg.plan.is_producer(i) {
            "computes and caches K/V".to_string()
        } else if src > i {
            format!("reads layer {src} (above: previous tokens only)")
        } else {
            format!("reads layer {src}")
        };
        let slide = if cfg.plan.sliding[i] {
            format!(", window {}", cfg.plan.window)
        } else {
            String::new()
        };
        println!("  layer {i:>3}: {role}{slide}");
    }
    let producers = cfg.plan.producers().len();
    println!(
        "KV bytes per token ({kv_type}): {per_token} = {producers}/{} of the standard plan's {std_per_token} ({:.0}% less)",
        cfg.n_layer,
        100.0 * (1.0 - per_token as f64 / std_per_token as f64)
    );
    drop(file);
    let model = Model::load(
        &a.file,
        &LoadOptions {
            kv_plan: a.kv_plan.clone(),
            ..Default::default()
        },
    )?;
    let budget = a.mem_budget.as_deref().map(parse_size).transpose()?;
    let opts = SessionOptions {
        n_ctx: a.ctx.unwrap_or(model.cfg.n_ctx_train.min(2048)),
        kv_type,
        ..SessionOptions::default()
    };
    let sessions = match a.parallel.as_deref() {
        None => 1,
        Some("auto") => {
            let b = budget.ok_or_else(|| {
                Error::Usage("--parallel auto needs --mem-budget to know what fits".into())
            })?;
            let n = SessionPlan::most_sessions(&model, &opts, b, MOST_SESSIONS)?;
            println!(
                "\nmost sessions of {} tokens in {}: {n}",
                opts.n_ctx,
                human(b)
            );
            n
        }
        Some(s) => s.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
            Error::Usage(format!(
                "--parallel {s}: give a positive number of sessions or 'auto'"
            ))
        })?,
    };
    let n_ctx = match (budget, a.ctx) {
        (Some(b), None) if a.parallel.as_deref() != Some("auto") => {
            let max = a.ctx_limit.unwrap_or(model.cfg.n_ctx_train);
            let n = SessionPlan::longest_context(&model, &opts, sessions, b, max)?;
            println!("\nlongest context in {}: {n} tokens", human(b));
            n
        }
        _ => opts.n_ctx,
    };
    let plan = SessionPlan::new(&model, SessionOptions { n_ctx, ..opts }, sessions)?;
    let m = &plan.memory;
    let each = if sessions > 1 {
        format!(" x {sessions} sessions")
    } else {
        String::new()
    };
    println!("\nmemory plan for {n_ctx} tokens{each}:\n{m}");
    println!(
        "  the arena buffer by buffer ({} B, padded to {} B each):\n{}",
        m.arena(),
        lckv::memory::arena::ALIGN,
        m.buffer_lines()
    );
    if let Some(b) = budget {
        m.check(b)?;
        println!(
            "\nsystemd unit ([Service] of cross/lckv.service, with --mem-budget {}):\n{}",
            a.mem_budget.as_deref().unwrap_or_default(),
            lckv::systemd::memory_max::memory_max_lines(b)
        );
    }
    Ok(())
}
