//! `lckv pipe`: the flags of the JSON-lines mode for voice pipelines (the protocol and the loop
//! live in the library, `lckv::pipe`). Model, context and sampling flags are `lckv chat`'s;
//! the sampling flags are the defaults a request's own fields override.

use std::path::PathBuf;

use clap::Args;

use lckv::pipe::conversation::Prompter;
use lckv::pipe::input::spawn_reader;
use lckv::pipe::protocol::Defaults;
use lckv::pipe::Pipe;
use lckv::Result;

use super::{ModelArgs, SamplingArgs};

#[derive(Args, Debug)]
pub struct PipeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// System prompt for chats (`messages`) that do not open with one of their own.
    #[arg(long = "system")]
    pub system: Option<String>,
    /// Most tokens per answer when a request gives no `max_tokens`.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    pub n_predict: usize,
    /// Save the K/V of the start every chat shares (the system prompt) here, and restore it
    /// from here on the next start instead of processing it again.
    #[arg(long = "prompt-cache")]
    pub prompt_cache: Option<PathBuf>,
}

pub fn main(a: PipeArgs) -> Result<()> {
    let defaults = Defaults {
        sampling: a.sampling.config()?,
        max_tokens: a.n_predict,
    };
    if let Some(pc) = &a.prompt_cache {
        lckv::prompt_cache::check_replaceable(pc)?;
    }
    let model = super::open(&a.model)?;
    let tok = model.tokenizer()?;
    let template = lckv::chat::ChatTemplate::for_model(&model, &tok)?;
    let session = super::session(&a.model, &model, 1, false)?;
    let prompter = Prompter {
        tok: &tok,
        template: &template,
        system: a.system.clone(),
    };
    let lines = spawn_reader(std::io::stdin(), defaults);
    let pipe = Pipe::new(
        session,
        prompter,
        lines,
        std::io::stdout(),
        a.prompt_cache.as_deref(),
    )?;
    let name = a
        .model
        .model
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    eprintln!("lckv: pipe ready; one JSON request per line on stdin, events on stdout");
    pipe.run(&name)?;
    Ok(())
}
