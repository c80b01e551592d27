//! The ferrolab Jupyter kernel: the wire protocol, the executor that runs Rust cells
//! through evcxr and magics through [`ferrolab_magics`], and the kernelspec installer.
//!
//! The binary (`ferrolab`) wires these together; see `docs/architecture.md` for the
//! map and `docs/kernel.md` for what the kernel does.

pub mod comms;
pub mod evaluator;
pub mod history;
pub mod install;
pub mod iopub;
pub mod logging;
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

/// The magics a kernel starts with.
pub fn registry() -> ferrolab_magics::Registry {
    let mut registry = ferrolab_magics::Registry::with_builtins();
    let catalog = ferrolab_data::register(&mut registry);
    ferrolab_llm::magic::register(&mut registry, std::sync::Arc::new(CatalogRows(catalog)));
    ferrolab_serve::magic::register(&mut registry);
    ferrolab_prompt::magic::register(&mut registry);
    ferrolab_track::magic::register(&mut registry);
    registry
}

/// `%finetune --table NAME` reads the tables the data magics loaded.
struct CatalogRows(std::sync::Arc<ferrolab_data::Catalog>);

impl ferrolab_llm::magic::TableRows for CatalogRows {
    fn rows(
        &self,
        table: &str,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, ferrolab_magics::MagicError> {
        self.0.rows(table)
    }
}
