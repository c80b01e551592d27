//! `%feedback export` / `ferrolab feedback export`: well-rated completions as a
//! JSONL dataset that `%finetune` takes, closing the loop from serving to training.

use crate::store::Store;
use anyhow::{Context, Result};
use serde_json::json;
use std::io::Write;
use std::path::Path;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub rows: usize,
    pub chat_rows: usize,
}

/// Writes every successful completion whose mean feedback score is at least
/// `min_score` to `out`: chat requests as `{"messages": [..., assistant]}`, plain
/// completions as `{"prompt", "completion"}`. The file is replaced atomically.
pub fn export(store: &Store, min_score: f64, out: &Path) -> Result<Exported> {
    let rows = store.rated(min_score)?;
    let mut text = String::new();
    let mut chat_rows = 0;
    for (record, score) in &rows {
        let line = match record
            .messages
            .as_deref()
            .and_then(|m| serde_json::from_str::<Vec<serde_json::Value>>(m).ok())
        {
            Some(mut messages) if record.endpoint == "chat.completions" => {
                chat_rows += 1;
                messages.push(json!({"role": "assistant", "content": record.completion}));
                json!({"messages": messages, "id": record.id, "score": score})
            }
            _ => json!({
                "prompt": record.prompt,
                "completion": record.completion,
                "id": record.id,
                "score": score,
            }),
        };
        text.push_str(&line.to_string());
        text.push('\n');
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    ferrolab_llm::write_atomically(out, |tmp| {
        let mut file = std::fs::File::create(tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        Ok(())
    })
    .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(Exported {
        rows: rows.len(),
        chat_rows,
    })
}
