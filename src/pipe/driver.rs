//! The `lckv pipe` loop: one session, one request at a time. Before the first request it
//! prefills the start every chat shares (restored from `--prompt-cache` when the file matches,
//! saved there when not). Each request's prompt reuses what the cache holds
//! (`prefix::reuse_prefix`), so a conversation's next turn runs only its new tokens; then it
//! generates, streaming token and sentence events and looking at the input between tokens for a
//! cancel. It ends when the input has ended and every request read is answered.
//!
//! The session holds one sequence: the conversation that ran last. Switching conversations
//! keeps the shared start and runs the other's history again.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use serde_json::Value;

use crate::generate::{generate_with, Flow, GenerateOptions};
use crate::model::forward::Logits;
use crate::prefix::reuse_prefix;
use crate::prompt_cache;
use crate::session::{FinishReason, Session};
use crate::stop::{StopMatcher, StopStep};
use crate::{Error, Result};

use super::conversation::{with_answer, Conversations, Prompter};
use super::events::{Done, Events, Finish};
use super::inbox::{Inbox, Job};
use super::protocol::{Line, Request};
use super::sentences::SentenceSplitter;

pub struct Pipe<'m, W: Write + Send> {
    session: Session<'m>,
    prompter: Prompter<'m>,
    conversations: Conversations,
    /// The tokens at the session's first positions (only the first `n_past` are still there).
    in_cache: Vec<u32>,
    inbox: Inbox,
    events: Events<W>,
}

impl<'m, W: Write + Send> Pipe<'m, W> {
    /// Sets up the loop and prefills the shared chat start (or restores it from
    /// `prompt_cache`). Progress goes to stderr; stdout carries only events.
    pub fn new(
        mut session: Session<'m>,
        prompter: Prompter<'m>,
        lines: Receiver<Line>,
        out: W,
        prompt_cache: Option<&Path>,
    ) -> Result<Pipe<'m, W>> {
        let prefix = prompter.chat_prefix().map_err(Error::Usage)?;
        let mut in_cache = Vec::new();
        if let Some(pc) = prompt_cache {
            match prompt_cache::load(pc, &mut session) {
                Ok(tokens) => in_cache = tokens,
                Err(why) => eprintln!("lckv: {why}"),
            }
        }
        let held = &in_cache[..in_cache.len().min(session.n_past())];
        let kept = held.iter().zip(&prefix).take_while(|(a, b)| a == b).count();
        session.set_n_past(kept)?;
        if kept < prefix.len() {
            session.prefill(&prefix[kept..], Logits::None, &mut |_, _| {})?;
        }
        eprintln!(
            "lckv: chat start of {} tokens ready ({kept} from the prompt cache)",
            prefix.len()
        );
        if let Some(pc) = prompt_cache {
            if kept < prefix.len() && !prefix.is_empty() {
                let bytes = prompt_cache::save(pc, &mut session, &prefix)?;
                eprintln!(
                    "lckv: saved {} tokens to {} ({bytes} bytes)",
                    prefix.len(),
                    pc.display()
                );
            }
        }
        Ok(Pipe {
            session,
            prompter,
            conversations: Conversations::new(),
            in_cache: prefix,
            inbox: Inbox::new(lines),
            events: Events::new(out),
        })
    }

    /// Answers requests until the input ends; fails only when the events cannot be written.
    pub fn run(mut self, model_name: &str) -> Result<W> {
        self.events.ready(model_name, self.session.n_ctx());
        while let Some(job) = self.inbox.next_job(&mut self.events) {
            match job {
                Job::Generate(r) => self.answer(*r),
                Job::Forget(name) => self.forget(&name),
            }
            if let Some(e) = self.events.failed() {
                return Err(Error::io(
                    "writing events to stdout",
                    std::io::Error::new(e.kind(), e.to_string()),
                ));
            }
        }
        Ok(self.events.into_inner())
    }

    fn forget(&mut self, name: &str) {
        if self.conversations.remove(name).is_some() {
            self.events.forgotten(name);
        } else {
            let mut known: Vec<&str> = self.conversations.keys().map(String::as_str).collect();
            known.sort_unstable();
            self.events.error(
                None,
                &format!(
                    "unknown conversation '{name}': nothing to forget (known: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    }

    fn answer(&mut self, req: Request) {
        let started = Instant::now();
        let id = &req.id;
        let history = req
            .conversation
            .as_ref()
            .and_then(|c| self.conversations.get(c));
        let prompt = match self.prompter.prompt(history, &req.input) {
            Ok(p) => p,
            Err(why) => return self.events.error(Some(id), &why),
        };
        let n_ctx = self.session.n_ctx();
        if prompt.tokens.len() >= n_ctx {
            let whose = match &req.conversation {
                Some(c) => format!(
                    "conversation '{c}' has grown to {} tokens; forget it ({{\"forget\":\"{c}\"}}) and start again, or",
                    prompt.tokens.len()
                ),
                None => format!(
                    "the prompt has {} tokens; shorten it, or",
                    prompt.tokens.len()
                ),
            };
            return self.events.error(
                Some(id),
                &format!("the context holds {n_ctx} tokens, answer included: {whose} start lckv pipe with a larger -c"),
            );
        }
        let common = match reuse_prefix(&mut self.session, &self.in_cache, &prompt.tokens) {
            Ok(n) => n,
            Err(e) => return self.events.error(Some(id), &e.to_string()),
        };
        let mut sampler = self.session.sampler(req.sampling.clone());
        for &t in &prompt.tokens[..common] {
            sampler.accept(t);
        }
        let mut turn = Turn {
            id,
            answer: String::new(),
            stop: StopMatcher::new(req.stop.clone()),
            sentences: SentenceSplitter::new(),
            // Reserved here so that recording a token never allocates.
            ids: Vec::with_capacity(req.max_tokens.min(n_ctx) + 1),
            first: None,
            cancelled: false,
            stopped: false,
        };
        let (events, inbox) = (&mut self.events, &mut self.inbox);
        let result = generate_with(
            &mut self.session,
            self.prompter.tok,
            &mut sampler,
            &prompt.tokens[common..],
            GenerateOptions {
                max_tokens: req.max_tokens,
                ignore_eos: false,
            },
            &mut |token, piece| {
                if turn.stopped || turn.cancelled {
                    return Flow::Stop;
                }
                if let Some(t) = token {
                    turn.ids.push(t);
                    turn.first.get_or_insert_with(Instant::now);
                    if inbox.poll(turn.id, events) {
                        turn.cancelled = true;
                        return Flow::Stop;
                    }
                }
                turn.piece(events, piece)
            },
        );
        let stats = match result {
            Ok(s) => s,
            Err(e) => {
                // What the cache holds is unknown now: reuse nothing of it.
                self.in_cache.clear();
                self.session.reset();
                return self.events.error(Some(id), &e.to_string());
            }
        };
        turn.end(&mut self.events);
        let prompt_tokens = prompt.tokens.len();
        self.in_cache = prompt.tokens;
        self.in_cache.extend_from_slice(&turn.ids);
        self.in_cache.truncate(self.session.n_past());
        if let Some(c) = &req.conversation {
            let h = with_answer(prompt.history, &turn.answer, &self.in_cache);
            self.conversations.insert(c.clone(), h);
        }
        let finish = match stats.finish {
            _ if turn.cancelled => Finish::Cancelled,
            FinishReason::EndOfText | FinishReason::Stopped => Finish::Stop,
            FinishReason::Length | FinishReason::ContextFull => Finish::Length,
        };
        let first = turn.first.unwrap_or_else(Instant::now);
        let done = Done {
            prompt_tokens,
            prefilled_tokens: stats.prompt_tokens,
            generated_tokens: stats.generated,
            ttft_ms: (first - started).as_secs_f64() * 1e3,
            tokens_per_s: stats.gen_tps(),
        };
        self.events.done(id, done, finish);
    }
}

/// One request's answer as it streams: the text so far, stop strings, sentences, the tokens.
struct Turn<'r> {
    id: &'r Value,
    answer: String,
    stop: StopMatcher,
    sentences: SentenceSplitter,
    ids: Vec<u32>,
    first: Option<Instant>,
    cancelled: bool,
    /// A stop string came: nothing after it is said.
    stopped: bool,
}

impl Turn<'_> {
    fn piece<W: Write>(&mut self, events: &mut Events<W>, piece: &str) -> Flow {
        match self.stop.push(piece) {
            StopStep::Go(text) => {
                self.say(events, &text);
                Flow::Go
            }
            StopStep::Stop(text) => {
                self.say(events, &text);
                self.stopped = true;
                Flow::Stop
            }
        }
    }

    fn say<W: Write>(&mut self, events: &mut Events<W>, text: &str) {
        if text.is_empty() {
            return;
        }
        events.token(self.id, text);
        self.answer.push_str(text);
        let id = self.id;
        self.sentences.push(text, &mut |s| events.sentence(id, s));
    }

    /// Releases what a stop string held back (unless the answer was cut) and the last sentence.
    /// A cancelled answer's unfinished sentence is not handed out: the listener has cut in,
    /// and a speech engine should say nothing more of it.
    fn end<W: Write>(&mut self, events: &mut Events<W>) {
        if self.cancelled {
            return;
        }
        if !self.stopped {
            let rest = self.stop.finish();
            self.say(events, &rest);
        }
        let id = self.id;
        self.sentences.finish(&mut |s| events.sentence(id, s));
    }
}
