//! aarch64 kernels: NEON, and NEON with the dotprod extension.

pub(crate) mod neon;
pub(crate) mod neon_blocks;
pub(crate) mod neon_kquants;
