//! Which handler answers a request: the API key check, the route table (404 for an unknown
//! path, 405 for a known path with the wrong method), and error bodies in each API's own shape
//! (OpenAI: `{"error":{"message","type"}}`; Ollama: `{"error":"..."}`).

use std::net::TcpStream;
use std::time::Instant;

use serde_json::json;

use super::wire::{HttpRequest, Response};
use super::{observe, ollama, openai, App};

/// One request being answered.
pub struct Exchange<'a> {
    pub req: &'a HttpRequest,
    /// The connection, for streaming and for noticing a client that left.
    pub conn: &'a TcpStream,
    pub peer: &'a str,
    pub received: Instant,
}

/// How a handler answered.
pub enum Outcome {
    /// A whole response for the connection loop to write.
    Respond(Response),
    /// The handler streamed the response itself; `reusable` when the connection may carry
    /// another request.
    Streamed { reusable: bool },
    /// The client is gone: close the connection.
    Gone,
}

/// Which API's error shape a path gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Ollama,
}

impl Api {
    pub fn of(path: &str) -> Api {
        if path.starts_with("/api/") {
            Api::Ollama
        } else {
            Api::OpenAi
        }
    }
}

/// Every route: path, method.
const ROUTES: &[(&str, &str)] = &[
    ("/health", "GET"),
    ("/metrics", "GET"),
    ("/v1/models", "GET"),
    ("/v1/chat/completions", "POST"),
    ("/v1/completions", "POST"),
    ("/api/chat", "POST"),
    ("/api/generate", "POST"),
    ("/api/tags", "GET"),
    ("/api/show", "POST"),
    ("/api/ps", "GET"),
    ("/api/version", "GET"),
];

/// Paths answered without the API key: a health probe (systemd, a load balancer) needs none
/// and learns nothing from it.
const OPEN_PATHS: &[&str] = &["/health"];

pub fn route(app: &App, ex: &Exchange) -> Outcome {
    let (method, path) = (ex.req.method.as_str(), ex.req.path.as_str());
    let api = Api::of(path);
    if !OPEN_PATHS.contains(&path) && !authorized(app, ex.req) {
        return Outcome::Respond(
            error_response(
                api,
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer <key>' with the key the server was started with (--api-key)",
            )
            .with_header("WWW-Authenticate", "Bearer".into()),
        );
    }
    match (method, path) {
        ("GET", "/health") => Outcome::Respond(observe::health(app)),
        ("GET", "/metrics") => Outcome::Respond(observe::metrics(app)),
        ("GET", "/v1/models") => Outcome::Respond(openai::models(app)),
        ("POST", "/v1/chat/completions") => openai::chat(app, ex),
        ("POST", "/v1/completions") => openai::completions(app, ex),
        ("POST", "/api/chat") => ollama::chat(app, ex),
        ("POST", "/api/generate") => ollama::generate(app, ex),
        ("GET", "/api/tags") => Outcome::Respond(ollama::tags(app)),
        ("POST", "/api/show") => Outcome::Respond(ollama::show(app, ex)),
        ("GET", "/api/ps") => Outcome::Respond(ollama::ps(app)),
        ("GET", "/api/version") => Outcome::Respond(ollama::version()),
        _ => {
            let allowed: Vec<&str> = ROUTES
                .iter()
                .filter(|(p, _)| *p == path)
                .map(|(_, m)| *m)
                .collect();
            Outcome::Respond(if allowed.is_empty() {
                error_response(api, 404, &format!("no such endpoint: {method} {path}"))
            } else {
                let allow = allowed.join(", ");
                error_response(api, 405, &format!("{path} takes {allow}, not {method}"))
                    .with_header("Allow", allow)
            })
        }
    }
}

fn authorized(app: &App, req: &HttpRequest) -> bool {
    let Some(key) = &app.api_key else {
        return true;
    };
    let Some(given) = req.header("authorization") else {
        return false;
    };
    let token = match given.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return false,
    };
    same_secret(token.as_bytes(), key.as_bytes())
}

/// Compares without stopping at the first difference, so response times do not tell how much
/// of a guessed key was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error in the API's shape.
pub fn error_response(api: Api, status: u16, message: &str) -> Response {
    let body = match api {
        Api::Ollama => json!({ "error": message }),
        Api::OpenAi => json!({
            "error": {
                "message": message,
                "type": error_type(status),
                "param": null,
                "code": null,
            }
        }),
    };
    Response::json(status, &body)
}

/// OpenAI's error `type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        404 => "not_found_error",
        400..=499 => "invalid_request_error",
        503 => "server_overloaded",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
