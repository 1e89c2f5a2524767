//! aarch64 kernels: NEON, and NEON with the dotprod extension.

pub(crate) mod neon;
