//! `lckv serve`: the model behind the OpenAI and Ollama HTTP APIs. Loads the model, plans
//! `--parallel` sessions within `--mem-budget` (printing the memory plan), starts the engine,
//! then accepts connections and prints one line with the address once it is ready. SIGTERM or
//! SIGINT stops it cleanly: no new connections, requests in flight get an error, the engine
//! thread is joined, and the process exits 0.
//!
//! Under systemd (cross/lckv.service) it says READY=1 once the model is mapped and the arena
//! allocated and touched, pings the watchdog from the engine loop, and says STOPPING=1 on the
//! signal; with socket activation (cross/lckv.socket) it accepts on the socket systemd passed
//! instead of binding --host/--port.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use lckv::model::Model;
use lckv::server::engine::{self, EngineModel, EngineOptions};
use lckv::server::http::{self, App, ModelFacts};
use lckv::server::stats::ServerInfo;
use lckv::session::SessionPlan;
use lckv::systemd::{activation, Heartbeat, Notifier};
use lckv::{Error, Result};

use super::ModelArgs;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on. The default serves this machine only; give 0.0.0.0 (and an
    /// --api-key) to serve the network.
    #[arg(long = "host", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long = "port", default_value_t = 8080)]
    pub port: u16,
    /// Sessions generating at once, or `auto`: as many as fit --mem-budget (at most 64), or 4
    /// without a budget.
    #[arg(long = "parallel", default_value = "auto")]
    pub parallel: String,
    /// Require `Authorization: Bearer KEY` on every request except GET /health.
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// Requests that may wait for a free session; more are answered 503 with Retry-After.
    #[arg(long = "queue", default_value_t = 16)]
    pub queue: usize,
    /// Keep a prompt prefix (a shared system prompt) in FILE: restored at start into one more
    /// session of the plan, it is copied into every request that begins with it instead of
    /// being processed; missing or stale, the first request's prompt is saved there.
    #[arg(long = "prompt-cache")]
    pub prompt_cache: Option<std::path::PathBuf>,
    /// Test only: the engine loop hangs this many milliseconds after it starts, so that the
    /// tests can see the systemd watchdog pings stop (tests/systemd_notify.rs).
    #[arg(long = "test-stall-engine-after-ms", hide = true)]
    pub test_stall_engine_after_ms: Option<u64>,
}

/// Sessions when `--parallel auto` has no budget to fill.
const DEFAULT_PARALLEL: usize = 4;
/// Most sessions `--parallel auto` plans.
const MAX_AUTO_PARALLEL: usize = 64;
/// Sessions whose logits one pass over the output matrix computes in a decode step.
const LOGIT_ROWS: usize = 8;
/// How long a shutdown waits for answers in flight to be written after the engine stopped.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Where connections come from.
enum Listen {
    /// The socket systemd bound and passed (socket activation).
    Passed(TcpListener),
    /// The address of --host and --port, bound here.
    Bind(SocketAddr),
}

enum Parallel {
    Auto,
    Sessions(usize),
}

fn parse_parallel(s: &str) -> Result<Parallel> {
    match s {
        "auto" => Ok(Parallel::Auto),
        n => match n.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Parallel::Sessions(n)),
            _ => Err(Error::Usage(format!(
                "--parallel {s}: give a number of sessions (1 or more) or 'auto'"
            ))),
        },
    }
}

pub fn main(a: ServeArgs) -> Result<()> {
    let parallel = parse_parallel(&a.parallel)?;
    if a.queue == 0 {
        return Err(Error::Usage(
            "--queue 0: at least one request must be able to wait; give 1 or more".into(),
        ));
    }
    if a.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(Error::Usage(
            "--api-key is empty: give the key clients must send, or leave the flag out".into(),
        ));
    }
    // Read before any thread starts: taking the passed socket removes LISTEN_FDS/LISTEN_PID
    // from the environment.
    let listen = match activation::inherited_listener()? {
        Some(l) => Listen::Passed(l),
        None => Listen::Bind(resolve(&a.host, a.port)?),
    };
    if let Some(pc) = &a.prompt_cache {
        lckv::prompt_cache::check_replaceable(pc)?;
    }
    let notifier = Arc::new(Notifier::from_env());
    notifier.status("loading the model");
    let model = super::open(&a.model)?;
    let kern = super::kernels()?;
    let tokenizer = model.tokenizer()?;
    let template = lckv::chat::ChatTemplate::for_model(&model, &tokenizer)?;

    // A decode step computes the logits of up to this many sessions per pass over the output
    // matrix (the largest of a small model): more rows cost logit memory, fewer re-read it.
    let (mut opts, budget) = super::session_options(&a.model, LOGIT_ROWS)?;
    // The prompt cache's prefix lives in one session of the plan beside the requests' own.
    let reserved = usize::from(a.prompt_cache.is_some());
    let sessions = match parallel {
        Parallel::Sessions(n) => {
            opts.logit_rows = n.min(LOGIT_ROWS);
            opts.n_ctx = super::context(&a.model, &model, &opts, n + reserved, budget)?;
            n + reserved
        }
        Parallel::Auto => {
            if super::context_is_auto(&a.model) {
                return Err(Error::Usage(
                    "-c auto with --parallel auto: one of them must be fixed to size the other; give -c N or --parallel N".into(),
                ));
            }
            opts.n_ctx = super::context(&a.model, &model, &opts, 1, budget)?;
            match budget {
                Some(b) => {
                    let most =
                        SessionPlan::most_sessions(&model, &opts, b, MAX_AUTO_PARALLEL + reserved)?;
                    if most <= reserved {
                        return Err(Error::Usage(format!(
                            "--mem-budget {}: one session of {} tokens fits, and the prompt cache takes it; raise the budget, lower -c or leave out --prompt-cache",
                            a.model.mem_budget.as_deref().unwrap_or_default(),
                            opts.n_ctx
                        )));
                    }
                    most
                }
                None => DEFAULT_PARALLEL + reserved,
            }
        }
    };
    let plan = SessionPlan::new(&model, opts, sessions)?;
    if let Some(b) = budget {
        plan.memory.check(b)?;
    }
    super::print_plan(&model, kern, &plan, budget);
    let note = if reserved > 0 {
        " (and one holding the prompt cache)"
    } else {
        ""
    };
    eprintln!(
        "lckv: {} sessions of {} tokens{note}",
        sessions - reserved,
        plan.opts.n_ctx
    );

    // Bound before the arena is allocated, so that a port in use fails at once.
    let listener = match listen {
        Listen::Passed(l) => {
            eprintln!(
                "lckv: accepting on the socket systemd passed; --host and --port are not used"
            );
            l
        }
        Listen::Bind(addr) => TcpListener::bind(addr).map_err(|e| {
            Error::io(
                format!(
                    "listening on {addr} (is another server on that port? choose one with --port)"
                ),
                e,
            )
        })?,
    };
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;

    let info = server_info(&a, &model, &plan);
    let model_name = info.model_name.clone();
    let facts = ModelFacts {
        modified: std::fs::metadata(&a.model.model)
            .and_then(|m| m.modified())
            .ok(),
        chat_template: model
            .file
            .get_str("tokenizer.chat_template")?
            .unwrap_or_default()
            .to_string(),
        n_ctx_train: model.cfg.n_ctx_train,
    };
    // The engine's thread holds the model for the rest of the process.
    let model: &'static Model = Box::leak(Box::new(model));
    let (handle, engine_thread) = engine::spawn(
        EngineModel {
            model,
            kern,
            tokenizer,
            template,
        },
        &plan,
        info,
        EngineOptions {
            queue_limit: a.queue,
            prefill_chunk: a.model.batch,
            prompt_cache: a.prompt_cache.clone(),
            heartbeat: notifier
                .enabled()
                .then(|| Heartbeat::new(Arc::clone(&notifier))),
            stall_after: a.test_stall_engine_after_ms.map(Duration::from_millis),
        },
    )?;
    let app = Arc::new(App::new(handle.clone(), facts, a.api_key.clone()));

    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|e| Error::io("installing the SIGTERM/SIGINT handlers", e))?;
    {
        let app = Arc::clone(&app);
        let notifier = Arc::clone(&notifier);
        std::thread::Builder::new()
            .name("lckv-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                    eprintln!("lckv: {name}: stopping");
                    notifier.stopping();
                    app.begin_shutdown();
                    http::wake(local);
                }
            })
            .map_err(|e| Error::io("starting the signal thread", e))?;
    }

    if a.api_key.is_none() && !local.ip().is_loopback() {
        eprintln!(
            "lckv: warning: serving {} without --api-key: anyone who can reach it can use it",
            local.ip()
        );
    }
    // The model is mapped and engine::spawn returned after allocating and touching the arena:
    // the first request will not fault the budget in.
    notifier.ready();
    println!("lckv: serving {model_name} on http://{local}");
    let _ = std::io::stdout().flush();

    http::serve(listener, Arc::clone(&app));

    handle.shutdown();
    let engine_result = engine_thread.join();
    if !app.wait_idle(DRAIN_TIME) {
        eprintln!(
            "lckv: {} answers were still being written after {} s; closing them",
            app.in_flight(),
            DRAIN_TIME.as_secs()
        );
    }
    if engine_result.is_err() {
        return Err(Error::Model(
            "the engine thread panicked; the server stopped (see the message above)".into(),
        ));
    }
    eprintln!("lckv: stopped");
    Ok(())
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Usage(format!("--host {host}: not an address to listen on ({e})")))?
        .next()
        .ok_or_else(|| Error::Usage(format!("--host {host}: resolves to no address")))
}

/// What the server reports about the model and its plan.
fn server_info(a: &ServeArgs, model: &Model, plan: &SessionPlan) -> ServerInfo {
    let path = &a.model.model;
    let model_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let model_name = model_name
        .strip_suffix(".gguf")
        .unwrap_or(&model_name)
        .to_string();
    let tensors = model.file.tensors();
    let n_params: u64 = tensors.iter().map(|t| t.n_elements() as u64).sum();
    // The quantization is the type holding most of the matrices' elements.
    let mut by_type = std::collections::BTreeMap::<&str, u64>::new();
    for t in tensors.iter().filter(|t| t.dims.len() >= 2) {
        *by_type.entry(t.ty.name()).or_default() += t.n_elements() as u64;
    }
    let quantization = by_type
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .map(|(ty, _)| ty.to_ascii_uppercase())
        .unwrap_or_default();
    let m = &plan.memory;
    ServerInfo {
        model_name,
        model_path: path.display().to_string(),
        model_bytes: model.file.file_size(),
        arch: model.cfg.arch.name().to_string(),
        quantization,
        n_params,
        n_ctx: plan.opts.n_ctx,
        parallel: m.sessions - usize::from(a.prompt_cache.is_some()),
        kv_plan: model.cfg.plan.layer_types(),
        kv_bytes_per_token: m.kv_bytes_per_token,
        kv_capacity_bytes: m.per_session.kv_cache * m.sessions,
        planned_bytes: m.total(),
        queue_limit: a.queue,
    }
}
