//! Input history, kept across kernel restarts in a per-user JSON-lines file.
//!
//! Each line is `{"session": N, "line": L, "input": "...", "output": "..."}`. A kernel
//! takes the next session number at start; `line` is the execution count.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub session: i64,
    pub line: i64,
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// The history file and this kernel's session number in it.
pub struct History {
    path: Option<PathBuf>,
    session: i64,
}

/// What a `history_request` asks for.
pub enum Query<'a> {
    Tail {
        n: usize,
    },
    /// `session` may be negative: -1 is the previous session, 0 this one.
    Range {
        session: i64,
        start: i64,
        stop: i64,
    },
    Search {
        pattern: &'a str,
        unique: bool,
        n: Option<usize>,
    },
}

impl History {
    /// Opens (or creates) the history file. A file that cannot be used makes history
    /// in-memory-less for this kernel, with a warning, never a failed start.
    pub fn open(path: PathBuf) -> History {
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                log::warn!("history disabled: cannot create {}: {e}", dir.display());
                return History {
                    path: None,
                    session: 1,
                };
            }
        }
        let last = read_entries(&path)
            .iter()
            .map(|e| e.session)
            .max()
            .unwrap_or(0);
        History {
            path: Some(path),
            session: last + 1,
        }
    }

    /// A history that records nothing (for tests and read-only homes).
    pub fn disabled() -> History {
        History {
            path: None,
            session: 1,
        }
    }

    pub fn session(&self) -> i64 {
        self.session
    }

    pub fn record(&mut self, line: i64, input: &str, output: Option<String>) {
        let Some(path) = &self.path else { return };
        let entry = Entry {
            session: self.session,
            line,
            input: input.to_string(),
            output,
        };
        let result = serde_json::to_string(&entry)
            .map_err(std::io::Error::other)
            .and_then(|mut json| {
                json.push('\n');
                // One write of one line with O_APPEND keeps concurrent kernels' lines whole.
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?
                    .write_all(json.as_bytes())
            });
        if let Err(e) = result {
            log::warn!("could not append to history {}: {e}", path.display());
        }
    }

    pub fn query(&self, query: Query<'_>) -> Vec<Entry> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let entries = read_entries(path);
        match query {
            Query::Tail { n } => {
                let skip = entries.len().saturating_sub(n);
                entries.into_iter().skip(skip).collect()
            }
            Query::Range {
                session,
                start,
                stop,
            } => {
                let session = if session <= 0 {
                    self.session + session
                } else {
                    session
                };
                entries
                    .into_iter()
                    .filter(|e| {
                        e.session == session && e.line >= start && (stop <= 0 || e.line < stop)
                    })
                    .collect()
            }
            Query::Search { pattern, unique, n } => {
                let pattern = glob_pattern(pattern);
                let mut found: Vec<Entry> = entries
                    .into_iter()
                    .filter(|e| pattern.matches(&e.input))
                    .collect();
                if unique {
                    // Keep the most recent occurrence of each input, in order.
                    let mut seen = std::collections::HashSet::new();
                    let mut kept: Vec<Entry> = found
                        .into_iter()
                        .rev()
                        .filter(|e| seen.insert(e.input.clone()))
                        .collect();
                    kept.reverse();
                    found = kept;
                }
                if let Some(n) = n {
                    let skip = found.len().saturating_sub(n);
                    found.drain(..skip);
                }
                found
            }
        }
    }
}

fn read_entries(path: &PathBuf) -> Vec<Entry> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect()
}

/// IPython's history search pattern (`fnmatch`): a glob with `*`, `?` and `[...]`,
/// matched against the whole input. A pattern that is not a valid glob (an
/// unclosed `[`) matches its own text literally.
pub fn glob_pattern(pattern: &str) -> glob::Pattern {
    glob::Pattern::new(pattern)
        .or_else(|_| glob::Pattern::new(&glob::Pattern::escape(pattern)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        for (p, t, m) in [
            ("*", "anything", true),
            ("let *", "let x = 1;", true),
            ("*x*", "let x = 1;", true),
            ("?et*", "let", true),
            ("a*c", "abd", false),
            ("", "", true),
            ("", "a", false),
            ("[ab]x", "bx", true),
            ("v[0", "v[0", true),
            ("v[0", "v0", false),
        ] {
            assert_eq!(glob_pattern(p).matches(t), m, "{p} vs {t}");
        }
    }

    #[test]
    fn sessions_survive_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut first = History::open(path.clone());
        assert_eq!(first.session(), 1);
        first.record(1, "let a = 1;", None);
        first.record(2, "a + 1", Some("2".into()));
        let mut second = History::open(path.clone());
        assert_eq!(second.session(), 2);
        second.record(1, "a", None);

        let tail = second.query(Query::Tail { n: 2 });
        assert_eq!(
            tail.iter().map(|e| e.input.as_str()).collect::<Vec<_>>(),
            ["a + 1", "a"]
        );
        let previous = second.query(Query::Range {
            session: -1,
            start: 2,
            stop: 3,
        });
        assert_eq!(previous.len(), 1);
        assert_eq!(previous[0].output.as_deref(), Some("2"));
        let found = second.query(Query::Search {
            pattern: "a*",
            unique: true,
            n: None,
        });
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn corrupt_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        std::fs::write(
            &path,
            "not json\n{\"session\":4,\"line\":1,\"input\":\"x\"}\n",
        )
        .unwrap();
        let history = History::open(path);
        assert_eq!(history.session(), 5);
        assert_eq!(history.query(Query::Tail { n: 10 }).len(), 1);
    }
}
