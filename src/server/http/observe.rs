//! `GET /health` (`{"status":"ok"}` once the engine is ready, 503 `{"status":"loading"}` before)
//! and `GET /metrics` (Prometheus text format: tokens, requests, sessions, KV cache use against
//! its capacity, generation speed), both read from the engine's lock-free counters.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use serde_json::json;

use super::wire::Response;
use super::App;

pub fn health(app: &App) -> Response {
    if app.engine.stats().ready {
        Response::json(200, &json!({ "status": "ok" }))
    } else {
        Response::json(503, &json!({ "status": "loading" }))
    }
}

pub fn metrics(app: &App) -> Response {
    let s = app.engine.stats();
    let info = app.engine.info();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(
            out,
            "# HELP lckv_{name} {help}\n# TYPE lckv_{name} {kind}\nlckv_{name} {value}\n"
        );
    };
    metric(
        "prompt_tokens_total",
        "counter",
        "Prompt tokens processed.",
        s.prompt_tokens.to_string(),
    );
    metric(
        "prompt_tokens_reused_total",
        "counter",
        "Prompt tokens whose K/V were taken from a cache (an earlier request's or the prompt cache) instead of being processed.",
        s.reused_tokens.to_string(),
    );
    metric(
        "generated_tokens_total",
        "counter",
        "Generated tokens run through the model.",
        s.generated_tokens.to_string(),
    );
    metric(
        "requests_total",
        "counter",
        "Generation requests given a session.",
        s.requests.to_string(),
    );
    metric(
        "requests_refused_busy_total",
        "counter",
        "Generation requests refused with 503 because every session was busy and the queue full.",
        app.refused_busy.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "sessions_active",
        "gauge",
        "Sessions generating or processing a prompt.",
        s.active.to_string(),
    );
    metric(
        "sessions_queued",
        "gauge",
        "Requests waiting for a free session.",
        s.queued.to_string(),
    );
    metric(
        "sessions_max",
        "gauge",
        "Sessions the server runs at once (--parallel).",
        info.parallel.to_string(),
    );
    metric(
        "queue_limit",
        "gauge",
        "Requests that may wait for a session before new ones get 503 (--queue).",
        info.queue_limit.to_string(),
    );
    metric(
        "context_tokens",
        "gauge",
        "Context of each session in tokens (-c).",
        info.n_ctx.to_string(),
    );
    metric(
        "kv_tokens",
        "gauge",
        "Tokens held in all sessions' KV caches.",
        s.kv_tokens.to_string(),
    );
    metric(
        "kv_bytes",
        "gauge",
        "KV cache bytes in use (tokens held times bytes per token).",
        (s.kv_tokens.saturating_mul(info.kv_bytes_per_token)).to_string(),
    );
    metric(
        "kv_capacity_bytes",
        "gauge",
        "KV cache bytes of all sessions.",
        info.kv_capacity_bytes.to_string(),
    );
    metric(
        "planned_bytes",
        "gauge",
        "Bytes the memory plan counts for the whole process.",
        info.planned_bytes.to_string(),
    );
    metric(
        "tokens_per_second",
        "gauge",
        "Generation rate of the engine's last decode step over all sessions; 0 while idle.",
        // The engine keeps its last step's rate; an idle server generates nothing.
        format!(
            "{:.3}",
            if s.active == 0 {
                0.0
            } else {
                s.tokens_per_second_milli as f64 / 1000.0
            }
        ),
    );
    metric(
        "http_requests_in_flight",
        "gauge",
        "HTTP requests being answered.",
        app.in_flight().to_string(),
    );
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        format!("{:.0}", app.started.elapsed().as_secs_f64()),
    );
    Response::text(200, "text/plain; version=0.0.4; charset=utf-8", out)
}
