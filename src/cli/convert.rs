//! `lckv convert` and `lckv quantize`.

use std::path::PathBuf;

use clap::Args;

use lckv::convert::{convert, parse_out_type, quantize, ConvertOptions};
use lckv::Result;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Folder with config.json and safetensors.
    pub dir: PathBuf,
    /// Output GGUF.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Matrix type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q4_k, q6_k.
    #[arg(long = "type", default_value = "f16")]
    pub ty: String,
    /// Take the tokenizer from this GGUF instead of tokenizer.json.
    #[arg(long = "vocab-from")]
    pub vocab_from: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Matrix type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q4_k, q6_k.
    pub ty: String,
}

pub fn convert_main(a: ConvertArgs) -> Result<()> {
    let out_type = parse_out_type(&a.ty)?;
    convert(
        &a.dir,
        &a.output,
        &ConvertOptions {
            out_type,
            vocab_from: a.vocab_from,
        },
    )?;
    eprintln!("lckv: wrote {}", a.output.display());
    Ok(())
}

pub fn quantize_main(a: QuantizeArgs) -> Result<()> {
    let ty = parse_out_type(&a.ty)?;
    quantize(&a.input, &a.output, ty)?;
    eprintln!("lckv: wrote {}", a.output.display());
    Ok(())
}
