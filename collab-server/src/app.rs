//! The running server's shared state: the services, and nothing else. Request
//! handlers (`http`) reach each service through it; no service knows about it.

use crate::auth::{Sessions, TokenStore};
use crate::evaluations::Evaluations;
use crate::kernels::Kernels;
use crate::live_runs::LiveRuns;
use crate::storage::DurableStorage;
use crate::sync::SyncService;
use crate::workspace::Workspace;
use samod::Repo;
use std::path::PathBuf;
use std::sync::Arc;

/// The services of one running server.
pub struct App {
    /// The notebooks: their documents and the index that lists them.
    pub(crate) workspace: Arc<Workspace>,
    /// Peers syncing documents over WebSockets, and what each may do.
    pub(crate) sync: Arc<SyncService>,
    /// Who may call: hashed tokens and their roles.
    pub(crate) tokens: Arc<TokenStore>,
    /// Signed-in browsers' session cookies.
    pub(crate) sessions: Sessions,
    /// Experiments, runs, metric series, the registry and governance (MLflow's API).
    pub(crate) tracking: Arc<dyn ferrolab_tracking::Store>,
    /// Runs whose live documents follow the tracking store.
    pub(crate) live_runs: Arc<LiveRuns>,
    /// One shared kernel and execution queue per notebook that someone runs.
    pub(crate) kernels: Kernels,
    /// Prompt-test evaluations of model versions, run by the server itself.
    pub(crate) evaluations: Evaluations,
    /// The built browser workspace, if there is one.
    pub(crate) web: Option<PathBuf>,
    /// The owner token created at this start (first start only), for the sign-in URL.
    pub(crate) first_token: Option<String>,
    /// In the cluster mode, the task merging the other replicas' changes.
    pub(crate) replication: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl App {
    /// The server's own repository (for tests and tools in this process).
    pub fn repo(&self) -> &Repo {
        self.workspace.repo()
    }

    /// The document store.
    pub fn storage(&self) -> &DurableStorage {
        self.workspace.storage()
    }

    /// The notebooks.
    pub fn workspace(&self) -> &Arc<Workspace> {
        &self.workspace
    }
}
