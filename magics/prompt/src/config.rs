//! A suite in promptfoo's configuration format: `prompts`, `providers`, `tests`
//! (inline or from CSV / JSONL / YAML files), `defaultTest`, `vars` (arrays expand
//! into combinations), per-test `threshold` and `options`. Every key ferrolab does
//! not support is an error that names it; nothing is silently ignored.

use crate::assertion::{AssertItem, AssertSet, Assertion, Kind};
pub use crate::spec::{kind_of, value_text, yaml_to_json, ProviderSpec};
use crate::template;
pub use crate::template::PromptBody;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A whole suite, with `defaultTest` merged into every test and var arrays expanded.
#[derive(Debug, Clone)]
pub struct Suite {
    pub description: Option<String>,
    pub prompts: Vec<Prompt>,
    pub providers: Vec<ProviderSpec>,
    pub tests: Vec<TestCase>,
    pub options: EvalOptions,
    /// Where relative `file://` paths were resolved from.
    pub base_dir: PathBuf,
}

/// `evaluateOptions` from the config; the command line overrides them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalOptions {
    pub max_concurrency: Option<usize>,
    pub repeat: Option<usize>,
    pub cache: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// How the prompt is shown: its `label`, else its file and text.
    pub label: String,
    pub body: PromptBody,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TestOptions {
    /// The grader for `llm-rubric` and the embedder for `similar`.
    pub provider: Option<ProviderSpec>,
    pub embedding_provider: Option<ProviderSpec>,
    pub rubric_prompt: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    pub description: Option<String>,
    pub vars: BTreeMap<String, Value>,
    /// The vars in the order written (`defaultTest`'s first): lists expand with the
    /// first var varying slowest, as in promptfoo.
    pub var_order: Vec<String>,
    pub asserts: Vec<AssertItem>,
    pub threshold: Option<f64>,
    pub options: TestOptions,
}

impl TestCase {
    /// A name for reports: the description, else the vars.
    pub fn name(&self) -> String {
        if let Some(d) = &self.description {
            return d.clone();
        }
        if self.vars.is_empty() {
            return "(no vars)".to_string();
        }
        self.vars
            .iter()
            .map(|(k, v)| format!("{k}={}", short(&value_text(v), 40)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(n).collect();
        out.push('…');
        out
    }
}

/// Reads a suite from a YAML file; relative `file://` paths resolve from its folder.
pub fn load(path: &Path) -> Result<Suite> {
    load_on(path, None)
}

/// As [`load`], run on `provider` when one is given (see [`parse_on`]).
pub fn load_on(path: &Path, provider: Option<&str>) -> Result<Suite> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the suite {}", path.display()))?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse_on(&text, &base, provider).with_context(|| format!("in {}", path.display()))
}

/// Parses YAML text (a promptfoo config) with `base_dir` for relative files.
pub fn parse(text: &str, base_dir: &Path) -> Result<Suite> {
    parse_on(text, base_dir, None)
}

/// As [`parse`], but run on `provider` only when one is given: the suite's provider
/// (at most one) keeps its label and config with `provider` as its id, and a suite
/// without `providers` gets `provider`. How a model version is evaluated: the suite
/// says how to ask, the caller says which model answers.
pub fn parse_on(text: &str, base_dir: &Path, provider: Option<&str>) -> Result<Suite> {
    let root = yaml_to_json(text)?;
    let Value::Object(mut root) = root else {
        bail!("a suite is a YAML mapping with `prompts`, `providers` and `tests`");
    };
    if let Some(id) = provider {
        let replaced = match root.remove("providers") {
            None | Some(Value::Null) => vec![Value::String(id.to_string())],
            Some(Value::Array(list)) if list.len() > 1 => bail!(
                "the suite lists {} providers, but it runs on one model ({id}): keep one provider entry (its label and config are kept)",
                list.len()
            ),
            Some(Value::Array(list)) if list.is_empty() => vec![Value::String(id.to_string())],
            Some(Value::Array(list)) => list.into_iter().map(|p| with_id(p, id)).collect(),
            Some(one) => vec![with_id(one, id)],
        };
        root.insert("providers".into(), Value::Array(replaced));
    }
    let mut cx = Cx {
        base: base_dir.to_path_buf(),
    };
    cx.suite(root)
}

/// A provider entry run as `id`: a mapping keeps its label and config.
fn with_id(entry: Value, id: &str) -> Value {
    match entry {
        Value::Object(mut map) => {
            map.insert("id".into(), Value::String(id.to_string()));
            Value::Object(map)
        }
        _ => Value::String(id.to_string()),
    }
}

struct Cx {
    base: PathBuf,
}

const SUITE_KEYS: &[&str] = &[
    "description",
    "prompts",
    "providers",
    "tests",
    "defaultTest",
    "evaluateOptions",
    "outputPath",
    "sharing",
];

const TEST_KEYS: &[&str] = &[
    "description",
    "vars",
    "assert",
    "threshold",
    "options",
    "metadata",
];

fn check_keys(map: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<()> {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            bail!(
                "{at}: `{key}` is not supported by ferrolab (supported here: {})",
                allowed.join(", ")
            );
        }
    }
    Ok(())
}

fn as_str<'a>(v: &'a Value, at: &str) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| anyhow!("{at} must be a string, got {}", kind_of(v)))
}

fn as_f64(v: &Value, at: &str) -> Result<f64> {
    v.as_f64()
        .ok_or_else(|| anyhow!("{at} must be a number, got {}", kind_of(v)))
}

impl Cx {
    fn path(&self, reference: &str) -> PathBuf {
        let p = Path::new(reference);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn read(&self, reference: &str, at: &str) -> Result<(PathBuf, String)> {
        let path = self.path(reference);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("{at}: cannot read file://{reference} ({})", path.display())
        })?;
        Ok((path, text))
    }

    fn suite(&mut self, mut root: Map<String, Value>) -> Result<Suite> {
        check_keys(&root, SUITE_KEYS, "the suite")?;
        if let Some(v) = root.get("sharing") {
            if v != &Value::Bool(false) {
                bail!("`sharing` uploads results to a server; ferrolab never does (remove it or set it to false)");
            }
        }
        let description = match root.remove("description") {
            Some(v) => Some(as_str(&v, "description")?.to_string()),
            None => None,
        };
        let prompts = match root.remove("prompts") {
            Some(v) => self.prompts(v)?,
            None => bail!("the suite has no `prompts`"),
        };
        if prompts.is_empty() {
            bail!("`prompts` is empty; give at least one prompt");
        }
        let providers = match root.remove("providers") {
            Some(Value::Array(list)) => list
                .into_iter()
                .enumerate()
                .map(|(i, v)| provider_spec(v, &format!("providers[{i}]")))
                .collect::<Result<Vec<_>>>()?,
            Some(v @ Value::String(_)) | Some(v @ Value::Object(_)) => {
                vec![provider_spec(v, "providers")?]
            }
            Some(v) => bail!("`providers` must be a list, got {}", kind_of(&v)),
            None => bail!("the suite has no `providers` (try `echo`, `ferrolab:smollm2` or `openai:chat:MODEL`)"),
        };
        if providers.is_empty() {
            bail!("`providers` is empty");
        }
        let defaults = match root.remove("defaultTest") {
            Some(Value::Object(map)) => self.test(map, "defaultTest", None)?,
            Some(v) => bail!("`defaultTest` must be a mapping, got {}", kind_of(&v)),
            None => TestCase {
                description: None,
                vars: BTreeMap::new(),
                var_order: Vec::new(),
                asserts: Vec::new(),
                threshold: None,
                options: TestOptions::default(),
            },
        };
        let raw_tests = match root.remove("tests") {
            None => vec![Value::Object(Map::new())],
            Some(Value::Array(list)) => list,
            Some(v @ Value::String(_)) => vec![v],
            Some(v) => bail!(
                "`tests` must be a list or a file:// reference, got {}",
                kind_of(&v)
            ),
        };
        let mut tests = Vec::new();
        for (i, t) in raw_tests.into_iter().enumerate() {
            let at = format!("tests[{i}]");
            match t {
                Value::String(s) => {
                    let reference = s.strip_prefix("file://").ok_or_else(|| {
                        anyhow!("{at}: a string test must be a file:// reference, got {s:?}")
                    })?;
                    for (j, mut map) in self.test_file(reference, &at)?.into_iter().enumerate() {
                        let at = format!("{at} (file://{reference}, case {})", j + 1);
                        // promptfoo names file cases by row.
                        if !map.contains_key("description") {
                            let name = Value::String(format!("Row #{}", j + 1));
                            map.insert("description".into(), name);
                        }
                        tests.extend(expand(self.test(map, &at, Some(&defaults))?));
                    }
                }
                Value::Object(map) => tests.extend(expand(self.test(map, &at, Some(&defaults))?)),
                v => bail!("{at} must be a mapping, got {}", kind_of(&v)),
            }
        }
        let options = match root.remove("evaluateOptions") {
            Some(Value::Object(map)) => eval_options(map)?,
            Some(v) => bail!("`evaluateOptions` must be a mapping, got {}", kind_of(&v)),
            None => EvalOptions::default(),
        };
        let suite = Suite {
            description,
            prompts,
            providers,
            tests,
            options,
            base_dir: self.base.clone(),
        };
        validate(&suite)?;
        Ok(suite)
    }

    fn prompts(&self, v: Value) -> Result<Vec<Prompt>> {
        let list = match v {
            Value::Array(list) => list,
            v @ (Value::String(_) | Value::Object(_)) => vec![v],
            v => bail!("`prompts` must be a list, got {}", kind_of(&v)),
        };
        let mut out = Vec::new();
        for (i, item) in list.into_iter().enumerate() {
            let at = format!("prompts[{i}]");
            match item {
                Value::String(s) => out.extend(self.prompt_string(&s, None, &at)?),
                Value::Object(mut map) => {
                    check_keys(&map, &["raw", "id", "label"], &at)?;
                    let label = match map.remove("label") {
                        Some(v) => Some(as_str(&v, &format!("{at}.label"))?.to_string()),
                        None => None,
                    };
                    let body = match (map.remove("raw"), map.remove("id")) {
                        (Some(raw), _) => as_str(&raw, &format!("{at}.raw"))?.to_string(),
                        (None, Some(id)) => as_str(&id, &format!("{at}.id"))?.to_string(),
                        (None, None) => bail!("{at} needs `raw` (the prompt) or `id` (a file://)"),
                    };
                    out.extend(self.prompt_string(&body, label, &at)?);
                }
                Value::Array(messages) => {
                    let chat = chat_messages(&Value::Array(messages), &at)?;
                    out.push(Prompt {
                        label: chat_label(&chat),
                        body: PromptBody::Chat(chat),
                    });
                }
                v => bail!(
                    "{at} must be a string, a mapping or a list of messages, got {}",
                    kind_of(&v)
                ),
            }
        }
        Ok(out)
    }

    fn prompt_string(&self, s: &str, label: Option<String>, at: &str) -> Result<Vec<Prompt>> {
        let Some(reference) = s.strip_prefix("file://") else {
            return Ok(vec![Prompt {
                label: label.unwrap_or_else(|| s.to_string()),
                body: PromptBody::Text(s.to_string()),
            }]);
        };
        if reference.contains('*') {
            bail!("{at}: globs in file:// prompts are not supported; list the files");
        }
        let (path, text) = self.read(reference, at)?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "md" | "j2" | "njk" | "" => {
                // promptfoo: a line `---` separates several prompts in one text file.
                let parts: Vec<&str> = split_prompts(&text);
                let many = parts.len() > 1;
                Ok(parts
                    .into_iter()
                    .map(|p| Prompt {
                        label: match (&label, many) {
                            (Some(l), false) => l.clone(),
                            _ => format!("{reference}: {}", short(p.trim(), 60)),
                        },
                        body: PromptBody::Text(p.to_string()),
                    })
                    .collect())
            }
            "json" => {
                let value: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{at}: file://{reference} is not valid JSON"))?;
                let chat = chat_messages(&value, &format!("{at} (file://{reference})"))?;
                Ok(vec![Prompt {
                    label: label.unwrap_or_else(|| format!("{reference}: {}", chat_label(&chat))),
                    body: PromptBody::Chat(chat),
                }])
            }
            "yaml" | "yml" => {
                let value = yaml_to_json(&text)
                    .with_context(|| format!("{at}: in file://{reference}"))?;
                let chat = chat_messages(&value, &format!("{at} (file://{reference})"))?;
                Ok(vec![Prompt {
                    label: label.unwrap_or_else(|| format!("{reference}: {}", chat_label(&chat))),
                    body: PromptBody::Chat(chat),
                }])
            }
            other => bail!(
                "{at}: prompts from .{other} files are not supported (use .txt, .md, .json or .yaml)"
            ),
        }
    }

    /// Test cases from a CSV, JSONL, JSON or YAML file.
    fn test_file(&self, reference: &str, at: &str) -> Result<Vec<Map<String, Value>>> {
        let (path, text) = self.read(reference, at)?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let list = match ext.as_str() {
            "csv" => return csv_tests(&text).with_context(|| format!("{at}: in file://{reference}")),
            "jsonl" => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(n, l)| {
                    serde_json::from_str::<Value>(l).with_context(|| {
                        format!("{at}: file://{reference} line {} is not valid JSON", n + 1)
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            "json" => match serde_json::from_str(&text)
                .with_context(|| format!("{at}: file://{reference} is not valid JSON"))?
            {
                Value::Array(list) => list,
                v => bail!("{at}: file://{reference} must hold a list of tests, got {}", kind_of(&v)),
            },
            "yaml" | "yml" => match yaml_to_json(&text)
                .with_context(|| format!("{at}: in file://{reference}"))?
            {
                Value::Array(list) => list,
                v => bail!("{at}: file://{reference} must hold a list of tests, got {}", kind_of(&v)),
            },
            other => bail!("{at}: tests from .{other} files are not supported (use .csv, .jsonl, .json or .yaml)"),
        };
        list.into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(map) => Ok(map),
                v => bail!(
                    "{at}: file://{reference} case {} must be a mapping, got {}",
                    i + 1,
                    kind_of(&v)
                ),
            })
            .collect()
    }

    /// One test (or `defaultTest` when `defaults` is None), merged with the defaults.
    fn test(
        &self,
        mut map: Map<String, Value>,
        at: &str,
        defaults: Option<&TestCase>,
    ) -> Result<TestCase> {
        check_keys(&map, TEST_KEYS, at)?;
        let description = map.remove("description").map(|v| value_text(&v));
        let mut vars = defaults.map(|d| d.vars.clone()).unwrap_or_default();
        let mut var_order = defaults.map(|d| d.var_order.clone()).unwrap_or_default();
        match map.remove("vars") {
            Some(Value::Object(v)) => {
                for (k, value) in v {
                    vars.insert(k.clone(), self.var_value(value, &format!("{at}.vars.{k}"))?);
                    if !var_order.contains(&k) {
                        var_order.push(k);
                    }
                }
            }
            Some(Value::Null) | None => {}
            Some(v) => bail!("{at}.vars must be a mapping, got {}", kind_of(&v)),
        }
        let mut asserts = defaults.map(|d| d.asserts.clone()).unwrap_or_default();
        match map.remove("assert") {
            Some(Value::Array(list)) => {
                for (i, a) in list.into_iter().enumerate() {
                    asserts.push(assert_item(a, &format!("{at}.assert[{i}]"))?);
                }
            }
            Some(Value::Null) | None => {}
            Some(v) => bail!("{at}.assert must be a list, got {}", kind_of(&v)),
        }
        let threshold = match map.remove("threshold") {
            Some(v) => Some(as_f64(&v, &format!("{at}.threshold"))?),
            None => defaults.and_then(|d| d.threshold),
        };
        let mut options = defaults.map(|d| d.options.clone()).unwrap_or_default();
        if let Some(v) = map.remove("options") {
            test_options(v, &mut options, &format!("{at}.options"))?;
        }
        Ok(TestCase {
            description,
            vars,
            var_order,
            asserts,
            threshold,
            options,
        })
    }

    /// A var: `file://` values are read (text files, or JSON / YAML parsed).
    fn var_value(&self, v: Value, at: &str) -> Result<Value> {
        match v {
            Value::String(s) if s.starts_with("file://") => {
                let reference = &s["file://".len()..];
                let (path, text) = self.read(reference, at)?;
                match path.extension().and_then(|e| e.to_str()) {
                    Some("json") => serde_json::from_str(&text)
                        .with_context(|| format!("{at}: file://{reference} is not valid JSON")),
                    Some("yaml" | "yml") => yaml_to_json(&text),
                    _ => Ok(Value::String(text)),
                }
            }
            Value::Array(items) => Ok(Value::Array(
                items
                    .into_iter()
                    .map(|i| self.var_value(i, at))
                    .collect::<Result<_>>()?,
            )),
            v => Ok(v),
        }
    }
}

fn split_prompts(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            parts.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    parts.push(&text[start..]);
    parts.retain(|p| !p.trim().is_empty());
    if parts.is_empty() {
        parts.push(text);
    }
    parts
}

fn chat_messages(v: &Value, at: &str) -> Result<Vec<(String, String)>> {
    let Value::Array(items) = v else {
        bail!(
            "{at}: a chat prompt is a list of {{role, content}} messages, got {}",
            kind_of(v)
        );
    };
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("{at}[{i}]");
            let Value::Object(map) = m else {
                bail!("{at}: a message is a mapping with `role` and `content`");
            };
            check_keys(map, &["role", "content"], &at)?;
            let role = as_str(
                map.get("role").unwrap_or(&Value::Null),
                &format!("{at}.role"),
            )?;
            let content = as_str(
                map.get("content").unwrap_or(&Value::Null),
                &format!("{at}.content"),
            )?;
            Ok((role.to_string(), content.to_string()))
        })
        .collect()
}

fn chat_label(chat: &[(String, String)]) -> String {
    let text: Vec<String> = chat.iter().map(|(r, c)| format!("{r}: {c}")).collect();
    short(&text.join(" | "), 80)
}

pub fn provider_spec(v: Value, at: &str) -> Result<ProviderSpec> {
    match v {
        Value::String(id) => Ok(ProviderSpec {
            id,
            label: None,
            config: Map::new(),
        }),
        Value::Object(mut map) => {
            if map.len() == 1 && !map.contains_key("id") {
                // The `- openai:chat:gpt-4o: {config: ...}` form.
                let Some((id, inner)) = map.into_iter().next() else {
                    bail!("{at}: empty provider");
                };
                let mut spec = match inner {
                    Value::Object(inner) => provider_spec(Value::Object(inner), at)?,
                    Value::Null => ProviderSpec {
                        id: id.clone(),
                        label: None,
                        config: Map::new(),
                    },
                    v => bail!("{at}.{id} must be a mapping, got {}", kind_of(&v)),
                };
                spec.id = id;
                return Ok(spec);
            }
            check_keys(&map, &["id", "label", "config"], at)?;
            let id = match map.remove("id") {
                Some(v) => as_str(&v, &format!("{at}.id"))?.to_string(),
                None => String::new(),
            };
            let label = match map.remove("label") {
                Some(v) => Some(as_str(&v, &format!("{at}.label"))?.to_string()),
                None => None,
            };
            let config = match map.remove("config") {
                Some(Value::Object(c)) => c,
                Some(Value::Null) | None => Map::new(),
                Some(v) => bail!("{at}.config must be a mapping, got {}", kind_of(&v)),
            };
            Ok(ProviderSpec { id, label, config })
        }
        v => bail!(
            "{at} must be a provider id or a mapping with `id`, got {}",
            kind_of(&v)
        ),
    }
}

fn test_options(v: Value, options: &mut TestOptions, at: &str) -> Result<()> {
    let Value::Object(map) = v else {
        bail!("{at} must be a mapping, got {}", kind_of(&v));
    };
    check_keys(&map, &["provider", "rubricPrompt"], at)?;
    for (key, value) in map {
        match key.as_str() {
            "provider" => match value {
                // `provider: {text: ..., embedding: ...}` names a grader and an embedder.
                Value::Object(m)
                    if m.keys().all(|k| k == "text" || k == "embedding") && !m.is_empty() =>
                {
                    for (k, v) in m {
                        let spec = provider_spec(v, &format!("{at}.provider.{k}"))?;
                        if k == "text" {
                            options.provider = Some(spec);
                        } else {
                            options.embedding_provider = Some(spec);
                        }
                    }
                }
                v => {
                    let spec = provider_spec(v, &format!("{at}.provider"))?;
                    options.provider = Some(spec);
                }
            },
            "rubricPrompt" => {
                options.rubric_prompt = Some(match value {
                    Value::String(s) => s,
                    v @ Value::Array(_) => v.to_string(),
                    v => bail!(
                        "{at}.rubricPrompt must be a string or a list of messages, got {}",
                        kind_of(&v)
                    ),
                })
            }
            _ => unreachable!("checked above"),
        }
    }
    Ok(())
}

fn eval_options(map: Map<String, Value>) -> Result<EvalOptions> {
    check_keys(
        &map,
        &["maxConcurrency", "repeat", "cache"],
        "evaluateOptions",
    )?;
    let count = |key: &str| -> Result<Option<usize>> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Ok(Some(n as usize)),
                _ => bail!("evaluateOptions.{key} must be a whole number ≥ 1, got {v}"),
            },
        }
    };
    Ok(EvalOptions {
        max_concurrency: count("maxConcurrency")?,
        repeat: count("repeat")?,
        cache: match map.get("cache") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => bail!("evaluateOptions.cache must be true or false, got {v}"),
        },
    })
}

fn assert_item(v: Value, at: &str) -> Result<AssertItem> {
    let Value::Object(map) = v else {
        bail!("{at} must be a mapping with `type`, got {}", kind_of(&v));
    };
    let kind = match map.get("type") {
        Some(t) => as_str(t, &format!("{at}.type"))?.to_string(),
        None => bail!("{at} has no `type`"),
    };
    if kind == "assert-set" {
        check_keys(
            &map,
            &["type", "assert", "threshold", "weight", "metric"],
            at,
        )?;
        let inner = match map.get("assert") {
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(
                    |(i, a)| match assert_item(a.clone(), &format!("{at}.assert[{i}]"))? {
                        AssertItem::Single(a) => Ok(a),
                        AssertItem::Set(_) => bail!("{at}.assert[{i}]: assert-sets do not nest"),
                    },
                )
                .collect::<Result<Vec<_>>>()?,
            _ => bail!("{at}: an assert-set needs `assert`, a list of assertions"),
        };
        return Ok(AssertItem::Set(AssertSet {
            asserts: inner,
            threshold: map
                .get("threshold")
                .map(|v| as_f64(v, &format!("{at}.threshold")))
                .transpose()?,
            weight: map
                .get("weight")
                .map(|v| as_f64(v, &format!("{at}.weight")))
                .transpose()?
                .unwrap_or(1.0),
            metric: map
                .get("metric")
                .map(|v| as_str(v, &format!("{at}.metric")).map(str::to_string))
                .transpose()?,
        }));
    }
    check_keys(
        &map,
        &[
            "type",
            "value",
            "threshold",
            "weight",
            "metric",
            "provider",
            "rubricPrompt",
        ],
        at,
    )?;
    let (negate, base) = match kind.strip_prefix("not-") {
        Some(rest) => (true, rest),
        None => (false, kind.as_str()),
    };
    let kind =
        Kind::parse(base).ok_or_else(|| {
            anyhow!(
            "{at}: unknown assertion type `{kind}`; supported: {} (each also with a `not-` prefix)",
            Kind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
        )
        })?;
    let weight = match map.get("weight") {
        Some(v) => {
            let w = as_f64(v, &format!("{at}.weight"))?;
            if w < 0.0 {
                bail!("{at}.weight must be 0 or more, got {w}");
            }
            w
        }
        None => 1.0,
    };
    Ok(AssertItem::Single(Assertion {
        kind,
        negate,
        value: map.get("value").cloned(),
        threshold: map
            .get("threshold")
            .map(|v| as_f64(v, &format!("{at}.threshold")))
            .transpose()?,
        weight,
        metric: map
            .get("metric")
            .map(|v| as_str(v, &format!("{at}.metric")).map(str::to_string))
            .transpose()?,
        provider: map
            .get("provider")
            .map(|v| provider_spec(v.clone(), &format!("{at}.provider")))
            .transpose()?,
        rubric_prompt: map
            .get("rubricPrompt")
            .map(|v| as_str(v, &format!("{at}.rubricPrompt")).map(str::to_string))
            .transpose()?,
    }))
}

/// Tests from CSV: each column a var, except `__expected` (and `__expected1`, …),
/// `__description`, `__threshold` and `__metric`.
fn csv_tests(text: &str) -> Result<Vec<Map<String, Value>>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .context("cannot read the CSV header")?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    let mut out = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("CSV row {}", row + 2))?;
        let mut vars = Map::new();
        let mut asserts = Vec::new();
        let mut test = Map::new();
        let mut metric = None;
        for (header, cell) in headers.iter().zip(record.iter()) {
            if header.starts_with("__expected") {
                if !cell.trim().is_empty() {
                    asserts.push(
                        crate::assertion::from_expected(cell.trim())
                            .with_context(|| format!("CSV row {}, column {header}", row + 2))?,
                    );
                }
            } else if header == "__description" {
                test.insert("description".into(), Value::String(cell.to_string()));
            } else if header == "__threshold" {
                // As in promptfoo, an empty cell or 0 means no threshold.
                if !cell.trim().is_empty() {
                    let t: f64 = cell.trim().parse().with_context(|| {
                        format!(
                            "CSV row {}: __threshold must be a number, got {cell:?}",
                            row + 2
                        )
                    })?;
                    if t != 0.0 {
                        test.insert("threshold".into(), Value::from(t));
                    }
                }
            } else if header == "__metric" {
                metric = Some(cell.to_string());
            } else if header.starts_with("__") {
                bail!("CSV column `{header}` is not supported (supported: __expected, __expectedN, __description, __threshold, __metric)");
            } else {
                vars.insert(header.clone(), Value::String(cell.to_string()));
            }
        }
        if let Some(metric) = metric {
            for a in &mut asserts {
                if let Value::Object(m) = a {
                    m.insert("metric".into(), Value::String(metric.clone()));
                }
            }
        }
        test.insert("vars".into(), Value::Object(vars));
        test.insert("assert".into(), Value::Array(asserts));
        out.push(test);
    }
    Ok(out)
}

/// promptfoo expands every var whose value is a list of strings (its first item a
/// string) into one test per combination; other lists stay whole.
fn expand(test: TestCase) -> Vec<TestCase> {
    let mut out = vec![test.clone()];
    for key in &test.var_order {
        let Some(Value::Array(items)) = test.vars.get(key) else {
            continue;
        };
        if !items.first().is_some_and(Value::is_string) {
            continue;
        }
        out = out
            .into_iter()
            .flat_map(|t| {
                items.iter().map(move |item| {
                    let mut t = t.clone();
                    t.vars.insert(key.clone(), item.clone());
                    t
                })
            })
            .collect();
    }
    out
}

/// Everything that can be checked before a provider is called: templates parse and
/// name only known vars, regexes and JSON schemas compile, thresholds make sense.
fn validate(suite: &Suite) -> Result<()> {
    for (t, test) in suite.tests.iter().enumerate() {
        let at = format!("test {} ({})", t + 1, test.name());
        for prompt in &suite.prompts {
            template::check_prompt(&prompt.body, &test.vars)
                .with_context(|| format!("{at}, prompt {:?}", short(&prompt.label, 60)))?;
        }
        for item in &test.asserts {
            let asserts: Vec<&Assertion> = match item {
                AssertItem::Single(a) => vec![a],
                AssertItem::Set(s) => s.asserts.iter().collect(),
            };
            for a in asserts {
                a.check(&test.vars)
                    .with_context(|| format!("{at}, assertion {}", a.type_name()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(yaml: &str) -> Result<Suite> {
        parse(yaml, Path::new("."))
    }

    #[test]
    fn a_suite_run_on_one_provider_keeps_its_config_and_nothing_else() {
        let on = |yaml: &str| parse_on(yaml, Path::new("."), Some("ferrolab:m+adapter"));
        let s = on("prompts: [hi]\n").expect("no providers");
        assert_eq!(s.providers.len(), 1);
        assert_eq!(s.providers[0].id, "ferrolab:m+adapter");
        let s = on("prompts: [hi]\nproviders:\n  - id: openai:chat:x\n    label: bot\n    config: {temperature: 0}\n")
            .expect("one provider");
        assert_eq!(s.providers[0].id, "ferrolab:m+adapter");
        assert_eq!(s.providers[0].label.as_deref(), Some("bot"));
        assert_eq!(
            s.providers[0].config.get("temperature"),
            Some(&serde_json::json!(0))
        );
        let s = on("prompts: [hi]\nproviders: [echo]\n").expect("a name");
        assert_eq!(s.providers[0].id, "ferrolab:m+adapter");
        let err = on("prompts: [hi]\nproviders: [echo, echo]\n").unwrap_err();
        assert!(format!("{err:#}").contains("keep one provider"), "{err:#}");
    }

    #[test]
    fn yaml_errors_name_line_and_column() {
        let err = suite("prompts: [a\nproviders: [echo]\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("column"), "{text}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = suite("prompts: [hi]\nproviders: [echo]\nscenarios: []\n").unwrap_err();
        assert!(format!("{err:#}").contains("`scenarios` is not supported"));
        let err =
            suite("prompts: [hi]\nproviders: [echo]\ntests:\n  - vars: {}\n    transform: x\n")
                .unwrap_err();
        assert!(format!("{err:#}").contains("tests[0]: `transform` is not supported"));
    }

    #[test]
    fn var_lists_expand_into_combinations_and_defaults_merge() {
        let s = suite(
            "prompts: ['{{a}} {{b}}']\nproviders: [echo]\ndefaultTest:\n  vars: {b: x}\n  assert: [{type: contains, value: x}]\n  threshold: 0.5\ntests:\n  - vars: {a: ['1', '2', '3'], b: [x, y]}\n    assert: [{type: icontains, value: X}]\n  - vars: {a: z}\n  - vars: {a: [1, 2], b: []}\n",
        )
        .unwrap();
        // Lists whose first item is not a string stay whole, as in promptfoo.
        assert_eq!(s.tests.len(), 8);
        assert_eq!(s.tests[7].vars["a"], serde_json::json!([1, 2]));
        assert_eq!(s.tests[0].asserts.len(), 2);
        assert_eq!(s.tests[6].vars["b"], Value::String("x".into()));
        assert_eq!(s.tests[6].threshold, Some(0.5));
        let combos: Vec<String> = s.tests[..6]
            .iter()
            .map(|t| format!("{}{}", value_text(&t.vars["a"]), value_text(&t.vars["b"])))
            .collect();
        // defaultTest's `b` comes first, so it varies slowest (promptfoo's order).
        assert_eq!(combos, ["1x", "2x", "3x", "1y", "2y", "3y"]);
    }

    #[test]
    fn missing_vars_are_named_before_anything_runs() {
        let err = suite("prompts: ['Hello {{name}} from {{place}}']\nproviders: [echo]\ntests:\n  - vars: {name: A}\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("place"), "{text}");
        assert!(!text.contains("`name`"), "{text}");
    }

    #[test]
    fn unknown_assertion_types_list_the_supported_ones() {
        let err = suite(
            "prompts: [hi]\nproviders: [echo]\ntests:\n  - assert: [{type: containz, value: a}]\n",
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("unknown assertion type `containz`"), "{text}");
        assert!(text.contains("icontains-all"), "{text}");
    }

    #[test]
    fn bad_regex_and_schema_are_caught_at_load() {
        let err = suite("prompts: [hi]\nproviders: [echo]\ntests:\n  - assert: [{type: regex, value: '(unclosed'}]\n").unwrap_err();
        assert!(format!("{err:#}").contains("regex"), "{err:#}");
        let err = suite("prompts: [hi]\nproviders: [echo]\ntests:\n  - assert: [{type: is-json, value: {type: 12}}]\n").unwrap_err();
        assert!(format!("{err:#}").contains("schema"), "{err:#}");
    }

    #[test]
    fn csv_tests_read_expected_columns() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cases.csv"),
            "topic,__expected,__expected2,__description\ncats,contains: cat,not-icontains: DOG,first\n\"a, b\",hello,,second\n",
        )
        .unwrap();
        let s = parse(
            "prompts: ['{{topic}}']\nproviders: [echo]\ntests: file://cases.csv\n",
            dir.path(),
        )
        .unwrap();
        assert_eq!(s.tests.len(), 2);
        assert_eq!(s.tests[0].description.as_deref(), Some("first"));
        assert_eq!(s.tests[0].asserts.len(), 2);
        assert_eq!(s.tests[1].vars["topic"], Value::String("a, b".into()));
        let AssertItem::Single(a) = &s.tests[1].asserts[0] else {
            panic!("not a single assertion")
        };
        assert_eq!(a.kind, Kind::Equals);
    }

    #[test]
    fn prompt_files_split_on_separator_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.txt"), "one {{x}}\n---\ntwo {{x}}\n").unwrap();
        std::fs::write(
            dir.path().join("chat.json"),
            r#"[{"role": "system", "content": "be brief"}, {"role": "user", "content": "{{x}}"}]"#,
        )
        .unwrap();
        let s = parse(
            "prompts: [file://p.txt, file://chat.json]\nproviders: [echo]\ntests: [{vars: {x: 1}}]\n",
            dir.path(),
        )
        .unwrap();
        assert_eq!(s.prompts.len(), 3);
        assert_eq!(s.prompts[1].body, PromptBody::Text("two {{x}}\n".into()));
        assert!(matches!(&s.prompts[2].body, PromptBody::Chat(m) if m.len() == 2));
    }
}
