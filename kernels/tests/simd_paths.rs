//! Every kernel path this CPU supports, checked against the scalar reference on random inputs:
//! quantizers byte for byte, dequantizers exactly, dots within a stated tolerance (only the
//! order of f32 additions may differ), and matmul / attend against loops of scalar calls. The
//! paths come from `common::paths()`, which fails when `LCKV_REQUIRE_PATHS` names one this
//! machine does not run.

mod common;
use common::{paths, Rng};
use lckv_kernels::formats::{Q4_1_M, Q4_K_DMIN, Q6_K_D};
use lckv_kernels::{
    attention, dot, quant, select, AttnQuery, GgmlType, KernelPath, KvLayout, KvView,
    OwnedAttnScratch,
};

/// Element counts to try for `ty`: several block counts; float types also get tails that are
/// not a multiple of the SIMD width.
fn lengths(ty: GgmlType) -> Vec<usize> {
    let bs = ty.block_size();
    if bs == 1 {
        vec![1, 7, 8, 15, 16, 17, 31, 33, 64, 100, 576, 1001]
    } else {
        [1, 2, 3, 5, 8, 9].iter().map(|k| k * bs).collect()
    }
}

/// Random weight bytes that are valid blocks: quantized from random floats, with some blocks
/// replaced by random bytes (every bit pattern of quants/scales is a legal block) with sane
/// f16 scales.
fn random_row(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let x = rng.vec(n, 2.0);
    let mut q = vec![0u8; ty.row_size(n).unwrap()];
    quant::quantize_row(ty, &x, &mut q);
    if matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q4K | GgmlType::Q6K
    ) {
        let ts = ty.type_size();
        for blk in q.chunks_exact_mut(ts).step_by(2) {
            let r = rng.bytes(ts);
            blk.copy_from_slice(&r);
            let d = half::f16::from_f32(0.01 + rng.next_f32().abs() * 0.1).to_le_bytes();
            let at = if ty == GgmlType::Q6K { Q6_K_D } else { 0 };
            blk[at..at + 2].copy_from_slice(&d);
            // The second f16 (Q4_1's min, Q4_K's dmin).
            let m = match ty {
                GgmlType::Q4_1 => Some(Q4_1_M),
                GgmlType::Q4K => Some(Q4_K_DMIN),
                _ => None,
            };
            if let Some(m) = m {
                blk[m..m + 2].copy_from_slice(&half::f16::from_f32(0.05).to_le_bytes());
            }
        }
    }
    q
}

#[test]
fn quantize_and_dequantize_match_scalar_exactly() {
    let mut rng = Rng(7);
    for k in paths() {
        for ty in GgmlType::ALL {
            for n in lengths(ty) {
                let scale = 1.0 + rng.next_f32().abs() * 10.0;
                let mut x = rng.vec(n, scale);
                if n >= 64 {
                    x[..32].fill(0.0); // zero block
                    x[40] = -x[41].abs() - 5.0; // a clear negative maximum
                }
                let rb = ty.row_size(n).unwrap();
                let (mut want, mut got) = (vec![0u8; rb], vec![0u8; rb]);
                quant::quantize_row(ty, &x, &mut want);
                k.quantize_row(ty, &x, &mut got);
                assert!(
                    want == got,
                    "{} quantize {ty} n={n}: bytes differ from scalar",
                    k.path()
                );
                let (mut dw, mut dg) = (vec![0f32; n], vec![0f32; n]);
                quant::dequantize_row(ty, &want, &mut dw);
                k.dequantize_row(ty, &want, &mut dg);
                assert!(
                    dw == dg,
                    "{} dequantize {ty} n={n} differs from scalar",
                    k.path()
                );
            }
        }
    }
}

/// Tolerance: 2e-6 of sum |w_i * a_i| (over dequantized values) plus 1e-6 absolute. Integer
/// block sums are exact on every path; only f32 rounding of the per-block terms differs.
#[test]
fn vec_dot_matches_scalar() {
    let mut rng = Rng(99);
    for k in paths() {
        for wty in GgmlType::ALL {
            let aty = wty.vec_dot_type();
            for n in lengths(wty) {
                for _ in 0..4 {
                    let w = random_row(&mut rng, wty, n);
                    let mut a = vec![0u8; aty.row_size(n).unwrap()];
                    quant::quantize_row(aty, &rng.vec(n, 3.0), &mut a);
                    let (mut wd, mut ad) = (vec![0f32; n], vec![0f32; n]);
                    quant::dequantize_row(wty, &w, &mut wd);
                    quant::dequantize_row(aty, &a, &mut ad);
                    let mag: f64 = wd
                        .iter()
                        .zip(&ad)
                        .map(|(&p, &q)| (p as f64 * q as f64).abs())
                        .sum();
                    let want = dot::vec_dot(wty, n, &w, &a);
                    let got = k.vec_dot(wty, n, &w, &a);
                    assert!(
                        ((got - want) as f64).abs() <= 2e-6 * mag + 1e-6,
                        "{} vec_dot {wty} n={n}: {got} vs scalar {want} (mag {mag})",
                        k.path()
                    );
                }
            }
        }
    }
}

/// matmul on a multi-thread pool equals row-by-row vec_dot of the same path, bit for bit (the
/// same kernel computes every element), for batches below, at and above the batch tile.
#[test]
fn matmul_matches_vec_dot() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let mut rng = Rng(5);
    for k in paths() {
        for wty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q6K,
            GgmlType::F32,
            GgmlType::F16,
        ] {
            let aty = wty.vec_dot_type();
            let (rows, cols) = (301, 512);
            let w: Vec<u8> = (0..rows)
                .flat_map(|_| random_row(&mut rng, wty, cols))
                .collect();
            let arb = aty.row_size(cols).unwrap();
            let wrb = wty.row_size(cols).unwrap();
            for batch in [1usize, 3, 8, 11] {
                let mut a = vec![0u8; batch * arb];
                for b in 0..batch {
                    quant::quantize_row(aty, &rng.vec(cols, 1.0), &mut a[b * arb..(b + 1) * arb]);
                }
                let mut out = vec![f32::NAN; batch * rows];
                pool.install(|| k.matmul(wty, &w, rows, cols, &a, batch, &mut out));
                for b in 0..batch {
                    for r in 0..rows {
                        let want = k.vec_dot(
                            wty,
                            cols,
                            &w[r * wrb..(r + 1) * wrb],
                            &a[b * arb..(b + 1) * arb],
                        );
                        assert_eq!(
                            out[b * rows + r],
                            want,
                            "{} matmul {wty} batch {batch} b={b} r={r}",
                            k.path()
                        );
                    }
                }
            }
        }
    }
}

/// Where a product follows one of ggml's fixed orders (batched F32/F16 products against weights of
/// a multiple of 4 rows, Q4_0/Q4_K weights of a multiple of 8 rows, GEMM rows four at a time and
/// the rest as single rows) every path computes exactly what the scalar twin computes.
#[test]
fn ordered_matmuls_match_scalar_exactly() {
    let mut rng = Rng(17);
    let scalar = select(Some(KernelPath::Scalar)).unwrap();
    for k in paths() {
        for (wty, cols) in [
            (GgmlType::Q4_0, 512),
            // Block counts that leave 1, 3 and 2 blocks past the last group of four.
            (GgmlType::Q4_0, 544),
            (GgmlType::Q4_0, 224),
            (GgmlType::Q4_0, 576),
            (GgmlType::Q4K, 512),
            (GgmlType::Q4K, 768),
            (GgmlType::F32, 512),
            (GgmlType::F16, 512),
            // A length with a tail of 3 (elements past the last 8 go to lanes 0..3 in order).
            (GgmlType::F32, 523),
            (GgmlType::F16, 523),
        ] {
            // ARM paths run their own vector dots for Q4_0 and Q4_K weights rather than x86's
            // repacked order (`matmul_tiles_match_the_paths_own_dot_exactly` covers them).
            let arm = matches!(k.path(), KernelPath::Neon | KernelPath::Dotprod);
            if arm && matches!(wty, GgmlType::Q4_0 | GgmlType::Q4K) {
                continue;
            }
            let aty = wty.vec_dot_type();
            // 72: sixteen-row groups and a remainder in the pieces matmul splits it into.
            let rows = 72;
            let w: Vec<u8> = (0..rows)
                .flat_map(|_| random_row(&mut rng, wty, cols))
                .collect();
            let arb = aty.row_size(cols).unwrap();
            for batch in [1usize, 2, 5, 8, 11] {
                let mut a = vec![0u8; batch * arb];
                for b in 0..batch {
                    quant::quantize_row(aty, &rng.vec(cols, 1.0), &mut a[b * arb..(b + 1) * arb]);
                }
                let mut want = vec![f32::NAN; batch * rows];
                scalar.matmul(wty, &w, rows, cols, &a, batch, &mut want);
                // ARM paths do not follow x86's batched F32 order (ARM's tinyBLAS order differs
                // and parity there has tolerances): there every output is the one-row dot, in
                // the order the scalar twin and NEON share.
                if arm && wty == GgmlType::F32 {
                    let wrb = wty.row_size(cols).unwrap();
                    for (i, v) in want.iter_mut().enumerate() {
                        let (b, r) = (i / rows, i % rows);
                        *v = scalar.vec_dot(wty, cols, &w[r * wrb..][..wrb], &a[b * arb..][..arb]);
                    }
                }
                let mut out = vec![f32::NAN; batch * rows];
                k.matmul(wty, &w, rows, cols, &a, batch, &mut out);
                for (i, (o, w)) in out.iter().zip(&want).enumerate() {
                    assert_eq!(
                        o.to_bits(),
                        w.to_bits(),
                        "{} matmul {wty} batch {batch} element {i}: {o} vs {w}",
                        k.path()
                    );
                }
            }
        }
    }
}

/// On every path, matmul (four-row kernels, prompt tiles) gives the bits of that path's own
/// one-row dot for each output: the tiles share work, never change an output's float order.
#[test]
fn matmul_tiles_match_the_paths_own_dot_exactly() {
    let mut rng = Rng(23);
    for k in paths() {
        for wty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q6K,
        ] {
            let aty = wty.vec_dot_type();
            // Two super-blocks for the K-quants.
            let cols = 512;
            // 12 rows: not a multiple of 8, so Q4_0 takes ggml's vec_dot order too.
            let rows = 12 + 3;
            let w: Vec<u8> = (0..rows)
                .flat_map(|_| random_row(&mut rng, wty, cols))
                .collect();
            let (wrb, arb) = (wty.row_size(cols).unwrap(), aty.row_size(cols).unwrap());
            for batch in [1usize, 2, 3, 5, 8, 11] {
                let mut a = vec![0u8; batch * arb];
                for b in 0..batch {
                    quant::quantize_row(aty, &rng.vec(cols, 1.0), &mut a[b * arb..(b + 1) * arb]);
                }
                let mut out = vec![f32::NAN; batch * rows];
                k.matmul(wty, &w, rows, cols, &a, batch, &mut out);
                for b in 0..batch {
                    for r in 0..rows {
                        let want = k.vec_dot(wty, cols, &w[r * wrb..][..wrb], &a[b * arb..][..arb]);
                        let o = out[b * rows + r];
                        assert_eq!(
                            o.to_bits(),
                            want.to_bits(),
                            "{} matmul {wty} batch {batch} row {r} token {b}: {o} vs {want}",
                            k.path()
                        );
                    }
                }
            }
        }
    }
}

/// Kernels::attend equals attend_scalar: bit for bit on F32 and F16 caches (every path keeps
/// the twin's order, fp_order), within 1e-5 on Q8_0 (its dot kernels order block sums
/// differently per path); for single queries and batched ones.
#[test]
fn attend_matches_scalar() {
    let mut rng = Rng(11);
    for k in paths() {
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0] {
            let layout = KvLayout::new(ty, 2, 64).unwrap();
            let ctx = 37;
            let mut kc = vec![0u8; ctx * layout.pos_bytes()];
            let mut vc = vec![0u8; ctx * layout.pos_bytes()];
            for row in 0..ctx * 2 {
                let rb = layout.row_bytes();
                quant::quantize_row(ty, &rng.vec(64, 1.0), &mut kc[row * rb..(row + 1) * rb]);
                quant::quantize_row(ty, &rng.vec(64, 1.0), &mut vc[row * rb..(row + 1) * rb]);
            }
            let q = rng.vec(64, 1.0);
            let mut s1 = OwnedAttnScratch::new(ctx, 64);
            let mut s2 = OwnedAttnScratch::new(ctx, 64);
            for (g, vis, batched) in [
                (0, 0..ctx, false),
                (0, 0..ctx, true),
                (1, 5..20, false),
                (1, 5..20, true),
                (1, 3..3, false),
            ] {
                let (mut o1, mut o2) = (vec![0f32; 64], vec![1f32; 64]);
                let query = AttnQuery {
                    kv: KvView {
                        layout,
                        k: &kc,
                        v: &vc,
                    },
                    kv_head: g,
                    visible: vis.clone(),
                    q: &q,
                    scale: 0.125,
                    batched,
                };
                attention::attend_scalar(&query, &mut s1.view(), &mut o1);
                k.attend(&query, &mut s2.view(), &mut o2);
                let tol = if ty == GgmlType::Q8_0 { 1e-5 } else { 0.0 };
                for (i, (a, b)) in o1.iter().zip(&o2).enumerate() {
                    assert!(
                        (a - b).abs() <= tol,
                        "{} attend {ty} g={g} {vis:?} [{i}]: {a} vs {b}",
                        k.path()
                    );
                }
            }
        }
    }
}

#[test]
fn unsupported_or_unknown_paths_are_errors() {
    for p in KernelPath::ALL {
        match select(Some(p)) {
            Ok(k) => assert!(p.cpu_supports() && k.path() == p),
            Err(e) => assert!(e.contains(p.name()), "error should name the path: {e}"),
        }
    }
    assert!("avx3"
        .parse::<KernelPath>()
        .unwrap_err()
        .contains("scalar, avx2"));
    assert_eq!("AVX2".parse::<KernelPath>().unwrap(), KernelPath::Avx2);
    assert_eq!(KernelPath::Avx512.to_string(), "avx512");
    // The default choice is one of the supported paths.
    assert!(lckv_kernels::kernels().path().cpu_supports());
}

/// `LCKV_REQUIRE_PATHS` passes for what this machine runs, and fails, naming it, for a path or
/// feature it lacks and for a name that is neither.
#[test]
fn required_paths_name_what_is_missing() {
    let ps: Vec<_> = KernelPath::ALL
        .into_iter()
        .filter_map(|p| select(Some(p)).ok())
        .collect();
    let mut have: Vec<String> = ps.iter().map(|k| k.path().name().to_string()).collect();
    have.extend(
        ps.iter()
            .flat_map(|k| k.features().iter().map(|f| f.to_string())),
    );
    assert_eq!(common::check_required(&ps, &have.join(",")), Ok(()));
    assert_eq!(common::check_required(&ps, " , "), Ok(()));
    // A path this CPU lacks (there is always one: x86 has no NEON, aarch64 no AVX2).
    let lacking = KernelPath::ALL
        .into_iter()
        .find(|p| !ps.iter().any(|k| k.path() == *p))
        .unwrap();
    let e = common::check_required(&ps, &format!("scalar,{lacking}")).unwrap_err();
    assert!(e.contains(&format!("missing here: {lacking};")), "{e}");
    // A feature is missing when no table holds its kernels (its path may exist without it).
    for f in lckv_kernels::dispatch::KernelFeature::ALL {
        let held = ps.iter().any(|k| k.features().contains(&f));
        assert_eq!(common::check_required(&ps, f.name()).is_ok(), held, "{f}");
    }
    let e = common::check_required(&ps, "scalar,avx3").unwrap_err();
    assert!(e.contains("\"avx3\"") && e.contains("avx512-vnni"), "{e}");
}
