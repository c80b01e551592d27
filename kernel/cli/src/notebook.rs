//! The commands of the full build: the Jupyter kernel and each magic family's
//! command-line tools (the `notebook` feature).

use crate::registry;
use anyhow::Context;
use clap::{Args, Subcommand};
use ferrolab_kernel::install::{self, Location};
use ferrolab_kernel::server::{self, KernelConfig};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Command {
    /// The Jupyter kernel: run it, or install its kernelspec.
    Kernel {
        #[command(subcommand)]
        command: KernelCommand,
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
}

#[derive(Subcommand)]
pub enum KernelCommand {
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
    /// Build the crates Rust cells use (the cell API, polars, serde, …) once for
    /// this toolchain, into $FERROLAB_HOME/cells; kernels otherwise build them
    /// before their first Rust cell.
    Prepare,
}

#[derive(Args)]
#[group(multiple = false)]
pub struct Where {
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

/// What must happen before any thread exists: the data engine's tuning (it sets
/// environment variables) and evcxr's hook, which in the evaluation process (this
/// binary, re-executed by evcxr) never returns.
pub fn before_threads() {
    // evcxr re-executes this binary as its evaluation process (marked by this
    // variable, an evcxr internal). That process ignores SIGINT: the kernel handles
    // it and stops the process itself, so the user is told "interrupted", not "crashed".
    if std::env::var_os("EVCXR_IS_RUNTIME").is_some() {
        // SAFETY: nothing else runs yet; setting a signal disposition is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
        }
    }
    ferrolab_data::tune_engine();
    ferrolab_kernel::runtime_hook();
}

/// Ctrl-C no longer kills the process: the returned check turns true instead, and a
/// long job (training, a prompt suite) checkpoints or stops between steps.
fn catch_ctrl_c() -> impl Fn() -> bool {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
    || INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Kernel { command } => match command {
            KernelCommand::Run { connection_file } => run_kernel(&connection_file),
            KernelCommand::Install(place) => {
                let dir = install::install(&place.location())?;
                println!("Installed kernelspec ferrolab in {}", dir.display());
                Ok(())
            }
            KernelCommand::Prepare => prepare_cell_crates(),
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
        Command::Model { command } => ferrolab_llm::cli::run(command),
        Command::Serve(args) => ferrolab_serve::cli::serve(args),
        Command::Feedback { command } => ferrolab_serve::cli::feedback(command),
        Command::Gpu { json } => ferrolab_llm::cli::gpu(json),
        Command::PromptTest(args) => {
            let interrupted = catch_ctrl_c();
            let tracking = ferrolab_track::local_tracking();
            let code = ferrolab_prompt::cli::prompt_test(args, &interrupted, &tracking)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Finetune(args) => {
            let interrupted = catch_ctrl_c();
            ferrolab_llm::cli::finetune(args, &interrupted, &ferrolab_track::local_tracking())
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

/// `ferrolab kernel prepare`: the crates for Rust cells, with progress on stderr.
fn prepare_cell_crates() -> anyhow::Result<()> {
    use ferrolab_kernel::cell_crates::CellCrates;
    use std::io::Write;
    let crates = CellCrates::locate(&ferrolab_kernel::home()).map_err(anyhow::Error::msg)?;
    if crates.ready().is_some() {
        println!(
            "The crates for Rust cells are ready in {}",
            crates.dir().display()
        );
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut last = std::time::Instant::now();
    crates
        .build(&mut |progress| {
            // A line every few seconds is enough for a terminal or a build log.
            if last.elapsed() >= std::time::Duration::from_secs(5) {
                last = std::time::Instant::now();
                eprintln!("{}", progress.line());
                let _ = std::io::stderr().flush();
            }
        })
        .map_err(anyhow::Error::msg)?;
    println!(
        "Built the crates for Rust cells in {:.0} s, in {}",
        started.elapsed().as_secs_f64(),
        crates.dir().display()
    );
    Ok(())
}
