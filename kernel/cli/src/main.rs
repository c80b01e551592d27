//! `ferrolab`: one binary for the Jupyter kernel, the collaboration server and the
//! command-line tools of every magic family.
//!
//! This crate only wires the others together (the kernel's registry of magics, the
//! subcommands, the allocator and engine tuning); what each part does lives in its
//! own crate (`docs/architecture.md`).
//!
//! Without the `notebook` feature the binary is the collaboration server alone (with
//! tokens and export); the kernel and the magic families' commands then answer that
//! they are not in this build and how to get them.

mod logging;
#[cfg(feature = "notebook")]
mod notebook;
#[cfg(feature = "notebook")]
mod registry;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's option setter (linked in with the allocator).
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_e`.
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;

/// ferrolab: an LLMOps workspace for Rust notebooks.
#[derive(Parser)]
#[command(name = "ferrolab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[cfg(feature = "notebook")]
    #[command(flatten)]
    Notebook(notebook::Command),
    /// The collaboration server and its access tokens.
    Collab {
        #[command(subcommand)]
        command: ferrolab_collab::cli::CollabCommand,
    },
    /// A notebook as a self-contained, sanitised HTML report, as markdown, or as ipynb.
    Export(ferrolab_export::cli::ExportArgs),
    /// A command of the full build (the kernel, models, serving, prompt tests).
    #[cfg(not(feature = "notebook"))]
    #[command(external_subcommand)]
    NotInThisBuild(Vec<String>),
}

fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|command| command == "collab")
    {
        // The collaboration server's heap is a few MB; mimalloc asks for transparent
        // huge pages on its arenas, which turned each touched 4 KiB into 2 MiB of
        // resident memory (18 of its 53 MiB under the collab benchmark's load).
        // SAFETY: a process-wide flag; no pointers involved.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    } else {
        // mimalloc hands freed memory back to the OS after 10 ms; a training step frees
        // and reallocates hundreds of MB of activations, and each time the kernel had to
        // zero the pages again (a fifth of the CPU time). Keeping freed memory for 30 s
        // made LoRA training ~20% faster (docs/benchmarks.md) and still returns it when
        // idle. The collaboration server, which runs for days, keeps the default.
        // SAFETY: sets an allocator option before any other thread exists.
        unsafe {
            mi_option_set(MI_OPTION_PURGE_DELAY, 30_000);
        }
    }
    #[cfg(feature = "notebook")]
    notebook::before_threads();
    logging::init();
    if let Err(error) = run(Cli::parse()) {
        eprintln!("ferrolab: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Collab { command } => ferrolab_collab::cli::run(command),
        Command::Export(args) => ferrolab_export::cli::run(args),
        #[cfg(feature = "notebook")]
        Command::Notebook(command) => notebook::run(command),
        #[cfg(not(feature = "notebook"))]
        Command::NotInThisBuild(args) => {
            let name = args.first().cloned();
            anyhow::bail!(
                "`ferrolab {}` is not in this build: it was built without the kernel and \
                 the magic families (cargo's `notebook` feature) so that the workspace could \
                 start first. `make up` builds the full ferrolab in the background \
                 (progress in .ferrolab/build.log); or run `cargo build --bin ferrolab`.",
                name.unwrap_or_default()
            )
        }
    }
}
