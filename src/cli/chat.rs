//! `lckv chat`: an interactive conversation on stdin/stdout using the model's chat template
//! (`tokenizer.chat_template`, or ChatML when the file has none). Each turn re-renders the
//! conversation and processes only the tokens the cache does not hold yet.

use std::io::{BufRead, Write};

use clap::Args;

use lckv::chat::{ChatTemplate, Message};
use lckv::generate::{generate, GenerateOptions};
use lckv::prefix::reuse_prefix;
use lckv::{Error, Result};

use super::{ModelArgs, SamplingArgs};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// System prompt.
    #[arg(long = "system")]
    pub system: Option<String>,
    /// Most tokens per answer.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    pub n_predict: usize,
}

pub fn main(a: ChatArgs) -> Result<()> {
    let sampler_cfg = a.sampling.config()?;
    let model = super::open(&a.model)?;
    let tok = model.tokenizer()?;
    let tmpl = ChatTemplate::for_model(&model, &tok)?;
    let mut session = super::session(&a.model, &model, 1, false)?;
    let mut messages: Vec<Message> = Vec::new();
    if let Some(s) = &a.system {
        messages.push(Message {
            role: "system".into(),
            content: s.clone(),
        });
    }
    let mut in_cache: Vec<u32> = Vec::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!("lckv: chat ready; an empty line or end of input quits");
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::io("reading stdin", e))?
            == 0
            || line.trim().is_empty()
        {
            break;
        }
        messages.push(Message {
            role: "user".into(),
            content: line.trim_end().to_string(),
        });
        let text = tmpl.render(&messages, true)?;
        let all = tok.encode(&text, true, true)?;
        // Reuse the cached prefix the new rendering shares with what was processed before.
        let common = reuse_prefix(&mut session, &in_cache, &all)?;
        let mut sampler = session.sampler(sampler_cfg.clone());
        let mut answer = String::new();
        let stats = generate(
            &mut session,
            &tok,
            &mut sampler,
            &all[common..],
            GenerateOptions {
                max_tokens: a.n_predict,
                ignore_eos: false,
            },
            &mut |piece| {
                answer.push_str(piece);
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            },
        )?;
        println!();
        in_cache = all;
        in_cache.truncate(session.n_past().min(in_cache.len()));
        eprintln!(
            "lckv: {} tokens at {:.1} tok/s ({})",
            stats.generated,
            stats.gen_tps(),
            stats.finish.as_str()
        );
        messages.push(Message {
            role: "assistant".into(),
            content: answer,
        });
        if stats.finish == lckv::session::FinishReason::ContextFull {
            eprintln!("lckv: the context is full; start a new chat or raise -c");
            break;
        }
    }
    Ok(())
}
