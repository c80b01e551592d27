//! The kernel's side of the cell API (`ferrolab_cell`): calls from Rust cells —
//! tables, models, tracking — arrive as one JSON line each on a Unix socket in a
//! folder private to this kernel, and are answered by the registry's cell calls.
//!
//! A cell runs in evcxr's evaluation process while the executor waits for it, so
//! calls are served on their own threads; what they reach (the data catalog, the
//! loaded models, the tracking session) is shared with the magics.

use ferrolab_magics::{CallContext, MagicError, Registry};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Names the socket for the evaluation process (read by `ferrolab_cell`).
pub const SOCKET_VAR: &str = "FERROLAB_CELL_SOCKET";
/// Names the folder where tables travel as Arrow IPC files.
pub const DIR_VAR: &str = "FERROLAB_CELL_DIR";
/// The longest request line read (a call's arguments are small; tables travel as
/// files).
const MAX_REQUEST: u64 = 16 << 20;

/// The listening socket and its folder; both go when the kernel stops.
pub struct CellCalls {
    dir: PathBuf,
    socket: PathBuf,
}

impl CellCalls {
    /// Opens the socket in a fresh folder only this user can enter, and answers
    /// calls on a background thread.
    pub fn start(registry: Arc<Registry>) -> std::io::Result<CellCalls> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!(
            "ferrolab-cells-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let socket = dir.join("calls.sock");
        let listener = UnixListener::bind(&socket)?;
        let thread_dir = dir.clone();
        std::thread::Builder::new()
            .name("cell-calls".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let registry = registry.clone();
                    let dir = thread_dir.clone();
                    let spawned = std::thread::Builder::new()
                        .name("cell-call".into())
                        .spawn(move || serve(stream, &registry, &dir));
                    if let Err(e) = spawned {
                        log::warn!("could not answer a cell call: {e}");
                    }
                }
            })?;
        Ok(CellCalls { dir, socket })
    }

    /// The environment the evaluation process needs to reach this kernel.
    pub fn env(&self) -> Vec<(String, OsString)> {
        vec![
            (SOCKET_VAR.to_string(), self.socket.clone().into_os_string()),
            (DIR_VAR.to_string(), self.dir.clone().into_os_string()),
        ]
    }
}

impl Drop for CellCalls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Answers the one call on `stream`.
fn serve(stream: UnixStream, registry: &Registry, dir: &Path) {
    let mut line = String::new();
    let read = BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
    let answer = match read {
        Ok(_) => answer(&line, registry, dir),
        Err(e) => error_answer(&MagicError::new(
            "BadCall",
            format!("the call could not be read: {e}"),
        )),
    };
    let mut bytes = answer.to_string();
    bytes.push('\n');
    if let Err(e) = (&stream).write_all(bytes.as_bytes()) {
        log::info!("a cell went away before its call was answered: {e}");
    }
}

/// The answer to one request line: `{"ok": …}` or `{"error": {"ename", "evalue"}}`.
pub fn answer(line: &str, registry: &Registry, dir: &Path) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(request) => request,
        Err(e) => {
            return error_answer(&MagicError::new(
                "BadCall",
                format!("a cell call must be one JSON object on one line: {e}"),
            ))
        }
    };
    let Some(name) = request.get("call").and_then(Value::as_str) else {
        return error_answer(&MagicError::new(
            "BadCall",
            "a cell call names what it calls in `call`",
        ));
    };
    let args = request.get("args").cloned().unwrap_or(Value::Null);
    let cx = CallContext { dir };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        registry.call(name, &args, &cx)
    }));
    match result {
        Ok(Ok(value)) => json!({ "ok": value }),
        Ok(Err(error)) => error_answer(&error),
        Err(panic) => error_answer(&MagicError::new(
            "KernelError",
            format!(
                "the kernel failed while answering `{name}`: {}",
                ferrolab_magics::panic_message(&*panic)
            ),
        )),
    }
}

fn error_answer(error: &MagicError) -> Value {
    json!({ "error": { "ename": error.ename, "evalue": error.evalue } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_magics::CellCall;

    struct Echo;
    impl CellCall for Echo {
        fn call(&self, args: &Value, _: &CallContext<'_>) -> Result<Value, MagicError> {
            match args.get("fail") {
                Some(_) => Err(MagicError::new("Refused", "as asked")),
                None => Ok(args.clone()),
            }
        }
    }
    struct Panics;
    impl CellCall for Panics {
        fn call(&self, _: &Value, _: &CallContext<'_>) -> Result<Value, MagicError> {
            panic!("boom")
        }
    }

    fn registry() -> Arc<Registry> {
        let mut registry = Registry::empty();
        registry.register_call("echo", Arc::new(Echo));
        registry.register_call("panics", Arc::new(Panics));
        Arc::new(registry)
    }

    fn call_over_socket(calls: &CellCalls, line: &str) -> Value {
        let stream = UnixStream::connect(&calls.socket).unwrap();
        (&stream).write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    #[test]
    fn calls_are_answered_over_the_socket_and_bad_ones_said_so() {
        let calls = CellCalls::start(registry()).unwrap();
        let ok = call_over_socket(&calls, "{\"call\":\"echo\",\"args\":{\"x\":1}}\n");
        assert_eq!(ok, json!({"ok": {"x": 1}}));
        let refused = call_over_socket(&calls, "{\"call\":\"echo\",\"args\":{\"fail\":1}}\n");
        assert_eq!(refused["error"]["ename"], "Refused");
        let unknown = call_over_socket(&calls, "{\"call\":\"nope\"}\n");
        assert_eq!(unknown["error"]["ename"], "UnknownCall");
        assert!(unknown["error"]["evalue"]
            .as_str()
            .unwrap()
            .contains("echo"));
        let garbage = call_over_socket(&calls, "\u{0}\u{1}not json\n");
        assert_eq!(garbage["error"]["ename"], "BadCall");
        let unnamed = call_over_socket(&calls, "{\"args\":{}}\n");
        assert_eq!(unnamed["error"]["ename"], "BadCall");
        let panicked = call_over_socket(&calls, "{\"call\":\"panics\"}\n");
        assert_eq!(panicked["error"]["ename"], "KernelError");
        assert!(panicked["error"]["evalue"]
            .as_str()
            .unwrap()
            .contains("boom"));
        // The kernel still answers after all of that.
        let again = call_over_socket(&calls, "{\"call\":\"echo\",\"args\":2}\n");
        assert_eq!(again, json!({"ok": 2}));
    }

    #[test]
    fn the_folder_is_private_and_goes_with_the_kernel() {
        use std::os::unix::fs::PermissionsExt;
        let calls = CellCalls::start(registry()).unwrap();
        let dir = calls.dir.clone();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let env = calls.env();
        assert!(env
            .iter()
            .any(|(k, v)| k == SOCKET_VAR && Path::new(v).exists()));
        drop(calls);
        assert!(!dir.exists());
    }
}
