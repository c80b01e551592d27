//! promptfoo's shorthand for an assertion in a CSV `__expected` cell:
//! `[not-]TYPE[(THRESHOLD)][:VALUE]`, `grade:`/`llm-rubric:` for a rubric, and any
//! other text meaning `equals`.

use anyhow::{bail, Result};
use serde_json::{json, Value};

/// Every type promptfoo's shorthand recognises. A cell naming one that ferrolab does
/// not run is an error, never an `equals` by accident.
const PROMPTFOO_TYPES: &[&str] = &[
    "answer-relevance",
    "bleu",
    "classifier",
    "contains",
    "contains-all",
    "contains-any",
    "contains-html",
    "contains-json",
    "contains-sql",
    "contains-xml",
    "context-faithfulness",
    "context-recall",
    "context-relevance",
    "conversation-relevance",
    "cost",
    "equals",
    "factuality",
    "finish-reason",
    "g-eval",
    "gleu",
    "guardrails",
    "icontains",
    "icontains-all",
    "icontains-any",
    "is-html",
    "is-json",
    "is-refusal",
    "is-sql",
    "is-valid-function-call",
    "is-valid-openai-function-call",
    "is-valid-openai-tools-call",
    "is-xml",
    "javascript",
    "latency",
    "levenshtein",
    "llm-rubric",
    "pi",
    "meteor",
    "model-graded-closedqa",
    "model-graded-factuality",
    "moderation",
    "perplexity",
    "perplexity-score",
    "python",
    "regex",
    "rouge-n",
    "ruby",
    "similar",
    "similar:cosine",
    "similar:dot",
    "similar:euclidean",
    "starts-with",
    "trace-error-spans",
    "trace-span-count",
    "trace-span-duration",
    "search-rubric",
    "webhook",
    "select-best",
    "human",
    "max-score",
    "assert-set",
];

/// The assertion (as a config mapping) a cell stands for.
pub fn parse(cell: &str) -> Result<Value> {
    for prefix in ["javascript:", "fn:", "eval:", "python:"] {
        if cell.starts_with(prefix) {
            bail!("`{cell}`: script assertions ({prefix}) are not supported by ferrolab");
        }
    }
    if let Some(rubric) = cell.strip_prefix("grade:") {
        return Ok(json!({"type": "llm-rubric", "value": rubric}));
    }
    if let Some(rubric) = cell.strip_prefix("llm-rubric:") {
        return Ok(json!({"type": "llm-rubric", "value": rubric}));
    }
    let Some((negate, kind, threshold, value)) = shorthand(cell) else {
        return Ok(json!({"type": "equals", "value": cell}));
    };
    let full = if negate {
        format!("not-{kind}")
    } else {
        kind.to_string()
    };
    let mut out = serde_json::Map::new();
    out.insert("type".into(), Value::String(full));
    match kind {
        "contains-all" | "contains-any" | "icontains-all" | "icontains-any" => {
            if let Some(v) = value {
                let items: Vec<Value> = v
                    .split(',')
                    .map(|s| Value::String(s.trim().into()))
                    .collect();
                out.insert("value".into(), Value::Array(items));
            }
        }
        "contains-json" | "is-json" => {
            if let Some(v) = value {
                out.insert("value".into(), Value::String(v.to_string()));
            }
        }
        _ => {
            if let Some(v) = value {
                out.insert("value".into(), Value::String(v.trim().to_string()));
            }
            let thresholded = [
                "cost",
                "latency",
                "levenshtein",
                "perplexity",
                "rouge-n",
                "similar",
                "starts-with",
            ];
            if thresholded.contains(&kind) {
                let default = if kind == "similar" { 0.8 } else { 0.75 };
                out.insert(
                    "threshold".into(),
                    Value::from(threshold.unwrap_or(default)),
                );
            }
        }
    }
    Ok(Value::Object(out))
}

/// Splits `[not-]TYPE[(N)][:VALUE]` where TYPE is one of promptfoo's types.
fn shorthand(cell: &str) -> Option<(bool, &str, Option<f64>, Option<&str>)> {
    let (negate, rest) = match cell.strip_prefix("not-") {
        Some(r) => (true, r),
        None => (false, cell),
    };
    // Longest type first, so `contains-any` is not read as `contains`.
    let mut best: Option<(&str, Option<f64>, Option<&str>)> = None;
    for kind in PROMPTFOO_TYPES {
        let Some(after) = rest.strip_prefix(kind) else {
            continue;
        };
        let (threshold, after) = match after.strip_prefix('(') {
            Some(inner) => {
                let close = inner.find(')')?;
                let number = &inner[..close];
                let valid = !number.is_empty()
                    && number.split_once('.').map_or(
                        number.chars().all(|c| c.is_ascii_digit()),
                        |(a, b)| {
                            !a.is_empty()
                                && !b.is_empty()
                                && a.chars().chain(b.chars()).all(|c| c.is_ascii_digit())
                        },
                    );
                if !valid {
                    continue;
                }
                (number.parse::<f64>().ok(), &inner[close + 1..])
            }
            None => (None, after),
        };
        let value = if after.is_empty() {
            None
        } else if let Some(v) = after.strip_prefix(':') {
            Some(v)
        } else {
            continue;
        };
        if best.is_none_or(|(k, _, _)| kind.len() > k.len()) {
            best = Some((kind, threshold, value));
        }
    }
    best.map(|(k, t, v)| (negate, k, t, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_cells() {
        assert_eq!(
            parse("hello").unwrap(),
            json!({"type": "equals", "value": "hello"})
        );
        assert_eq!(
            parse("Note: x").unwrap(),
            json!({"type": "equals", "value": "Note: x"})
        );
        assert_eq!(
            parse("contains: cat").unwrap(),
            json!({"type": "contains", "value": "cat"})
        );
        assert_eq!(
            parse("not-icontains-any: a, b").unwrap(),
            json!({"type": "not-icontains-any", "value": ["a", "b"]})
        );
        assert_eq!(
            parse("levenshtein(3):kitten").unwrap(),
            json!({"type": "levenshtein", "value": "kitten", "threshold": 3.0})
        );
        assert_eq!(
            parse("starts-with:The").unwrap(),
            json!({"type": "starts-with", "value": "The", "threshold": 0.75})
        );
        assert_eq!(parse("is-json").unwrap(), json!({"type": "is-json"}));
        assert_eq!(
            parse("grade: is polite").unwrap(),
            json!({"type": "llm-rubric", "value": " is polite"})
        );
        assert!(parse("javascript: output.length > 3").is_err());
    }
}
