//! llama.cpp as the parity oracle (cargo feature `reference`), through the raw FFI of
//! `llama-cpp-sys-2`: load a GGUF, tokenize, logits for every position of a batch, greedy decoding
//! and timed decoding for side-by-side benches. Used by tests and benches only, never by the
//! runtime. Its `unsafe` is the FFI with llama.cpp (calls, the memory they hand back, a log
//! callback), each block justified where it stands. The crate's other `unsafe` is in
//! `reference_ggml` (FFI too), `gguf::file` (mapping the model) and `memory::arena`.
//! Its methods panic on llama.cpp failures: an oracle that cannot answer must stop the test.

use std::ffi::{c_char, c_void, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Once;
use std::time::Instant;

use llama_cpp_sys_2 as sys;

/// How the reference context is set up.
#[derive(Clone, Debug)]
pub struct RefOptions {
    /// Context length (also the batch size: one `logits` call may fill the context).
    pub n_ctx: u32,
    /// Threads for both single-token and batch decoding; 0 or less means every core.
    pub n_threads: i32,
    /// Keep the KV cache in f32 (llama.cpp's default is f16), so that parity is not blurred by
    /// the cache's rounding.
    pub kv_f32: bool,
    /// llama.cpp's flash-attention kernels (a different summation order).
    pub flash_attn: bool,
    /// ggml's tiled GEMM for K-quant weights, which it takes for batches of 8 rows or more (a
    /// newer, optional path with its own summation order; `GGML_CPU_TILED_MM`). Off for the
    /// parity tests, whose claim is bit equality with ggml's stock kernels; on for speed
    /// comparisons. The setting is read once per process, by the first llama.cpp context.
    pub tiled_kquant_gemm: bool,
}

impl Default for RefOptions {
    fn default() -> RefOptions {
        RefOptions {
            n_ctx: 512,
            n_threads: 0,
            kv_f32: true,
            flash_attn: false,
            tiled_kquant_gemm: false,
        }
    }
}

/// Asks ggml for its stock K-quant matrix kernels (`GGML_CPU_TILED_MM=0`) unless the
/// environment already says; see [`RefOptions::tiled_kquant_gemm`].
pub fn stock_kquant_gemm() {
    if std::env::var_os("GGML_CPU_TILED_MM").is_none() {
        std::env::set_var("GGML_CPU_TILED_MM", "0");
    }
}

/// llama.cpp's own summary of the CPU features its ggml build uses (`llama_print_system_info`).
pub fn system_info() -> String {
    init_backend();
    // SAFETY: returns a pointer to a static NUL-terminated string owned by llama.cpp.
    let p = unsafe { sys::llama_print_system_info() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated, as above; copied out at once.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .trim()
        .to_string()
}

/// A llama.cpp model and context on one sequence (seq id 0). Not `Send`: llama.cpp contexts
/// are used from the thread that made them.
pub struct LlamaCpp {
    model: NonNull<sys::llama_model>,
    ctx: NonNull<sys::llama_context>,
    vocab: *const sys::llama_vocab,
    n_ctx: u32,
}

unsafe extern "C" fn silent_log(_level: sys::ggml_log_level, _text: *const c_char, _: *mut c_void) {
}

static BACKEND: Once = Once::new();

fn init_backend() {
    BACKEND.call_once(|| {
        // SAFETY: called once per process before any other llama.cpp call; `silent_log` is a
        // valid callback for the whole program and ignores its (possibly null) arguments.
        unsafe {
            if std::env::var_os("LCKV_REF_LOG").is_none() {
                sys::llama_log_set(Some(silent_log), std::ptr::null_mut());
            }
            sys::llama_backend_init();
        }
    });
}

/// A heap batch from `llama_batch_init`, freed on drop.
struct Batch(sys::llama_batch);

impl Batch {
    /// One sequence of `tokens` at positions `first_pos..`, logits requested for every token
    /// (`all_logits`) or only the last.
    fn new(tokens: &[u32], first_pos: usize, all_logits: bool) -> Batch {
        let n = tokens.len();
        let n_i32 = i32::try_from(n).expect("batch larger than i32::MAX tokens");
        // SAFETY: allocates arrays of n tokens, n positions, n seq-id slots of 1 id each and n
        // output flags; nothing is read before the loop below fills every one of them.
        let raw = unsafe { sys::llama_batch_init(n_i32, 0, 1) };
        let mut batch = Batch(raw);
        // SAFETY: the arrays were allocated by llama_batch_init for n entries (seq_id[i] for
        // one id each); the slices do not outlive `batch`, which owns them.
        unsafe {
            let token = std::slice::from_raw_parts_mut(raw.token, n);
            let pos = std::slice::from_raw_parts_mut(raw.pos, n);
            let n_seq = std::slice::from_raw_parts_mut(raw.n_seq_id, n);
            let seq = std::slice::from_raw_parts_mut(raw.seq_id, n);
            let out = std::slice::from_raw_parts_mut(raw.logits, n);
            for (i, &t) in tokens.iter().enumerate() {
                token[i] = t as sys::llama_token;
                pos[i] = (first_pos + i) as sys::llama_pos;
                n_seq[i] = 1;
                *seq[i] = 0;
                out[i] = i8::from(all_logits || i + 1 == n);
            }
        }
        batch.0.n_tokens = n_i32;
        batch
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: the batch came from llama_batch_init and is freed exactly once.
        unsafe { sys::llama_batch_free(self.0) };
    }
}

impl LlamaCpp {
    /// Loads `path` on the CPU with a fresh context. Errors name the file and what failed.
    pub fn load(path: &Path, opts: &RefOptions) -> Result<LlamaCpp, String> {
        if !opts.tiled_kquant_gemm {
            stock_kquant_gemm();
        }
        init_backend();
        if !path.is_file() {
            return Err(format!("{}: no such model file", path.display()));
        }
        let c_path = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| format!("{}: path contains a NUL byte", path.display()))?;
        let threads = if opts.n_threads > 0 {
            opts.n_threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get() as i32)
        };
        let n_ctx = opts.n_ctx.max(1);

        // SAFETY: plain constructors returning parameter structs by value.
        let (mut mparams, mut cparams) = unsafe {
            (
                sys::llama_model_default_params(),
                sys::llama_context_default_params(),
            )
        };
        mparams.n_gpu_layers = 0;
        cparams.n_ctx = n_ctx;
        cparams.n_batch = n_ctx;
        cparams.n_ubatch = n_ctx;
        cparams.n_seq_max = 1;
        cparams.n_threads = threads;
        cparams.n_threads_batch = threads;
        cparams.flash_attn_type = if opts.flash_attn {
            sys::LLAMA_FLASH_ATTN_TYPE_ENABLED
        } else {
            sys::LLAMA_FLASH_ATTN_TYPE_DISABLED
        };
        if opts.kv_f32 {
            cparams.type_k = sys::GGML_TYPE_F32;
            cparams.type_v = sys::GGML_TYPE_F32;
        }

        // SAFETY: c_path is a NUL-terminated string alive for the call; params are by value.
        let model = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), mparams) };
        let model = NonNull::new(model).ok_or_else(|| {
            format!(
                "{}: llama.cpp could not load this model (set LCKV_REF_LOG=1 to see why)",
                path.display()
            )
        })?;
        // SAFETY: `model` is a live model; on failure it is freed here and never used again.
        let ctx = unsafe { sys::llama_init_from_model(model.as_ptr(), cparams) };
        let Some(ctx) = NonNull::new(ctx) else {
            // SAFETY: the model was loaded above and nothing else refers to it.
            unsafe { sys::llama_model_free(model.as_ptr()) };
            return Err(format!(
                "{}: llama.cpp could not create a context of {n_ctx} tokens",
                path.display()
            ));
        };
        // SAFETY: the vocabulary is owned by the model, which outlives every use of it here.
        let vocab = unsafe { sys::llama_model_get_vocab(model.as_ptr()) };
        Ok(LlamaCpp {
            model,
            ctx,
            vocab,
            n_ctx,
        })
    }

    pub fn n_vocab(&self) -> usize {
        // SAFETY: `vocab` belongs to the live model.
        let n = unsafe { sys::llama_vocab_n_tokens(self.vocab) };
        n.max(0) as usize
    }

    /// llama.cpp's tokenizer. `add_special` adds BOS/EOS where the model asks for them;
    /// `parse_special` turns special-token text such as `<|im_start|>` into its id.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let len = i32::try_from(text.len()).expect("text longer than i32::MAX bytes");
        let mut buf: Vec<sys::llama_token> = vec![0; text.len() + 8];
        loop {
            // SAFETY: `text` is valid for `len` bytes (no NUL needed: the length is passed) and
            // `buf` is writable for `buf.len()` tokens.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab,
                    text.as_ptr() as *const c_char,
                    len,
                    buf.as_mut_ptr(),
                    buf.len() as i32,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf.into_iter().map(|t| t as u32).collect();
            }
            assert!(
                n != i32::MIN,
                "llama_tokenize overflowed on a {len}-byte text"
            );
            buf.resize((-n) as usize, 0);
        }
    }

    /// Logits of every position of `tokens`, run as one batch on a fresh sequence:
    /// `tokens.len() * n_vocab` values, position-major.
    pub fn logits(&mut self, tokens: &[u32]) -> Vec<f32> {
        if tokens.is_empty() {
            return Vec::new();
        }
        self.clear();
        self.decode(tokens, 0, true);
        let n_vocab = self.n_vocab();
        let mut out = Vec::with_capacity(tokens.len() * n_vocab);
        for i in 0..tokens.len() {
            out.extend_from_slice(self.logits_at(i as i32));
        }
        out
    }

    /// Greedy continuation: the prompt as one batch, then `n` argmax tokens (lowest id on ties),
    /// without stopping at end-of-generation tokens.
    pub fn greedy(&mut self, prompt: &[u32], n: usize) -> Vec<u32> {
        assert!(!prompt.is_empty(), "greedy needs a non-empty prompt");
        self.clear();
        self.decode(prompt, 0, false);
        let mut out = Vec::with_capacity(n);
        for step in 0..n {
            let next = argmax(self.logits_at(-1));
            out.push(next);
            if step + 1 < n {
                self.decode(&[next], prompt.len() + step, false);
            }
        }
        out
    }

    /// Throughput of llama.cpp on this machine: (prompt tokens/s for the prompt as one batch,
    /// generated tokens/s for `n_gen` greedy single-token steps).
    pub fn decode_timed(&mut self, prompt: &[u32], n_gen: usize) -> (f64, f64) {
        assert!(!prompt.is_empty(), "decode_timed needs a non-empty prompt");
        self.clear();
        let start = Instant::now();
        self.decode(prompt, 0, false);
        let prompt_secs = start.elapsed().as_secs_f64();
        let mut next = argmax(self.logits_at(-1));
        let start = Instant::now();
        for step in 0..n_gen {
            self.decode(&[next], prompt.len() + step, false);
            next = argmax(self.logits_at(-1));
        }
        let gen_secs = start.elapsed().as_secs_f64();
        let rate = |n: usize, secs: f64| {
            if secs > 0.0 {
                n as f64 / secs
            } else {
                f64::INFINITY
            }
        };
        (rate(prompt.len(), prompt_secs), rate(n_gen, gen_secs))
    }

    fn clear(&mut self) {
        // SAFETY: the context is live; its memory handle is valid while the context is.
        unsafe {
            let mem = sys::llama_get_memory(self.ctx.as_ptr());
            sys::llama_memory_clear(mem, true);
        }
    }

    fn decode(&mut self, tokens: &[u32], first_pos: usize, all_logits: bool) {
        let end = first_pos + tokens.len();
        assert!(
            end <= self.n_ctx as usize,
            "{end} positions do not fit the reference context of {} (raise RefOptions::n_ctx)",
            self.n_ctx
        );
        let n_vocab = self.n_vocab();
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            panic!("token id {bad} is outside the model's vocabulary of {n_vocab}");
        }
        let batch = Batch::new(tokens, first_pos, all_logits);
        // SAFETY: the context is live and the batch is fully initialised for n_tokens entries.
        let rc = unsafe { sys::llama_decode(self.ctx.as_ptr(), batch.0) };
        assert!(rc == 0, "llama_decode failed with code {rc}");
        // SAFETY: the context is live.
        unsafe { sys::llama_synchronize(self.ctx.as_ptr()) };
    }

    /// Logits of output `i` of the last batch (-1: the last output).
    fn logits_at(&self, i: i32) -> &[f32] {
        let n_vocab = self.n_vocab();
        // SAFETY: the context is live; a non-null result points to n_vocab floats that stay valid
        // until the next decode, which needs `&mut self` and so cannot overlap this borrow.
        unsafe {
            let p = sys::llama_get_logits_ith(self.ctx.as_ptr(), i);
            assert!(!p.is_null(), "llama.cpp has no logits for output {i}");
            std::slice::from_raw_parts(p, n_vocab)
        }
    }
}

impl Drop for LlamaCpp {
    fn drop(&mut self) {
        // SAFETY: context then model, each freed exactly once; nothing refers to them after.
        unsafe {
            sys::llama_free(self.ctx.as_ptr());
            sys::llama_model_free(self.model.as_ptr());
        }
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}
