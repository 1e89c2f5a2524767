//! What the server reports about itself (`/health`, `/metrics`, `/api/ps`, systemd STATUS=):
//! fixed facts about the model and the plan (`ServerInfo`) and counters the engine updates as it
//! runs (`Stats`, lock-free, read as a `StatsSnapshot`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Facts fixed when the server starts.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// The model's name as clients see it (the file name without `.gguf`).
    pub model_name: String,
    /// Path of the GGUF file.
    pub model_path: String,
    pub model_bytes: u64,
    pub arch: String,
    /// The file's quantization as its tensors' dominant type, e.g. "Q4_1".
    pub quantization: String,
    pub n_params: u64,
    /// Context of each session.
    pub n_ctx: usize,
    /// Sessions decoded together.
    pub parallel: usize,
    /// KV plan, as layer_types.
    pub kv_plan: String,
    pub kv_bytes_per_token: usize,
    /// KV cache bytes of all sessions (capacity).
    pub kv_capacity_bytes: usize,
    /// Bytes the memory plan counts for the whole process.
    pub planned_bytes: usize,
    /// Requests that may wait for a slot before new ones get 503.
    pub queue_limit: usize,
}

/// Counters the engine updates.
#[derive(Debug, Default)]
pub struct Stats {
    ready: AtomicBool,
    queued: AtomicUsize,
    active: AtomicUsize,
    kv_tokens: AtomicUsize,
    prompt_tokens: AtomicU64,
    reused_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    requests: AtomicU64,
    /// Generation rate of the last step, tokens/s times 1000.
    rate_milli: AtomicU64,
}

/// A consistent-enough copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub ready: bool,
    pub queued: usize,
    pub active: usize,
    /// Tokens held in all sessions' KV caches.
    pub kv_tokens: usize,
    pub prompt_tokens: u64,
    /// Prompt tokens taken from a cache instead of being prefilled.
    pub reused_tokens: u64,
    pub generated_tokens: u64,
    pub requests: u64,
    pub tokens_per_second_milli: u64,
}

impl Stats {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Counts one more waiting request unless `limit` already wait; false when they do.
    pub(crate) fn try_queue(&self, limit: usize) -> bool {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= limit {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A queued request got a slot.
    pub fn admitted_one(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request left the queue without a slot (it was cancelled or failed while waiting).
    pub fn dropped_queued(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn finished_one(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn add_tokens(&self, prompt: u64, generated: u64) {
        self.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generated, Ordering::Relaxed);
    }

    pub fn add_reused(&self, prompt: u64) {
        self.reused_tokens.fetch_add(prompt, Ordering::Relaxed);
    }

    pub fn set_kv_tokens(&self, n: usize) {
        self.kv_tokens.store(n, Ordering::Relaxed);
    }

    pub fn set_rate(&self, tokens_per_second: f64) {
        self.rate_milli
            .store((tokens_per_second * 1000.0) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            ready: self.ready.load(Ordering::Acquire),
            queued: self.queued.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            kv_tokens: self.kv_tokens.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            reused_tokens: self.reused_tokens.load(Ordering::Relaxed),
            generated_tokens: self.generated_tokens.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            tokens_per_second_milli: self.rate_milli.load(Ordering::Relaxed),
        }
    }
}
