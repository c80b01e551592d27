//! Fine-tuning examples: JSONL with `prompt`/`completion` or chat `messages`, or rows
//! of a table, tokenized with a mask that marks the tokens the loss is taken on.

use crate::tokenizer::{Message, TextTokenizer};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// One example as the user wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    /// Plain text: the loss is on `completion` (followed by the end-of-sequence token).
    Completion { prompt: String, completion: String },
    /// A conversation: the loss is on the assistant turns, rendered with the chat template.
    Chat { messages: Vec<Message> },
}

impl Example {
    /// From one JSON object; `where_` names it in errors ("line 3 of data.jsonl").
    pub fn from_json(value: &Value, where_: &str) -> Result<Example> {
        let object = value.as_object().with_context(|| {
            format!("{where_}: expected a JSON object with prompt/completion or messages")
        })?;
        if let Some(messages) = object.get("messages") {
            let list = messages.as_array().with_context(|| {
                format!("{where_}: 'messages' must be a list of {{role, content}}")
            })?;
            let mut out = Vec::with_capacity(list.len());
            for (i, m) in list.iter().enumerate() {
                let role = m["role"].as_str();
                let content = m["content"].as_str();
                match (role, content) {
                    (Some(role), Some(content)) => out.push(Message::new(role, content)),
                    _ => bail!(
                        "{where_}: message {} needs string fields 'role' and 'content'",
                        i + 1
                    ),
                }
            }
            if !out.iter().any(|m| m.role == "assistant") {
                bail!("{where_}: the conversation has no assistant message to learn from");
            }
            return Ok(Example::Chat { messages: out });
        }
        let text = |key: &str| -> Result<String> {
            match object.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Null) | None => bail!(
                    "{where_}: missing field '{key}' (each example needs 'prompt' and 'completion', or 'messages'); fields present: {}",
                    object.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                Some(other) => Ok(other.to_string()),
            }
        };
        Ok(Example::Completion {
            prompt: text("prompt")?,
            completion: text("completion")?,
        })
    }
}

/// Reads a JSONL file; the first bad line is reported with its number.
pub fn read_jsonl(path: &Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read dataset {}", path.display()))?;
    let name = path.display().to_string();
    let mut examples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let where_ = format!("line {} of {name}", i + 1);
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("{where_} is not valid JSON"))?;
        examples.push(Example::from_json(&value, &where_)?);
    }
    if examples.is_empty() {
        bail!("dataset {name} has no examples");
    }
    Ok(examples)
}

/// Rows of a table (JSON objects, one per row).
pub fn from_rows(rows: &[serde_json::Map<String, Value>], table: &str) -> Result<Vec<Example>> {
    let examples = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            Example::from_json(
                &Value::Object(row.clone()),
                &format!("row {} of table '{table}'", i + 1),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    if examples.is_empty() {
        bail!("table '{table}' has no rows");
    }
    Ok(examples)
}

/// Token ids and, per position, whether the loss is taken on that token.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    pub learn: Vec<bool>,
}

impl Tokenized {
    pub fn learned_tokens(&self) -> usize {
        self.learn.iter().filter(|l| **l).count()
    }
}

pub fn tokenize(example: &Example, tokenizer: &TextTokenizer) -> Result<Tokenized> {
    let mut out = Tokenized {
        ids: Vec::new(),
        learn: Vec::new(),
    };
    let mut push = |ids: Vec<u32>, learn: bool| {
        out.learn.extend(std::iter::repeat_n(learn, ids.len()));
        out.ids.extend(ids);
    };
    match example {
        Example::Completion { prompt, completion } => {
            push(tokenizer.encode(prompt)?, false);
            let mut ids = tokenizer.encode_continuation(completion)?;
            if let Some(eos) = tokenizer.eos_id() {
                ids.push(eos);
            }
            push(ids, true);
        }
        Example::Chat { messages } => {
            // Render turn by turn: the text up to each assistant answer is context,
            // the answer (and the template's end-of-turn marker) is learned.
            let mut rendered = String::new();
            for (i, message) in messages.iter().enumerate() {
                if message.role == "assistant" {
                    let before = tokenizer.apply_chat_template(&messages[..i], true)?;
                    let after = tokenizer.apply_chat_template(&messages[..=i], false)?;
                    let context = before.strip_prefix(rendered.as_str()).with_context(|| {
                        "the chat template does not render a conversation as a prefix of its continuation; use prompt/completion examples with this model"
                    })?;
                    let answer = after.strip_prefix(before.as_str()).with_context(|| {
                        "the chat template renders the assistant turn apart from its prompt; use prompt/completion examples with this model"
                    })?;
                    push(encode_part(tokenizer, context, rendered.is_empty())?, false);
                    push(tokenizer.encode_continuation(answer)?, true);
                    rendered = after;
                }
            }
        }
    }
    Ok(out)
}

fn encode_part(tokenizer: &TextTokenizer, text: &str, first: bool) -> Result<Vec<u32>> {
    if first {
        tokenizer.encode(text)
    } else {
        tokenizer.encode_continuation(text)
    }
}
