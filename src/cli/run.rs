//! `lckv run`: complete a prompt (or answer it through the chat template with --chat),
//! streaming tokens as they come.

use std::io::Write;

use clap::Args;

use lckv::chat::Message;
use lckv::generate::{generate, GenerateOptions};
use lckv::sampler::Sampler;
use lckv::Result;

use super::{ModelArgs, SamplingArgs};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The prompt.
    #[arg(short = 'p', long = "prompt")]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Keep generating past end-of-text tokens.
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long = "chat")]
    pub chat: bool,
    /// Print timing after the text.
    #[arg(long = "verbose", short = 'v')]
    pub verbose: bool,
}

pub fn main(a: RunArgs) -> Result<()> {
    let sampler_cfg = a.sampling.config()?;
    let model = super::open(&a.model)?;
    let tok = model.tokenizer()?;
    let mut session = super::session(&a.model, &model, 1, false)?;
    let (text, parse_special) = if a.chat {
        let tmpl = super::chat::template_for(&model, &tok)?;
        (tmpl.render(&[Message { role: "user".into(), content: a.prompt.clone() }], true)?, true)
    } else {
        (a.prompt.clone(), false)
    };
    let prompt = tok.encode(&text, true, parse_special)?;
    let mut sampler = Sampler::new(sampler_cfg, model.cfg.n_vocab);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stats = generate(
        &mut session,
        &tok,
        &mut sampler,
        &prompt,
        GenerateOptions { max_tokens: a.n_predict, ignore_eos: a.ignore_eos },
        &mut |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        },
    )?;
    let _ = writeln!(out);
    eprintln!(
        "lckv: prompt {} tokens at {:.1} tok/s, generated {} tokens at {:.1} tok/s, stopped: {}",
        stats.prompt_tokens,
        stats.prompt_tps(),
        stats.generated,
        stats.gen_tps(),
        stats.finish.as_str()
    );
    Ok(())
}
