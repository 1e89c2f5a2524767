//! One file per architecture, each saying how it differs from Llama: which fused or extra
//! tensors it has (its `TRAITS`) and which metadata it reads beyond the common keys
//! (`configure`). The forward pass itself is shared.

pub mod gemma3;
pub mod llama;
pub mod phi3;
pub mod qwen2;

use crate::gguf::GgufFile;
use crate::model::config::{Arch, ArchTraits, ModelConfig};
use crate::Result;

pub fn traits(arch: Arch) -> ArchTraits {
    match arch {
        Arch::Llama => llama::TRAITS,
        Arch::Phi3 => phi3::TRAITS,
        Arch::Qwen2 => qwen2::TRAITS,
        Arch::Gemma3 => gemma3::TRAITS,
    }
}

pub fn configure(cfg: &mut ModelConfig, g: &GgufFile) -> Result<()> {
    match cfg.arch {
        Arch::Llama => Ok(()),
        Arch::Phi3 => phi3::configure(cfg, g),
        Arch::Qwen2 => Ok(()),
        Arch::Gemma3 => gemma3::configure(cfg, g),
    }
}
