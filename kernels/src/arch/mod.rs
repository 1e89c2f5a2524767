//! Per-ISA kernels. Each is a twin of a scalar kernel in `quant` / `dot` and is reached only
//! through `dispatch`, after the CPU features it needs were detected.

#[cfg(target_arch = "aarch64")]
pub(crate) mod arm;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
