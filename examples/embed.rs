//! Embedding lckv in a program: load a GGUF model, plan one session inside a memory budget
//! (refused before anything is allocated if it cannot fit), and generate, receiving the text
//! piece by piece through a callback as it is produced.
//!
//!     cargo run --release --example embed -- MODEL.gguf ["PROMPT"] [BUDGET, e.g. 512M]

use std::io::Write;
use std::path::PathBuf;

use lckv::generate::{generate, GenerateOptions};
use lckv::memory::plan::{human, parse_size};
use lckv::model::{LoadOptions, Model};
use lckv::sampler::SamplerConfig;
use lckv::session::{Session, SessionOptions, SessionPlan};
use lckv::{Error, Result};

/// The longest context the example asks for; the budget may allow less.
const MAX_CTX: usize = 2048;

fn main() -> std::process::ExitCode {
    // Errors say what is wrong and what to do: print them as text, not as a debug dump.
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        return Err(Error::Usage(
            "usage: embed MODEL.gguf [PROMPT] [BUDGET]".into(),
        ));
    };
    let prompt = args.next().unwrap_or_else(|| "The sky is".into());
    let budget = parse_size(&args.next().unwrap_or_else(|| "512M".into()))?;

    // The weights stay in the file: mapped, not copied.
    let model = Model::load(&path, &LoadOptions::default())?;
    let tok = model.tokenizer()?;

    // Everything the session will hold is planned first; the context is the longest that fits.
    let opts = SessionOptions::default();
    let n_ctx = SessionPlan::longest_context(&model, &opts, 1, budget, MAX_CTX)?;
    let plan = SessionPlan::new(&model, SessionOptions { n_ctx, ..opts }, 1)?;
    plan.memory.check(budget)?;
    eprintln!(
        "context {n_ctx} tokens, {} of {} planned",
        human(plan.memory.total()),
        human(budget)
    );
    let mut session = Session::from_plan(&model, lckv_kernels::kernels(), &plan)?;

    let tokens = tok.encode(&prompt, true, false)?;
    let mut sampler = session.sampler(SamplerConfig::greedy());
    let mut stdout = std::io::stdout();
    print!("{prompt}");
    // The callback gets each complete piece of text (never half a UTF-8 character).
    let stats = generate(
        &mut session,
        &tok,
        &mut sampler,
        &tokens,
        GenerateOptions {
            max_tokens: 64,
            ignore_eos: false,
        },
        &mut |piece| {
            print!("{piece}");
            let _ = stdout.flush();
        },
    )?;
    println!();
    eprintln!(
        "{} tokens at {:.1} tok/s ({:?})",
        stats.generated,
        stats.gen_tps(),
        stats.finish
    );
    Ok(())
}
