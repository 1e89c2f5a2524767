//! lckv next to llama.cpp on the same GGUF files, alternating runs in one process: prompt
//! processing (pp) and generation (tg) tokens/s for each model and thread count, and the ratio
//! lckv / llama.cpp. Run with
//!   cargo bench --features reference --bench side_by_side -- [MODEL.gguf ...]
//! (default: the real models and, when generated, the bench models in models/random/bench/).
//! Environment: LCKV_BENCH_THREADS (default "1,2"), LCKV_BENCH_PP (128), LCKV_BENCH_TG (64),
//! LCKV_BENCH_REPS (3).

use std::path::PathBuf;
use std::time::Instant;

use lckv::model::forward::Logits;
use lckv::model::{LoadOptions, Model};
use lckv::reference::{LlamaCpp, RefOptions};
use lckv::session::{PrefillChoice, Session, SessionOptions};
use lckv_kernels::GgmlType;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn argmax(l: &[f32]) -> u32 {
    l.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0 as u32
}

fn lckv_run(m: &Model, prompt: &[u32], n_gen: usize) -> (f64, f64) {
    let opts = SessionOptions {
        n_ctx: prompt.len() + n_gen + 8,
        n_batch: prompt.len(),
        kv_type: GgmlType::F16,
        prefill: PrefillChoice::Auto,
        early_exit: None,
        logit_rows: 1,
    };
    let mut s = Session::new(m, lckv_kernels::kernels(), opts).unwrap();
    let t = Instant::now();
    s.prefill(prompt, Logits::Last, &mut |_, _| {}).unwrap();
    let pp = prompt.len() as f64 / t.elapsed().as_secs_f64();
    let mut next = argmax(s.logits());
    let t = Instant::now();
    for _ in 0..n_gen {
        next = argmax(s.decode(next).unwrap());
    }
    (pp, n_gen as f64 / t.elapsed().as_secs_f64())
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let models_dir = std::env::var_os("LCKV_MODELS")
        .map(PathBuf::from)
        .unwrap_or(root.join("models"));
    let mut files: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| a.ends_with(".gguf"))
        .map(PathBuf::from)
        .collect();
    if files.is_empty() {
        for f in [
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "gemma-3-270m-Q4_K_M.gguf",
            "random/bench/tinyllama-1.1b-q4_0.gguf",
            "random/bench/tinyllama-1.1b-q8_0.gguf",
            "random/bench/tinyllama-1.1b-q4_k.gguf",
            "random/bench/phi3-mini-q4_0.gguf",
        ] {
            let p = models_dir.join(f);
            if p.is_file() {
                files.push(p);
            }
        }
    }
    let threads: Vec<usize> = std::env::var("LCKV_BENCH_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    let (pp, tg, reps) = (
        env_usize("LCKV_BENCH_PP", 128),
        env_usize("LCKV_BENCH_TG", 64),
        env_usize("LCKV_BENCH_REPS", 3),
    );
    println!(
        "kernels: {}; pp{pp} / tg{tg}, median of {reps} alternating runs",
        lckv_kernels::kernels().path()
    );
    println!("llama.cpp: {}", lckv::reference::system_info());
    println!("| model | threads | llama.cpp pp t/s | lckv pp t/s | pp ratio | llama.cpp tg t/s | lckv tg t/s | tg ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for f in &files {
        let model = Model::load(f, &LoadOptions::default()).unwrap();
        let v = model.cfg.n_vocab as u32;
        let prompt: Vec<u32> = (0..pp as u32).map(|i| (i * 7919 + 13) % v).collect();
        for &t in &threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            let mut reference = LlamaCpp::load(
                f,
                &RefOptions {
                    n_ctx: (pp + tg + 16) as u32,
                    n_threads: t as i32,
                    kv_f32: false,
                    flash_attn: false,
                    tiled_kquant_gemm: true,
                },
            )
            .unwrap();
            let (mut rp, mut rg, mut lp, mut lg) = (vec![], vec![], vec![], vec![]);
            // Warm-up both, then alternate.
            reference.decode_timed(&prompt, 4);
            pool.install(|| lckv_run(&model, &prompt, 4));
            for _ in 0..reps {
                let (a, b) = reference.decode_timed(&prompt, tg);
                rp.push(a);
                rg.push(b);
                let (c, d) = pool.install(|| lckv_run(&model, &prompt, tg));
                lp.push(c);
                lg.push(d);
            }
            let (rp, rg, lp, lg) = (median(rp), median(rg), median(lp), median(lg));
            println!(
                "| {} | {t} | {rp:.1} | {lp:.1} | {:.2} | {rg:.1} | {lg:.1} | {:.2} |",
                f.file_name().unwrap().to_string_lossy(),
                lp / rp,
                lg / rg
            );
        }
    }
}
