//! x86-64 kernels: AVX2 + FMA + F16C.

pub(crate) mod avx2;
