//! Throughput of `Kernels::matmul` per weight type on every kernel path this CPU supports:
//! one activation row (decode) on one thread and on the whole pool, and a batch of 8 (prefill).
//!
//!     cargo run --release -p lckv-kernels --example kernel_bench [rows] [cols]

use lckv_kernels::{quant, select, GgmlType, KernelPath};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(2048);
    let cols = args.get(1).copied().unwrap_or(2048);
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
    ];
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool");
    println!(
        "matmul {rows}x{cols}, threads in pool: {}",
        rayon::current_num_threads()
    );
    println!(
        "{:<8} {:<6} {:>14} {:>14} {:>14}",
        "path", "type", "1 thr GB/s", "pool GB/s", "pool b=8 GB/s"
    );
    let mut seed = 1u32;
    let x: Vec<f32> = (0..rows * cols)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect();
    for p in KernelPath::ALL {
        let Ok(k) = select(Some(p)) else { continue };
        for ty in types {
            let wrb = ty.row_size(cols).expect("cols must be a multiple of 256");
            let mut w = vec![0u8; rows * wrb];
            for r in 0..rows {
                quant::quantize_row(
                    ty,
                    &x[r * cols..(r + 1) * cols],
                    &mut w[r * wrb..(r + 1) * wrb],
                );
            }
            let aty = ty.vec_dot_type();
            let arb = aty.row_size(cols).expect("activation row");
            let mut a = vec![0u8; 8 * arb];
            for b in 0..8 {
                k.quantize_row(
                    aty,
                    &x[b * cols..(b + 1) * cols],
                    &mut a[b * arb..(b + 1) * arb],
                );
            }
            let mut out = vec![0f32; 8 * rows];
            let gbs = |batch: usize, pool: Option<&rayon::ThreadPool>, out: &mut [f32]| {
                let run = |out: &mut [f32]| {
                    k.matmul(
                        ty,
                        &w,
                        rows,
                        cols,
                        &a[..batch * arb],
                        batch,
                        &mut out[..batch * rows],
                    )
                };
                let iters = 20;
                let t = Instant::now();
                for _ in 0..iters {
                    match pool {
                        Some(p) => p.install(|| run(out)),
                        None => run(out),
                    }
                }
                (iters * w.len()) as f64 / t.elapsed().as_secs_f64() / 1e9
            };
            let t1 = gbs(1, Some(&one), &mut out);
            let tp = gbs(1, None, &mut out);
            let tb = gbs(8, None, &mut out);
            println!(
                "{:<8} {:<6} {:>14.2} {:>14.2} {:>14.2}",
                p.name(),
                ty.name(),
                t1,
                tp,
                tb
            );
        }
    }
}
