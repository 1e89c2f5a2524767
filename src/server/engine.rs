//! The engine: one thread that owns the model's forward pass and `parallel` session slots carved
//! from one arena. Each step it admits waiting requests into free slots, runs one bounded chunk
//! of one prefilling session, then one batched decode step in which the next token of every
//! decoding session goes through each weight matrix together. Events go back over each
//! request's channel without blocking: a reader that is gone or far behind is cancelled and its
//! slot freed at once, so no client can stall the loop. The loop also beats systemd's watchdog
//! (`Heartbeat`), so that a hung loop, not just a dead process, gets the service restarted.
//!
//! Prompts are not prefilled again where the cache already holds them: a request goes to the
//! free slot whose last occupant's tokens share the longest prefix with its prompt (the next
//! turn of a chat, a shared system prompt), and with `--prompt-cache` one more slot of the plan
//! holds a saved prefix that any request starting with it copies instead of computing.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lckv_kernels::Kernels;

use crate::chat::ChatTemplate;
use crate::model::forward::{Forward, Logits, Prefill, Row};
use crate::model::Model;
use crate::prefix::shared_prefix;
use crate::prompt_cache;
use crate::sampler::Sampler;
use crate::server::request::{EngineHandle, Event, Finish, Prompt, Request, Usage};
use crate::server::stats::{ServerInfo, Stats};
use crate::session::{auto_strategy, PrefillChoice, SessionPlan};
use crate::stop::{StopMatcher, StopStep};
use crate::systemd::Heartbeat;
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};

/// How long the loop waits for a request when idle before it looks again (for a shutdown, or
/// a watchdog ping that is due).
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// How the engine schedules.
#[derive(Debug)]
pub struct EngineOptions {
    /// Requests that may wait for a free slot; more get `Refused::Busy`.
    pub queue_limit: usize,
    /// Most prompt tokens prefilled in one step, so that a long prompt does not stall the
    /// other sessions' generation for longer than one chunk.
    pub prefill_chunk: usize,
    /// A prompt-cache file: its prefix is restored into a slot of its own at the start (the plan
    /// must hold one session more than the requests use), or, missing or stale, the first
    /// request's prompt is saved there.
    pub prompt_cache: Option<PathBuf>,
    /// Watchdog pings and status for systemd, sent from the loop itself; None: no service
    /// manager to tell.
    pub heartbeat: Option<Heartbeat>,
    /// Test only (serve's hidden `--test-stall-engine-after-ms`): the loop stops for good this
    /// long after it starts, as a hung loop would, while the process lives on.
    pub stall_after: Option<Duration>,
}

/// What the engine needs of the model besides the forward pass.
pub struct EngineModel {
    pub model: &'static Model,
    pub kern: &'static Kernels,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

/// Starts the engine thread for `plan` (its `sessions` are the slots). The arena is allocated
/// and touched before this returns, so a caller that reports readiness afterwards tells the
/// truth.
pub fn spawn(
    m: EngineModel,
    plan: &SessionPlan,
    info: ServerInfo,
    opts: EngineOptions,
) -> Result<(EngineHandle, JoinHandle<()>)> {
    let reserved = usize::from(opts.prompt_cache.is_some());
    let slots = plan.memory.sessions.saturating_sub(reserved);
    if slots == 0 {
        return Err(Error::Usage(
            "the plan holds no session besides the prompt cache's; plan one more session".into(),
        ));
    }
    let mut fwd = Forward::new(m.model, m.kern, plan.memory.dims, plan.memory.sessions)?;
    let prefix = opts.prompt_cache.clone().map(|path| {
        let slot = slots;
        let tokens = match prompt_cache::load_cache(&path, m.model, &mut fwd.slot_mut(slot).cache) {
            Ok(tokens) => {
                eprintln!(
                    "lckv: prompt cache {}: {} tokens restored",
                    path.display(),
                    tokens.len()
                );
                tokens
            }
            Err(why) => {
                eprintln!(
                    "lckv: prompt cache {}: {why}; the first request's prompt will be saved",
                    path.display()
                );
                Vec::new()
            }
        };
        PrefixSlot { path, slot, tokens }
    });
    let prefill = match plan.opts.prefill {
        PrefillChoice::Sequential => Prefill::Sequential,
        PrefillChoice::Iterative => Prefill::Iterative {
            tolerance: plan.opts.early_exit,
        },
        PrefillChoice::Auto => auto_strategy(m.model, m.kern, plan.opts.early_exit),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(opts.queue_limit.max(1));
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handle = EngineHandle::new(tx, Arc::clone(&stats), Arc::new(info), Arc::clone(&stop));
    let chunk = opts.prefill_chunk.clamp(1, plan.memory.dims.n_batch);
    let mut engine = Engine {
        m,
        fwd,
        prefill,
        chunk,
        n_ctx: plan.memory.dims.n_ctx,
        slots: (0..slots).map(|_| None).collect(),
        held: (0..slots).map(|_| Vec::new()).collect(),
        prefix,
        waiting: VecDeque::new(),
        rows: Vec::with_capacity(slots),
        tokens: Vec::with_capacity(slots),
        stats: Arc::clone(&stats),
        stop,
        next_prefill: 0,
        idle_wait: opts
            .heartbeat
            .as_ref()
            .and_then(Heartbeat::max_wait)
            .map_or(IDLE_WAIT, |w| w.clamp(Duration::from_millis(1), IDLE_WAIT)),
        heartbeat: opts.heartbeat,
        stall_at: opts.stall_after.map(|d| Instant::now() + d),
    };
    let thread = std::thread::Builder::new()
        .name("lckv-engine".into())
        .spawn(move || {
            // Parallel kernels started from a rayon worker use its own deque (no allocation).
            rayon::scope(|_| engine.run(rx));
        })
        .map_err(|e| Error::io("starting the engine thread", e))?;
    stats.set_ready();
    Ok((handle, thread))
}

/// The slot that holds a prompt cache's prefix, and where that prefix is saved.
struct PrefixSlot {
    path: PathBuf,
    slot: usize,
    /// The tokens of the prefix it holds (empty until one is restored or saved).
    tokens: Vec<u32>,
}

/// A request in a slot.
struct Active {
    events: std::sync::mpsc::SyncSender<Event>,
    sampler: Sampler,
    /// The prompt, then the generated tokens (room for a whole context is reserved when the
    /// request is admitted, so generating never allocates).
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Prompt tokens taken from a cache rather than prefilled.
    reused: usize,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// Positions in the cache.
    n_past: usize,
    /// The token sampled last, to be run at the next decode step.
    pending: Option<u32>,
    generated: usize,
    max_tokens: usize,
    stream: StreamDecoder,
    stop: StopMatcher,
    started: Instant,
    first_token: Option<Instant>,
    prompt_done: Option<Instant>,
}

/// What happened to a slot after a step.
enum Outcome {
    Going,
    Finished(Finish),
    /// The reader is gone or too far behind: free the slot, send nothing more.
    Gone,
}

struct Engine {
    m: EngineModel,
    fwd: Forward,
    prefill: Prefill,
    chunk: usize,
    n_ctx: usize,
    slots: Vec<Option<Active>>,
    /// The tokens each slot's cache holds from its last request, for prefix reuse.
    held: Vec<Vec<u32>>,
    prefix: Option<PrefixSlot>,
    waiting: VecDeque<Request>,
    rows: Vec<Row>,
    tokens: Vec<u32>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    /// Round-robin start for choosing the session to prefill.
    next_prefill: usize,
    /// How long an idle loop waits for a request before it goes round again.
    idle_wait: Duration,
    heartbeat: Option<Heartbeat>,
    stall_at: Option<Instant>,
}

impl Engine {
    fn run(&mut self, rx: Receiver<Request>) {
        loop {
            if self.stall_at.is_some_and(|t| Instant::now() >= t) {
                stall_forever();
            }
            if let Some(h) = self.heartbeat.as_mut() {
                h.beat(&self.stats.snapshot());
            }
            if self.stop.load(Ordering::Acquire) {
                // Requests still in the channel get their error event too.
                while let Ok(r) = rx.try_recv() {
                    self.waiting.push_back(r);
                }
                self.cancel_all("the server is shutting down");
                return;
            }
            let busy = self.slots.iter().any(Option::is_some);
            // Idle: wait for a request (waking now and then to see a shutdown and to beat).
            if !busy && self.waiting.is_empty() {
                match rx.recv_timeout(self.idle_wait) {
                    Ok(r) => self.waiting.push_back(r),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            while let Ok(r) = rx.try_recv() {
                self.waiting.push_back(r);
            }
            self.admit();
            let t = Instant::now();
            self.prefill_step();
            let decoded = self.decode_step();
            if decoded > 0 {
                self.stats
                    .set_rate(decoded as f64 / t.elapsed().as_secs_f64().max(1e-9));
            }
            let kv: usize = self.slots.iter().flatten().map(|a| a.n_past).sum();
            self.stats.set_kv_tokens(kv);
        }
    }

    /// Moves waiting requests into free slots, tokenizing their prompts; each goes to the free
    /// slot that already holds the longest prefix of it.
    fn admit(&mut self) {
        while self.slots.iter().any(Option::is_none) {
            let Some(r) = self.waiting.pop_front() else {
                return;
            };
            let prompt = match self.tokenize(&r.prompt) {
                Ok(p) => p,
                Err(why) => {
                    self.stats.dropped_queued();
                    let _ = r.events.try_send(Event::Error(why));
                    continue;
                }
            };
            let (slot, kept) = self.reuse(&prompt);
            self.stats.admitted_one();
            let prompt_len = prompt.len();
            let mut tokens = prompt;
            tokens.reserve_exact((self.n_ctx + 1).saturating_sub(prompt_len));
            self.slots[slot] = Some(Active {
                sampler: Sampler::for_context(r.sampling, self.m.model.cfg.n_vocab, self.n_ctx),
                events: r.events,
                tokens,
                prompt_len,
                reused: kept,
                prefilled: kept,
                n_past: kept,
                pending: None,
                generated: 0,
                max_tokens: r.max_tokens,
                stream: StreamDecoder::new(),
                stop: StopMatcher::new(r.stop),
                started: Instant::now(),
                first_token: None,
                prompt_done: None,
            });
        }
    }

    /// Chooses a free slot for `prompt` and puts the longest cached prefix of it there: the
    /// free slot's own leftover tokens, or the prompt cache's prefix copied in when that is
    /// longer. The slot is the one that keeps the most prompt tokens for the fewest held tokens
    /// it overwrites, so a new conversation that shares only a system prompt with an earlier
    /// one does not evict that conversation when another slot serves it as well. Returns the
    /// slot and the prompt tokens its cache now holds.
    fn reuse(&mut self, prompt: &[u32]) -> (usize, usize) {
        let from_file = self
            .prefix
            .as_ref()
            .map_or(0, |p| shared_prefix(&p.tokens, prompt));
        let mut best: Option<(i64, usize, usize)> = None;
        for slot in (0..self.slots.len()).filter(|&i| self.slots[i].is_none()) {
            let own = shared_prefix(&self.held[slot], prompt);
            let kept = own.max(from_file);
            let lost = self.held[slot].len() - own;
            let score = kept as i64 - lost as i64;
            if best.is_none_or(|b| score > b.0) {
                best = Some((score, slot, own));
            }
        }
        let (_, slot, own) = best.expect("admit calls this with a free slot");
        if from_file > own {
            let p = self.prefix.as_ref().expect("measured above");
            self.fwd.copy_prefix(p.slot, slot, from_file);
            self.held[slot].clear();
            return (slot, from_file);
        }
        (slot, own)
    }

    fn tokenize(&self, prompt: &Prompt) -> std::result::Result<Vec<u32>, String> {
        let tok = &self.m.tokenizer;
        let ids = match prompt {
            Prompt::Text(t) => tok.encode(t, true, false),
            Prompt::Chat(msgs) => self
                .m
                .template
                .render(msgs, true)
                .and_then(|text| tok.encode(&text, true, true)),
        }
        .map_err(|e| e.to_string())?;
        if ids.is_empty() {
            return Err("the prompt is empty: give some text".into());
        }
        if ids.len() >= self.n_ctx {
            return Err(format!(
                "the prompt has {} tokens but each session's context holds {}; shorten the prompt or start the server with a larger -c",
                ids.len(),
                self.n_ctx
            ));
        }
        Ok(ids)
    }

    /// Runs one chunk of one session's prompt; a session whose prompt is done samples its first
    /// token.
    fn prefill_step(&mut self) {
        let n = self.slots.len();
        let Some(slot) = (0..n)
            .map(|i| (self.next_prefill + i) % n)
            .find(|&i| matches!(&self.slots[i], Some(a) if a.prefilled < a.prompt_len))
        else {
            return;
        };
        self.next_prefill = (slot + 1) % n;
        let a = self.slots[slot].as_mut().expect("chosen above");
        let end = (a.prefilled + self.chunk).min(a.prompt_len);
        let last = end == a.prompt_len;
        let want = if last { Logits::Last } else { Logits::None };
        let result = self.fwd.forward(
            self.m.model,
            slot,
            &a.tokens[a.prefilled..end],
            a.n_past,
            self.prefill,
            want,
            &mut |_, _| {},
        );
        if let Err(e) = result {
            self.fail(slot, e.to_string());
            return;
        }
        a.n_past += end - a.prefilled;
        a.prefilled = end;
        if last {
            for &t in &a.tokens[..a.prompt_len] {
                a.sampler.accept(t);
            }
            a.prompt_done = Some(Instant::now());
            self.stats.add_tokens((a.prompt_len - a.reused) as u64, 0);
            self.stats.add_reused(a.reused as u64);
            self.save_prefix(slot);
            self.sample(slot);
        }
    }

    /// One token for every decoding session, in one batch. Returns the tokens run.
    fn decode_step(&mut self) -> usize {
        self.rows.clear();
        self.tokens.clear();
        for (i, a) in self.slots.iter().enumerate() {
            if let Some(t) = a.as_ref().and_then(|a| a.pending) {
                self.rows.push(Row {
                    slot: i,
                    pos: self.slots[i].as_ref().map_or(0, |a| a.n_past),
                });
                self.tokens.push(t);
            }
        }
        if self.rows.is_empty() {
            return 0;
        }
        let result = self
            .fwd
            .decode_batch(self.m.model, &self.tokens, &self.rows, &mut |_, _| {});
        if let Err(e) = result {
            for r in 0..self.rows.len() {
                self.fail(self.rows[r].slot, e.to_string());
            }
            return 0;
        }
        for r in 0..self.rows.len() {
            let slot = self.rows[r].slot;
            if let Some(a) = self.slots[slot].as_mut() {
                a.n_past += 1;
                a.pending = None;
            }
            self.sample(slot);
        }
        self.rows.len()
    }

    /// Samples the next token of `slot` from its last logits, streams its text and decides
    /// whether the generation goes on.
    fn sample(&mut self, slot: usize) {
        let (outcome, produced) = {
            let logits = self.fwd.last_logits(slot);
            let tok = &self.m.tokenizer;
            let a = self.slots[slot].as_mut().expect("sampled slots are active");
            let before = a.generated;
            let outcome = next_token(a, tok, logits, self.n_ctx);
            (outcome, a.generated - before)
        };
        self.stats.add_tokens(0, produced as u64);
        match outcome {
            Outcome::Going => {}
            Outcome::Finished(finish) => self.finish(slot, finish),
            Outcome::Gone => self.release(slot),
        }
    }

    fn finish(&mut self, slot: usize, finish: Finish) {
        let Some(mut a) = self.slots[slot].take() else {
            return;
        };
        let a = &mut a;
        // Bytes of an unfinished character and text held back for a stop string that never
        // came are still the answer's.
        let tail = a.stream.flush();
        let rest = match a.stop.push(&tail) {
            StopStep::Go(text) => text + &a.stop.finish(),
            StopStep::Stop(text) => text,
        };
        if !rest.is_empty() {
            let _ = a.events.try_send(Event::Text(rest));
        }
        let now = Instant::now();
        let prompt_done = a.prompt_done.unwrap_or(now);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let _ = a.events.try_send(Event::Done {
            finish,
            usage: Usage {
                prompt_tokens: a.prompt_len,
                cached_tokens: a.reused,
                completion_tokens: a.generated,
                first_token_ms: ms(a.first_token.unwrap_or(now) - a.started),
                prompt_ms: ms(prompt_done - a.started),
                generation_ms: ms(now - prompt_done),
            },
        });
        self.stats.finished_one();
        self.keep_tokens(slot, std::mem::take(&mut a.tokens), a.n_past);
    }

    /// Remembers what `slot`'s cache holds after its request: the first `n_past` of `tokens`.
    fn keep_tokens(&mut self, slot: usize, mut tokens: Vec<u32>, n_past: usize) {
        tokens.truncate(n_past);
        self.held[slot] = tokens;
    }

    /// Saves the prompt `slot` just prefilled as the prompt cache, when one is asked for and
    /// none was restored or saved yet: into the prefix slot, then to its file.
    fn save_prefix(&mut self, slot: usize) {
        let Some(p) = self.prefix.as_mut() else {
            return;
        };
        let a = self.slots[slot]
            .as_ref()
            .expect("saving an active slot's prompt");
        if !p.tokens.is_empty() || a.prompt_len < 2 {
            return;
        }
        self.fwd.copy_prefix(slot, p.slot, a.prompt_len);
        p.tokens = a.tokens[..a.prompt_len].to_vec();
        let cache = &self.fwd.slot(p.slot).cache;
        match prompt_cache::save_cache(&p.path, self.m.model, cache, &p.tokens) {
            Ok(bytes) => eprintln!(
                "lckv: prompt cache {}: saved {} prompt tokens ({bytes} bytes)",
                p.path.display(),
                p.tokens.len()
            ),
            // The prefix still serves this run from memory; only the next start misses it.
            Err(e) => eprintln!("lckv: prompt cache {}: not saved: {e}", p.path.display()),
        }
    }

    fn fail(&mut self, slot: usize, why: String) {
        if let Some(a) = self.slots[slot].take() {
            let _ = a.events.try_send(Event::Error(why));
            self.stats.finished_one();
        }
        // A failed step may have left the cache part-written: trust none of it.
        self.held[slot].clear();
    }

    /// Frees the slot of a reader that is gone; what its cache holds stays reusable.
    fn release(&mut self, slot: usize) {
        if let Some(a) = self.slots[slot].take() {
            self.stats.finished_one();
            self.keep_tokens(slot, a.tokens, a.n_past);
        }
    }

    fn cancel_all(&mut self, why: &str) {
        for slot in 0..self.slots.len() {
            self.fail(slot, why.to_string());
        }
        for r in self.waiting.drain(..) {
            self.stats.dropped_queued();
            let _ = r.events.try_send(Event::Error(why.to_string()));
        }
    }
}

/// The test hook's hang: the loop neither serves nor beats again; the process lives on.
fn stall_forever() -> ! {
    eprintln!("lckv: the engine loop stalls now (--test-stall-engine-after-ms)");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Sends an event; false when the reader is gone or too far behind.
fn send(a: &Active, ev: Event) -> bool {
    a.events.try_send(ev).is_ok()
}

/// Samples, accepts and streams one token of `a`.
fn next_token(a: &mut Active, tok: &Tokenizer, logits: &[f32], n_ctx: usize) -> Outcome {
    if a.generated >= a.max_tokens {
        return Outcome::Finished(Finish::Length);
    }
    let t = a.sampler.sample(logits);
    a.sampler.accept(t);
    if tok.is_eog(t) {
        return Outcome::Finished(Finish::Stop);
    }
    a.generated += 1;
    // Room for it was reserved at admission.
    a.tokens.push(t);
    a.first_token.get_or_insert_with(Instant::now);
    let piece = a.stream.push(tok, t);
    match a.stop.push(piece) {
        StopStep::Go(text) => {
            if !text.is_empty() && !send(a, Event::Text(text)) {
                return Outcome::Gone;
            }
        }
        StopStep::Stop(text) => {
            if !text.is_empty() && !send(a, Event::Text(text)) {
                return Outcome::Gone;
            }
            return Outcome::Finished(Finish::Stop);
        }
    }
    if a.generated >= a.max_tokens || a.n_past >= n_ctx {
        return Outcome::Finished(Finish::Length);
    }
    a.pending = Some(t);
    Outcome::Going
}
