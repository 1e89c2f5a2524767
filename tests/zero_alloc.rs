//! Proves the token loop allocates nothing: a counting global allocator watches generation after
//! the first token, for a standard and an LCKV model and each prefill strategy, including the
//! sampler and the streaming detokenizer on the real SmolLM2 model.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use lckv::model::forward::Logits;
use lckv::model::Model;
use lckv::sampler::{Sampler, SamplerConfig};
use lckv::session::{PrefillChoice, Session, SessionOptions};
use lckv::tokenizer::StreamDecoder;
use lckv_kernels::GgmlType;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// Tests in this file run one at a time so the count is theirs alone.
static SERIAL: Mutex<()> = Mutex::new(());

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counts allocations while `f` runs on a worker of the rayon pool, where `lckv::generate`
/// runs its loop (jobs injected from outside the pool allocate queue blocks now and then).
fn counted<R: Send>(f: impl FnOnce() -> R + Send) -> (R, usize) {
    let mut out = None;
    rayon::scope(|_| {
        ALLOCS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        let r = f();
        COUNTING.store(false, Ordering::SeqCst);
        out = Some((r, ALLOCS.load(Ordering::SeqCst)));
    });
    out.expect("scope ran")
}

fn fixture_model(plan: &str) -> Model {
    common::load_converted(&common::fixture(&format!("lckv/{plan}")), GgmlType::F32)
}

fn decode_loop_allocs(model: &Model, prefill: PrefillChoice) -> usize {
    let opts = SessionOptions {
        n_ctx: 96,
        n_batch: 64,
        kv_type: GgmlType::F16,
        prefill,
        early_exit: None,
        logit_rows: 1,
    };
    let mut s = Session::new(model, lckv_kernels::kernels(), opts).unwrap();
    let prompt: Vec<u32> = (0..40)
        .map(|i| (i * 37 + 5) % model.cfg.n_vocab as u32)
        .collect();
    s.prefill(&prompt, Logits::Last, &mut |_, _| {}).unwrap();
    let mut sampler = Sampler::new(
        SamplerConfig {
            seed: 7,
            ..SamplerConfig::default()
        },
        model.cfg.n_vocab,
    );
    let mut tok = sampler.sample(s.logits());
    s.decode(tok).unwrap();
    let (_, n) = counted(|| {
        for _ in 0..32 {
            tok = sampler.sample(s.logits());
            sampler.accept(tok);
            s.decode(tok).unwrap();
        }
    });
    n
}

#[test]
fn no_allocation_per_token_standard_and_lckv() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for plan in ["standard", "lckv_top_w2", "lckv_sandwich_middle"] {
        let m = fixture_model(plan);
        for p in [
            PrefillChoice::Sequential,
            PrefillChoice::Iterative,
            PrefillChoice::Auto,
        ] {
            let n = decode_loop_allocs(&m, p);
            assert_eq!(
                n, 0,
                "{plan} with {p:?} prefill allocated {n} times in 32 tokens"
            );
        }
    }
}

#[test]
fn no_allocation_per_token_real_model_with_detokenizer() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let m = common::load_model(&common::model_path("SmolLM2-135M-Instruct.Q4_1.gguf"));
    let tok = m.tokenizer().unwrap();
    let opts = SessionOptions {
        n_ctx: 128,
        ..SessionOptions::default()
    };
    let mut s = Session::new(&m, lckv_kernels::kernels(), opts).unwrap();
    let prompt = tok.encode("The quick brown fox", true, false).unwrap();
    s.prefill(&prompt, Logits::Last, &mut |_, _| {}).unwrap();
    let mut sampler = Sampler::new(SamplerConfig::default(), m.cfg.n_vocab);
    let mut stream = StreamDecoder::new();
    let mut text_len = 0;
    let first = sampler.sample(s.logits());
    text_len += stream.push(&tok, first).len();
    s.decode(first).unwrap();
    let (_, n) = counted(|| {
        for _ in 0..32 {
            let t = sampler.sample(s.logits());
            sampler.accept(t);
            text_len += stream.push(&tok, t).len();
            s.decode(t).unwrap();
        }
    });
    assert!(text_len > 0);
    assert_eq!(
        n, 0,
        "generation with sampling and detokenization allocated {n} times in 32 tokens"
    );
}

/// `lckv pipe`'s model path: `generate_with` on the real model, the token ids recorded into a
/// reserved vector and the input polled for a cancel between tokens, as the pipe does. Counted
/// from the first token to the 33rd (the pipe's JSON events are left out: they are output).
#[test]
fn no_allocation_per_token_in_the_pipe_loop() {
    use lckv::generate::{generate_with, Flow, GenerateOptions};
    use lckv::pipe::events::Events;
    use lckv::pipe::inbox::Inbox;

    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let m = common::load_model(&common::model_path("SmolLM2-135M-Instruct.Q4_1.gguf"));
    let tok = m.tokenizer().unwrap();
    let opts = SessionOptions {
        n_ctx: 128,
        ..SessionOptions::default()
    };
    let mut s = Session::new(&m, lckv_kernels::kernels(), opts).unwrap();
    let prompt = tok.encode("The quick brown fox", true, false).unwrap();
    let mut sampler = Sampler::new(SamplerConfig::default(), m.cfg.n_vocab);
    let (_tx, rx) = std::sync::mpsc::channel();
    let mut inbox = Inbox::new(rx);
    let mut events = Events::new(std::io::sink());
    let id = serde_json::Value::from(1);
    let mut ids = Vec::with_capacity(64);
    let mut counted_allocs = None;
    generate_with(
        &mut s,
        &tok,
        &mut sampler,
        &prompt,
        GenerateOptions {
            max_tokens: 64,
            ignore_eos: true,
        },
        &mut |t, _piece| {
            let Some(t) = t else { return Flow::Stop };
            ids.push(t);
            if inbox.poll(&id, &mut events) {
                return Flow::Stop;
            }
            match ids.len() {
                1 => {
                    ALLOCS.store(0, Ordering::SeqCst);
                    COUNTING.store(true, Ordering::SeqCst);
                    Flow::Go
                }
                33 => {
                    COUNTING.store(false, Ordering::SeqCst);
                    counted_allocs = Some(ALLOCS.load(Ordering::SeqCst));
                    Flow::Stop
                }
                _ => Flow::Go,
            }
        },
    )
    .unwrap();
    let n = counted_allocs.expect("33 tokens generated");
    assert_eq!(
        n, 0,
        "the pipe's generation loop allocated {n} times in 32 tokens"
    );
}
