//! One call to the kernel: a JSON line out, a JSON line back, over the Unix socket
//! the kernel named in `FERROLAB_CELL_SOCKET`.

use serde_json::{json, Value};
use std::fmt;
use std::io::{BufRead, BufReader, Write};

/// Names the socket the kernel listens on for cell calls.
pub const SOCKET_VAR: &str = "FERROLAB_CELL_SOCKET";
/// Names the folder where tables travel as Arrow IPC files.
pub const DIR_VAR: &str = "FERROLAB_CELL_DIR";

/// Why a call from a cell failed: the kernel's own error name and message
/// (`TableNotFound`, `ModelError`, …), or what went wrong on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellError {
    /// A short name for the kind of failure, as the kernel's errors have.
    pub ename: String,
    /// What happened and what to do about it.
    pub evalue: String,
}

impl CellError {
    /// An error named `ename` (`PolarsError`, `UnknownTable`, …).
    pub fn new(ename: &str, evalue: impl Into<String>) -> CellError {
        CellError {
            ename: ename.to_string(),
            evalue: evalue.into(),
        }
    }
}

impl fmt::Display for CellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.ename, self.evalue)
    }
}

impl std::error::Error for CellError {}

impl From<std::io::Error> for CellError {
    fn from(error: std::io::Error) -> CellError {
        CellError::new("IoError", error.to_string())
    }
}

/// Asks the kernel to carry out `call` with `args` and returns its answer.
pub fn call(call: &str, args: Value) -> Result<Value, CellError> {
    let Some(path) = std::env::var_os(SOCKET_VAR) else {
        return Err(CellError::new(
            "NoKernel",
            format!(
                "`{call}` needs the ferrolab kernel, and this code is not running in one \
                 ({SOCKET_VAR} is not set)"
            ),
        ));
    };
    #[cfg(unix)]
    let stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        CellError::new(
            "KernelUnreachable",
            format!("could not reach the kernel for `{call}`: {e} (restart the kernel)"),
        )
    })?;
    #[cfg(not(unix))]
    let stream: std::fs::File = {
        let _ = path;
        return Err(CellError::new(
            "Unsupported",
            "cell calls need a Unix socket; this platform has none",
        ));
    };
    let mut line = json!({ "call": call, "args": args }).to_string();
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    decode(call, &answer)
}

/// Reads the kernel's answer: `{"ok": value}` or `{"error": {"ename", "evalue"}}`.
pub(crate) fn decode(call: &str, answer: &str) -> Result<Value, CellError> {
    let mut value: Value = serde_json::from_str(answer).map_err(|e| {
        CellError::new(
            "KernelAnswer",
            format!("the kernel's answer to `{call}` was not JSON ({e}): {answer:.200}"),
        )
    })?;
    if let Some(error) = value.get("error") {
        let field = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or_default();
        return Err(CellError::new(field("ename"), field("evalue")));
    }
    match value.get_mut("ok") {
        Some(ok) => Ok(ok.take()),
        None => Err(CellError::new(
            "KernelAnswer",
            format!("the kernel's answer to `{call}` had neither `ok` nor `error`: {answer:.200}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decode_to_values_and_errors() {
        assert_eq!(
            decode("t", r#"{"ok": {"path": "x"}}"#),
            Ok(json!({"path": "x"}))
        );
        let error = decode(
            "t",
            r#"{"error": {"ename": "TableNotFound", "evalue": "no"}}"#,
        );
        assert_eq!(error, Err(CellError::new("TableNotFound", "no")));
        assert_eq!(decode("t", "{}").unwrap_err().ename, "KernelAnswer");
        assert_eq!(decode("t", "not json").unwrap_err().ename, "KernelAnswer");
    }

    #[test]
    fn outside_a_kernel_calls_say_so() {
        std::env::remove_var(SOCKET_VAR);
        let error = call("table", json!({})).unwrap_err();
        assert_eq!(error.ename, "NoKernel");
        assert!(error.evalue.contains("`table`"), "{error}");
    }
}
