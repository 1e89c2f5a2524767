//! What `lckv pipe` writes: one JSON object per line, each flushed at once so a speech engine
//! downstream hears a sentence the moment it is finished. Only this writer touches stdout.
//! A write that fails (the reader is gone) is remembered, and the loop ends on it.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

/// How a generation ended, in the protocol's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
    /// A `cancel` line.
    Cancelled,
}

/// The figures of a finished request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Done {
    /// Tokens of the prompt as the model saw it (a conversation's whole history).
    pub prompt_tokens: usize,
    /// Those of them that were run now; the rest were already in the cache.
    pub prefilled_tokens: usize,
    pub generated_tokens: usize,
    /// From the request's start to its first token.
    pub ttft_ms: f64,
    pub tokens_per_s: f64,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Event<'a> {
    Ready {
        model: &'a str,
        n_ctx: usize,
    },
    Token {
        id: &'a Value,
        text: &'a str,
    },
    Sentence {
        id: &'a Value,
        text: &'a str,
    },
    Done {
        id: &'a Value,
        #[serde(flatten)]
        done: Done,
        finish_reason: Finish,
    },
    Forgotten {
        conversation: &'a str,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        message: &'a str,
    },
}

/// The event stream on `W` (stdout in the program, a buffer in tests).
pub struct Events<W: Write> {
    out: W,
    line: Vec<u8>,
    failed: Option<std::io::Error>,
}

impl<W: Write> Events<W> {
    pub fn new(out: W) -> Events<W> {
        Events {
            out,
            line: Vec::with_capacity(256),
            failed: None,
        }
    }

    /// The first write error, if any: the reader of the events has gone.
    pub fn failed(&self) -> Option<&std::io::Error> {
        self.failed.as_ref()
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn write(&mut self, e: &Event) {
        if self.failed.is_some() {
            return;
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, e).expect("events serialize");
        self.line.push(b'\n');
        let r = self
            .out
            .write_all(&self.line)
            .and_then(|_| self.out.flush());
        if let Err(err) = r {
            self.failed = Some(err);
        }
    }

    pub fn ready(&mut self, model: &str, n_ctx: usize) {
        self.write(&Event::Ready { model, n_ctx });
    }

    pub fn token(&mut self, id: &Value, text: &str) {
        if !text.is_empty() {
            self.write(&Event::Token { id, text });
        }
    }

    pub fn sentence(&mut self, id: &Value, text: &str) {
        self.write(&Event::Sentence { id, text });
    }

    pub fn done(&mut self, id: &Value, done: Done, finish_reason: Finish) {
        self.write(&Event::Done {
            id,
            done,
            finish_reason,
        });
    }

    pub fn forgotten(&mut self, conversation: &str) {
        self.write(&Event::Forgotten { conversation });
    }

    pub fn error(&mut self, id: Option<&Value>, message: &str) {
        self.write(&Event::Error { id, message });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_object_per_line() {
        let mut ev = Events::new(Vec::new());
        let id = Value::from(7);
        ev.token(&id, "Hi");
        ev.token(&id, "");
        ev.sentence(&id, "Hi there.");
        ev.done(
            &id,
            Done {
                prompt_tokens: 9,
                prefilled_tokens: 4,
                generated_tokens: 2,
                ttft_ms: 1.5,
                tokens_per_s: 20.0,
            },
            Finish::Cancelled,
        );
        ev.error(None, "bad");
        let text = String::from_utf8(ev.into_inner()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "an empty token is not sent");
        assert_eq!(
            lines[0],
            serde_json::json!({"event":"token","id":7,"text":"Hi"})
        );
        assert_eq!(lines[1]["event"], "sentence");
        assert_eq!(lines[2]["finish_reason"], "cancelled");
        assert_eq!(lines[2]["prefilled_tokens"], 4);
        assert_eq!(
            lines[3],
            serde_json::json!({"event":"error","message":"bad"})
        );
    }
}
