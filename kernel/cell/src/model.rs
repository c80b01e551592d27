//! A model the kernel has loaded, from Rust: the same engine `%generate`, `%serve`
//! and `%%prompt_test` use, loaded once per kernel whichever asks first.

use crate::channel::{call, CellError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How to sample; the defaults are `%generate`'s (greedy, 128 new tokens).
///
/// ```no_run
/// # use ferrolab_cell::*;
/// let options = Generate::default().max_tokens(16).temperature(0.7).seed(42);
/// ```
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Generate {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    adapter: Option<String>,
}

impl Generate {
    /// At most this many new tokens.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = Some(n);
        self
    }
    /// Sampling temperature; 0 is greedy.
    pub fn temperature(mut self, t: f64) -> Self {
        self.temperature = Some(t);
        self
    }
    /// Sample from the `k` likeliest tokens only (0: all).
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }
    /// Sample from the smallest set of tokens whose probability reaches `p`.
    pub fn top_p(mut self, p: f64) -> Self {
        self.top_p = Some(p);
        self
    }
    /// The random seed, for repeatable sampling.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Stop before this text (may be given several times).
    pub fn stop(mut self, text: &str) -> Self {
        self.stop.push(text.to_string());
        self
    }
    /// Apply a PEFT LoRA adapter folder (for example a `%finetune` run's `adapter`).
    pub fn adapter(mut self, dir: &str) -> Self {
        self.adapter = Some(dir.to_string());
        self
    }
}

/// One chat message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message's text.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

fn text_of(answer: Value, call: &str) -> Result<String, CellError> {
    answer
        .get("text")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| CellError::new("KernelAnswer", format!("`{call}` answered without text")))
}

/// Continues `prompt` with `model` (`smollm2`, or a GGUF or model folder path, as
/// `%generate --model` takes) and returns the new text.
///
/// ```no_run
/// # use ferrolab_cell::*;
/// # fn main() -> Result<(), CellError> {
/// let text = generate("smollm2", "Rust is", &Generate::default().max_tokens(12))?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// `ModelError` when the model cannot be loaded or generation fails.
pub fn generate(model: &str, prompt: &str, options: &Generate) -> Result<String, CellError> {
    let answer = call(
        "generate",
        json!({ "model": model, "prompt": prompt, "options": options }),
    )?;
    text_of(answer, "generate")
}

/// Answers the conversation `messages` with `model`, through the model's chat
/// template, and returns the assistant's reply.
///
/// ```no_run
/// # use ferrolab_cell::*;
/// # fn main() -> Result<(), CellError> {
/// let reply = chat(
///     "smollm2",
///     &[Message::new("user", "Name a prime number.")],
///     &Generate::default().max_tokens(8),
/// )?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// `ModelError` when the model cannot be loaded or generation fails.
pub fn chat(model: &str, messages: &[Message], options: &Generate) -> Result<String, CellError> {
    let answer = call(
        "chat",
        json!({ "model": model, "messages": messages, "options": options }),
    )?;
    text_of(answer, "chat")
}

/// The embedding of `text` under `model` (mean-pooled last hidden states, as
/// `/v1/embeddings` serves).
///
/// ```no_run
/// # use ferrolab_cell::*;
/// # fn main() -> Result<(), CellError> {
/// let v = embed("smollm2", "hello")?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// `ModelError` when the model cannot be loaded.
pub fn embed(model: &str, text: &str) -> Result<Vec<f32>, CellError> {
    let answer = call("embed", json!({ "model": model, "text": text }))?;
    serde_json::from_value(answer.get("embedding").cloned().unwrap_or(Value::Null))
        .map_err(|e| CellError::new("KernelAnswer", format!("`embed` answered badly: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_send_only_what_was_set() {
        let options = Generate::default().max_tokens(4).stop("\n");
        assert_eq!(
            serde_json::to_value(&options).unwrap(),
            json!({"max_tokens": 4, "stop": ["\n"]})
        );
    }
}
