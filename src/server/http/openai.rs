//! The OpenAI API: `POST /v1/chat/completions` (messages through the chat template),
//! `POST /v1/completions` (a raw prompt) and `GET /v1/models`, in the shapes OpenAI returns them:
//! `chat.completion` / `text_completion` objects, or server-sent events `data: {chunk}` ending
//! with `data: [DONE]`, with `usage` at the end of a stream when `stream_options.include_usage`
//! asks for it. The `model` field is not checked: the server serves the one model it loaded.
//!
//! Besides OpenAI's fields, `top_k`, `min_p`, `repeat_penalty` and `repeat_last_n` are taken, as
//! llama.cpp's server does. Fields the model cannot honour and that would change the answer's
//! shape (`n` other than 1) are refused; others (`tools`, `response_format`, penalties) are
//! ignored.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::fields::{parse_object, BadRequest, Fields};
use super::generation::{self, Ask, Dialect};
use super::routes::{error_response, Api, Exchange, Outcome};
use super::wire::Response;
use super::{random_u64, unix_seconds, App};
use crate::chat::Message;
use crate::server::request::{Finish, Prompt, Usage};

pub fn models(app: &App) -> Response {
    let info = app.engine.info();
    Response::json(
        200,
        &json!({
            "object": "list",
            "data": [{
                "id": info.model_name,
                "object": "model",
                "created": app.facts.modified.map_or(0, unix_seconds),
                "owned_by": "lckv",
            }],
        }),
    )
}

pub fn chat(app: &App, ex: &Exchange) -> Outcome {
    match chat_request(app, ex) {
        Ok((ask, mut d)) => generation::run(app, ex, ask, &mut d),
        Err(BadRequest(m)) => Outcome::Respond(error_response(Api::OpenAi, 400, &m)),
    }
}

pub fn completions(app: &App, ex: &Exchange) -> Outcome {
    match completion_request(app, ex) {
        Ok((ask, mut d)) => generation::run(app, ex, ask, &mut d),
        Err(BadRequest(m)) => Outcome::Respond(error_response(Api::OpenAi, 400, &m)),
    }
}

/// The fields both endpoints share: token limit, stop strings, sampling, streaming.
fn common(app: &App, f: &Fields, prompt: Prompt) -> Result<(Ask, bool), BadRequest> {
    if let Some(n) = f.int("n")? {
        if n != 1 {
            return Err(BadRequest(format!(
                "'n' must be 1: this server makes one choice per request, got {n}"
            )));
        }
    }
    let max_tokens = match f.count("max_completion_tokens")? {
        Some(n) => Some(n),
        None => f.count("max_tokens")?,
    }
    // Absent: until the model stops or the context is full.
    .unwrap_or(app.engine.info().n_ctx);
    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.object("stream_options", "stream_options.")? {
        Some(o) => o.bool("include_usage")?.unwrap_or(false),
        None => false,
    };
    let ask = Ask {
        prompt,
        max_tokens,
        sampling: f.sampling()?,
        stop: f.stop("stop")?,
        stream,
    };
    Ok((ask, include_usage))
}

fn chat_request(app: &App, ex: &Exchange) -> Result<(Ask, ChatDialect), BadRequest> {
    let body = parse_object(&ex.req.body)?;
    let f = Fields::new(&body);
    let Some(list) = f.array("messages")? else {
        return Err(BadRequest(
            "'messages' is required: an array of {\"role\", \"content\"} objects".into(),
        ));
    };
    if list.is_empty() {
        return Err(BadRequest(
            "'messages' is empty: send at least one message".into(),
        ));
    }
    let messages = list
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let (ask, include_usage) = common(app, &f, Prompt::Chat(messages))?;
    Ok((ask, ChatDialect(Head::new(app, include_usage, "chatcmpl"))))
}

/// One message: `role` and `content` (a string, an array of text parts, or null).
fn message(i: usize, m: &Value) -> Result<Message, BadRequest> {
    let Value::Object(obj) = m else {
        return Err(BadRequest(format!(
            "'messages[{i}]' must be an object with 'role' and 'content'"
        )));
    };
    let role = match obj.get("role") {
        Some(Value::String(r)) => r.clone(),
        _ => {
            return Err(BadRequest(format!(
                "'messages[{i}].role' must be a string such as \"user\""
            )))
        }
    };
    let content = match obj.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some(other), _) if other != "text" => {
                        return Err(BadRequest(format!(
                            "'messages[{i}].content[{j}]' is a '{other}' part: this model takes text only"
                        )))
                    }
                    _ => {
                        return Err(BadRequest(format!(
                            "'messages[{i}].content[{j}]' must be {{\"type\": \"text\", \"text\": \"...\"}}"
                        )))
                    }
                }
            }
            texts.join("\n")
        }
        Some(_) => {
            return Err(BadRequest(format!(
                "'messages[{i}].content' must be a string or an array of text parts"
            )))
        }
    };
    Ok(Message { role, content })
}

fn completion_request(app: &App, ex: &Exchange) -> Result<(Ask, CompletionDialect), BadRequest> {
    let body = parse_object(&ex.req.body)?;
    let f = Fields::new(&body);
    let prompt = match body.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        // A batch of one prompt is still one prompt.
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::Array(_)) => return Err(BadRequest(
            "'prompt' must be one string: send one request per prompt (token arrays are not taken)"
                .into(),
        )),
        None | Some(Value::Null) => {
            return Err(BadRequest("'prompt' is required: a string".into()))
        }
        Some(_) => return Err(BadRequest("'prompt' must be a string".into())),
    };
    let (ask, include_usage) = common(app, &f, Prompt::Text(prompt))?;
    Ok((
        ask,
        CompletionDialect(Head::new(app, include_usage, "cmpl")),
    ))
}

/// What every object of one response repeats.
struct Head {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Head {
    fn new(app: &App, include_usage: bool, prefix: &str) -> Head {
        Head {
            id: format!("{prefix}-{:016x}{:08x}", random_u64(), random_u64() as u32),
            created: unix_seconds(SystemTime::now()),
            model: app.engine.info().model_name.clone(),
            include_usage,
        }
    }

    /// A streamed object; while usage is asked for, every chunk carries `"usage": null`.
    fn chunk(&self, object: &str, choices: Value) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    fn usage_chunk(&self, object: &str, u: &Usage) -> Vec<u8> {
        if !self.include_usage {
            return Vec::new();
        }
        let mut v = self.chunk(object, json!([]));
        v["usage"] = usage(u);
        sse(&v)
    }
}

fn usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

fn sse(v: &Value) -> Vec<u8> {
    format!("data: {v}\n\n").into_bytes()
}

const DONE: &[u8] = b"data: [DONE]\n\n";

/// An error inside an event stream, as OpenAI sends it (the client raises it).
fn sse_error(message: &str) -> Vec<u8> {
    let mut out = sse(&json!({
        "error": { "message": message, "type": "server_error", "param": null, "code": null }
    }));
    out.extend_from_slice(DONE);
    out
}

struct ChatDialect(Head);

impl Dialect for ChatDialect {
    fn api(&self) -> Api {
        Api::OpenAi
    }

    fn stream_content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn opening(&mut self) -> Vec<u8> {
        sse(&self.0.chunk(
            "chat.completion.chunk",
            json!([{
                "index": 0,
                "delta": { "role": "assistant", "content": "" },
                "logprobs": null,
                "finish_reason": null,
            }]),
        ))
    }

    fn text(&mut self, text: &str) -> Vec<u8> {
        sse(&self.0.chunk(
            "chat.completion.chunk",
            json!([{
                "index": 0,
                "delta": { "content": text },
                "logprobs": null,
                "finish_reason": null,
            }]),
        ))
    }

    fn done(&mut self, finish: Finish, u: &Usage, _: Duration) -> Vec<u8> {
        let mut out = sse(&self.0.chunk(
            "chat.completion.chunk",
            json!([{
                "index": 0,
                "delta": {},
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }]),
        ));
        out.extend(self.0.usage_chunk("chat.completion.chunk", u));
        out.extend_from_slice(DONE);
        out
    }

    fn error(&mut self, message: &str) -> Vec<u8> {
        sse_error(message)
    }

    fn whole(&mut self, text: String, finish: Finish, u: &Usage, _: Duration) -> Value {
        json!({
            "id": self.0.id,
            "object": "chat.completion",
            "created": self.0.created,
            "model": self.0.model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }],
            "usage": usage(u),
        })
    }
}

struct CompletionDialect(Head);

impl CompletionDialect {
    fn choice(text: &str, finish: Option<Finish>) -> Value {
        json!([{
            "index": 0,
            "text": text,
            "logprobs": null,
            "finish_reason": finish.map(Finish::as_str),
        }])
    }
}

impl Dialect for CompletionDialect {
    fn api(&self) -> Api {
        Api::OpenAi
    }

    fn stream_content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn text(&mut self, text: &str) -> Vec<u8> {
        sse(&self.0.chunk("text_completion", Self::choice(text, None)))
    }

    fn done(&mut self, finish: Finish, u: &Usage, _: Duration) -> Vec<u8> {
        let mut out = sse(&self
            .0
            .chunk("text_completion", Self::choice("", Some(finish))));
        out.extend(self.0.usage_chunk("text_completion", u));
        out.extend_from_slice(DONE);
        out
    }

    fn error(&mut self, message: &str) -> Vec<u8> {
        sse_error(message)
    }

    fn whole(&mut self, text: String, finish: Finish, u: &Usage, _: Duration) -> Value {
        json!({
            "id": self.0.id,
            "object": "text_completion",
            "created": self.0.created,
            "model": self.0.model,
            "choices": Self::choice(&text, Some(finish)),
            "usage": usage(u),
        })
    }
}
