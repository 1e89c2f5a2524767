//! ggml's own CPU operators as an op-level oracle (cargo feature `reference`): each function
//! builds a one-operator ggml graph over the given data, as llama.cpp's model graphs use it, runs
//! it with ggml's CPU backend and returns the result. Tests compare lckv's kernels with these bit
//! for bit, which pins down where a model's logits first part from llama.cpp's.
//! Like `reference`, a test-only file with `unsafe` FFI, each block justified where it stands.

use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

/// A ggml context with its own memory, freed on drop.
struct Ctx(NonNull<sys::ggml_context>);

impl Ctx {
    fn new(bytes: usize) -> Ctx {
        crate::reference::stock_kquant_gemm();
        let params = sys::ggml_init_params {
            // Room for the graph object (about 1 MiB at the default size) besides the tensors.
            mem_size: bytes + (4 << 20),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: false,
        };
        // SAFETY: plain-data parameters; ggml allocates and owns the buffer.
        let p = unsafe { sys::ggml_init(params) };
        Ctx(NonNull::new(p).expect("ggml_init failed"))
    }

    fn ptr(&self) -> *mut sys::ggml_context {
        self.0.as_ptr()
    }

    /// A new tensor of `ty` with dims `ne` (innermost first), filled from `data` (raw bytes).
    fn tensor(&self, ty: sys::ggml_type, ne: &[i64], data: &[u8]) -> *mut sys::ggml_tensor {
        // SAFETY: the context is live and sized by the caller for all its tensors; the dims are
        // positive.
        let t = unsafe {
            match ne.len() {
                1 => sys::ggml_new_tensor_1d(self.ptr(), ty, ne[0]),
                2 => sys::ggml_new_tensor_2d(self.ptr(), ty, ne[0], ne[1]),
                3 => sys::ggml_new_tensor_3d(self.ptr(), ty, ne[0], ne[1], ne[2]),
                _ => panic!("ggml oracle: {} dims", ne.len()),
            }
        };
        assert!(!t.is_null(), "ggml_new_tensor: out of context memory");
        // SAFETY: `t` is a fresh tensor of ggml_nbytes(t) bytes, which `data` must match.
        unsafe {
            let n = sys::ggml_nbytes(t);
            assert_eq!(n, data.len(), "ggml oracle: tensor bytes");
            std::ptr::copy_nonoverlapping(data.as_ptr(), (*t).data as *mut u8, n);
        }
        t
    }

    /// Computes `out` with `threads` threads and returns its f32 data.
    fn compute(&self, out: *mut sys::ggml_tensor, threads: i32) -> Vec<f32> {
        // SAFETY: `out` belongs to this live context; the graph is built and computed in it and
        // the result is copied out before the context can be freed.
        unsafe {
            let gf = sys::ggml_new_graph(self.ptr());
            sys::ggml_build_forward_expand(gf, out);
            let status = sys::ggml_graph_compute_with_ctx(self.ptr(), gf, threads);
            assert_eq!(status, sys::GGML_STATUS_SUCCESS, "ggml graph failed");
            assert_eq!((*out).type_, sys::GGML_TYPE_F32, "ggml oracle: result type");
            let n = sys::ggml_nelements(out) as usize;
            std::slice::from_raw_parts((*out).data as *const f32, n).to_vec()
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the context came from ggml_init and is freed once.
        unsafe { sys::ggml_free(self.ptr()) }
    }
}

fn bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `ggml_rms_norm` of each `cols`-wide row of `x` (no weight).
pub fn rms_norm(x: &[f32], cols: usize, eps: f32) -> Vec<f32> {
    let ctx = Ctx::new(8 * x.len());
    let a = ctx.tensor(
        sys::GGML_TYPE_F32,
        &[cols as i64, (x.len() / cols) as i64],
        &bytes(x),
    );
    // SAFETY: `a` is a live tensor of `ctx`.
    let out = unsafe { sys::ggml_rms_norm(ctx.ptr(), a, eps) };
    ctx.compute(out, 2)
}

/// `ggml_swiglu_split(gate, up)` (`geglu_split` when `gelu`), row by row of `cols`.
pub fn gated(gate: &[f32], up: &[f32], cols: usize, gelu: bool) -> Vec<f32> {
    let ctx = Ctx::new(12 * gate.len());
    let ne = [cols as i64, (gate.len() / cols) as i64];
    let g = ctx.tensor(sys::GGML_TYPE_F32, &ne, &bytes(gate));
    let u = ctx.tensor(sys::GGML_TYPE_F32, &ne, &bytes(up));
    // SAFETY: `g` and `u` are live tensors of `ctx` with the same shape.
    let out = unsafe {
        if gelu {
            sys::ggml_geglu_split(ctx.ptr(), g, u)
        } else {
            sys::ggml_swiglu_split(ctx.ptr(), g, u)
        }
    };
    ctx.compute(out, 2)
}

/// `ggml_mul_mat(w, x)`: `w` is `rows` rows of `cols` elements of type `wty` (raw bytes), `x`
/// is `n` rows of `cols` f32; the result is `n` rows of `rows`.
pub fn mul_mat(wty: sys::ggml_type, w: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let ctx = Ctx::new(w.len() + 16 * x.len() + 4 * rows * (x.len() / cols));
    let wt = ctx.tensor(wty, &[cols as i64, rows as i64], w);
    let xt = ctx.tensor(
        sys::GGML_TYPE_F32,
        &[cols as i64, (x.len() / cols) as i64],
        &bytes(x),
    );
    // SAFETY: both are live tensors of `ctx` with the same row length.
    let out = unsafe { sys::ggml_mul_mat(ctx.ptr(), wt, xt) };
    ctx.compute(out, 2)
}

/// `ggml_rope_ext` (no YaRN, attn_factor 1) of `x` laid out `[n_tok][n_head][head_dim]` at
/// positions `pos`; `neox` selects GGML_ROPE_TYPE_NEOX, else the normal (pairwise) layout.
pub fn rope(
    x: &[f32],
    head_dim: usize,
    n_head: usize,
    pos: &[i32],
    n_rot: usize,
    base: f32,
    neox: bool,
) -> Vec<f32> {
    let ctx = Ctx::new(12 * x.len() + 4 * pos.len());
    let a = ctx.tensor(
        sys::GGML_TYPE_F32,
        &[head_dim as i64, n_head as i64, pos.len() as i64],
        &bytes(x),
    );
    let p: Vec<u8> = pos.iter().flat_map(|v| v.to_le_bytes()).collect();
    let b = ctx.tensor(sys::GGML_TYPE_I32, &[pos.len() as i64], &p);
    let mode = if neox { 2 } else { 0 };
    // SAFETY: `a` and `b` are live tensors of `ctx`; a null freq-factor tensor means none.
    let out = unsafe {
        sys::ggml_rope_ext(
            ctx.ptr(),
            a,
            b,
            std::ptr::null_mut(),
            n_rot as i32,
            mode,
            4096,
            base,
            1.0,
            0.0,
            1.0,
            32.0,
            1.0,
        )
    };
    ctx.compute(out, 2)
}

/// Attention as llama.cpp's graph computes it without flash attention:
/// `kq = mul_mat(k, q)`, `soft_max_ext(kq, mask, scale)`, `mul_mat(v^T, kq)`.
/// `q` is `[n_tok][n_head][head_dim]` (permuted to heads-outermost as llama.cpp does, which
/// keeps `kq` off ggml's GEMM: a permuted operand is not contiguous), `k` is `[n_kv_head][n_kv][head_dim]` and `v_t` is
/// `[n_kv_head][head_dim][n_kv]`, both of cache type `kv_ty` (F32 or F16, raw bytes); `mask` is
/// `[n_tok][n_kv]` of 0 or -inf. The result is `[n_head][n_tok][head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[u8],
    v_t: &[u8],
    kv_ty: sys::ggml_type,
    mask: &[f32],
    head_dim: usize,
    n_head: usize,
    n_kv_head: usize,
    n_tok: usize,
    n_kv: usize,
    scale: f32,
) -> Vec<f32> {
    let ctx = Ctx::new(8 * q.len() + k.len() + v_t.len() + 16 * mask.len() * n_head);
    let (hd, nh, nkh, nt, nkv) = (
        head_dim as i64,
        n_head as i64,
        n_kv_head as i64,
        n_tok as i64,
        n_kv as i64,
    );
    let qt = ctx.tensor(sys::GGML_TYPE_F32, &[hd, nh, nt], &bytes(q));
    let kt = ctx.tensor(kv_ty, &[hd, nkv, nkh], k);
    let vt = ctx.tensor(kv_ty, &[nkv, hd, nkh], v_t);
    let mt = ctx.tensor(sys::GGML_TYPE_F32, &[nkv, nt], &bytes(mask));
    // SAFETY: all four are live tensors of `ctx` with the shapes llama.cpp's graph gives them.
    let out = unsafe {
        let qp = sys::ggml_permute(ctx.ptr(), qt, 0, 2, 1, 3);
        let kq = sys::ggml_mul_mat(ctx.ptr(), kt, qp);
        let kq = sys::ggml_soft_max_ext(ctx.ptr(), kq, mt, scale, 0.0);
        sys::ggml_mul_mat(ctx.ptr(), vt, kq)
    };
    ctx.compute(out, 2)
}

/// `ggml_get_rows(w, ids)`: rows `ids` of `w` (`rows` rows of `cols` elements of type `wty`,
/// raw bytes) dequantized to f32, as llama.cpp looks up token embeddings.
pub fn get_rows(wty: sys::ggml_type, w: &[u8], rows: usize, cols: usize, ids: &[i32]) -> Vec<f32> {
    let ctx = Ctx::new(w.len() + 8 * cols * ids.len() + 4 * ids.len());
    let wt = ctx.tensor(wty, &[cols as i64, rows as i64], w);
    let idx: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    let it = ctx.tensor(sys::GGML_TYPE_I32, &[ids.len() as i64], &idx);
    // SAFETY: both are live tensors of `ctx`; the ids are rows of `wt` (checked by the caller).
    let out = unsafe { sys::ggml_get_rows(ctx.ptr(), wt, it) };
    ctx.compute(out, 2)
}
