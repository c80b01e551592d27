//! The model engine on its own: `gpu`, `model` and `finetune`, as in `ferrolab`, in a
//! binary without the kernel, the data magics or the collaboration server. It builds
//! in minutes with `--features cuda` and is small enough to copy to a GPU machine
//! that has the CUDA driver but no Rust toolchain (`scripts/gpu-check.sh`).
//!
//!   cargo build --release -p ferrolab-llm --features cuda --example engine

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "engine", about = "ferrolab's model engine on its own")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List CUDA devices, memory and utilisation.
    Gpu {
        #[arg(long)]
        json: bool,
    },
    /// Find, run or create models.
    Model {
        #[command(subcommand)]
        command: ferrolab_llm::cli::ModelCommand,
    },
    /// Fine-tune with LoRA from a TOML config.
    Finetune(ferrolab_llm::cli::FinetuneArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Gpu { json } => ferrolab_llm::cli::gpu(json),
        Command::Model { command } => ferrolab_llm::cli::run(command),
        // Ctrl-C ends the process here; `--resume` continues from the last checkpoint.
        // Runs go to $FERROLAB_TRACKING_URI when set, else only to the run folder.
        Command::Finetune(args) => ferrolab_llm::cli::finetune(
            args,
            &|| false,
            &ferrolab_llm::tracker::Tracking::new(None),
        ),
    }
}
