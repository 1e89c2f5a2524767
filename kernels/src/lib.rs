//! lckv-kernels: the numeric core of lckv and the only home of SIMD.
//!
//! `formats` defines every block layout once; `quant` and `dot` are the scalar reference
//! kernels; `arch/` holds the per-ISA versions that are tested against them; `dispatch` picks
//! one path at start-up. Kernels know nothing about models: they see slices and sizes.

mod arch;
pub mod attention;
pub mod dispatch;
pub mod dot;
pub mod formats;
pub mod fp_order;
pub mod ops;
pub mod quant;

pub use attention::{AttnQuery, AttnScratch, KvLayout, KvView, OwnedAttnScratch};
pub use dispatch::{kernels, kernels_from_env, select, KernelPath, Kernels};
pub use formats::GgmlType;
