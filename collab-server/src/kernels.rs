//! The shared kernel: one `ferrolab` kernel per notebook that someone runs, driven
//! by the server as a Jupyter client over ZeroMQ, with one execution queue that
//! every participant feeds. What the kernel sends is written into the notebook's
//! runtime document as it arrives, so everyone who has the notebook open — and
//! anyone who opens it later — sees the same outputs stream in.
//!
//! Runtime document fields written here (besides each cell's `execution_count`
//! and `outputs`): `cells.<id>.state` (`queued`, `running`, `idle`),
//! `cells.<id>.ran_by` (the name on the token that last asked to run it) and
//! `kernel` = `{ status, message }` where status is `starting`, `idle`, `busy`,
//! `dead` or `stopped`.

use crate::sandbox::{Limits, Sandbox};
use crate::schema::{self, get_map};
use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjId, ObjType, ReadDoc, ROOT};
use jupyter_protocol::{
    ConnectionInfo, ExecuteRequest, InterruptRequest, JupyterMessage, JupyterMessageContent,
    KernelInfoRequest, Transport,
};
use samod::DocHandle;
use serde_json::{json, Value as Json};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a new kernel may take to answer `kernel_info`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// After the reply, how long to wait for the kernel's `idle` (the last outputs).
const IDLE_GRACE: Duration = Duration::from_secs(2);

/// What the queue of one notebook is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Run these cells (id, source as it was when asked), in order, after the
    /// queue, for the person named `by`.
    Execute {
        cells: Vec<(String, String)>,
        by: String,
    },
    Interrupt,
    Restart,
}

/// How shared kernels run: the sandbox, its limits, how many may run, and when
/// an idle one is stopped.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    pub sandbox: Sandbox,
    pub limits: Limits,
    /// Kernels running at once on this server.
    pub max_running: usize,
    /// Kernels one token may have started and still running.
    pub max_per_token: usize,
    /// A kernel with nothing to run for this long is stopped (its notebook shows
    /// why; the next run starts a fresh one).
    pub idle_timeout: Option<Duration>,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions {
            sandbox: Sandbox::None,
            limits: Limits::default(),
            max_running: 16,
            max_per_token: 4,
            idle_timeout: Some(Duration::from_secs(3600)),
        }
    }
}

/// Why a run was refused before it reached a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelRefusal {
    #[error("the server already runs its limit of {0} kernels; restart (stop) one, or wait for an idle one to be stopped")]
    ServerFull(usize),
    #[error(
        "your token already has {0} kernels running, its limit; restart (stop) one of them first"
    )]
    TokenFull(usize),
    #[error("the notebook id {0:?} cannot name a kernel's files")]
    BadId(String),
}

/// A running (or starting) kernel: its process once spawned, and the token whose
/// run started it.
struct Running {
    pid: Option<u32>,
    starter: String,
}

/// Every notebook's queue; kernels start on first use.
pub struct Kernels {
    program: PathBuf,
    folder: PathBuf,
    options: Arc<KernelOptions>,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Command>>>,
    /// Kernels by notebook, so the server can count them and stop them all.
    running: Arc<Mutex<HashMap<String, Running>>>,
    /// In the cluster mode: the leases that say which replica runs a notebook's
    /// kernel.
    leases: Option<Leases>,
}

/// Kernel leases in the cluster's database: the replica that runs a notebook's
/// kernel holds its lease and renews it while the kernel lives; a run asked of
/// another replica is handed to it; a lease its replica stopped renewing (it
/// died) expires, and the next run takes it and starts a kernel there.
pub struct Leases {
    database: Arc<crate::postgres::Database>,
    ttl: Duration,
    /// Notebooks whose lease this replica took, and when it last took it.
    held: Mutex<HashMap<String, std::time::Instant>>,
}

impl Leases {
    pub fn new(database: Arc<crate::postgres::Database>, ttl: Duration) -> Self {
        Leases {
            database,
            ttl,
            held: Mutex::new(Default::default()),
        }
    }
}

/// Whether `id` is safe to put in a file name: notebook ids are automerge-style
/// (base58) or UUIDs; anything else (`..`, `/`, NUL) never reaches a path.
pub fn safe_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Kernels {
    /// `program` is the `ferrolab` binary; connection files, kernel logs and each
    /// notebook's work folder go under `folder`.
    pub fn new(program: PathBuf, folder: PathBuf, options: KernelOptions) -> Self {
        Self {
            program,
            folder,
            options: Arc::new(options),
            queues: Mutex::new(HashMap::new()),
            running: Arc::new(Mutex::new(HashMap::new())),
            leases: None,
        }
    }

    /// Coordinates the kernels with the other replicas through `leases`.
    pub fn with_leases(mut self, leases: Leases) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Which replica runs `notebook`'s kernel: `None` when it is (or now will be)
    /// this one, else the other replica's id. Always `None` outside the cluster
    /// mode.
    pub async fn holder(&self, notebook: &str) -> anyhow::Result<Option<String>> {
        let Some(leases) = &self.leases else {
            return Ok(None);
        };
        let holder = leases.database.claim_kernel(notebook, leases.ttl).await?;
        if holder.is_none() {
            if let Ok(mut held) = leases.held.lock() {
                held.insert(notebook.to_string(), std::time::Instant::now());
            }
        }
        Ok(holder)
    }

    /// Renews the leases of the kernels this replica runs, and gives up those of
    /// kernels that stopped, a few times per lease, for ever.
    pub async fn keep_leases(&self) {
        let Some(leases) = &self.leases else {
            return;
        };
        let mut tick = tokio::time::interval(leases.ttl / 3);
        loop {
            tick.tick().await;
            let live: std::collections::HashSet<String> = self
                .queues
                .lock()
                .map(|queues| {
                    queues
                        .iter()
                        .filter(|(_, tx)| !tx.is_closed())
                        .map(|(notebook, _)| notebook.clone())
                        .collect()
                })
                .unwrap_or_default();
            let (keep, stopped): (Vec<String>, Vec<String>) = match leases.held.lock() {
                Ok(mut held) => {
                    // A lease just taken may not have its queue yet.
                    let stopped: Vec<String> = held
                        .iter()
                        .filter(|(notebook, taken)| {
                            !live.contains(*notebook) && taken.elapsed() > leases.ttl
                        })
                        .map(|(notebook, _)| notebook.clone())
                        .collect();
                    for notebook in &stopped {
                        held.remove(notebook);
                    }
                    (held.keys().cloned().collect(), stopped)
                }
                Err(_) => return,
            };
            if let Err(error) = leases.database.renew_kernels(&keep, leases.ttl).await {
                log::warn!("{error:#}");
            }
            for notebook in stopped {
                if let Err(error) = leases.database.release_kernel(&notebook).await {
                    log::warn!("{error:#}");
                }
            }
        }
    }

    /// Hands `command` to the notebook's queue, starting the queue if needed. A run
    /// that would start a kernel is refused when the server or `starter` (a token
    /// id) is at its limit.
    pub fn send(
        &self,
        notebook: &str,
        runtime: &DocHandle,
        command: Command,
        starter: &str,
    ) -> Result<(), KernelRefusal> {
        if !safe_id(notebook) {
            return Err(KernelRefusal::BadId(notebook.to_string()));
        }
        if matches!(&command, Command::Execute { cells, .. } if !cells.is_empty()) {
            self.reserve(notebook, starter)?;
        }
        let Ok(mut queues) = self.queues.lock() else {
            return Ok(());
        };
        if let Some(tx) = queues.get(notebook) {
            if !tx.is_closed() {
                let _ = tx.send(command);
                return Ok(());
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(command);
        queues.insert(notebook.to_string(), tx);
        let queue = Queue {
            notebook: notebook.to_string(),
            runtime: runtime.clone(),
            program: self.program.clone(),
            folder: self.folder.clone(),
            options: self.options.clone(),
            running: self.running.clone(),
            kernel: None,
            pending: VecDeque::new(),
            shown: Outputs::default(),
        };
        tokio::spawn(queue.run(rx));
        Ok(())
    }

    /// Counts `notebook`'s kernel against the limits unless it already runs.
    fn reserve(&self, notebook: &str, starter: &str) -> Result<(), KernelRefusal> {
        let Ok(mut running) = self.running.lock() else {
            return Ok(());
        };
        if running.contains_key(notebook) {
            return Ok(());
        }
        if running.len() >= self.options.max_running {
            return Err(KernelRefusal::ServerFull(self.options.max_running));
        }
        let mine = running.values().filter(|r| r.starter == starter).count();
        if mine >= self.options.max_per_token {
            return Err(KernelRefusal::TokenFull(self.options.max_per_token));
        }
        running.insert(
            notebook.to_string(),
            Running {
                pid: None,
                starter: starter.to_string(),
            },
        );
        Ok(())
    }

    /// Stops every kernel (the server is stopping).
    pub fn stop_all(&self) {
        if let Ok(mut running) = self.running.lock() {
            for (_, kernel) in running.drain() {
                if let Some(pid) = kernel.pid {
                    // SAFETY: kill(2) with a pid this server spawned; no memory is touched.
                    unsafe {
                        libc::kill(pid as i32, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

struct Kernel {
    child: tokio::process::Child,
    shell: jupyter_zmq_client::DealerSendConnection,
    control: jupyter_zmq_client::ClientControlConnection,
    /// Messages read from shell and iopub by their own tasks (reading in a task
    /// keeps a half-read message from being dropped by `select!`).
    shell_replies: mpsc::UnboundedReceiver<JupyterMessage>,
    iopub: mpsc::UnboundedReceiver<JupyterMessage>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
        let _ = self.child.start_kill();
    }
}

struct Queue {
    notebook: String,
    runtime: DocHandle,
    program: PathBuf,
    folder: PathBuf,
    options: Arc<KernelOptions>,
    running: Arc<Mutex<HashMap<String, Running>>>,
    kernel: Option<Kernel>,
    pending: VecDeque<(String, String)>,
    /// Displays shown so far by this kernel, kept across cells so that a later
    /// cell can update an earlier cell's display.
    shown: Outputs,
}

enum Outcome {
    Done { ok: bool },
    Died(String),
    Restarted,
}

impl Queue {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        loop {
            if self.pending.is_empty() {
                let next = match (self.kernel.is_some(), self.options.idle_timeout) {
                    (true, Some(idle)) => match tokio::time::timeout(idle, rx.recv()).await {
                        Ok(next) => next,
                        Err(_) => {
                            self.stop_kernel();
                            self.set_kernel(
                                "stopped",
                                &format!(
                                    "stopped after {} s with nothing to run; the next run starts a fresh kernel",
                                    idle.as_secs()
                                ),
                            );
                            continue;
                        }
                    },
                    _ => rx.recv().await,
                };
                let Some(command) = next else {
                    break;
                };
                self.handle_idle(command);
                continue;
            }
            let Some((cell, code)) = self.pending.pop_front() else {
                continue;
            };
            if self.kernel.is_none() {
                self.set_kernel("starting", "");
                match self.start().await {
                    Ok(kernel) => self.kernel = Some(kernel),
                    Err(error) => {
                        self.release();
                        let message = format!("the kernel did not start: {error:#}");
                        log::error!("notebook {}: {message}", self.notebook);
                        self.fail_cell(&cell, "KernelStartError", &message);
                        self.drop_pending();
                        self.set_kernel("dead", &message);
                        continue;
                    }
                }
            }
            match self.execute(&cell, &code, &mut rx).await {
                Outcome::Done { ok } => {
                    if !ok {
                        // Like Jupyter's stop_on_error: the cells queued after it do not run.
                        self.drop_pending();
                    }
                    self.set_kernel(
                        if self.pending.is_empty() {
                            "idle"
                        } else {
                            "busy"
                        },
                        "",
                    );
                }
                Outcome::Died(message) => {
                    self.fail_cell(&cell, "KernelDied", &message);
                    self.drop_pending();
                    self.stop_kernel();
                    self.set_kernel("dead", &message);
                }
                Outcome::Restarted => {
                    self.set_cell_state(&cell, "idle");
                    self.drop_pending();
                    self.stop_kernel();
                    self.set_kernel("stopped", "restarted: the next run starts a fresh kernel");
                }
            }
        }
        self.stop_kernel();
    }

    fn handle_idle(&mut self, command: Command) {
        match command {
            Command::Execute { cells, by } => self.enqueue(cells, &by),
            Command::Interrupt => {}
            Command::Restart => {
                self.stop_kernel();
                self.set_kernel("stopped", "restarted: the next run starts a fresh kernel");
            }
        }
    }

    /// Queues cells, each recording who asked to run it (`cells.<id>.ran_by`).
    fn enqueue(&mut self, cells: Vec<(String, String)>, by: &str) {
        for (cell, code) in cells {
            self.edit(|tx, cells| {
                let obj = cell_obj(tx, cells, &cell)?;
                tx.put(&obj, "state", "queued")?;
                tx.put(&obj, "ran_by", by)
            });
            self.pending.push_back((cell, code));
        }
    }

    fn drop_pending(&mut self) {
        for (cell, _) in std::mem::take(&mut self.pending) {
            self.set_cell_state(&cell, "idle");
        }
    }

    fn stop_kernel(&mut self) {
        self.shown = Outputs::default();
        self.kernel = None;
        self.release();
    }

    /// No longer counts this notebook's kernel against the limits.
    fn release(&self) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&self.notebook);
        }
    }

    async fn start(&self) -> anyhow::Result<Kernel> {
        use anyhow::Context;
        if !safe_id(&self.notebook) {
            anyhow::bail!(
                "the notebook id {:?} cannot name a kernel's files",
                self.notebook
            );
        }
        let work = self.folder.join("work").join(&self.notebook);
        for folder in [&self.folder, &work, &work.join(".tmp")] {
            create_private_dir(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        let ip: std::net::IpAddr = [127, 0, 0, 1].into();
        let ports = jupyter_zmq_client::peek_ports(ip, 5).await?;
        let key = uuid::Uuid::new_v4().simple().to_string();
        let info = ConnectionInfo {
            ip: ip.to_string(),
            transport: Transport::TCP,
            shell_port: ports[0],
            iopub_port: ports[1],
            stdin_port: ports[2],
            control_port: ports[3],
            hb_port: ports[4],
            key,
            signature_scheme: "hmac-sha256".into(),
            kernel_name: Some("ferrolab".into()),
        };
        let file = self.folder.join(format!("{}.json", self.notebook));
        let log_path = self.folder.join(format!("{}.log", self.notebook));
        // Written 0600 from its first byte: it holds the key that signs messages.
        crate::storage::write_atomically(&file, &serde_json::to_vec_pretty(&info)?)?;
        let log = {
            let mut options = std::fs::OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options
                .open(&log_path)
                .with_context(|| format!("cannot open {}", log_path.display()))?
        };
        let mut command = self.options.sandbox.command(
            &self.program,
            &file,
            &work,
            &format!("{}.ipynb", self.notebook),
        );
        command
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        end_with_server(&mut command);
        crate::sandbox::apply_limits(&mut command, &self.options.limits);
        let child = command
            .spawn()
            .with_context(|| format!("cannot run {}", self.program.display()))?;
        if let (Some(pid), Ok(mut running)) = (child.id(), self.running.lock()) {
            if let Some(entry) = running.get_mut(&self.notebook) {
                entry.pid = Some(pid);
            }
        }
        let session = uuid::Uuid::new_v4().to_string();
        let identity = jupyter_zmq_client::peer_identity_for_session(&session)?;
        let mut iopub =
            jupyter_zmq_client::create_client_iopub_connection(&info, "", &session).await?;
        let shell = jupyter_zmq_client::create_client_shell_connection_with_identity(
            &info, &session, identity,
        )
        .await?;
        let control = jupyter_zmq_client::create_client_control_connection(&info, &session).await?;
        let (mut shell_send, mut shell_recv) = shell.split();
        let (iopub_tx, iopub_rx) = mpsc::unbounded_channel();
        let (shell_tx, shell_rx) = mpsc::unbounded_channel();
        let mut readers = Vec::new();
        readers.push(tokio::spawn(async move {
            while let Ok(message) = iopub.read().await {
                if iopub_tx.send(message).is_err() {
                    break;
                }
            }
        }));
        readers.push(tokio::spawn(async move {
            while let Ok(message) = shell_recv.read().await {
                if shell_tx.send(message).is_err() {
                    break;
                }
            }
        }));
        let (mut iopub_rx, mut shell_rx) = (iopub_rx, shell_rx);
        let mut child = child;
        // kernel_info until it answers: the first requests may go out before the
        // kernel binds its sockets.
        let started = tokio::time::Instant::now();
        loop {
            let request = JupyterMessage::new(KernelInfoRequest {}, None);
            let id = request.header.msg_id.clone();
            shell_send.send(request).await?;
            let waited = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(reply) = shell_rx.recv().await {
                    if reply.parent_header.as_ref().map(|h| h.msg_id.as_str()) == Some(&id) {
                        return true;
                    }
                }
                false
            })
            .await;
            if matches!(waited, Ok(true)) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                for reader in &readers {
                    reader.abort();
                }
                anyhow::bail!(
                    "the kernel exited ({status}); its log is {}",
                    log_path.display()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                for reader in &readers {
                    reader.abort();
                }
                anyhow::bail!(
                    "the kernel did not answer within {} s; its log is {}",
                    START_TIMEOUT.as_secs(),
                    log_path.display()
                );
            }
        }
        // Drop what iopub said during start (status messages, the welcome).
        while iopub_rx.try_recv().is_ok() {}
        Ok(Kernel {
            child,
            shell: shell_send,
            control,
            shell_replies: shell_rx,
            iopub: iopub_rx,
            readers,
        })
    }

    async fn execute(
        &mut self,
        cell: &str,
        code: &str,
        rx: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Outcome {
        let Some(mut kernel) = self.kernel.take() else {
            return Outcome::Died("no kernel".into());
        };
        let outcome = self.execute_on(&mut kernel, cell, code, rx).await;
        self.kernel = Some(kernel);
        outcome
    }

    async fn execute_on(
        &mut self,
        kernel: &mut Kernel,
        cell: &str,
        code: &str,
        rx: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Outcome {
        let mut request = ExecuteRequest::new(code.to_string());
        request.allow_stdin = false;
        request.stop_on_error = true;
        let message = JupyterMessage::new(request, None)
            .with_metadata(json!({ "cellId": cell, "deletedCells": [] }));
        let msg_id = message.header.msg_id.clone();
        self.start_cell(cell);
        self.set_kernel("busy", "");
        if let Err(error) = kernel.shell.send(message).await {
            return Outcome::Died(format!("cannot reach the kernel: {error}"));
        }
        let mut outputs = std::mem::take(&mut self.shown);
        outputs.clear_on_next = false;
        // Running a cell again clears its outputs, and with them its displays.
        outputs.displays.retain(|_, (c, _)| c != cell);
        let mut reply_ok: Option<bool> = None;
        let mut idle = false;
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            if reply_ok.is_some() && idle {
                break;
            }
            let deadline = grace
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(24 * 3600));
            tokio::select! {
                message = kernel.iopub.recv() => {
                    let Some(message) = message else {
                        return Outcome::Died("the kernel's output channel closed".into());
                    };
                    if message.parent_header.as_ref().map(|h| h.msg_id.as_str()) != Some(msg_id.as_str()) {
                        // Output of an earlier cell that ends late (update_display_data).
                        self.apply_update_elsewhere(&message, &outputs);
                        continue;
                    }
                    if let JupyterMessageContent::Status(status) = &message.content {
                        if matches!(status.execution_state, jupyter_protocol::ExecutionState::Idle) {
                            idle = true;
                        }
                        continue;
                    }
                    self.apply(cell, &message, &mut outputs);
                }
                reply = kernel.shell_replies.recv() => {
                    let Some(reply) = reply else {
                        return Outcome::Died("the kernel's shell channel closed".into());
                    };
                    if reply.parent_header.as_ref().map(|h| h.msg_id.as_str()) != Some(msg_id.as_str()) {
                        continue;
                    }
                    if let JupyterMessageContent::ExecuteReply(reply) = &reply.content {
                        let ok = matches!(reply.status, jupyter_protocol::ReplyStatus::Ok);
                        let count = reply.execution_count.value();
                        self.edit(|tx, cells| {
                            let obj = cell_obj(tx, cells, cell)?;
                            tx.put(&obj, "execution_count", count as i64)
                        });
                        reply_ok = Some(ok);
                        grace = Some(tokio::time::Instant::now() + IDLE_GRACE);
                    }
                }
                command = rx.recv() => match command {
                    Some(Command::Execute { cells, by }) => self.enqueue(cells, &by),
                    Some(Command::Interrupt) => {
                        let interrupt = JupyterMessage::new(InterruptRequest {}, None);
                        if let Err(error) = kernel.control.send(interrupt).await {
                            log::warn!("notebook {}: interrupt not sent: {error}", self.notebook);
                        }
                    }
                    Some(Command::Restart) | None => return Outcome::Restarted,
                },
                status = kernel.child.wait() => {
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    return Outcome::Died(format!(
                        "the kernel exited ({status}) while running this cell; the next run starts a new one"
                    ));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    // The reply came but no idle followed: take it as done.
                    break;
                }
            }
        }
        self.set_cell_state(cell, "idle");
        self.shown = outputs;
        Outcome::Done {
            ok: reply_ok.unwrap_or(false),
        }
    }

    // ------------------------------------------------------------ runtime writes

    fn edit(
        &self,
        f: impl FnOnce(
            &mut automerge::transaction::Transaction<'_>,
            &ObjId,
        ) -> Result<(), AutomergeError>,
    ) {
        let result = self.runtime.with_document(|doc| {
            doc.transact::<_, _, AutomergeError>(|tx| {
                let cells = match get_map(tx, &ROOT, "cells") {
                    Some(cells) => cells,
                    None => tx.put_object(ROOT, "cells", ObjType::Map)?,
                };
                f(tx, &cells)
            })
            .map(|_| ())
            .map_err(|failure| failure.error)
        });
        if let Err(error) = result {
            log::error!(
                "notebook {}: cannot write to the runtime document: {error}",
                self.notebook
            );
        }
    }

    fn set_kernel(&self, status: &str, message: &str) {
        self.edit(|tx, _| {
            let kernel = match get_map(tx, &ROOT, "kernel") {
                Some(kernel) => kernel,
                None => tx.put_object(ROOT, "kernel", ObjType::Map)?,
            };
            if schema::get_str(tx, &kernel, "status").as_deref() != Some(status) {
                tx.put(&kernel, "status", status)?;
            }
            if schema::get_str(tx, &kernel, "message").as_deref() != Some(message) {
                tx.put(&kernel, "message", message)?;
            }
            Ok(())
        });
    }

    fn set_cell_state(&self, cell: &str, state: &str) {
        self.edit(|tx, cells| {
            let obj = cell_obj(tx, cells, cell)?;
            tx.put(&obj, "state", state)
        });
    }

    /// A cell starts: outputs cleared, count blank, running.
    fn start_cell(&self, cell: &str) {
        self.edit(|tx, cells| {
            let obj = cell_obj(tx, cells, cell)?;
            tx.put_object(&obj, "outputs", ObjType::List)?;
            tx.put(&obj, "execution_count", ())?;
            tx.put(&obj, "state", "running")
        });
    }

    fn fail_cell(&self, cell: &str, ename: &str, message: &str) {
        let output = json!({
            "output_type": "error", "ename": ename, "evalue": message, "traceback": [format!("{ename}: {message}")],
        });
        self.edit(|tx, cells| {
            let obj = cell_obj(tx, cells, cell)?;
            let list = outputs_list(tx, &obj)?;
            let at = tx.length(&list);
            schema::insert_json(tx, &list, at, &output)?;
            tx.put(&obj, "state", "idle")
        });
    }

    /// Writes one iopub message of the running cell into its outputs.
    fn apply(&self, cell: &str, message: &JupyterMessage, outputs: &mut Outputs) {
        let content = serde_json::to_value(&message.content).unwrap_or(Json::Null);
        let kind = message.header.msg_type.as_str();
        let display_id = content
            .pointer("/transient/display_id")
            .and_then(Json::as_str)
            .map(str::to_string);
        let output = match kind {
            "stream" => {
                let name = content["name"].as_str().unwrap_or("stdout").to_string();
                let text = content["text"].as_str().unwrap_or("").to_string();
                self.with_outputs(cell, outputs, |tx, list| {
                    append_stream(tx, list, &name, &text)
                });
                return;
            }
            "display_data" => json!({
                "output_type": "display_data", "data": content["data"], "metadata": content.get("metadata").cloned().unwrap_or(json!({})),
            }),
            "execute_result" => json!({
                "output_type": "execute_result", "data": content["data"],
                "metadata": content.get("metadata").cloned().unwrap_or(json!({})),
                "execution_count": content["execution_count"],
            }),
            "error" => json!({
                "output_type": "error", "ename": content["ename"], "evalue": content["evalue"],
                "traceback": content.get("traceback").cloned().unwrap_or(json!([])),
            }),
            "execute_input" => {
                if let Some(count) = content["execution_count"].as_i64() {
                    self.edit(|tx, cells| {
                        let obj = cell_obj(tx, cells, cell)?;
                        tx.put(&obj, "execution_count", count)
                    });
                }
                return;
            }
            "clear_output" => {
                if content["wait"].as_bool().unwrap_or(false) {
                    outputs.clear_on_next = true;
                } else {
                    self.edit(|tx, cells| {
                        let obj = cell_obj(tx, cells, cell)?;
                        tx.put_object(&obj, "outputs", ObjType::List).map(|_| ())
                    });
                    outputs.displays.retain(|_, (c, _)| c != cell);
                }
                return;
            }
            "update_display_data" => {
                self.update_display(&content, outputs);
                return;
            }
            _ => return,
        };
        let mut index = 0;
        self.with_outputs(cell, outputs, |tx, list| {
            index = tx.length(list);
            schema::insert_json(tx, list, index, &output)
        });
        if let Some(id) = display_id {
            outputs.displays.insert(id, (cell.to_string(), index));
        }
    }

    /// Writes into the cell's outputs list, emptied first when a
    /// `clear_output(wait=True)` is pending.
    fn with_outputs(
        &self,
        cell: &str,
        outputs: &mut Outputs,
        f: impl FnOnce(
            &mut automerge::transaction::Transaction<'_>,
            &ObjId,
        ) -> Result<(), AutomergeError>,
    ) {
        let clear = std::mem::take(&mut outputs.clear_on_next);
        if clear {
            outputs.displays.retain(|_, (c, _)| c != cell);
        }
        self.edit(|tx, cells| {
            let obj = cell_obj(tx, cells, cell)?;
            let list = if clear {
                tx.put_object(&obj, "outputs", ObjType::List)?
            } else {
                outputs_list(tx, &obj)?
            };
            f(tx, &list)
        });
    }

    fn apply_update_elsewhere(&self, message: &JupyterMessage, outputs: &Outputs) {
        if message.header.msg_type == "update_display_data" {
            let content = serde_json::to_value(&message.content).unwrap_or(Json::Null);
            self.update_display(&content, outputs);
        }
    }

    /// `update_display_data`: replaces the data of the output shown under that display id.
    fn update_display(&self, content: &Json, outputs: &Outputs) {
        let Some(id) = content
            .pointer("/transient/display_id")
            .and_then(Json::as_str)
        else {
            return;
        };
        let Some((cell, index)) = outputs.displays.get(id).cloned() else {
            return;
        };
        self.edit(|tx, cells| {
            let obj = cell_obj(tx, cells, &cell)?;
            let list = outputs_list(tx, &obj)?;
            if index >= tx.length(&list) {
                return Ok(());
            }
            let Some((automerge::Value::Object(ObjType::Map), output)) = tx.get(&list, index)?
            else {
                return Ok(());
            };
            schema::put_json(tx, &output, "data", &content["data"])?;
            let metadata = content.get("metadata").cloned().unwrap_or(json!({}));
            schema::put_json(tx, &output, "metadata", &metadata)
        });
    }
}

/// What the running cell's outputs need remembered between messages.
#[derive(Default)]
struct Outputs {
    /// `clear_output(wait=True)` was asked: clear when the next output comes.
    clear_on_next: bool,
    /// display id → (cell, output index), for `update_display_data`; emptied with
    /// the kernel.
    displays: HashMap<String, (String, usize)>,
}

fn cell_obj<T: Transactable>(
    tx: &mut T,
    cells: &ObjId,
    cell: &str,
) -> Result<ObjId, AutomergeError> {
    if let Some(obj) = get_map(tx, cells, cell) {
        return Ok(obj);
    }
    let obj = tx.put_object(cells, cell, ObjType::Map)?;
    tx.put(&obj, "execution_count", ())?;
    tx.put_object(&obj, "outputs", ObjType::List)?;
    Ok(obj)
}

fn outputs_list<T: Transactable>(tx: &mut T, cell: &ObjId) -> Result<ObjId, AutomergeError> {
    match tx.get(cell, "outputs")? {
        Some((automerge::Value::Object(ObjType::List), list)) => Ok(list),
        _ => tx.put_object(cell, "outputs", ObjType::List),
    }
}

/// Appends to the last output when it is the same stream, as Jupyter front ends show it.
fn append_stream<T: Transactable>(
    tx: &mut T,
    list: &ObjId,
    name: &str,
    text: &str,
) -> Result<(), AutomergeError> {
    let length = tx.length(list);
    if length > 0 {
        if let Some((automerge::Value::Object(ObjType::Map), last)) = tx.get(list, length - 1)? {
            let same = schema::get_str(tx, &last, "output_type").as_deref() == Some("stream")
                && schema::get_str(tx, &last, "name").as_deref() == Some(name);
            if same {
                let before = schema::get_str(tx, &last, "text").unwrap_or_default();
                return tx.put(&last, "text", format!("{before}{text}"));
            }
        }
    }
    schema::insert_json(
        tx,
        list,
        length,
        &json!({ "output_type": "stream", "name": name, "text": text }),
    )
}

/// Creates `folder` (and its parents) readable by the server's user only.
fn create_private_dir(folder: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(folder)
}

/// The kernel status the runtime document shows, for tests and the API.
pub fn kernel_status<R: ReadDoc>(doc: &R) -> Option<String> {
    let kernel = get_map(doc, &ROOT, "kernel")?;
    schema::get_str(doc, &kernel, "status")
}

/// A kernel must not outlive its server: `kill_on_drop` covers every way the
/// server stops but `kill -9` (or a crash), where nothing of ours runs. On Linux the
/// kernel asks to be sent SIGTERM when the server's thread that started it goes
/// away: a runtime worker thread, which lives as long as the server. (Elsewhere
/// such a kernel stays until it is stopped by hand.)
fn end_with_server(command: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: between fork and exec the closure only makes async-signal-safe
        // system calls (prctl, getppid) and allocates nothing.
        let server = std::process::id() as libc::pid_t;
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The server died before the request took effect: no signal will come.
                if libc::getppid() != server {
                    return Err(std::io::Error::other("the collab server is gone"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

#[cfg(test)]
mod id_tests {
    use super::safe_id;

    /// A notebook id names the kernel's connection file, log and work folder; an
    /// id that could leave the kernels folder is refused before any path is made.
    #[test]
    fn only_plain_ids_name_kernel_files() {
        for good in ["2rAdUcSzPDVrfX8oE2F6TyPCgizE", "a-b_c", "x"] {
            assert!(safe_id(good), "{good}");
        }
        for bad in [
            "",
            "..",
            "../tokens",
            "a/b",
            "a\\b",
            "a\0b",
            ".hidden",
            "é",
            &"x".repeat(129),
        ] {
            assert!(!safe_id(bad), "{bad:?}");
        }
    }
}
