//! Experiment tracking, the model registry and governance from the notebook.
//!
//! Every magic here speaks MLflow's REST API (and ferrolab's governance API) through
//! a [`ferrolab_llm::track::Backend`]: the collaboration server named by
//! `$FERROLAB_TRACKING_URI` or `%track connect URL`, or, when none is named, a local
//! store — the same SQLite store and the same request handling the server uses, in
//! this process, under `.ferrolab/tracking/` (or `$FERROLAB_TRACKING_DIR`).

pub mod client;
pub mod lineage;
pub mod magic;
mod render;

pub use client::Local;

/// Makes the local store the place runs go when no server is named, for
/// `%finetune`, `%%prompt_test`, `%serve` and the magics here.
pub fn install_local() {
    ferrolab_llm::track::set_local(std::sync::Arc::new(Local::from_env()));
}
