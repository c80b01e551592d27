//! Start-up and shut-down: opens the data folder (tokens, documents, the tracking
//! store), builds the services into an [`App`], serves the HTTP router until
//! Ctrl-C or SIGTERM, and stops what runs in the background.

use crate::auth::TokenStore;
use crate::evaluations::Evaluations;
use crate::kernels::{KernelOptions, Kernels};
use crate::live_runs::LiveRuns;
use crate::rights::DocRights;
use crate::sandbox::Sandbox;
use crate::storage::DurableStorage;
use crate::sync::{Peers, SyncService};
use crate::workspace::Workspace;
use anyhow::Context;
use samod::Repo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::app::App;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data: PathBuf,
    pub bind: SocketAddr,
    /// The largest WebSocket message a peer may send.
    pub max_message_bytes: usize,
    /// A folder whose `.ipynb` files are kept in step with their documents.
    pub watch: Option<PathBuf>,
    /// The built browser workspace, served at `/` (see `web::locate`).
    pub web: Option<PathBuf>,
    /// A PostgreSQL URL: the documents live there instead of the data folder.
    pub database: Option<String>,
    /// An S3 URL (`s3://bucket/prefix`): the artifacts' bytes live there instead of
    /// the data folder (which keeps copies as a cache).
    pub artifacts: Option<String>,
    /// With `artifacts`: the most bytes the data folder's copies of the bucket's
    /// blobs may take (`None`: no limit).
    pub artifact_cache_bytes: Option<u64>,
    /// How shared kernels run (sandbox, limits, caps).
    pub kernels: KernelSettings,
}

/// The shared kernels' settings as given on the command line; the sandbox is found
/// (or refused) when the server starts.
#[derive(Debug, Clone)]
pub struct KernelSettings {
    /// Run kernels under bubblewrap (the default) or, when false, as the server.
    pub sandboxed: bool,
    pub limits: crate::sandbox::Limits,
    pub max_running: usize,
    pub max_per_token: usize,
    pub idle_timeout: Option<std::time::Duration>,
    /// In the cluster mode, how long a kernel's lease lasts unless its replica
    /// renews it (a dead replica's kernels move after this long).
    pub lease: std::time::Duration,
}

impl Default for KernelSettings {
    fn default() -> Self {
        let defaults = KernelOptions::default();
        KernelSettings {
            sandboxed: true,
            limits: defaults.limits,
            max_running: defaults.max_running,
            max_per_token: defaults.max_per_token,
            idle_timeout: defaults.idle_timeout,
            lease: std::time::Duration::from_secs(15),
        }
    }
}

/// Opens the data folder; prints the owner token on first start.
pub async fn start(options: &ServeOptions) -> anyhow::Result<Arc<App>> {
    create_data_folder(&options.data)?;
    let storage = match &options.database {
        Some(url) => DurableStorage::open_postgres(url).await?,
        None => DurableStorage::open(options.data.join("docs")).with_context(|| {
            format!(
                "cannot open the document store in {}",
                options.data.display()
            )
        })?,
    };
    // In the cluster mode, listen before anything is read: what another replica
    // commits from here on is heard.
    let announcements = match storage.database() {
        Some(database) => Some(database.listen().await?),
        None => None,
    };
    let (tokens, sessions) = match storage.database() {
        Some(database) => (
            TokenStore::on_database(database.clone()).await?,
            crate::auth::Sessions::on_database(database).await?,
        ),
        None => (
            TokenStore::new(&options.data),
            crate::auth::Sessions::open(&options.data)?,
        ),
    };
    let tokens = Arc::new(tokens);
    let first_token = tokens.create_first_owner().await?;
    if let Some(token) = &first_token {
        println!("Owner token (shown once; keep it, or create more with `ferrolab collab token create`):");
        println!("  {token}");
    }
    let peers = Arc::new(Mutex::new(Peers::default()));
    let rights = Arc::new(DocRights::default());
    let repo = Repo::build_tokio()
        .with_storage(storage.clone())
        .with_share_policy(crate::sync::share_policy(peers.clone(), rights.clone()))
        .load()
        .await;
    let workspace = Arc::new(
        Workspace::open(repo.clone(), storage.clone(), &options.data, rights.clone()).await?,
    );
    let mut tracking = match storage.database() {
        // Replicas share one tracking store in the database.
        Some(database) => {
            let (connect, data) = (database.connector(), options.data.clone());
            tokio::task::spawn_blocking(move || {
                ferrolab_tracking::SqlStore::open_postgres(connect, &data)
            })
            .await?
            .context("cannot open the tracking store in the database")?
        }
        None => {
            let path = options.data.join("tracking.sqlite");
            ferrolab_tracking::SqlStore::open_sqlite(&path)
                .with_context(|| format!("cannot open the tracking store {}", path.display()))?
        }
    };
    if let Some(url) = &options.artifacts {
        tracking = tracking
            .with_remote_artifacts(url)?
            .with_artifact_cache_limit(options.artifact_cache_bytes);
    }
    let tracking = Arc::new(tracking);
    let url = samod::Url::parse(&format!("ws://{}/sync", options.bind)).context("bind address")?;
    let kernel_options = kernel_options(&options.kernels, &options.data)?;
    // Kernels and evaluations run this program (see `kernel_program`).
    let program = kernel_program()?;
    let acceptor = repo
        .make_acceptor(url)
        .map_err(|_| anyhow::anyhow!("the repository stopped"))?;
    let app = Arc::new(App {
        sync: Arc::new(SyncService::new(
            peers,
            acceptor,
            workspace.clone(),
            rights.clone(),
            options.max_message_bytes,
        )),
        live_runs: Arc::new(LiveRuns::new(repo, tracking.clone(), rights).await),
        workspace,
        tokens,
        sessions,
        tracking,
        web: options.web.clone(),
        first_token,
        replication: std::sync::Mutex::new(None),
        kernels: {
            let kernels = Kernels::new(
                program.clone(),
                options.data.join("kernels"),
                kernel_options.clone(),
            );
            match storage.database() {
                Some(database) => kernels.with_leases(crate::kernels::Leases::new(
                    database.clone(),
                    options.kernels.lease,
                )),
                None => kernels,
            }
        },
        evaluations: Evaluations::new(
            program,
            options.data.join("evaluations"),
            kernel_options.sandbox,
            kernel_options.limits,
        ),
    });
    if let Some(announcements) = announcements {
        let (weak, every) = (Arc::downgrade(&app), options.kernels.lease / 3);
        let follow = tokio::spawn(async move {
            tokio::join!(
                crate::replicas::follow(weak.clone(), announcements),
                crate::replicas::sweep_kernel_requests(weak, every.max(Duration::from_millis(100))),
            );
        });
        if let Ok(mut replication) = app.replication.lock() {
            *replication = Some(follow);
        }
    }
    Ok(app)
}

/// Creates the data folder readable by the server's user only, and narrows an
/// existing one that others could read (it holds tokens and every document).
fn create_data_folder(data: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(data)
        .with_context(|| format!("cannot create the data folder {}", data.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private", data.display()))?;
            log::warn!(
                "the data folder {} was readable by others ({:o}); it is now 0700",
                data.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

fn kernel_options(
    settings: &KernelSettings,
    data: &std::path::Path,
) -> anyhow::Result<KernelOptions> {
    let sandbox = if settings.sandboxed {
        Sandbox::bubblewrap(data)?
    } else {
        log::warn!(
            "shared kernels run without a sandbox: every editor can act as this server's user"
        );
        Sandbox::None
    };
    Ok(KernelOptions {
        sandbox,
        limits: settings.limits.clone(),
        max_running: settings.max_running,
        max_per_token: settings.max_per_token,
        idle_timeout: settings.idle_timeout,
    })
}

/// The `ferrolab` binary the shared kernels run (`FERROLAB_KERNEL_PROGRAM`, else
/// this very program, which is `ferrolab`).
fn kernel_program() -> anyhow::Result<PathBuf> {
    match std::env::var_os("FERROLAB_KERNEL_PROGRAM") {
        Some(program) => Ok(PathBuf::from(program)),
        None => std::env::current_exe().context("cannot find the ferrolab program to run kernels"),
    }
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let app = start(&options).await?;
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server running?)",
                options.bind
            )
        })?;
    let address = listener.local_addr()?;
    println!("ferrolab collab server");
    match (&app.web, &app.first_token) {
        (Some(_), Some(token)) => println!("  sign in: http://{address}/?token={token}"),
        (Some(_), None) => {
            println!(
                "  web:  http://{address}/ (sign in with a token: http://{address}/?token=TOKEN)"
            )
        }
        (None, _) => println!("  web:  not built (make up builds collab-server/web)"),
    }
    println!("  sync: ws://{address}/sync");
    println!("  api:  http://{address}/api/notebooks");
    println!("  data: {}", options.data.display());
    if let Some(folder) = &options.watch {
        let watcher =
            crate::watch::Watcher::new(app.workspace.clone(), folder.clone(), &options.data)
                .with_context(|| format!("cannot watch {}", folder.display()))?;
        println!("  watching: {}", folder.display());
        tokio::spawn(watcher.run());
    }
    run(app, listener, shutdown_signal()).await
}

/// How long open requests may run on after a shutdown signal before the server
/// stops them: no request (a huge upload, a slow peer) can keep it up for ever.
pub const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes and the open requests end
/// (or [`SHUTDOWN_DEADLINE`] passes), then stops the repository (which finishes its
/// pending writes). A request cut off at the deadline was never answered, so nothing
/// it wrote was acknowledged; each tracking write is one transaction.
pub async fn run(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let revocations = tokio::spawn(app.sync.clone().watch_revocations(app.tokens.clone()));
    let stamps = tokio::spawn(app.workspace.clone().stamp_updates());
    let index = tokio::spawn(app.workspace.clone().follow_index());
    let leases = tokio::spawn({
        let app = app.clone();
        async move { app.kernels.keep_leases().await }
    });
    let live = tokio::spawn(app.live_runs.clone().follow());
    let router = crate::http::router(app.clone());
    // Sync messages are small writes that follow one another; without TCP_NODELAY
    // the kernel may hold one back until the peer acknowledges the last (Node's `ws`,
    // under the JS sync server, sets it on every socket too).
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(error) = stream.set_nodelay(true) {
            log::debug!("cannot set TCP_NODELAY: {error}");
        }
    });
    let (signalled, mut on_signal) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = signalled.send(true);
    };
    let served = tokio::select! {
        served = axum::serve(listener, router).with_graceful_shutdown(shutdown) => served,
        _ = async {
            let _ = on_signal.wait_for(|fired| *fired).await;
            tokio::time::sleep(SHUTDOWN_DEADLINE).await;
        } => {
            log::warn!(
                "requests still open {}s after the shutdown signal; stopping them",
                SHUTDOWN_DEADLINE.as_secs()
            );
            Ok(())
        }
    };
    revocations.abort();
    stamps.abort();
    index.abort();
    leases.abort();
    if let Some(replication) = app.replication.lock().ok().and_then(|mut r| r.take()) {
        replication.abort();
    }
    live.abort();
    app.kernels.stop_all();
    // The last changes reach the run documents before the repository stops.
    app.live_runs.flush().await;
    app.repo().stop().await;
    served.context("the HTTP server failed")
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
