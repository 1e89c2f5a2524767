//! The Ollama API, the one Home Assistant's integration speaks: `POST /api/chat` and
//! `POST /api/generate` (newline-delimited JSON objects by default, one object with
//! `"stream": false`; the last has `done: true`, `done_reason` and Ollama's counts and durations
//! in nanoseconds), and `GET /api/tags`, `POST /api/show`, `GET /api/ps`, `GET /api/version`.
//!
//! As in Ollama, `/api/generate` renders the prompt (and `system`) through the chat template
//! unless `raw` is true, and a request without messages or prompt just reports the model loaded
//! (`done_reason: "load"`). The `model` field is not checked: the server serves the one model it
//! loaded. `options.num_ctx` is accepted but capped: every session's context is the server's
//! `-c`, whatever a request asks. `format`, `keep_alive`, `tools` and `think` are ignored;
//! images, a custom `template`, `suffix` and `context` are refused, since they would be
//! silently wrong.

use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use super::fields::{parse_object, BadRequest, Fields};
use super::generation::{self, Ask, Dialect};
use super::routes::{error_response, Api, Exchange, Outcome};
use super::wire::Response;
use super::{rfc3339, App};
use crate::chat::Message;
use crate::server::request::{Finish, Prompt, Usage};

pub fn version() -> Response {
    Response::json(200, &json!({ "version": env!("CARGO_PKG_VERSION") }))
}

/// "135M", "1.2B": Ollama's way of writing a parameter count.
fn parameter_size(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0}M", n / 1e6)
    } else {
        format!("{n}")
    }
}

fn details(app: &App) -> Value {
    let info = app.engine.info();
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": info.arch,
        "families": [info.arch],
        "parameter_size": parameter_size(info.n_params),
        "quantization_level": info.quantization,
    })
}

fn modified_at(app: &App) -> String {
    rfc3339(app.facts.modified.unwrap_or(SystemTime::UNIX_EPOCH), false)
}

pub fn tags(app: &App) -> Response {
    let info = app.engine.info();
    Response::json(
        200,
        &json!({
            "models": [{
                "name": info.model_name,
                "model": info.model_name,
                "modified_at": modified_at(app),
                "size": info.model_bytes,
                "details": details(app),
            }],
        }),
    )
}

pub fn ps(app: &App) -> Response {
    let info = app.engine.info();
    Response::json(
        200,
        &json!({
            "models": [{
                "name": info.model_name,
                "model": info.model_name,
                // What the memory plan holds for the whole server; no GPU memory.
                "size": info.planned_bytes,
                "size_vram": 0,
                "details": details(app),
                "context_length": info.n_ctx,
            }],
        }),
    )
}

pub fn show(app: &App, ex: &Exchange) -> Response {
    // The body names a model; the one served is described whatever it names, but the body
    // must still be a JSON object.
    if let Err(BadRequest(m)) = parse_object(&ex.req.body) {
        return error_response(Api::Ollama, 400, &m);
    }
    let info = app.engine.info();
    let mut model_info = Map::new();
    model_info.insert("general.architecture".into(), json!(info.arch));
    model_info.insert("general.parameter_count".into(), json!(info.n_params));
    model_info.insert(
        format!("{}.context_length", info.arch),
        json!(app.facts.n_ctx_train),
    );
    let d = crate::sampler::SamplerConfig::default();
    let parameters = format!(
        "num_ctx {}\ntemperature {}\ntop_k {}\ntop_p {}\nmin_p {}\nrepeat_penalty {}\nrepeat_last_n {}",
        info.n_ctx, d.temperature, d.top_k, d.top_p, d.min_p, d.repeat_penalty, d.repeat_last_n
    );
    Response::json(
        200,
        &json!({
            "modelfile": "",
            "parameters": parameters,
            "template": app.facts.chat_template,
            "details": details(app),
            "model_info": model_info,
            "capabilities": ["completion"],
            "modified_at": modified_at(app),
        }),
    )
}

pub fn chat(app: &App, ex: &Exchange) -> Outcome {
    let parsed = parse_object(&ex.req.body).and_then(|body| {
        let f = Fields::new(&body);
        let stream = f.bool("stream")?.unwrap_or(true);
        let messages = match f.array("messages")? {
            None => Vec::new(),
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, m)| message(i, m))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let mut d = OllamaDialect::new(app, Kind::Chat);
        if messages.is_empty() {
            return Ok(Err(d.loaded(stream)));
        }
        Ok(Ok((request(app, &f, Prompt::Chat(messages), stream)?, d)))
    });
    answer(app, ex, parsed)
}

pub fn generate(app: &App, ex: &Exchange) -> Outcome {
    let parsed = parse_object(&ex.req.body).and_then(|body| {
        let f = Fields::new(&body);
        let stream = f.bool("stream")?.unwrap_or(true);
        for (field, why) in [
            ("template", "a custom template is not supported: send raw: true with the prompt already formatted"),
            ("suffix", "'suffix' (fill-in-the-middle) is not supported"),
        ] {
            if f.string(field)?.is_some_and(|s| !s.is_empty()) {
                return Err(BadRequest(why.into()));
            }
        }
        if f.array("context")?.is_some_and(|c| !c.is_empty()) {
            return Err(BadRequest(
                "'context' is not supported: send the whole conversation to /api/chat instead"
                    .into(),
            ));
        }
        no_images(f.array("images")?, "images")?;
        let prompt = f.string("prompt")?.unwrap_or("");
        let mut d = OllamaDialect::new(app, Kind::Generate);
        if prompt.is_empty() {
            return Ok(Err(d.loaded(stream)));
        }
        let prompt = if f.bool("raw")?.unwrap_or(false) {
            Prompt::Text(prompt.to_string())
        } else {
            let mut msgs = Vec::new();
            if let Some(s) = f.string("system")?.filter(|s| !s.is_empty()) {
                msgs.push(Message::new("system", s));
            }
            msgs.push(Message::new("user", prompt));
            Prompt::Chat(msgs)
        };
        Ok(Ok((request(app, &f, prompt, stream)?, d)))
    });
    answer(app, ex, parsed)
}

/// What a request came to: a generation, or an answer without one.
type Parsed = Result<Result<(Ask, OllamaDialect), Response>, BadRequest>;

fn answer(app: &App, ex: &Exchange, parsed: Parsed) -> Outcome {
    match parsed {
        Ok(Ok((ask, mut d))) => generation::run(app, ex, ask, &mut d),
        Ok(Err(r)) => Outcome::Respond(r),
        Err(BadRequest(m)) => Outcome::Respond(error_response(Api::Ollama, 400, &m)),
    }
}

fn no_images(images: Option<&Vec<Value>>, field: &str) -> Result<(), BadRequest> {
    if images.is_some_and(|i| !i.is_empty()) {
        return Err(BadRequest(format!(
            "'{field}' were sent but this model takes text only"
        )));
    }
    Ok(())
}

fn message(i: usize, m: &Value) -> Result<Message, BadRequest> {
    let Value::Object(obj) = m else {
        return Err(BadRequest(format!(
            "'messages[{i}]' must be an object with 'role' and 'content'"
        )));
    };
    let f = Fields::new(obj);
    let role = f.string("role")?.ok_or_else(|| {
        BadRequest(format!(
            "'messages[{i}].role' is required: a string such as \"user\""
        ))
    })?;
    no_images(f.array("images")?, &format!("messages[{i}].images"))?;
    let content = f
        .string("content")
        .map_err(|_| BadRequest(format!("'messages[{i}].content' must be a string")))?
        .unwrap_or("");
    Ok(Message::new(role, content))
}

/// The generation `options` asks for (the sampling fields live there in Ollama).
fn request(app: &App, f: &Fields, prompt: Prompt, stream: bool) -> Result<Ask, BadRequest> {
    let empty = Map::new();
    let o = f
        .object("options", "options.")?
        .unwrap_or_else(|| Fields::new(&empty));
    // Accepted for compatibility; the context is the server's (see the module's notes).
    o.count("num_ctx")?;
    let n_ctx = app.engine.info().n_ctx;
    let max_tokens = match o.int("num_predict")? {
        // -1 (forever) and -2 (fill the context) both end at the context's end here.
        None => n_ctx,
        Some(n) if n < 0 => n_ctx,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    Ok(Ask {
        prompt,
        max_tokens,
        sampling: o.sampling()?,
        stop: o.stop("stop")?,
        stream,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Generate,
}

struct OllamaDialect {
    kind: Kind,
    model: String,
}

impl OllamaDialect {
    fn new(app: &App, kind: Kind) -> OllamaDialect {
        OllamaDialect {
            kind,
            model: app.engine.info().model_name.clone(),
        }
    }

    /// An object carrying `text` (the message for chat, `response` for generate).
    fn object(&self, text: &str, done: bool) -> Value {
        let mut v = json!({
            "model": self.model,
            "created_at": rfc3339(SystemTime::now(), true),
        });
        match self.kind {
            Kind::Chat => v["message"] = json!({ "role": "assistant", "content": text }),
            Kind::Generate => v["response"] = json!(text),
        }
        v["done"] = json!(done);
        v
    }

    fn last(&self, text: &str, finish: Finish, u: &Usage, elapsed: Duration) -> Value {
        let ns = |ms: f64| (ms * 1e6).round() as u64;
        let mut v = self.object(text, true);
        v["done_reason"] = json!(finish.as_str());
        v["total_duration"] = json!(elapsed.as_nanos() as u64);
        v["load_duration"] = json!(0);
        v["prompt_eval_count"] = json!(u.prompt_tokens);
        v["prompt_eval_duration"] = json!(ns(u.prompt_ms));
        v["eval_count"] = json!(u.completion_tokens);
        v["eval_duration"] = json!(ns(u.generation_ms));
        v
    }

    /// Ollama's answer to a request with nothing to generate: the model is loaded.
    fn loaded(&mut self, stream: bool) -> Response {
        let mut v = self.object("", true);
        v["done_reason"] = json!("load");
        if stream {
            Response::text(200, "application/x-ndjson", format!("{v}\n"))
        } else {
            Response::json(200, &v)
        }
    }
}

fn line(v: &Value) -> Vec<u8> {
    format!("{v}\n").into_bytes()
}

impl Dialect for OllamaDialect {
    fn api(&self) -> Api {
        Api::Ollama
    }

    fn stream_content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn text(&mut self, text: &str) -> Vec<u8> {
        line(&self.object(text, false))
    }

    fn done(&mut self, finish: Finish, u: &Usage, elapsed: Duration) -> Vec<u8> {
        line(&self.last("", finish, u, elapsed))
    }

    fn error(&mut self, message: &str) -> Vec<u8> {
        line(&json!({ "error": message }))
    }

    fn whole(&mut self, text: String, finish: Finish, u: &Usage, elapsed: Duration) -> Value {
        self.last(&text, finish, u, elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_sizes() {
        assert_eq!(parameter_size(134_515_008), "135M");
        assert_eq!(parameter_size(1_100_048_384), "1.1B");
    }
}
