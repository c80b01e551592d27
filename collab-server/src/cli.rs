//! `ferrolab collab ...`: the server and its tokens.

use crate::auth::{Role, TokenStore};
use crate::server::{self, ServeOptions};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CollabCommand {
    /// Run the collaboration server.
    Serve {
        #[command(flatten)]
        data: DataDir,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7878")]
        bind: SocketAddr,
        /// Largest WebSocket message a peer may send, in MiB.
        #[arg(long, default_value_t = 64)]
        max_message_mib: usize,
        /// Keep the .ipynb files of this folder and their notebooks in step, both ways.
        #[arg(long, value_name = "DIR")]
        watch: Option<PathBuf>,
        /// The built browser workspace to serve at / (default: $FERROLAB_WEB_DIR, or
        /// collab-server/web/dist when run from a checkout).
        #[arg(long, value_name = "DIR")]
        web: Option<PathBuf>,
        /// Keep the notebooks' documents in this PostgreSQL database
        /// (`postgres://user:password@host:port/database`) instead of the data
        /// folder, with the tokens and the session key; also `FERROLAB_DATABASE`.
        /// Any number of servers may share one database; `sslmode=verify-full` and
        /// `sslrootcert=FILE` for TLS (docs/deploy.md).
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// Keep the tracking store's artifacts in this S3-compatible bucket
        /// (`s3://bucket/prefix`; credentials and endpoint from the `AWS_*`
        /// variables) instead of the data folder; also `FERROLAB_ARTIFACTS`.
        #[arg(long, value_name = "URL")]
        artifacts: Option<String>,
        /// With --artifacts: the most MiB the data folder's copies of the bucket's
        /// blobs may take (least recently used go first); 0: no limit.
        #[arg(long, value_name = "MIB", default_value_t = 10240)]
        artifact_cache_mib: u64,
        #[command(flatten)]
        kernels: KernelArgs,
    },
    /// Move an embedded server's data folder (documents, tokens, tracking store,
    /// audit log; artifacts with --artifacts) into an empty cluster database.
    /// Stop the server first; the folder is only read.
    Migrate {
        #[command(flatten)]
        data: DataDir,
        /// The cluster's PostgreSQL database (also `FERROLAB_DATABASE`); it must
        /// hold no ferrolab workspace yet.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// Send the artifacts' bytes to this S3-compatible bucket
        /// (`s3://bucket/prefix`, the `AWS_*` variables; also `FERROLAB_ARTIFACTS`),
        /// the one the replicas will use. Without it they stay in the data folder.
        #[arg(long, value_name = "URL")]
        artifacts: Option<String>,
    },
    /// Create, list and revoke access tokens (works with or without a running server).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

/// How shared kernels run (see docs/security.md).
#[derive(Args)]
pub struct KernelArgs {
    /// `bwrap`: each kernel in a bubblewrap sandbox that cannot see the data folder;
    /// `none`: as the server's own user (only when every editor is trusted).
    #[arg(long, value_enum, default_value_t = KernelSandbox::Bwrap)]
    kernel_sandbox: KernelSandbox,
    /// Address space each kernel (and the compiler it runs) may use, in MiB; 0: no limit.
    #[arg(long, default_value_t = 16384)]
    kernel_memory_mib: u64,
    /// CPU seconds a kernel may use over its life; 0: no limit.
    #[arg(long, default_value_t = 0)]
    kernel_cpu_seconds: u64,
    /// Processes a kernel may run (not enforced when the server runs as root); 0: no limit.
    #[arg(long, default_value_t = 512)]
    kernel_processes: u64,
    /// Kernels running at once on this server.
    #[arg(long, default_value_t = 16)]
    max_kernels: usize,
    /// Kernels one token may have running at once.
    #[arg(long, default_value_t = 4)]
    max_kernels_per_token: usize,
    /// Seconds a kernel with nothing to run stays up; 0: until stopped.
    #[arg(long, default_value_t = 3600)]
    kernel_idle_secs: u64,
    /// With `--database`: seconds a replica's lease on a kernel lasts unless
    /// renewed; a dead replica's kernels start elsewhere after this long.
    #[arg(long, default_value_t = 15)]
    kernel_lease_secs: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KernelSandbox {
    Bwrap,
    None,
}

impl KernelArgs {
    fn settings(&self) -> server::KernelSettings {
        let limit = |n: u64| (n > 0).then_some(n);
        server::KernelSettings {
            sandboxed: matches!(self.kernel_sandbox, KernelSandbox::Bwrap),
            limits: crate::sandbox::Limits {
                memory_bytes: limit(self.kernel_memory_mib).map(|m| m << 20),
                cpu_seconds: limit(self.kernel_cpu_seconds),
                processes: limit(self.kernel_processes),
            },
            max_running: self.max_kernels.max(1),
            max_per_token: self.max_kernels_per_token.max(1),
            idle_timeout: limit(self.kernel_idle_secs).map(std::time::Duration::from_secs),
            lease: std::time::Duration::from_secs(self.kernel_lease_secs.max(1)),
        }
    }
}

#[derive(Args)]
pub struct DataDir {
    /// The server's data folder.
    #[arg(long = "data", value_name = "DIR", default_value = ".ferrolab/data")]
    pub path: PathBuf,
}

/// Where the tokens are: the data folder, or the cluster's database.
#[derive(Args)]
pub struct TokenPlace {
    #[command(flatten)]
    data: DataDir,
    /// The cluster's database, when the servers run with `--database` (also
    /// `FERROLAB_DATABASE`): the tokens are there, not in the data folder.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

impl TokenPlace {
    async fn store(self) -> anyhow::Result<TokenStore> {
        match database_url(self.database) {
            Some(url) => {
                let database = crate::postgres::Database::connect(&url).await?;
                TokenStore::on_database(std::sync::Arc::new(database)).await
            }
            None => Ok(TokenStore::new(&self.data.path)),
        }
    }
}

/// The database named on the command line, else by `FERROLAB_DATABASE`.
fn database_url(given: Option<String>) -> Option<String> {
    given
        .or_else(|| std::env::var("FERROLAB_DATABASE").ok())
        .filter(|url| !url.is_empty())
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it alone on stdout (it is shown only this once).
    Create {
        #[command(flatten)]
        place: TokenPlace,
        /// A name to tell the token apart by (a person or a machine).
        #[arg(long)]
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: Role,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        place: TokenPlace,
    },
    /// Revoke a token by id or name; live connections using it are closed.
    Revoke {
        #[command(flatten)]
        place: TokenPlace,
        /// The token's id or name, as `token list` shows them.
        token: String,
    },
}

pub fn run(command: CollabCommand) -> anyhow::Result<()> {
    match command {
        CollabCommand::Serve {
            data,
            bind,
            max_message_mib,
            watch,
            web,
            database,
            artifacts,
            artifact_cache_mib,
            kernels,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let served = runtime.block_on(server::serve(ServeOptions {
                data: data.path,
                bind,
                max_message_bytes: max_message_mib.max(1) * 1024 * 1024,
                watch,
                web: crate::web::locate(web),
                database: database_url(database),
                artifacts: artifacts
                    .or_else(|| std::env::var("FERROLAB_ARTIFACTS").ok())
                    .filter(|url| !url.is_empty()),
                artifact_cache_bytes: (artifact_cache_mib > 0)
                    .then_some(artifact_cache_mib.saturating_mul(1 << 20)),
                kernels: kernels.settings(),
            }));
            // A blocking task still running (a request cut off at the deadline) must
            // not keep the process alive: the runtime would wait for it for ever.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            served
        }
        CollabCommand::Migrate {
            data,
            database,
            artifacts,
        } => {
            let url = database_url(database).context(
                "name the cluster's database: --database postgres://USER:PASSWORD@HOST:PORT/DATABASE \
                 (or FERROLAB_DATABASE)",
            )?;
            let artifacts = artifacts
                .or_else(|| std::env::var("FERROLAB_ARTIFACTS").ok())
                .filter(|url| !url.is_empty());
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let moved = runtime.block_on(crate::migrate::migrate(
                &data.path,
                &url,
                artifacts.as_deref(),
            ))?;
            print_moved(&moved, &data.path, &url, artifacts.as_deref());
            Ok(())
        }
        CollabCommand::Token { command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(token_command(command))
        }
    }
}

async fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { place, name, role } => {
            let token = place.store().await?.create(&name, role).await?;
            println!("{token}");
        }
        TokenCommand::List { place } => {
            let tokens = place.store().await?.list().await?;
            if tokens.is_empty() {
                println!("no tokens yet; the server creates an owner token on first start");
            }
            for token in tokens {
                let state = match &token.revoked {
                    Some(when) => format!("revoked {when}"),
                    None => "active".to_string(),
                };
                println!(
                    "{}\t{}\t{}\tcreated {}\t{}",
                    token.id,
                    token.name,
                    token.role.as_str(),
                    token.created,
                    state
                );
            }
        }
        TokenCommand::Revoke { place, token } => {
            for id in place.store().await?.revoke(&token).await? {
                println!("revoked {id}");
            }
        }
    }
    Ok(())
}

fn print_moved(
    moved: &crate::migrate::Moved,
    data: &std::path::Path,
    url: &str,
    artifacts: Option<&str>,
) {
    println!(
        "Moved {} into {}:",
        data.display(),
        crate::postgres::redacted(url)
    );
    println!(
        "  {} documents ({} chunks, {} bytes)",
        moved.documents, moved.chunks, moved.chunk_bytes
    );
    println!("  {} tokens (they keep working)", moved.tokens);
    println!("  {} tracking rows:", moved.tracking.total());
    for (table, rows) in moved.tracking.rows.iter().filter(|(_, rows)| *rows > 0) {
        println!("    {table}: {rows}");
    }
    match (moved.blobs_sent, artifacts) {
        (Some(sent), Some(bucket)) => println!("  {sent} artifacts sent to {bucket}"),
        _ if moved.blobs_named > 0 => println!(
            "  {} artifacts stay in {}: start a replica with this --data folder, or move again \
             into a fresh database with --artifacts s3://… so that every replica serves them",
            moved.blobs_named,
            data.join("artifacts").display()
        ),
        _ => {}
    }
    println!(
        "Start the replicas with --database (browsers sign in again; tokens are unchanged). \
         The data folder was not changed; keep it until the cluster has served a while."
    );
}
