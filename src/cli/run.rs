//! `lckv run`: complete a prompt (or answer it through the chat template with --chat),
//! streaming tokens as they come.

use std::io::Write;

use clap::Args;

use lckv::chat::Message;
use lckv::generate::{generate, GenerateOptions};
use lckv::prefix::reuse_prefix;
use lckv::prompt_cache;
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
    /// Save the prompt's K/V here and reuse it on the next run with the same prompt prefix.
    #[arg(long = "prompt-cache")]
    pub prompt_cache: Option<std::path::PathBuf>,
    /// Print timing after the text.
    #[arg(long = "verbose", short = 'v')]
    pub verbose: bool,
}

pub fn main(a: RunArgs) -> Result<()> {
    let sampler_cfg = a.sampling.config()?;
    if let Some(pc) = &a.prompt_cache {
        lckv::prompt_cache::check_replaceable(pc)?;
    }
    let model = super::open(&a.model)?;
    let tok = model.tokenizer()?;
    let mut session = super::session(&a.model, &model, 1, false)?;
    let (text, parse_special) = if a.chat {
        let tmpl = lckv::chat::ChatTemplate::for_model(&model, &tok)?;
        (
            tmpl.render(
                &[Message {
                    role: "user".into(),
                    content: a.prompt.clone(),
                }],
                true,
            )?,
            true,
        )
    } else {
        (a.prompt.clone(), false)
    };
    let prompt = tok.encode(&text, true, parse_special)?;
    if prompt.is_empty() {
        return Err(lckv::Error::Usage(
            "the prompt is empty: give some text with -p".into(),
        ));
    }
    let mut start = 0;
    if let Some(pc) = &a.prompt_cache {
        match prompt_cache::load(pc, &mut session) {
            Ok(cached) => {
                start = reuse_prefix(&mut session, &cached, &prompt)?;
                eprintln!(
                    "lckv: prompt cache restored {start} of {} prompt tokens",
                    prompt.len()
                );
            }
            Err(why) => eprintln!("lckv: {why}"),
        }
    }
    let mut sampler = session.sampler(sampler_cfg);
    for &t in &prompt[..start] {
        sampler.accept(t);
    }
    let mut out = std::io::stdout();
    let stats = generate(
        &mut session,
        &tok,
        &mut sampler,
        &prompt[start..],
        GenerateOptions {
            max_tokens: a.n_predict,
            ignore_eos: a.ignore_eos,
        },
        &mut |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        },
    )?;
    let _ = writeln!(out);
    if let Some(pc) = &a.prompt_cache {
        if start + 1 < prompt.len() {
            let bytes = prompt_cache::save(pc, &mut session, &prompt)?;
            eprintln!(
                "lckv: saved {} prompt tokens to {} ({bytes} bytes)",
                prompt.len(),
                pc.display()
            );
        }
    }
    eprintln!(
        "lckv: prompt {} tokens at {:.1} tok/s, generated {} tokens at {:.1} tok/s, stopped: {}",
        stats.prompt_tokens,
        stats.prompt_tps(),
        stats.generated,
        stats.gen_tps(),
        stats.finish.as_str()
    );
    if let Some(rss) = super::bench::peak_rss() {
        eprintln!("lckv: peak RSS {rss} bytes");
    }
    Ok(())
}
