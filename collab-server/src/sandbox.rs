//! The shared kernels' sandbox. A cell on a shared kernel is code from an editor,
//! run on the server's machine; it must not reach the server's data folder (tokens,
//! the tracking database and its audit key, every notebook's documents, the other
//! kernels' connection files), must not outgrow its share of the machine, and must
//! not outlive the server.
//!
//! Each kernel runs under bubblewrap (Debian's `bubblewrap`) in new user, PID, IPC
//! and UTS namespaces, as `nobody` inside: the file system is the host's, read-only,
//! with the data folder replaced by an empty one; the only writable places are the
//! notebook's own work folder (shown at `/tmp/notebook`: its current directory,
//! `HOME` and `TMPDIR`) and a 64 MiB `/tmp` in memory,
//! and the environment is cleared to a short list. Resource limits (address space,
//! CPU seconds, processes) are rlimits set before the sandbox starts, so they bind
//! the kernel and everything it starts (the compiler for its cells included).
//! What a cell can and cannot reach is listed in docs/security.md.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Limits each shared kernel runs under; `None` leaves one unset.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Address space, bytes (RLIMIT_AS): a cell that allocates past it fails.
    pub memory_bytes: Option<u64>,
    /// CPU seconds over the kernel's life (RLIMIT_CPU): past it the kernel is ended.
    pub cpu_seconds: Option<u64>,
    /// Processes of the kernel's user (RLIMIT_NPROC). Linux does not count this
    /// limit for root, so it binds only when the server runs as another user.
    pub processes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Some(16 << 30),
            cpu_seconds: None,
            processes: Some(512),
        }
    }
}

/// How shared kernels are isolated.
#[derive(Debug, Clone)]
pub enum Sandbox {
    /// Under bubblewrap at this path, hiding these folders.
    Bubblewrap {
        bwrap: PathBuf,
        hidden: Vec<PathBuf>,
    },
    /// As the server's own user, with full access to its files: only for a server
    /// whose every editor is trusted (`--kernel-sandbox none`).
    None,
}

/// Where the sandbox shows the notebook's work folder and the connection file.
const INNER_WORK: &str = "/tmp/notebook";
const INNER_CONNECTION: &str = "/tmp/kernel.json";

/// What the environment of a sandboxed kernel keeps from the server's.
const KEPT_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "RUSTUP_HOME",
    "CARGO_HOME",
    "RUSTUP_TOOLCHAIN",
    "FERROLAB_HOME",
    "CARGO_TARGET_DIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

impl Sandbox {
    /// Bubblewrap found on `PATH` (or at `$FERROLAB_BWRAP`), hiding `data`; an error
    /// that says how to install it when it is missing.
    pub fn bubblewrap(data: &Path) -> anyhow::Result<Self> {
        let bwrap = match std::env::var_os("FERROLAB_BWRAP") {
            Some(path) => PathBuf::from(path),
            None => find_on_path("bwrap").ok_or_else(|| {
                anyhow::anyhow!(
                    "shared kernels run in a sandbox, and bubblewrap (`bwrap`) is not installed: \
                     install it (Debian: apt-get install bubblewrap), or start the server with \
                     --kernel-sandbox none if every editor may act as the server's user"
                )
            })?,
        };
        let data = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
        Ok(Sandbox::Bubblewrap {
            bwrap,
            hidden: vec![data],
        })
    }

    /// The command that runs `program kernel run --connection-file CONNECTION` for a
    /// notebook whose work folder is `work`, inside the sandbox.
    pub fn command(
        &self,
        program: &Path,
        connection: &Path,
        work: &Path,
        session_name: &str,
    ) -> tokio::process::Command {
        let kernel_args = |connection: &Path| -> Vec<OsString> {
            vec![
                "kernel".into(),
                "run".into(),
                "--connection-file".into(),
                connection.into(),
            ]
        };
        match self {
            Sandbox::None => {
                let mut command = tokio::process::Command::new(program);
                command
                    .args(kernel_args(connection))
                    .current_dir(work)
                    .env("JPY_SESSION_NAME", session_name);
                command
            }
            Sandbox::Bubblewrap { bwrap, hidden } => {
                let mut command = tokio::process::Command::new(bwrap);
                let inside = Inside::Kernel {
                    connection,
                    session_name,
                };
                command.args(bubblewrap_args(hidden, work, &inside));
                command
                    .arg("--")
                    .arg(program)
                    .args(kernel_args(Path::new(INNER_CONNECTION)));
                command
            }
        }
    }

    /// Where a job run in `work` sees its work folder (paths in its arguments name
    /// files there).
    pub fn inner_work(&self, work: &Path) -> PathBuf {
        match self {
            Sandbox::None => work.to_path_buf(),
            Sandbox::Bubblewrap { .. } => PathBuf::from(INNER_WORK),
        }
    }

    /// The command that runs `program ARGS` once in the work folder `work`, as a
    /// kernel runs but with no network at all (the server's evaluations). Without a
    /// sandbox it still loses the server's tracking settings, so it reports nowhere.
    pub fn job_command(
        &self,
        program: &Path,
        args: &[OsString],
        work: &Path,
    ) -> tokio::process::Command {
        match self {
            Sandbox::None => {
                let mut command = tokio::process::Command::new(program);
                command.args(args).current_dir(work);
                for key in [
                    "FERROLAB_TRACKING_URI",
                    "FERROLAB_TRACKING_TOKEN",
                    "MLFLOW_TRACKING_URI",
                    "MLFLOW_TRACKING_TOKEN",
                ] {
                    command.env_remove(key);
                }
                command
            }
            Sandbox::Bubblewrap { bwrap, hidden } => {
                let mut command = tokio::process::Command::new(bwrap);
                command.args(bubblewrap_args(hidden, work, &Inside::Job));
                command.arg("--").arg(program).args(args);
                command
            }
        }
    }
}

/// What runs in the sandbox.
enum Inside<'a> {
    /// A kernel: its connection file is shown read-only, and it keeps the host's
    /// network (the server reaches it over loopback).
    Kernel {
        connection: &'a Path,
        session_name: &'a str,
    },
    /// A one-shot job, with no network.
    Job,
}

/// bubblewrap's arguments, in order (later mounts cover earlier ones).
fn bubblewrap_args(hidden: &[PathBuf], work: &Path, inside: &Inside<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
        args.extend(items.iter().map(|item| item.as_ref().to_os_string()));
    };
    push(&[
        &"--die-with-parent",
        &"--new-session",
        &"--unshare-user",
        &"--uid",
        &"65534",
        &"--gid",
        &"65534",
        &"--unshare-pid",
        &"--unshare-ipc",
        &"--unshare-uts",
        &"--unshare-cgroup-try",
    ]);
    match inside {
        Inside::Kernel { .. } => push(&[&"--hostname", &"ferrolab-kernel"]),
        Inside::Job => push(&[&"--unshare-net", &"--hostname", &"ferrolab-job"]),
    }
    push(&[
        &"--ro-bind",
        &"/",
        &"/",
        &"--dev",
        &"/dev",
        &"--proc",
        &"/proc",
        // A small /tmp of its own (before the binds below, which may lie under
        // /tmp); the compiler's files go to TMPDIR in the work folder, on disk.
        &"--size",
        &"67108864",
        &"--tmpfs",
        &"/tmp",
    ]);
    // Models live under FERROLAB_HOME; where that is inside /tmp, the new /tmp
    // above would hide them, so it is shown again, read-only (before the data
    // folder is hidden, which may lie inside it).
    if let Some(home) = std::env::var_os("FERROLAB_HOME")
        .map(PathBuf::from)
        .filter(|home| home.is_absolute() && home.is_dir())
    {
        push(&[&"--ro-bind", &home, &home]);
    }
    for folder in hidden {
        push(&[&"--tmpfs", folder]);
    }
    let tmp = Path::new(INNER_WORK).join(".tmp");
    push(&[&"--bind", &work, &INNER_WORK]);
    if let Inside::Kernel { connection, .. } = inside {
        push(&[&"--ro-bind", connection, &INNER_CONNECTION]);
    }
    // bubblewrap applies --clearenv and --setenv in order: names set after it stay.
    push(&[
        &"--chdir",
        &INNER_WORK,
        &"--clearenv",
        &"--setenv",
        &"HOME",
        &INNER_WORK,
        &"--setenv",
        &"TMPDIR",
        &tmp,
    ]);
    if let Inside::Kernel { session_name, .. } = inside {
        push(&[&"--setenv", &"JPY_SESSION_NAME", session_name]);
    }
    for key in KEPT_ENV {
        if let Some(value) = std::env::var_os(key) {
            push(&[&"--setenv", key, &value]);
        }
    }
    // The toolchain the kernel compiles cells with, and the models, are found
    // through HOME unless named; HOME is now the work folder, so name them.
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        if std::env::var_os("FERROLAB_HOME").is_none() {
            push(&[
                &"--setenv",
                &"FERROLAB_HOME",
                &home.join(".cache").join("ferrolab"),
            ]);
        }
        for (key, default) in [("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")] {
            if std::env::var_os(key).is_none() && home.join(default).is_dir() {
                push(&[&"--setenv", &key, &home.join(default)]);
            }
        }
    }
    args
}

/// Sets the kernel's rlimits and lowers its priority, in the child between fork and
/// exec (so they bind the sandbox and everything inside it).
pub fn apply_limits(command: &mut tokio::process::Command, limits: &Limits) {
    #[cfg(target_os = "linux")]
    {
        let limits = limits.clone();
        // SAFETY: between fork and exec the closure makes only async-signal-safe
        // system calls (setrlimit, setpriority) and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let set = |resource, value: Option<u64>| -> std::io::Result<()> {
                    if let Some(value) = value {
                        let limit = libc::rlimit {
                            rlim_cur: value as libc::rlim_t,
                            rlim_max: value as libc::rlim_t,
                        };
                        if libc::setrlimit(resource, &limit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                };
                set(libc::RLIMIT_AS, limits.memory_bytes)?;
                set(libc::RLIMIT_CPU, limits.cpu_seconds)?;
                set(libc::RLIMIT_NPROC, limits.processes)?;
                // Cells yield to the server (and to people's sync) under load.
                libc::setpriority(libc::PRIO_PROCESS, 0, 10);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (command, limits);
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_folder_is_hidden_before_the_work_folder_is_shown() {
        // The server's layout, relative to a data folder of the test's own.
        let data = PathBuf::from("collab-data");
        let work_dir = data.join("work").join("nb");
        let connection = data.join("kernels").join("nb.json");
        let args = bubblewrap_args(
            std::slice::from_ref(&data),
            &work_dir,
            &Inside::Kernel {
                connection: &connection,
                session_name: "nb.ipynb",
            },
        );
        let text: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = |needle: &[&str]| {
            text.windows(needle.len())
                .position(|w| w == needle)
                .unwrap_or_else(|| panic!("{needle:?} not in {text:?}"))
        };
        let shown = |p: &Path| p.to_string_lossy().into_owned();
        let root = at(&["--ro-bind", "/", "/"]);
        let hide = at(&["--tmpfs", &shown(&data)]);
        let tmp = at(&["--tmpfs", "/tmp"]);
        let work = at(&["--bind", &shown(&work_dir), INNER_WORK]);
        let conn = at(&["--ro-bind", &shown(&connection), INNER_CONNECTION]);
        assert!(
            root < tmp && tmp < hide && hide < work && hide < conn,
            "{text:?}"
        );
        let clear = at(&["--clearenv"]);
        assert!(at(&["--setenv", "HOME", INNER_WORK]) > clear);
        assert!(at(&["--setenv", "JPY_SESSION_NAME", "nb.ipynb"]) > clear);
        assert!(
            !text.iter().any(|a| a == "--unshare-net"),
            "kernels keep loopback"
        );
    }

    #[test]
    fn a_job_has_no_network_and_no_connection_file() {
        let data = PathBuf::from("collab-data");
        let job_dir = data.join("evaluations").join("e1");
        let args = bubblewrap_args(std::slice::from_ref(&data), &job_dir, &Inside::Job);
        let text: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(text.iter().any(|a| a == "--unshare-net"), "{text:?}");
        assert!(!text.iter().any(|a| a == INNER_CONNECTION), "{text:?}");
        let hide = text.iter().position(|a| Path::new(a) == data);
        let work = text.iter().position(|a| Path::new(a) == job_dir);
        assert!(
            hide < work,
            "the job's folder is shown after the data folder is hidden"
        );
    }
}
