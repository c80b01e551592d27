//! What a suite's config says, in the pieces that assertions and providers read
//! too: a provider as written, and how config values read (as text, by kind, from
//! YAML). `config` builds whole suites from them.

use anyhow::{anyhow, Result};
use serde_json::{Map, Value};

/// A provider as written in the config: `id`, optional `label` and `config`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSpec {
    pub id: String,
    pub label: Option<String>,
    pub config: Map<String, Value>,
}

impl ProviderSpec {
    pub fn display(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.id)
    }
}

/// A var or assertion value as text: strings as they are, the rest as JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value's kind, for errors ("must be a string, got a list").
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// YAML to JSON values; a syntax error names its line and column.
pub fn yaml_to_json(text: &str) -> Result<Value> {
    let yaml: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| match e.location() {
            Some(at) => anyhow!(
                "invalid YAML at line {}, column {}: {}",
                at.line(),
                at.column(),
                strip_location(&e.to_string())
            ),
            None => anyhow!("invalid YAML: {e}"),
        })?;
    serde_json::to_value(&yaml).map_err(|e| anyhow!("this YAML has no JSON equivalent: {e}"))
}

fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
