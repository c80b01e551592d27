//! `ferrolab`: one binary for the Jupyter kernel, the collaboration server and the
//! command-line tools of every magic family.
//!
//! This crate only wires the others together (the kernel's registry of magics, the
//! subcommands, the allocator and engine tuning); what each part does lives in its
//! own crate (`docs/architecture.md`).

mod registry;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ferrolab_kernel::install::{self, Location};
use ferrolab_kernel::server::{self, KernelConfig};
use std::path::PathBuf;

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
    /// The Jupyter kernel: run it, or install its kernelspec.
    Kernel {
        #[command(subcommand)]
        command: KernelCommand,
    },
    /// The collaboration server and its access tokens.
    Collab {
        #[command(subcommand)]
        command: ferrolab_collab::cli::CollabCommand,
    },
    /// LoRA fine-tuning from a TOML config, with a progress bar; Ctrl-C checkpoints and stops.
    Finetune(ferrolab_llm::cli::FinetuneArgs),
    /// CUDA devices, memory and utilisation (or why there are none).
    Gpu {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Models: where they are, and generation from the terminal.
    Model {
        #[command(subcommand)]
        command: ferrolab_llm::cli::ModelCommand,
    },
    /// Serve a model (and LoRA adapters) over an OpenAI-compatible HTTP API.
    Serve(ferrolab_serve::cli::ServeArgs),
    /// Human feedback collected by a server: export it as a fine-tuning dataset.
    Feedback {
        #[command(subcommand)]
        command: ferrolab_serve::cli::FeedbackCommand,
    },
    /// Run a prompt-test suite (promptfoo's config format); exit 100 under the bar.
    PromptTest(ferrolab_prompt::cli::PromptTestArgs),
    /// A notebook as a self-contained, sanitised HTML report, as markdown, or as ipynb.
    Export(ferrolab_export::cli::ExportArgs),
}

#[derive(Subcommand)]
enum KernelCommand {
    /// Run the kernel (Jupyter starts this for you).
    Run {
        /// The connection file Jupyter writes for the kernel.
        #[arg(long)]
        connection_file: PathBuf,
    },
    /// Install the `ferrolab` kernelspec so Jupyter offers "Rust (ferrolab)".
    Install(Where),
    /// Remove the `ferrolab` kernelspec.
    Uninstall(Where),
}

#[derive(Args)]
#[group(multiple = false)]
struct Where {
    /// In the user's Jupyter data directory (the default).
    #[arg(long)]
    user: bool,
    /// In the active Python environment (`share/jupyter` under sys.prefix).
    #[arg(long)]
    sys_prefix: bool,
    /// Under PREFIX/share/jupyter.
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<PathBuf>,
}

impl Where {
    fn location(&self) -> Location {
        match (&self.prefix, self.sys_prefix) {
            (Some(prefix), _) => Location::Prefix(prefix.clone()),
            (None, true) => Location::SysPrefix,
            (None, false) => Location::User,
        }
    }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
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
    // evcxr re-executes this binary as its evaluation process (marked by this
    // variable, an evcxr internal). That process ignores SIGINT: the kernel handles
    // it and stops the process itself, so the user is told "interrupted", not "crashed".
    if std::env::var_os("EVCXR_IS_RUNTIME").is_some() {
        // SAFETY: nothing else runs yet; setting a signal disposition is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
        }
    }
    // Before any thread exists, so no other thread reads the environment meanwhile.
    ferrolab_data::tune_engine();
    // This must come before anything else: in the evaluation process it never returns.
    ferrolab_kernel::runtime_hook();
    ferrolab_kernel::logging::init();
    if let Err(error) = run(Cli::parse()) {
        eprintln!("ferrolab: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Kernel { command } => match command {
            KernelCommand::Run { connection_file } => run_kernel(&connection_file),
            KernelCommand::Install(place) => {
                let dir = install::install(&place.location())?;
                println!("Installed kernelspec ferrolab in {}", dir.display());
                Ok(())
            }
            KernelCommand::Uninstall(place) => {
                match install::uninstall(&place.location())? {
                    Some(dir) => println!("Removed kernelspec ferrolab from {}", dir.display()),
                    None => println!(
                        "No ferrolab kernelspec in {}",
                        place.location().kernel_dir()?.display()
                    ),
                }
                Ok(())
            }
        },
        Command::Collab { command } => ferrolab_collab::cli::run(command),
        Command::Model { command } => ferrolab_llm::cli::run(command),
        Command::Serve(args) => ferrolab_serve::cli::serve(args),
        Command::Feedback { command } => ferrolab_serve::cli::feedback(command),
        Command::Gpu { json } => ferrolab_llm::cli::gpu(json),
        Command::Export(args) => ferrolab_export::cli::run(args),
        Command::PromptTest(args) => {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe {
                libc::signal(
                    libc::SIGINT,
                    on_interrupt as *const () as libc::sighandler_t,
                );
            }
            ferrolab_track::install_local();
            let code = ferrolab_prompt::cli::prompt_test(args, &|| {
                INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
            })?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Finetune(args) => {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe {
                libc::signal(
                    libc::SIGINT,
                    on_interrupt as *const () as libc::sighandler_t,
                );
            }
            ferrolab_track::install_local();
            ferrolab_llm::cli::finetune(args, &|| {
                INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
            })
        }
    }
}

fn run_kernel(connection_file: &PathBuf) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(connection_file).with_context(|| {
        format!(
            "cannot read the connection file {}",
            connection_file.display()
        )
    })?;
    let connection = serde_json::from_str(&text).with_context(|| {
        format!(
            "the connection file {} is not a Jupyter connection file",
            connection_file.display()
        )
    })?;
    let config = KernelConfig {
        connection,
        history_path: Some(ferrolab_kernel::home().join("history.jsonl")),
        registry: registry::registry,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(server::run(config))?;
    // Background threads (evcxr's warm-up, the relay) must not keep the process alive.
    std::process::exit(0)
}
