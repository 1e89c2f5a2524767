//! The `lckv` command line: argument groups shared by the subcommands, and model/session
//! set-up from them. Each subcommand lives in its own file (`convert` and `quantize` share one).

pub mod bench;
pub mod chat;
pub mod convert;
pub mod inspect;
pub mod logits;
pub mod perplexity;
pub mod pipe;
pub mod run;
pub mod serve;

use std::path::PathBuf;

use clap::Args;

use lckv::memory::kv_cache::parse_kv_type;
use lckv::memory::plan::{human, parse_size};
use lckv::model::{LoadOptions, Model};
use lckv::sampler::SamplerConfig;
use lckv::session::{PrefillChoice, Session, SessionOptions, SessionPlan};
use lckv::{Error, Result};

/// The context length when `-c` is not given and the subcommand has no default of its own.
pub const DEFAULT_CTX: usize = 2048;

/// Options for loading a model and sizing its session.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Context length in tokens, or `auto` (the longest that fits --mem-budget). Default 2048;
    /// perplexity: 512; bench and logits: 2048, or more when their tokens need it.
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<String>,
    /// Tokens processed per forward call during prompt processing.
    #[arg(short = 'b', long = "batch-size", default_value_t = 256)]
    pub batch: usize,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Override the KV plan: standard, cla2, lckv-w2, lckv-wN, sandwich-middle, yoco, or a
    /// layer_types string such as 0_2_2_3.
    #[arg(long = "kv-plan")]
    pub kv_plan: Option<String>,
    /// KV cache element type: f16, q8_0 or f32.
    #[arg(long = "kv-type", default_value = "f16")]
    pub kv_type: String,
    /// Prompt processing for condensed plans: auto, sequential (exact) or iterative (as trained).
    #[arg(long = "prefill", default_value = "auto")]
    pub prefill: String,
    /// Early exit of iterative prefill once producers' K/V change less than this.
    #[arg(long = "early-exit")]
    pub early_exit: Option<f32>,
    /// Memory budget for the whole process, e.g. 1.5G. Refuses to start if the plan exceeds it.
    #[arg(long = "mem-budget")]
    pub mem_budget: Option<String>,
    /// Read the weights into memory instead of mapping the file.
    #[arg(long = "no-mmap")]
    pub no_mmap: bool,
    /// Lock the weights in RAM.
    #[arg(long = "mlock")]
    pub mlock: bool,
}

/// Sampling options (llama.cpp's names and defaults).
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 picks the most likely token.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    #[arg(long = "seed", default_value_t = 42)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn config(&self) -> Result<SamplerConfig> {
        let c = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        };
        c.validate().map_err(Error::Usage)?;
        Ok(c)
    }
}

/// The kernel path for this process; a bad `LCKV_KERNELS` is an error here rather than a warning.
pub fn kernels() -> Result<&'static lckv_kernels::Kernels> {
    lckv_kernels::dispatch::kernels_from_env().map_err(Error::Usage)?;
    Ok(lckv_kernels::kernels())
}

pub fn init_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        if t == 0 {
            return Err(Error::Usage("--threads must be at least 1".into()));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| Error::Usage(format!("cannot start {t} threads: {e}")))?;
    }
    Ok(())
}

/// Loads the model as the arguments say.
pub fn open(args: &ModelArgs) -> Result<Model> {
    init_threads(args.threads)?;
    let model = Model::load(
        &args.model,
        &LoadOptions {
            no_mmap: args.no_mmap,
            mlock: args.mlock,
            kv_plan: args.kv_plan.clone(),
        },
    )?;
    Ok(model)
}

/// The session options the arguments ask for (batch, KV type, prefill) with the context still
/// 0, and the memory budget: what `session` and `serve` build their plans from.
pub fn session_options(
    args: &ModelArgs,
    logit_rows: usize,
) -> Result<(SessionOptions, Option<usize>)> {
    let kv_type = parse_kv_type(&args.kv_type)?;
    let prefill = PrefillChoice::parse(&args.prefill)?;
    if let Some(t) = args.early_exit {
        if !(t >= 0.0 && t.is_finite()) {
            return Err(Error::Usage(format!(
                "--early-exit {t}: the tolerance must be a non-negative number"
            )));
        }
    }
    let budget = args.mem_budget.as_deref().map(parse_size).transpose()?;
    let opts = SessionOptions {
        n_ctx: 0,
        n_batch: args.batch,
        kv_type,
        prefill,
        early_exit: args.early_exit,
        logit_rows,
    };
    Ok((opts, budget))
}

/// The context `-c` asks for: a number, or `auto` (the longest at which `sessions` sessions fit
/// the budget).
pub fn context(
    args: &ModelArgs,
    model: &Model,
    opts: &SessionOptions,
    sessions: usize,
    budget: Option<usize>,
) -> Result<usize> {
    match args.ctx.as_deref() {
        None => Ok(DEFAULT_CTX),
        Some("auto") => {
            let b = budget.ok_or_else(|| {
                Error::Usage("-c auto needs --mem-budget to know what fits".into())
            })?;
            SessionPlan::longest_context(model, opts, sessions, b, model.cfg.n_ctx_train)
        }
        Some(s) => s.parse::<usize>().ok().filter(|&c| c > 0).ok_or_else(|| {
            Error::Usage(format!(
                "-c {s}: the context must be a positive number of tokens or 'auto'"
            ))
        }),
    }
}

/// Whether `-c` asks for the longest context that fits.
pub fn context_is_auto(args: &ModelArgs) -> bool {
    args.ctx.as_deref() == Some("auto")
}

/// Prints the model, the kernel path and the memory plan to stderr.
pub fn print_plan(
    model: &Model,
    kern: &lckv_kernels::Kernels,
    plan: &SessionPlan,
    budget: Option<usize>,
) {
    let c = &model.cfg;
    eprintln!(
        "lckv: {} {} layers, {} embd, {} heads ({} kv), vocab {}; kernels: {}",
        c.arch.name(),
        c.n_layer,
        c.n_embd,
        c.n_head,
        c.n_head_kv,
        c.n_vocab,
        kern.path()
    );
    eprintln!("lckv: KV plan {}", c.plan);
    eprintln!(
        "lckv: memory plan for {} tokens{}:\n{}",
        plan.opts.n_ctx,
        budget
            .map(|b| format!(" (budget {})", human(b)))
            .unwrap_or_default(),
        plan.memory
    );
}

/// Builds a session (context, batch, KV type, budget) and prints the plan to stderr.
pub fn session<'m>(
    args: &ModelArgs,
    model: &'m Model,
    logit_rows: usize,
    quiet: bool,
) -> Result<Session<'m>> {
    let kern = kernels()?;
    let (mut opts, budget) = session_options(args, logit_rows)?;
    opts.n_ctx = context(args, model, &opts, 1, budget)?;
    let prefill = opts.prefill;
    let plan = SessionPlan::new(model, opts, 1)?;
    if let Some(b) = budget {
        plan.memory.check(b)?;
    }
    if !quiet {
        print_plan(model, kern, &plan, budget);
    }
    let mut s = Session::from_plan(model, kern, &plan)?;
    if !quiet && !model.cfg.plan.is_identity() && prefill == PrefillChoice::Auto {
        eprintln!("lckv: prefill auto chose {:?}", s.prefill_strategy());
    }
    Ok(s)
}
