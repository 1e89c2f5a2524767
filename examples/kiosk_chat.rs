//! A kiosk's assistant: one session whose system prompt is processed once and kept in a prompt
//! cache file, so that later starts (and every question) skip it. Each line read from stdin is
//! one question, answered from the system prompt alone, as a kiosk serving strangers should.
//!
//!     cargo run --release --example kiosk_chat -- MODEL.gguf CACHE_FILE ["SYSTEM PROMPT"]
//!
//! The cache file is made on the first start, and made again when it belongs to another model,
//! plan or system prompt.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use lckv::chat::{ChatTemplate, Message};
use lckv::generate::{generate, GenerateOptions};
use lckv::model::forward::Logits;
use lckv::model::{LoadOptions, Model};
use lckv::prefix::reuse_prefix;
use lckv::prompt_cache;
use lckv::sampler::SamplerConfig;
use lckv::session::{Session, SessionOptions};
use lckv::{Error, Result};

const DEFAULT_SYSTEM: &str =
    "You are the help desk of a museum. Answer visitors' questions in one or two sentences.";

fn main() -> std::process::ExitCode {
    // Errors say what is wrong and what to do: print them as text, not as a debug dump.
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiosk_chat: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(model_path), Some(cache)) = (args.next(), args.next()) else {
        return Err(Error::Usage(
            "usage: kiosk_chat MODEL.gguf CACHE_FILE [SYSTEM_PROMPT]".into(),
        ));
    };
    let cache = PathBuf::from(cache);
    let system = Message::new("system", args.next().unwrap_or(DEFAULT_SYSTEM.into()));

    let model = Model::load(model_path.as_ref(), &LoadOptions::default())?;
    let tok = model.tokenizer()?;
    let template = ChatTemplate::for_model(&model, &tok)?;
    let opts = SessionOptions {
        n_ctx: 1024,
        ..SessionOptions::default()
    };
    let mut session = Session::new(&model, lckv_kernels::kernels(), opts)?;

    // The system prompt's tokens: every conversation starts with them.
    let head = template.render(std::slice::from_ref(&system), false)?;
    let head = tok.encode(&head, true, true)?;
    let cached = match prompt_cache::load(&cache, &mut session) {
        Ok(tokens) if tokens == head => {
            eprintln!("kiosk: system prompt restored from {}", cache.display());
            tokens
        }
        other => {
            if let Err(why) = other {
                eprintln!("kiosk: making {} ({why})", cache.display());
            }
            session.reset();
            session.prefill(&head, Logits::None, &mut |_, _| {})?;
            prompt_cache::save(&cache, &mut session, &head)?;
            head
        }
    };

    eprintln!("kiosk: ask away (end of input quits)");
    let mut stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| Error::io("reading stdin", e))?;
        if line.trim().is_empty() {
            continue;
        }
        let conversation = [system.clone(), Message::new("user", line.trim())];
        let prompt = tok.encode(&template.render(&conversation, true)?, true, true)?;
        // Only the question is run: the system prompt's positions are kept from the cache.
        let kept = reuse_prefix(&mut session, &cached, &prompt)?;
        let mut sampler = session.sampler(SamplerConfig::greedy());
        for &t in &prompt[..kept] {
            sampler.accept(t);
        }
        generate(
            &mut session,
            &tok,
            &mut sampler,
            &prompt[kept..],
            GenerateOptions {
                max_tokens: 128,
                ignore_eos: false,
            },
            &mut |piece| {
                print!("{piece}");
                let _ = stdout.flush();
            },
        )?;
        println!();
    }
    Ok(())
}
