//! Runtime choice of the kernel path. `kernels()` picks the best path the CPU supports once
//! (or the one named by `LCKV_KERNELS`), and every call after that goes through a table of
//! function pointers resolved per type, so hot loops never branch on the type or the ISA. A
//! path's table also takes the kernels of CPU features beyond its own (`KernelFeature`).

use crate::attention::{AttendFn, AttnFns, AttnQuery, AttnScratch};
use crate::dot::{Dot4Fn, Gemv16Fn, Tile16Fn, Tile4Fn, Tile8Fn, TileFn, VecDotFn};
use crate::formats::GgmlType;
use crate::quant::{check_row, DequantFn, QuantFn};
use std::fmt;
use std::sync::OnceLock;

/// An instruction-set path: the scalar reference or one of the SIMD kernel sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPath {
    Scalar,
    Avx2,
    Avx512,
    Neon,
    Dotprod,
}

impl KernelPath {
    pub const ALL: [KernelPath; 5] = [
        KernelPath::Scalar,
        KernelPath::Avx2,
        KernelPath::Avx512,
        KernelPath::Neon,
        KernelPath::Dotprod,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
            KernelPath::Neon => "neon",
            KernelPath::Dotprod => "dotprod",
        }
    }

    /// Whether this CPU can run the path's instructions.
    pub fn cpu_supports(self) -> bool {
        match self {
            KernelPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => {
                KernelPath::Avx2.cpu_supports()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            KernelPath::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            KernelPath::Dotprod => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Whether this build has kernels for the path (beyond the scalar fallbacks).
    pub fn implemented(self) -> bool {
        match self {
            KernelPath::Scalar => true,
            KernelPath::Avx2 | KernelPath::Avx512 => cfg!(target_arch = "x86_64"),
            KernelPath::Neon | KernelPath::Dotprod => cfg!(target_arch = "aarch64"),
        }
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KernelPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KernelPath::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!("unknown kernel path {s:?}: use one of scalar, avx2, avx512, neon, dotprod")
            })
    }
}

/// A CPU feature beyond a path's own that makes the path install kernels of its own in place of
/// some of the path's: which kernels a table holds depends on it, so tests that run every path
/// ask [`Kernels::features`] whether those kernels were among them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelFeature {
    /// AVX-512 VNNI on the AVX-512 path: the VNNI prompt tiles, the sixteen-row kernels and the
    /// VNNI Q4_0 eight-row tile.
    Avx512Vnni,
}

impl KernelFeature {
    pub const ALL: [KernelFeature; 1] = [KernelFeature::Avx512Vnni];

    pub fn name(self) -> &'static str {
        match self {
            KernelFeature::Avx512Vnni => "avx512-vnni",
        }
    }
}

impl fmt::Display for KernelFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const NT: usize = GgmlType::ALL.len();

/// One kernel path's functions, per type.
pub struct Kernels {
    path: KernelPath,
    /// The features whose kernels this table holds (see [`KernelFeature`]).
    features: &'static [KernelFeature],
    dot: [VecDotFn; NT],
    /// The order of a batched product where it differs from `dot` (see `dot::dot_gemm_fn`).
    dot_gemm: [Option<VecDotFn>; NT],
    /// Four-row versions of `dot_gemm` (same order per row), where a path has them.
    dot4_gemm: [Option<Dot4Fn>; NT],
    /// The order for weights of a multiple of 8 rows where it differs (see `dot::dot_rows8_fn`).
    dot_rows8: [Option<(VecDotFn, VecDotFn)>; NT],
    /// Four-row versions of `dot` (same order per row), where a path has them.
    dot4: [Option<Dot4Fn>; NT],
    /// Four-row, two-token tiles of `dot` (same order per output), where a path has them.
    tile4: [Option<Tile4Fn>; NT],
    /// Eight-row, four-token tiles of `dot` (same order per output), where a path has them.
    tile8: [Option<Tile8Fn>; NT],
    /// Four-row versions of `dot_rows8` where its GEMM and GEMV orders agree (Q4_0).
    dot4_rows8: [Option<Dot4Fn>; NT],
    /// Eight-row, four-token tiles of `dot_rows8` where its GEMM and GEMV orders agree (Q4_0).
    tile8_rows8: [Option<Tile8Fn>; NT],
    /// Sixteen-row, one-token versions of `dot_rows8`'s GEMV order, where a path has them.
    gemv16_rows8: [Option<Gemv16Fn>; NT],
    /// Sixteen-row, eight-token tiles of `dot_rows8` (its GEMM and GEMV orders).
    tile16_rows8: [Option<(Tile16Fn, Tile16Fn)>; NT],
    quant: [QuantFn; NT],
    dequant: [DequantFn; NT],
    attend: AttendFn,
    silu_mul: fn(&mut [f32], &[f32]),
}

/// The kernels chosen for this process: `LCKV_KERNELS` when set and usable, else the best path
/// the CPU supports. An unusable `LCKV_KERNELS` is reported on stderr once and ignored; call
/// [`kernels_from_env`] first to turn it into an error instead.
pub fn kernels() -> &'static Kernels {
    static CHOSEN: OnceLock<Kernels> = OnceLock::new();
    CHOSEN.get_or_init(|| match kernels_from_env() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("lckv: {e}; using the best path this CPU supports");
            best()
        }
    })
}

/// The kernels `LCKV_KERNELS` asks for (the best supported path when it is unset or empty).
pub fn kernels_from_env() -> Result<Kernels, String> {
    match std::env::var("LCKV_KERNELS") {
        Ok(v) if !v.trim().is_empty() => {
            let p: KernelPath = v.parse().map_err(|e| format!("LCKV_KERNELS: {e}"))?;
            select(Some(p)).map_err(|e| format!("LCKV_KERNELS={v}: {e}"))
        }
        _ => Ok(best()),
    }
}

fn best() -> Kernels {
    for p in [
        KernelPath::Avx512,
        KernelPath::Avx2,
        KernelPath::Dotprod,
        KernelPath::Neon,
    ] {
        if p.implemented() && p.cpu_supports() {
            return build(p);
        }
    }
    build(KernelPath::Scalar)
}

/// Kernels for `path` (None: the best one this CPU supports). Errors when the CPU lacks the
/// path's instructions or this build has no kernels for it.
pub fn select(path: Option<KernelPath>) -> Result<Kernels, String> {
    let Some(p) = path else { return Ok(best()) };
    if !p.cpu_supports() {
        return Err(format!(
            "this CPU does not support the {p} kernels: use scalar or leave LCKV_KERNELS unset"
        ));
    }
    if !p.implemented() {
        return Err(format!(
            "this build has no {p} kernels: use scalar or leave LCKV_KERNELS unset"
        ));
    }
    Ok(build(p))
}

fn build(path: KernelPath) -> Kernels {
    // `mut` is unused on targets with no SIMD paths (armv7), where only the twins exist.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_mut)
    )]
    let mut k = Kernels {
        path,
        features: &[],
        dot: GgmlType::ALL.map(crate::dot::dot_fn),
        dot_gemm: GgmlType::ALL.map(crate::dot::dot_gemm_fn),
        dot_rows8: GgmlType::ALL.map(crate::dot::dot_rows8_fn),
        dot4_gemm: [None; NT],
        dot4: [None; NT],
        tile4: [None; NT],
        tile8: [None; NT],
        dot4_rows8: [None; NT],
        tile8_rows8: [None; NT],
        gemv16_rows8: [None; NT],
        tile16_rows8: [None; NT],
        // Activations (and cached K/V) quantize as llama.cpp's runtime does; weights written by
        // `lckv quantize` use `quant::quantize_row` directly.
        quant: GgmlType::ALL.map(crate::quant::activation_quant_fn),
        dequant: GgmlType::ALL.map(crate::quant::dequant_fn),
        attend: crate::attention::attend_baseline,
        silu_mul: crate::ops::silu_mul,
    };
    #[cfg(target_arch = "x86_64")]
    if matches!(path, KernelPath::Avx2 | KernelPath::Avx512) {
        // Only reached after cpu_supports() confirmed avx2 + fma + f16c (and, for Avx512,
        // avx512f + avx512bw + avx512vl).
        crate::arch::x86::avx2::install(&mut k.dot, &mut k.quant, &mut k.dequant);
        crate::arch::x86::avx2::install_f32_ops(&mut k.attend, &mut k.silu_mul, &mut k.dot_rows8);
        crate::arch::x86::fp_gemm::install(&mut k.dot_gemm, &mut k.dot4_gemm);
        crate::arch::x86::avx2::install_dot4(&mut k.dot4, &mut k.dot4_rows8);
        let vnni = path == KernelPath::Avx512 && std::arch::is_x86_feature_detected!("avx512vnni");
        crate::arch::x86::tile::install(&mut k.tile8_rows8, &mut k.tile4, vnni);
        if path == KernelPath::Avx512 {
            crate::arch::x86::avx512::install(&mut k.dot);
            crate::arch::x86::avx512::install_dot4(&mut k.dot4);
            if vnni {
                crate::arch::x86::vnni_tile::install(&mut k.tile8, &mut k.tile4);
                crate::arch::x86::gemv16::install(&mut k.gemv16_rows8, &mut k.tile16_rows8);
                k.features = &[KernelFeature::Avx512Vnni];
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    match path {
        // Only reached after cpu_supports() confirmed neon (and dotprod).
        KernelPath::Neon => {
            crate::arch::arm::neon::install_neon(&mut k.dot);
            crate::arch::arm::neon_blocks::install(false, &mut k.dot, &mut k.dot4, &mut k.tile4);
            crate::arch::arm::neon_kquants::install(false, &mut k.dot, &mut k.dot4, &mut k.tile4);
        }
        KernelPath::Dotprod => {
            crate::arch::arm::neon::install_dotprod(&mut k.dot);
            crate::arch::arm::neon_blocks::install(true, &mut k.dot, &mut k.dot4, &mut k.tile4);
            crate::arch::arm::neon_kquants::install(true, &mut k.dot, &mut k.dot4, &mut k.tile4);
        }
        _ => {}
    }
    // The repacked-weight order is what llama.cpp's x86 build runs; its ARM build repacks in
    // orders of its own, and parity on ARM has tolerances anyway. Without a vector kernel in that
    // order here it would run scalar, so ARM paths keep their vector dots for all weights.
    #[cfg(target_arch = "aarch64")]
    if matches!(path, KernelPath::Neon | KernelPath::Dotprod) {
        k.dot_rows8 = [None; NT];
    }
    // ARM's tinyBLAS order is not x86's (parity there has tolerances): batched F32 products use
    // the vector dot rather than the scalar statement of the x86 order.
    #[cfg(target_arch = "aarch64")]
    if matches!(path, KernelPath::Neon | KernelPath::Dotprod) {
        k.dot_gemm[GgmlType::F32.index()] = None;
    }
    k
}

/// Activation rows handled together against each weight row in `matmul` (weight-row reuse).
const BATCH_TILE: usize = 8;

struct MatmulJob<'a> {
    dot: VecDotFn,
    /// The kernel for activation rows from `gemm_rows` on (of this tile).
    dot_tail: VecDotFn,
    /// Four weight rows at a time, where the path has it; only where `dot` and `dot_tail` compute
    /// in the same order.
    dot4: Option<Dot4Fn>,
    /// Eight weight rows by four activation rows at a time (in the order of `dot`, or of
    /// `dot_rows8` where it applies), under the same condition.
    tile8: Option<Tile8Fn>,
    /// Four weight rows by two activation rows at a time, under the same condition.
    tile4: Option<Tile4Fn>,
    /// Sixteen weight rows against the one activation row of a decode step.
    gemv16: Option<Gemv16Fn>,
    /// Sixteen weight rows by the activation rows of a batch tile: (for rows before
    /// `gemm_rows`, after).
    tile16: Option<(Tile16Fn, Tile16Fn)>,
    gemm_rows: usize,
    w: &'a [u8],
    w_row: usize,
    a: &'a [u8],
    a_row: usize,
    cols: usize,
    batch: usize,
    grain: usize,
}

impl Kernels {
    pub fn path(&self) -> KernelPath {
        self.path
    }

    /// The features whose kernels this table holds, beyond the path's own (empty for most).
    pub fn features(&self) -> &'static [KernelFeature] {
        self.features
    }

    /// Dot product, as [`crate::dot::vec_dot`].
    pub fn vec_dot(&self, wty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
        check_row(wty, n, w.len(), "vec_dot weights");
        check_row(wty.vec_dot_type(), n, a.len(), "vec_dot activations");
        self.dot[wty.index()](n, w, a)
    }

    /// Quantization, as [`crate::quant::quantize_row`].
    pub fn quantize_row(&self, ty: GgmlType, src: &[f32], dst: &mut [u8]) {
        check_row(ty, src.len(), dst.len(), "quantize_row");
        self.quant[ty.index()](src, dst);
    }

    /// Dequantization, as [`crate::quant::dequantize_row`].
    pub fn dequantize_row(&self, ty: GgmlType, src: &[u8], dst: &mut [f32]) {
        check_row(ty, dst.len(), src.len(), "dequantize_row");
        self.dequant[ty.index()](src, dst);
    }

    /// `out[b * rows + r] = dot(weight row r, activation row b)` for `b < batch`. `a` holds `batch`
    /// rows of `row_size(wty.vec_dot_type(), cols)` bytes. Rows are split across the current
    /// rayon pool; nothing is allocated.
    ///
    /// # Panics
    /// When a size disagrees (a caller bug: shapes are validated at load time).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        wty: GgmlType,
        w: &[u8],
        rows: usize,
        cols: usize,
        a: &[u8],
        batch: usize,
        out: &mut [f32],
    ) {
        let aty = wty.vec_dot_type();
        let (Some(w_row), Some(a_row)) = (wty.row_size(cols), aty.row_size(cols)) else {
            panic!("matmul: {cols} columns is not a multiple of the {wty} block size");
        };
        assert!(
            w.len() >= rows * w_row,
            "matmul: {rows} rows of {cols} {wty} need {} bytes, weights have {}",
            rows * w_row,
            w.len()
        );
        assert!(
            a.len() == batch * a_row && out.len() == batch * rows,
            "matmul: {batch} activation rows need {} bytes (have {}) and {} outputs (have {})",
            batch * a_row,
            a.len(),
            batch * rows,
            out.len()
        );
        if rows == 0 || batch == 0 {
            return;
        }
        let threads = rayon::current_num_threads().max(1);
        // About four pieces per thread for balance, but never so small that splitting costs more
        // than the dots (a few KiB of weights per piece).
        let min_rows = (8192 / w_row.max(1)).max(4);
        let grain = (rows / (4 * threads)).max(min_rows);
        // A batch of two or more rows against a weight of a multiple of 4 rows is where ggml's
        // x86 build switches F32/F16 products to its GEMM (tinyBLAS) order; follow it there.
        // Weights of a multiple of 8 rows are where it repacks Q4_0 and Q4_K into 8-row
        // interleaved blocks, with kernels of their own order: a GEMM for activation rows four
        // at a time and a GEMV for the rest.
        let t = wty.index();
        let mut gemv16 = None;
        let mut tile16 = None;
        let (dot, dot_tail, gemm_rows, dot4, tile8, tile4) =
            match (self.dot_gemm[t], self.dot_rows8[t]) {
                (Some(gemm), _) if batch >= 2 && rows.is_multiple_of(4) => {
                    (gemm, gemm, batch, self.dot4_gemm[t], None, None)
                }
                // dot4_rows8 and tile8_rows8 exist only where the GEMM and GEMV orders agree.
                (_, Some((gemm, gemv))) if rows.is_multiple_of(8) => {
                    // Sixteen rows where the path has them: a tile for a batch, else one token.
                    if batch >= 2 {
                        tile16 = self.tile16_rows8[t];
                    } else {
                        gemv16 = self.gemv16_rows8[t];
                    }
                    (
                        gemm,
                        gemv,
                        batch & !3,
                        self.dot4_rows8[t],
                        self.tile8_rows8[t],
                        None,
                    )
                }
                _ => {
                    let d = self.dot[t];
                    // One token: the four-row dots where the path has them (a tile's sharing
                    // across tokens buys nothing), else its four-row tile.
                    let (tile8, tile4) = if batch >= 2 {
                        (self.tile8[t], self.tile4[t])
                    } else if self.dot4[t].is_none() {
                        (None, self.tile4[t])
                    } else {
                        (None, None)
                    };
                    (d, d, batch, self.dot4[t], tile8, tile4)
                }
            };
        for b0 in (0..batch).step_by(BATCH_TILE) {
            let bt = BATCH_TILE.min(batch - b0);
            let job = MatmulJob {
                dot,
                dot_tail,
                dot4,
                tile8,
                tile4,
                gemv16,
                tile16,
                gemm_rows: gemm_rows.saturating_sub(b0),
                w,
                w_row,
                a: &a[b0 * a_row..(b0 + bt) * a_row],
                a_row,
                cols,
                batch: bt,
                grain,
            };
            let mut parts: [&mut [f32]; BATCH_TILE] = Default::default();
            for (p, chunk) in parts
                .iter_mut()
                .zip(out[b0 * rows..(b0 + bt) * rows].chunks_mut(rows))
            {
                *p = chunk;
            }
            matmul_rows(&job, 0, rows, parts);
        }
    }

    pub fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        crate::ops::rms_norm(x, w, eps, out)
    }

    pub fn softmax_inplace(&self, x: &mut [f32]) {
        crate::ops::softmax_inplace(x)
    }

    pub fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "silu_mul: gate and up lengths differ");
        (self.silu_mul)(gate, up)
    }

    pub fn gelu_tanh_mul(&self, gate: &mut [f32], up: &[f32]) {
        crate::ops::gelu_tanh_mul(gate, up)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        x: &mut [f32],
        n_heads: usize,
        head_dim: usize,
        n_rot: usize,
        cos: &[f32],
        sin: &[f32],
        neox: bool,
    ) {
        crate::ops::rope(x, n_heads, head_dim, n_rot, cos, sin, neox)
    }

    /// Attention, as [`crate::attention::attend_scalar`], with this path's dot kernels.
    pub fn attend(&self, query: &AttnQuery, scratch: &mut AttnScratch, out: &mut [f32]) {
        let i = query.kv.layout.ty.index();
        let fns = AttnFns {
            dot: self.dot[i],
            quant: self.quant[i],
            dequant: self.dequant[i],
        };
        (self.attend)(&fns, query, scratch, out);
    }
}

/// Tile kernels of `R` weight rows by up to `T` activation rows over rows `done..n` of this
/// leaf, as far as whole groups of `R` rows go: `tiles.0` for activation rows before
/// `job.gemm_rows`, `tiles.1` for the rest (never both in one call). Returns the first row it
/// did not cover.
fn run_tiles<const R: usize, const T: usize>(
    job: &MatmulJob,
    r0: usize,
    n: usize,
    mut done: usize,
    parts: &mut [&mut [f32]; BATCH_TILE],
    tiles: (TileFn<R, T>, TileFn<R, T>),
) -> usize {
    let split = job.gemm_rows.min(job.batch);
    while done + R <= n {
        let w = &job.w[(r0 + done) * job.w_row..][..R * job.w_row];
        let mut b = 0;
        while b < job.batch {
            let (end, tile) = if b < split {
                (split, tiles.0)
            } else {
                (job.batch, tiles.1)
            };
            let nt = (end - b).min(T);
            let a = &job.a[b * job.a_row..(b + nt) * job.a_row];
            let o = tile(w, job.w_row, a, job.a_row, nt);
            for (t, o) in o.iter().enumerate().take(nt) {
                parts[b + t][done..done + R].copy_from_slice(o);
            }
            b += nt;
        }
        done += R;
    }
    done
}

/// Rows `r0..r0 + n` of one batch tile; `parts[b]` is the output slice of activation row `b` for
/// exactly these rows. Splits in halves with `rayon::join` down to `grain` rows.
fn matmul_rows(job: &MatmulJob, r0: usize, n: usize, mut parts: [&mut [f32]; BATCH_TILE]) {
    if n > job.grain {
        // Halves of a multiple of 8 rows where possible, so that the tiles cover them.
        let mid = n / 2;
        let mut right: [&mut [f32]; BATCH_TILE] = Default::default();
        for (p, r) in parts.iter_mut().zip(right.iter_mut()).take(job.batch) {
            let (lo, hi) = std::mem::take(p).split_at_mut(mid);
            *p = lo;
            *r = hi;
        }
        rayon::join(
            || matmul_rows(job, r0, mid, parts),
            || matmul_rows(job, r0 + mid, n - mid, right),
        );
        return;
    }
    let mut done = 0;
    if let Some(tile16) = job.tile16 {
        done = run_tiles(job, r0, n, done, &mut parts, tile16);
    }
    if let Some(gemv16) = job.gemv16 {
        while done + 16 <= n {
            let w = &job.w[(r0 + done) * job.w_row..][..16 * job.w_row];
            parts[0][done..done + 16].copy_from_slice(&gemv16(w, job.w_row, &job.a[..job.a_row]));
            done += 16;
        }
    }
    if let Some(tile8) = job.tile8 {
        done = run_tiles(job, r0, n, done, &mut parts, (tile8, tile8));
    }
    if let Some(tile4) = job.tile4 {
        done = run_tiles(job, r0, n, done, &mut parts, (tile4, tile4));
    }
    if let Some(dot4) = job.dot4 {
        while done + 4 <= n {
            let w4 = &job.w[(r0 + done) * job.w_row..][..4 * job.w_row];
            for (b, p) in parts.iter_mut().enumerate().take(job.batch) {
                let o = dot4(w4, job.w_row, &job.a[b * job.a_row..][..job.a_row]);
                p[done..done + 4].copy_from_slice(&o);
            }
            done += 4;
        }
    }
    for r in done..n {
        let wr = &job.w[(r0 + r) * job.w_row..][..job.w_row];
        for (b, p) in parts.iter_mut().enumerate().take(job.batch) {
            let dot = if b < job.gemm_rows {
                job.dot
            } else {
                job.dot_tail
            };
            p[r] = dot(job.cols, wr, &job.a[b * job.a_row..][..job.a_row]);
        }
    }
}
