//! `lckv bench`: prompt processing and generation speed in the manner of llama-bench (pp and
//! tg tests, mean ± sd over repetitions, per thread count), with the effective bandwidth of
//! generation next to this machine's measured read bandwidth, peak RSS, KV bytes per token and
//! the kernel path.

use std::time::Instant;

use clap::Args;
use rayon::prelude::*;

use lckv::model::forward::{Forward, Logits, Row};
use lckv::{Error, Result};

use super::ModelArgs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length for the prompt-processing test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Tokens for the generation test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Thread counts to test, comma separated.
    #[arg(long = "threads-list", value_delimiter = ',', default_value = "1,2")]
    pub thread_counts: Vec<usize>,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    pub reps: usize,
    /// Sessions decoding together for the batched generation test (`tgN@P`: P sessions, one
    /// pass over the weights per step, as `lckv serve` runs them), comma separated; 1 alone
    /// runs only the single-session test.
    #[arg(long = "parallel", value_delimiter = ',', default_value = "1")]
    pub parallel: Vec<usize>,
    /// Print one JSON object per result line instead of a table.
    #[arg(long = "json")]
    pub json: bool,
}

/// The most sessions the batched generation test takes (the server's batch is no wider).
const MAX_PARALLEL: usize = 64;

/// Aggregate tokens/s of `p` sessions generating `n_gen` tokens each, one batched decode step
/// for all of them at a time, from one arena of `p` slots (the server's path), over `reps`
/// repetitions after a warm-up.
fn batched_decode(
    margs: &super::ModelArgs,
    model: &lckv::model::Model,
    p: usize,
    n_gen: usize,
    reps: usize,
) -> Result<Vec<f64>> {
    let (mut opts, _) = super::session_options(margs, p)?;
    opts.n_ctx = super::context(margs, model, &opts, p, None)?;
    opts.n_batch = opts.n_batch.max(p);
    let plan = lckv::session::SessionPlan::new(model, opts, p)?;
    let mut fwd = Forward::new(model, super::kernels()?, plan.memory.dims, p)?;
    let vocab = model.cfg.n_vocab as u32;
    let mut tokens: Vec<u32> = (0..p as u32).map(|i| (i * 7919 + 1) % vocab).collect();
    let mut rows: Vec<Row> = (0..p).map(|slot| Row { slot, pos: 0 }).collect();
    let mut next = vec![0u32; p];
    let mut run = |steps: usize| -> Result<f64> {
        // Positions restart at 0: each step overwrites what it later reads.
        let t0 = Instant::now();
        for step in 0..steps {
            for (slot, r) in rows.iter_mut().enumerate() {
                *r = Row { slot, pos: step };
            }
            fwd.decode_batch(model, &tokens, &rows, &mut |r, l| next[r] = argmax(l))?;
            tokens.copy_from_slice(&next);
        }
        Ok((steps * p) as f64 / t0.elapsed().as_secs_f64())
    };
    run(1)?;
    (0..reps).map(|_| run(n_gen)).collect()
}

fn argmax(l: &[f32]) -> u32 {
    l.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
        .0 as u32
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let m = x.iter().sum::<f64>() / x.len() as f64;
    let v = x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (x.len().max(2) - 1) as f64;
    (m, v.sqrt())
}

/// Peak resident set (VmHWM) in bytes, where /proc reports it.
pub fn peak_rss() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<usize>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Read bandwidth of this machine in GB/s: the best of several passes summing a 256 MiB buffer
/// with the current thread pool.
pub fn read_bandwidth() -> f64 {
    let words = 32 << 20;
    let buf: Vec<u64> = (0..words as u64).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .sum();
        let dt = t.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max((words * 8) as f64 / dt / 1e9);
    }
    best
}

pub fn main(a: BenchArgs) -> Result<()> {
    if a.reps == 0 || a.thread_counts.is_empty() || a.thread_counts.contains(&0) {
        return Err(Error::Usage(
            "bench needs at least one repetition and thread counts of at least 1".into(),
        ));
    }
    if a.parallel.contains(&0) || a.parallel.iter().any(|&p| p > MAX_PARALLEL) {
        return Err(Error::Usage(format!(
            "--parallel takes session counts from 1 to {MAX_PARALLEL}"
        )));
    }
    let mut margs = a.model.clone();
    margs.threads = None;
    // Without -c the context is at least the tests' tokens: prompt, generation and a warm-up.
    if margs.ctx.is_none() {
        margs.ctx = Some(
            (a.n_prompt + a.n_gen + 1)
                .max(super::DEFAULT_CTX)
                .to_string(),
        );
    }
    margs.batch = margs.batch.max(a.n_prompt.min(512)).max(1);
    let model = super::open(&margs)?;
    let kv_tok = model
        .cfg
        .kv_bytes_per_token(lckv::memory::kv_cache::parse_kv_type(&margs.kv_type)?)?;
    let weights = model.weights.mapped_bytes();
    let kern = super::kernels()?;
    let name = margs
        .model
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !a.json {
        println!(
            "model: {name}  weights {:.1} MiB  KV {} B/token  plan {}  kernels {}",
            weights as f64 / 1048576.0,
            kv_tok,
            model.cfg.plan.layer_types(),
            kern.path()
        );
        println!("| threads | test   |         t/s |   GB/s | machine GB/s |");
        println!("|--------:|:-------|------------:|-------:|-------------:|");
    }
    let vocab = model.cfg.n_vocab as u32;
    let prompt: Vec<u32> = (0..a.n_prompt as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    for &t in &a.thread_counts {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .map_err(|e| Error::Usage(format!("cannot start {t} threads: {e}")))?;
        pool.install(|| -> Result<()> {
            let bw = read_bandwidth();
            let mut session = super::session(&margs, &model, 1, true)?;
            let report = |test: String, tps: Vec<f64>, gbs: f64| {
                let (m, sd) = mean_sd(&tps);
                if a.json {
                    println!(
                        "{{\"model\":\"{name}\",\"threads\":{t},\"test\":\"{test}\",\"tps\":{m:.3},\"tps_sd\":{sd:.3},\"gbs\":{gbs:.3},\"machine_gbs\":{bw:.3},\"kernels\":\"{}\",\"kv_bytes_per_token\":{kv_tok}}}",
                        kern.path()
                    );
                } else {
                    println!("| {t:>7} | {test:<6} | {m:>7.2} ± {sd:<4.2} | {gbs:>6.2} | {bw:>12.2} |");
                }
            };
            if a.n_prompt > 0 {
                // Warm-up, then timed repetitions from an empty cache.
                session.reset();
                session.prefill(&prompt, Logits::Last, &mut |_, _| {})?;
                let mut tps = Vec::new();
                for _ in 0..a.reps {
                    session.reset();
                    let t0 = Instant::now();
                    session.prefill(&prompt, Logits::Last, &mut |_, _| {})?;
                    tps.push(a.n_prompt as f64 / t0.elapsed().as_secs_f64());
                }
                report(format!("pp{}", a.n_prompt), tps, 0.0);
            }
            if a.n_gen > 0 {
                session.reset();
                session.decode(1 % vocab)?;
                let mut tps = Vec::new();
                for _ in 0..a.reps {
                    session.reset();
                    let t0 = Instant::now();
                    let mut tok = 1 % vocab;
                    for _ in 0..a.n_gen {
                        let l = session.decode(tok)?;
                        tok = (l.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0) as u32;
                    }
                    tps.push(a.n_gen as f64 / t0.elapsed().as_secs_f64());
                }
                let (m, _) = mean_sd(&tps);
                // Each generated token reads every weight once and, on average, half the cache.
                let bytes = weights as f64 + kv_tok as f64 * a.n_gen as f64 / 2.0;
                report(format!("tg{}", a.n_gen), tps, m * bytes / 1e9);
            }
            for &p in a.parallel.iter().filter(|&&p| p > 1 && a.n_gen > 0) {
                let tps = batched_decode(&margs, &model, p, a.n_gen, a.reps)?;
                let (m, _) = mean_sd(&tps);
                // One step reads every weight once for all P sessions.
                let bytes = weights as f64 / p as f64 + kv_tok as f64 * a.n_gen as f64 / 2.0;
                report(format!("tg{}@{p}", a.n_gen), tps, m * bytes / 1e9);
            }
            Ok(())
        })?;
    }
    if let Some(r) = peak_rss() {
        if a.json {
            println!("{{\"model\":\"{name}\",\"peak_rss\":{r}}}");
        } else {
            println!("peak RSS: {:.1} MiB", r as f64 / 1048576.0);
        }
    }
    Ok(())
}
