//! The executor: one thread that owns the evaluation context, the magics, the
//! history and the execution counter, and runs requests one at a time.

use crate::evaluator::{Evaluator, Interrupt};
use crate::history::{History, Query};
use crate::iopub::{media, Iopub, KernelOutput};
use crate::stdin::StdinClient;
use crate::syntax::{self, Segment};
use ferrolab_magics::{parse, Host, MagicError, MagicKind, MimeBundle, Output, Registry};
use jupyter_protocol::{
    CompleteReply, ErrorOutput, ExecuteInput, ExecuteReply, ExecuteRequest, ExecuteResult,
    ExecutionCount, HistoryEntry, HistoryReply, HistoryRequest, InspectReply, JupyterMessage,
    Payload, ReplyError, ReplyStatus, Transient,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Work for the executor thread.
pub enum Job {
    Execute {
        message: Box<JupyterMessage>,
        request: ExecuteRequest,
        reply: oneshot::Sender<ExecuteReply>,
    },
    Complete {
        code: String,
        cursor_pos: usize,
        reply: oneshot::Sender<CompleteReply>,
    },
    Inspect {
        code: String,
        cursor_pos: usize,
        reply: oneshot::Sender<InspectReply>,
    },
    History {
        request: HistoryRequest,
        reply: oneshot::Sender<HistoryReply>,
    },
    /// Drop the evaluation context (cleaning its temporary files) and stop.
    Shutdown { done: oneshot::Sender<()> },
}

pub struct Session {
    iopub: Iopub,
    registry: Arc<Registry>,
    evaluator: Evaluator,
    history: History,
    execution_count: usize,
    interrupt: Arc<Interrupt>,
    stdin: StdinClient,
    current: Option<Current>,
    /// Answers the cell API's calls while the kernel runs (its folder goes with it).
    _cell_calls: Option<crate::cell_calls::CellCalls>,
}

/// The execute request being run.
struct Current {
    out: KernelOutput,
    allow_stdin: bool,
    /// The cell as its front end names it, for what magics record ([`Host::current_cell`]).
    cell: String,
}

/// How long the kernel waits with no request before it does its idle warm-up
/// (long enough to span the gap between cells of a notebook run, short next to
/// the time a person takes to write the next cell).
const IDLE_QUIET: std::time::Duration = std::time::Duration::from_millis(1500);

impl Session {
    pub fn new(
        iopub: Iopub,
        registry: Registry,
        history: History,
        interrupt: Arc<Interrupt>,
        stdin: StdinClient,
    ) -> Session {
        let registry = Arc::new(registry);
        let cell_calls = match crate::cell_calls::CellCalls::start(registry.clone()) {
            Ok(calls) => Some(calls),
            Err(e) => {
                log::warn!("Rust cells cannot call the kernel (tables, models, tracking): {e}");
                None
            }
        };
        let cell_env = cell_calls.as_ref().map(|c| c.env()).unwrap_or_default();
        Session {
            evaluator: Evaluator::start(interrupt.clone(), cell_env),
            _cell_calls: cell_calls,
            iopub,
            registry,
            history,
            execution_count: 0,
            interrupt,
            stdin,
            current: None,
        }
    }

    /// Serves jobs until shutdown or until every sender is gone.
    pub fn serve(mut self, jobs: std::sync::mpsc::Receiver<Job>) {
        use std::sync::mpsc::RecvTimeoutError;
        loop {
            let job = if self.evaluator.has_idle_work() {
                // Idle means nobody has asked for anything for a while: a
                // notebook run sends cells back to back, and a query that
                // arrived just after the warm-up began would wait seconds for it.
                match jobs.recv_timeout(IDLE_QUIET) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        self.evaluator.idle_work();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else if self.evaluator.is_starting() {
                // Wake up now and then to notice that evcxr is ready for idle work.
                match jobs.recv_timeout(std::time::Duration::from_millis(200)) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            };
            match job {
                Job::Execute {
                    message,
                    request,
                    reply,
                } => {
                    let _ = reply.send(self.execute(*message, request));
                }
                Job::Complete {
                    code,
                    cursor_pos,
                    reply,
                } => {
                    let _ = reply.send(self.complete(&code, cursor_pos));
                }
                Job::Inspect {
                    code,
                    cursor_pos,
                    reply,
                } => {
                    let _ = reply.send(self.inspect(&code, cursor_pos));
                }
                Job::History { request, reply } => {
                    let _ = reply.send(self.history(request));
                }
                Job::Shutdown { done } => {
                    drop(self);
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    fn execute(&mut self, message: JupyterMessage, request: ExecuteRequest) -> ExecuteReply {
        self.interrupt.reset();
        let silent = request.silent;
        let store_history = request.store_history && !silent;
        if store_history {
            self.execution_count += 1;
        }
        let count = ExecutionCount::new(self.execution_count);
        // Runs a cell starts are tagged with it: JupyterLab and VS Code name the cell
        // in the request's metadata; other clients get its execution count.
        let cell = message
            .metadata
            .get("cellId")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("In [{}]", self.execution_count));
        let mut out = KernelOutput {
            iopub: self.iopub.clone(),
            parent: message.clone(),
            silent,
            pages: Default::default(),
        };
        if !silent {
            self.iopub.publish(
                ExecuteInput {
                    code: request.code.clone(),
                    execution_count: count,
                },
                &message,
            );
        }
        self.current = Some(Current {
            out: out.clone(),
            allow_stdin: request.allow_stdin,
            cell,
        });
        let result = self.run_source(&request.code, &mut out);
        self.current = None;
        let payload: Vec<Payload> = ferrolab_magics::lock(&out.pages)
            .drain(..)
            .map(|bundle| Payload::Page {
                data: media(&bundle.data),
                start: 0,
            })
            .collect();
        match result {
            Ok(value) => {
                let plain = value
                    .as_ref()
                    .and_then(|b| b.get("text/plain"))
                    .map(str::to_string);
                if let Some(bundle) = value {
                    if !silent {
                        self.iopub.publish(
                            ExecuteResult {
                                execution_count: count,
                                data: media(&bundle.data),
                                metadata: bundle.metadata,
                                // `{}`, not null: the message spec wants an object.
                                transient: Some(Transient { display_id: None }),
                            },
                            &message,
                        );
                    }
                }
                if store_history {
                    self.history
                        .record(self.execution_count as i64, &request.code, plain);
                }
                ExecuteReply {
                    status: ReplyStatus::Ok,
                    execution_count: count,
                    payload,
                    user_expressions: Some(HashMap::new()),
                    error: None,
                }
            }
            Err(error) => {
                if store_history {
                    self.history
                        .record(self.execution_count as i64, &request.code, None);
                }
                if !silent {
                    self.iopub.publish(
                        ErrorOutput {
                            ename: error.ename.clone(),
                            evalue: error.evalue.clone(),
                            traceback: error.traceback.clone(),
                        },
                        &message,
                    );
                }
                ExecuteReply {
                    status: ReplyStatus::Error,
                    execution_count: count,
                    payload: Vec::new(),
                    user_expressions: Some(HashMap::new()),
                    error: Some(Box::new(ReplyError {
                        ename: error.ename,
                        evalue: error.evalue,
                        traceback: error.traceback,
                    })),
                }
            }
        }
    }

    fn complete(&mut self, code: &str, cursor_pos: usize) -> CompleteReply {
        let cursor = char_to_byte(code, cursor_pos);
        let line_start = code[..cursor].rfind('\n').map_or(0, |i| i + 1);
        let typed = &code[line_start..cursor];
        let (matches, start, end) = if typed.starts_with('%')
            && !typed.contains(char::is_whitespace)
        {
            let mut names = self.registry.names(MagicKind::Line);
            names.extend(self.registry.names(MagicKind::Cell));
            let matches: Vec<String> = names.into_iter().filter(|n| n.starts_with(typed)).collect();
            (matches, line_start, cursor)
        } else {
            match self.evaluator.complete(code, cursor) {
                Some(found) => found,
                None => (Vec::new(), cursor, cursor),
            }
        };
        CompleteReply {
            matches,
            cursor_start: byte_to_char(code, start),
            cursor_end: byte_to_char(code, end),
            metadata: Default::default(),
            status: ReplyStatus::Ok,
            error: None,
        }
    }

    fn inspect(&mut self, code: &str, cursor_pos: usize) -> InspectReply {
        let cursor = char_to_byte(code, cursor_pos);
        let found = self.magic_help_at(code, cursor).or_else(|| {
            let (plain, html) = self.evaluator.inspect(code, cursor)?;
            (!plain.trim().is_empty()).then(|| MimeBundle::text(plain).with("text/html", html))
        });
        InspectReply {
            found: found.is_some(),
            data: found.map(|b| media(&b.data)).unwrap_or_default(),
            metadata: Default::default(),
            status: ReplyStatus::Ok,
            error: None,
        }
    }

    /// The help of the magic whose name is under the cursor, if any.
    fn magic_help_at(&self, code: &str, cursor: usize) -> Option<MimeBundle> {
        let line_start = code[..cursor].rfind('\n').map_or(0, |i| i + 1);
        let line_end = code[cursor..].find('\n').map_or(code.len(), |i| cursor + i);
        let line = code[line_start..line_end].trim_start();
        let name = line
            .strip_prefix('%')?
            .trim_start_matches('%')
            .split(|c: char| c.is_whitespace() || c == '?')
            .next()?;
        let magic = self.registry.get(name)?;
        Some(ferrolab_magics::help_bundle(magic.as_ref()))
    }

    fn history(&self, request: HistoryRequest) -> HistoryReply {
        let (query, output) = match &request {
            HistoryRequest::Tail { n, output, .. } => (
                Query::Tail {
                    n: (*n).max(0) as usize,
                },
                *output,
            ),
            HistoryRequest::Range {
                session,
                start,
                stop,
                output,
                ..
            } => (
                Query::Range {
                    session: session.unwrap_or(0) as i64,
                    start: *start as i64,
                    stop: *stop as i64,
                },
                *output,
            ),
            HistoryRequest::Search {
                pattern,
                unique,
                n,
                output,
                ..
            } => (
                Query::Search {
                    pattern,
                    unique: *unique,
                    n: (*n > 0).then_some(*n as usize),
                },
                *output,
            ),
        };
        let history = self
            .history
            .query(query)
            .into_iter()
            .map(|e| {
                let session = e.session.max(0) as usize;
                let line = e.line.max(0) as usize;
                if output {
                    HistoryEntry::InputOutput(
                        session,
                        line,
                        (e.input, e.output.unwrap_or_default()),
                    )
                } else {
                    HistoryEntry::Input(session, line, e.input)
                }
            })
            .collect();
        HistoryReply {
            history,
            status: ReplyStatus::Ok,
            error: None,
        }
    }
}

impl Host for Session {
    fn run_source(
        &mut self,
        source: &str,
        out: &mut dyn Output,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let segments = syntax::segments(source);
        let count = segments.len();
        let mut last = None;
        for (index, segment) in segments.into_iter().enumerate() {
            if self.interrupt.requested() {
                return Err(MagicError::new("Interrupted", "the cell was interrupted"));
            }
            let value = match segment {
                Segment::Rust(code) => {
                    let Some(current) = &self.current else {
                        return Err(MagicError::new(
                            "NoCell",
                            "Rust code can only run inside an execute request",
                        ));
                    };
                    let target = current.out.clone();
                    let input = self.stdin.reader(
                        current.out.parent.clone(),
                        current.allow_stdin,
                        self.interrupt.clone(),
                    );
                    self.evaluator.run(&code, &target, &input)?
                }
                Segment::Magic(source) => {
                    let invocation = parse(&source)
                        .map_err(|e| MagicError::usage(e.message))?
                        .ok_or_else(|| MagicError::usage("expected a magic"))?;
                    let registry = self.registry.clone();
                    registry.run(&invocation, out, self)?
                }
            };
            if index + 1 < count {
                if let Some(bundle) = value {
                    out.display(bundle, None);
                }
            } else {
                last = value;
            }
        }
        Ok(last)
    }

    fn interrupted(&self) -> bool {
        self.interrupt.requested()
    }

    fn current_cell(&self) -> Option<&str> {
        self.current.as_ref().map(|current| current.cell.as_str())
    }
}

/// Jupyter counts cursor positions in Unicode code points; Rust strings in bytes.
pub fn char_to_byte(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(i, _)| i)
}

pub fn byte_to_char(s: &str, byte: usize) -> usize {
    let byte = byte.min(s.len());
    let mut boundary = byte;
    while !s.is_char_boundary(boundary) {
        boundary -= 1;
    }
    s[..boundary].chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_conversions() {
        let s = "é = 1; 🦀x";
        assert_eq!(char_to_byte(s, 0), 0);
        assert_eq!(char_to_byte(s, 1), 2);
        assert_eq!(char_to_byte(s, 100), s.len());
        assert_eq!(byte_to_char(s, 2), 1);
        assert_eq!(byte_to_char(s, s.len()), s.chars().count());
        // A byte inside the crab counts as before it.
        assert_eq!(byte_to_char(s, 10), 7);
    }
}
