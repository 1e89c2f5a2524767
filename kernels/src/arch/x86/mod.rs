//! x86-64 kernels: AVX2 + FMA + F16C, and AVX-512 (F, BW, VL) on top of them.

pub(crate) mod avx2;
pub(crate) mod avx512;
pub(crate) mod fp_gemm;
pub(crate) mod gemv16;
pub(crate) mod tile;
pub(crate) mod vnni_tile;
