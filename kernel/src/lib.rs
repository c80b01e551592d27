//! The ferrolab Jupyter kernel: the wire protocol, the executor that runs Rust cells
//! through evcxr and magics through [`ferrolab_magics`], and the kernelspec installer.
//!
//! The kernel knows the Jupyter protocol, evcxr and [`ferrolab_magics`] only: which
//! magics it offers is the binary's choice ([`server::KernelConfig::registry`]), so
//! nothing here depends on how a magic does its work. See `docs/architecture.md` for
//! the map and `docs/kernel.md` for what the kernel does.

pub mod cell_calls;
pub mod cell_crates;
pub mod comms;
pub mod evaluator;
pub mod history;
pub mod install;
pub mod iopub;
pub mod prelude;
pub mod server;
pub mod session;
pub mod stdin;
pub mod syntax;
pub mod wire;

use std::path::PathBuf;

/// ferrolab's own folder: `$FERROLAB_HOME`, else `~/.cache/ferrolab`.
pub fn home() -> PathBuf {
    if let Some(home) = std::env::var_os("FERROLAB_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache")
        .join("ferrolab")
}

/// Turns this process into evcxr's evaluation process when evcxr started it (evcxr
/// re-executes the kernel's binary for that); otherwise returns at once. The binary's
/// `main` must call it before anything else.
pub fn runtime_hook() {
    evcxr::runtime_hook();
}
