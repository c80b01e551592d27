//! The ferrolab collaboration server: automerge notebooks, sync, storage, auth.
//!
//! Clients speak automerge-repo's WebSocket protocol at `/sync` (samod does the
//! protocol), the REST API under `/api` creates, imports, exports and lists
//! notebooks, and tokens decide who may read and who may write. The document
//! schema is in `docs/collab.md`.

pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod evaluations;
pub mod http;
pub mod inflation;
pub mod ipynb;
pub mod kernels;
pub mod live_runs;
pub mod migrate;
pub mod notebook;
pub mod postgres;
pub mod replicas;
pub mod rights;
pub mod sandbox;
pub mod schema;
pub mod server;
pub mod storage;
pub mod sync;
pub mod watch;
pub mod web;
pub mod wire;
pub mod workspace;
