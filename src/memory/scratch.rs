//! The scratch buffers of the forward pass, shared by every session of a process (one batch is
//! in flight at a time), stated once: the list below names each
//! buffer, its element type, what it is sized from and which part of the memory plan it counts
//! under. The macro turns that one list into the regions reserved in the arena layout, the
//! buffers taken from the arena, and the per-buffer sizes `lckv inspect` prints.

use std::sync::Arc;

use lckv_kernels::AttnScratch;

use crate::memory::arena::{Arena, ArenaLayout, Buf, Region};
use crate::memory::dims::{ModelDims, SessionDims};
use crate::Result;

/// The memory plan's part a buffer counts under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Activations of the batch in flight.
    Activations,
    /// Logit rows of the batch.
    Logits,
    /// Per-head working memory of attention, sized by the context.
    Attention,
}

/// One buffer of the list: its name, the part it counts under, its elements and their size, and
/// its bytes in the arena (rounded up to the arena's alignment, as reserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferSize {
    pub name: &'static str,
    pub part: Part,
    pub elements: usize,
    pub elem_bytes: usize,
    pub bytes: usize,
}

macro_rules! scratch_buffers {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty = $part:ident, $len:expr; )*) => {
        /// Regions of the scratch buffers, reserved before the arena exists.
        pub struct ScratchRegions {
            $( $name: Region<$ty>, )*
        }

        /// The scratch buffers of one session, carved from its arena.
        pub struct Scratch {
            $( $(#[$doc])* pub $name: Buf<$ty>, )*
        }

        impl ScratchRegions {
            /// Reserves every scratch buffer in `layout`.
            pub fn reserve(m: &ModelDims, d: &SessionDims, layout: &mut ArenaLayout) -> Result<ScratchRegions> {
                let lens = Lens::new(m, d);
                Ok(ScratchRegions {
                    $( $name: layout.reserve::<$ty>(lens.$name)?, )*
                })
            }

            /// Each buffer's name, part and bytes in the arena, in list order.
            pub fn sizes(&self) -> Vec<BufferSize> {
                vec![$( BufferSize {
                    name: stringify!($name),
                    part: Part::$part,
                    elements: self.$name.len(),
                    elem_bytes: std::mem::size_of::<$ty>(),
                    bytes: self.$name.arena_bytes(),
                }, )*]
            }

            /// Takes the buffers from the arena allocated for the layout that reserved them.
            pub fn take(self, arena: &Arc<Arena>) -> Scratch {
                Scratch {
                    $( $name: arena.take(self.$name), )*
                }
            }
        }

        /// Element counts of the buffers.
        struct Lens {
            $( $name: usize, )*
        }

        impl Lens {
            #[allow(clippy::redundant_closure_call)]
            fn new(m: &ModelDims, d: &SessionDims) -> Lens {
                Lens {
                    $( $name: ($len)(m, d), )*
                }
            }
        }
    };
}

/// The attention scratch of every query head: (f32 elements, bytes).
fn attention_lens(m: &ModelDims, d: &SessionDims) -> (usize, usize) {
    let (floats, bytes) = AttnScratch::len(d.n_ctx, m.head_dim);
    (m.n_head * floats, m.n_head * bytes)
}

/// Bytes of one cached position over all kv heads (0 when the type does not fit: the KV cache
/// reports that error itself).
fn kv_pos_bytes(m: &ModelDims, d: &SessionDims) -> usize {
    m.kv_layout(d.kv_type).map_or(0, |l| l.pos_bytes())
}

scratch_buffers! {
    /// The residual stream of the batch: `n_batch` rows of `n_embd`.
    x: f32 = Activations, |m: &ModelDims, d: &SessionDims| d.n_batch * m.n_embd;
    /// The cyclic group's input states, kept for every pass of an iterative prefill.
    x_in: f32 = Activations, |m: &ModelDims, d: &SessionDims| if m.condensed { d.n_batch * m.n_embd } else { 0 };
    /// A normalised copy of `x`, and the attention output gathered by row.
    xn: f32 = Activations, |m: &ModelDims, d: &SessionDims| d.n_batch * m.n_embd.max(m.q_dim);
    q: f32 = Activations, |m: &ModelDims, d: &SessionDims| d.n_batch * m.q_dim;
    k: f32 = Activations, |m: &ModelDims, d: &SessionDims| d.n_batch * m.kv_dim;
    v: f32 = Activations, |m: &ModelDims, d: &SessionDims| d.n_batch * m.kv_dim;
    /// Output rows of a fused QKV projection (empty when Q, K and V are separate).
    qkv: f32 = Activations, |m: &ModelDims, d: &SessionDims| d.n_batch * m.qkv_rows;
    /// Attention output by head: `[head][row][head_dim]`.
    att: f32 = Activations, |m: &ModelDims, d: &SessionDims| d.n_batch * m.q_dim;
    gate: f32 = Activations, |m: &ModelDims, d: &SessionDims| d.n_batch * m.n_ff;
    up: f32 = Activations, |m: &ModelDims, d: &SessionDims| d.n_batch * m.up_rows;
    /// Output of a sub-block's projection before the residual add.
    proj: f32 = Activations, |m: &ModelDims, d: &SessionDims| d.n_batch * m.n_embd;
    /// Activation rows quantized to a weight's dot type; f32 (4 bytes) is the widest.
    act: u8 = Activations, |m: &ModelDims, d: &SessionDims| d.n_batch * m.max_cols * 4;
    /// cos and sin of one position's rotation.
    rope: f32 = Activations, |m: &ModelDims, _d: &SessionDims| m.n_rot;
    /// Two rows for per-row norms and convergence checks.
    tmp: f32 = Activations, |m: &ModelDims, _d: &SessionDims| 2 * m.n_embd.max(m.head_dim);
    /// The producers' K/V of the batch before an iterative pass (only with early exit).
    snapshot: u8 = Activations, |m: &ModelDims, d: &SessionDims| if d.early_exit { 2 * d.n_batch * kv_pos_bytes(m, d) * m.n_producers() } else { 0 };
    /// `logit_rows` rows of logits.
    logits: f32 = Logits, |m: &ModelDims, d: &SessionDims| d.logit_rows * m.n_vocab;
    /// Scores, partial sums and a V row of every query head, over the whole context.
    attn_f32: f32 = Attention, |m: &ModelDims, d: &SessionDims| attention_lens(m, d).0;
    /// Every query head's query converted to the cache's dot type.
    attn_u8: u8 = Attention, |m: &ModelDims, d: &SessionDims| attention_lens(m, d).1;
}
