//! The `lckv` command line: run, chat, pipe, serve, inspect, logits, perplexity, bench, convert,
//! quantize.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lckv",
    version,
    about = "Edge inference for small language models with a layer-condensed KV cache"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it.
    Run(cli::run::RunArgs),
    /// Chat interactively using the model's chat template.
    Chat(cli::chat::ChatArgs),
    /// JSON lines in, token and sentence events out (for voice pipelines).
    Pipe(cli::pipe::PipeArgs),
    /// Serve the model over HTTP with the OpenAI and Ollama APIs.
    Serve(cli::serve::ServeArgs),
    /// Show a GGUF file's metadata, tensors, KV plan and memory plan.
    Inspect(cli::inspect::InspectArgs),
    /// Write the logits of every position to a .npy file.
    Logits(cli::logits::LogitsArgs),
    /// Perplexity of a text file (llama-perplexity's method).
    Perplexity(cli::perplexity::PerplexityArgs),
    /// Prompt and generation speed (llama-bench style).
    Bench(cli::bench::BenchArgs),
    /// Convert a Hugging Face checkpoint (llama, phi3, lckv-llama) to GGUF.
    Convert(cli::convert::ConvertArgs),
    /// Re-encode a GGUF's matrices at another type.
    Quantize(cli::convert::QuantizeArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => cli::run::main(a),
        Command::Chat(a) => cli::chat::main(a),
        Command::Pipe(a) => cli::pipe::main(a),
        Command::Serve(a) => cli::serve::main(a),
        Command::Inspect(a) => cli::inspect::main(a),
        Command::Logits(a) => cli::logits::main(a),
        Command::Perplexity(a) => cli::perplexity::main(a),
        Command::Bench(a) => cli::bench::main(a),
        Command::Convert(a) => cli::convert::convert_main(a),
        Command::Quantize(a) => cli::convert::quantize_main(a),
    };
    if let Err(e) = result {
        eprintln!("lckv: error: {e}");
        std::process::exit(1);
    }
}
