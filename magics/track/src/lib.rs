//! Experiment tracking, the model registry and governance from the notebook.
//!
//! Every magic here speaks MLflow's REST API (and ferrolab's governance API) through
//! a [`ferrolab_llm::tracker::Backend`] chosen by a [`ferrolab_llm::tracker::Tracking`]:
//! the collaboration server named by
//! `$FERROLAB_TRACKING_URI` or `%track connect URL`, or, when none is named, a local
//! store — the same SQLite store and the same request handling the server uses, in
//! this process, under `.ferrolab/tracking/` (or `$FERROLAB_TRACKING_DIR`).

pub mod client;
pub mod lineage;
pub mod magic;
mod render;

pub use client::Local;

/// Tracking that falls back to the local store when no server is named: what the
/// kernel and the `finetune` and `prompt-test` commands report runs through.
pub fn local_tracking() -> std::sync::Arc<ferrolab_llm::tracker::Tracking> {
    ferrolab_llm::tracker::Tracking::new(Some(std::sync::Arc::new(Local::from_env())))
}
