//! One generation from submission to the last byte, the same for every API: submit to the
//! engine (503 with Retry-After when it is busy), wait for the first event before answering (so
//! that a request the engine refuses gets a real error status), then either collect the text
//! into one response or stream each event as the API's `Dialect` writes it. While waiting it
//! watches the client: once it is gone, or a write to it fails, the event receiver is dropped
//! at once, and the engine frees the slot at its next send.

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::routes::{error_response, Api, Exchange, Outcome};
use super::wire::{BodyStream, Response};
use super::{client_gone, App};
use crate::sampler::SamplerConfig;
use crate::server::request::{Event, Finish, Prompt, Refused, Usage};

/// How often a waiting handler checks that its client is still there.
const CLIENT_CHECK: Duration = Duration::from_millis(250);

/// A generation as an API asks for it.
pub struct Ask {
    pub prompt: Prompt,
    pub max_tokens: usize,
    pub sampling: SamplerConfig,
    pub stop: Vec<String>,
    pub stream: bool,
}

/// How one API writes a generation: each streamed piece, and the whole answer.
pub trait Dialect {
    fn api(&self) -> Api;
    fn stream_content_type(&self) -> &'static str;
    /// Sent once, before the first text (e.g. the assistant role's first chunk).
    fn opening(&mut self) -> Vec<u8> {
        Vec::new()
    }
    fn text(&mut self, text: &str) -> Vec<u8>;
    /// The stream's last bytes: the finish, counts, terminator.
    fn done(&mut self, finish: Finish, usage: &Usage, elapsed: Duration) -> Vec<u8>;
    /// An error inside a stream that has already begun.
    fn error(&mut self, message: &str) -> Vec<u8>;
    /// The non-streamed answer.
    fn whole(&mut self, text: String, finish: Finish, usage: &Usage, elapsed: Duration) -> Value;
}

enum Next {
    Event(Event),
    ClientGone,
    /// The engine dropped the request without a last event (it stopped, or cancelled a reader
    /// that fell too far behind).
    EngineGone,
}

struct Events<'a> {
    rx: Receiver<Event>,
    conn: &'a TcpStream,
    checked: Instant,
}

impl Events<'_> {
    fn next(&mut self) -> Next {
        loop {
            if self.checked.elapsed() >= CLIENT_CHECK {
                self.checked = Instant::now();
                if client_gone(self.conn) {
                    return Next::ClientGone;
                }
            }
            match self.rx.recv_timeout(CLIENT_CHECK) {
                Ok(e) => return Next::Event(e),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Next::EngineGone,
            }
        }
    }
}

fn engine_gone_message(app: &App) -> &'static str {
    if app.stopping() {
        "the server is shutting down; retry against a running server"
    } else {
        "the generation ended without a result (the engine stopped, or the client read too slowly); try again"
    }
}

/// The status of an error the engine reports: the server's own shutdown is not the request's
/// fault.
fn engine_error_status(app: &App, before_text: bool) -> u16 {
    match (app.stopping(), before_text) {
        (true, _) => 503,
        (false, true) => 400,
        (false, false) => 500,
    }
}

pub fn run(app: &App, ex: &Exchange, ask: Ask, d: &mut dyn Dialect) -> Outcome {
    let api = d.api();
    let stream = ask.stream;
    let rx = match app
        .engine
        .start(ask.prompt, ask.max_tokens, ask.sampling, ask.stop)
    {
        Ok(rx) => rx,
        Err(Refused::Busy) => {
            app.refused_busy.fetch_add(1, Ordering::Relaxed);
            let info = app.engine.info();
            let msg = format!(
                "all {} sessions are busy and {} requests already wait; retry shortly",
                info.parallel, info.queue_limit
            );
            return Outcome::Respond(
                error_response(api, 503, &msg).with_header("Retry-After", "1".into()),
            );
        }
        Err(Refused::ShuttingDown) => {
            return Outcome::Respond(
                error_response(api, 503, engine_gone_message(app))
                    .with_header("Retry-After", "1".into()),
            );
        }
    };
    let mut events = Events {
        rx,
        conn: ex.conn,
        checked: Instant::now(),
    };
    let first = match events.next() {
        Next::Event(Event::Error(msg)) => {
            let status = engine_error_status(app, true);
            log(ex, status, &msg);
            return Outcome::Respond(error_response(api, status, &msg));
        }
        Next::Event(e) => e,
        Next::ClientGone => {
            log(ex, 499, "the client left before the first token");
            return Outcome::Gone;
        }
        Next::EngineGone => {
            let msg = engine_gone_message(app);
            log(ex, 503, msg);
            return Outcome::Respond(error_response(api, 503, msg));
        }
    };
    if stream {
        streamed(app, ex, events, first, d)
    } else {
        whole(app, ex, events, first, d)
    }
}

fn whole(
    app: &App,
    ex: &Exchange,
    mut events: Events,
    first: Event,
    d: &mut dyn Dialect,
) -> Outcome {
    let mut text = String::new();
    let mut event = first;
    loop {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done { finish, usage } => {
                drop(events);
                log_done(ex, 200, finish, &usage);
                let body = d.whole(text, finish, &usage, ex.received.elapsed());
                return Outcome::Respond(Response::json(200, &body));
            }
            Event::Error(msg) => {
                let status = engine_error_status(app, text.is_empty());
                log(ex, status, &msg);
                return Outcome::Respond(error_response(d.api(), status, &msg));
            }
        }
        event = match events.next() {
            Next::Event(e) => e,
            Next::ClientGone => {
                drop(events);
                log(ex, 499, "the client left during generation");
                return Outcome::Gone;
            }
            Next::EngineGone => {
                let msg = engine_gone_message(app);
                log(ex, 503, msg);
                return Outcome::Respond(error_response(d.api(), 503, msg));
            }
        };
    }
}

fn streamed(
    app: &App,
    ex: &Exchange,
    mut events: Events,
    first: Event,
    d: &mut dyn Dialect,
) -> Outcome {
    let gone = |events: Events| {
        // Dropping the receiver is what cancels the generation: do it before anything else.
        drop(events);
        log(ex, 499, "the client left during the stream");
        Outcome::Gone
    };
    let Ok(mut body) = BodyStream::start(
        ex.conn,
        ex.req.minor_version,
        d.stream_content_type(),
        ex.req.keep_alive(),
    ) else {
        return gone(events);
    };
    if body.send(&d.opening()).is_err() {
        return gone(events);
    }
    let mut event = first;
    loop {
        let bytes = match &event {
            Event::Text(t) => d.text(t),
            Event::Done { finish, usage } => {
                drop(events);
                log_done(ex, 200, *finish, usage);
                let last = d.done(*finish, usage, ex.received.elapsed());
                return finish_stream(body, &last);
            }
            Event::Error(msg) => {
                drop(events);
                log(ex, engine_error_status(app, false), msg);
                let last = d.error(msg);
                return finish_stream(body, &last);
            }
        };
        if body.send(&bytes).is_err() {
            return gone(events);
        }
        event = match events.next() {
            Next::Event(e) => e,
            Next::ClientGone => return gone(events),
            Next::EngineGone => Event::Error(engine_gone_message(app).into()),
        };
    }
}

fn finish_stream(mut body: BodyStream, last: &[u8]) -> Outcome {
    let reusable = body.reusable();
    if body.send(last).is_err() || body.finish().is_err() {
        return Outcome::Gone;
    }
    Outcome::Streamed { reusable }
}

/// One line per generation on stderr (the service's journal).
fn log(ex: &Exchange, status: u16, what: &str) {
    eprintln!(
        "lckv: {} {} {} {status} after {:.2} s: {what}",
        ex.peer,
        ex.req.method,
        ex.req.path,
        ex.received.elapsed().as_secs_f64()
    );
}

fn log_done(ex: &Exchange, status: u16, finish: Finish, u: &Usage) {
    log(
        ex,
        status,
        &format!(
            "{} prompt + {} generated tokens, {}",
            u.prompt_tokens,
            u.completion_tokens,
            finish.as_str()
        ),
    );
}
