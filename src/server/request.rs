//! The one internal request and event type every API speaks: the OpenAI and Ollama handlers and
//! `pipe` translate their JSON into a `Request`, hand it to the engine through an
//! `EngineHandle`, and turn the `Event`s that come back into their own wire format. Handlers
//! never touch the model; the engine never sees JSON.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use crate::chat::Message;
use crate::sampler::SamplerConfig;
use crate::server::stats::{ServerInfo, Stats, StatsSnapshot};

/// What to complete: raw text, or a conversation rendered through the model's chat template.
#[derive(Clone, Debug)]
pub enum Prompt {
    Text(String),
    Chat(Vec<Message>),
}

/// One generation.
#[derive(Debug)]
pub struct Request {
    pub prompt: Prompt,
    /// Most tokens to generate (the context's end stops generation earlier).
    pub max_tokens: usize,
    pub sampling: SamplerConfig,
    /// Generation stops before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// Where the engine sends this request's events. Dropping the receiver cancels the request:
    /// the engine frees its slot at the next step.
    pub events: SyncSender<Event>,
}

/// Why a generation ended, in the APIs' terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// Counts and times of a finished generation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens whose K/V came from a cache (an earlier request's, or the prompt cache)
    /// instead of being computed.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// From the request reaching the engine to its first generated token.
    pub first_token_ms: f64,
    pub prompt_ms: f64,
    pub generation_ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// More text (never splits a UTF-8 character; held back while it might start a stop string).
    Text(String),
    /// The generation ended normally; no event follows.
    Done { finish: Finish, usage: Usage },
    /// The request failed (a prompt longer than the context, a template error...); no event
    /// follows. The message says what is wrong and what to do.
    Error(String),
}

/// Why the engine did not take a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is busy and the wait queue is full: try again later (HTTP 503).
    Busy,
    /// The server is shutting down.
    ShuttingDown,
}

/// The handlers' side of the engine: submit requests, read statistics. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    queue: SyncSender<Request>,
    stats: Arc<Stats>,
    info: Arc<ServerInfo>,
    stop: Arc<AtomicBool>,
}

impl EngineHandle {
    pub(crate) fn new(
        queue: SyncSender<Request>,
        stats: Arc<Stats>,
        info: Arc<ServerInfo>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        EngineHandle {
            queue,
            stats,
            info,
            stop,
        }
    }

    /// Asks the engine to end: requests in flight and waiting get an error event, and its
    /// thread returns.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Queues a request, or refuses it at once when `queue_limit` requests already wait.
    pub fn submit(&self, r: Request) -> Result<(), Refused> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Refused::ShuttingDown);
        }
        // The count, not the channel, bounds the wait: the engine moves the channel's requests
        // into its own queue every step. It is taken before sending because the engine may
        // admit the request (and count it out) before `try_send` returns.
        if !self.stats.try_queue(self.info.queue_limit.max(1)) {
            return Err(Refused::Busy);
        }
        match self.queue.try_send(r) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stats.dropped_queued();
                Err(match e {
                    TrySendError::Full(_) => Refused::Busy,
                    TrySendError::Disconnected(_) => Refused::ShuttingDown,
                })
            }
        }
    }

    /// Submits and returns the receiver of its events: the usual way to call the engine.
    pub fn start(
        &self,
        prompt: Prompt,
        max_tokens: usize,
        sampling: SamplerConfig,
        stop: Vec<String>,
    ) -> Result<Receiver<Event>, Refused> {
        // Room for a burst of tokens: a slow reader delays only itself, never the engine.
        let (tx, rx) = std::sync::mpsc::sync_channel(EVENT_BUFFER);
        self.submit(Request {
            prompt,
            max_tokens,
            sampling,
            stop,
            events: tx,
        })?;
        Ok(rx)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }
}

/// Events a request may have in flight before its reader takes them. A reader further behind
/// than this is treated as gone (its request is cancelled), so the engine never blocks on it.
pub const EVENT_BUFFER: usize = 4096;
