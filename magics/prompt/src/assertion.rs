//! Assertions with promptfoo's semantics: each gives pass, score and reason; `not-`
//! inverts; a test's score is the weighted mean of its assertions' scores; it passes
//! when every assertion passes, or, with a `threshold`, when the score reaches it.
//! A weight of 0 records an assertion without letting it fail the test.

use crate::metrics;
use crate::spec::{kind_of, value_text, ProviderSpec};
use crate::template;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Equals,
    Contains,
    IContains,
    ContainsAny,
    ContainsAll,
    IContainsAny,
    IContainsAll,
    StartsWith,
    Regex,
    IsJson,
    ContainsJson,
    Levenshtein,
    RougeN,
    Bleu,
    Similar,
    Latency,
    Cost,
    Perplexity,
    LlmRubric,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Equals,
        Kind::Contains,
        Kind::IContains,
        Kind::ContainsAny,
        Kind::ContainsAll,
        Kind::IContainsAny,
        Kind::IContainsAll,
        Kind::StartsWith,
        Kind::Regex,
        Kind::IsJson,
        Kind::ContainsJson,
        Kind::Levenshtein,
        Kind::RougeN,
        Kind::Bleu,
        Kind::Similar,
        Kind::Latency,
        Kind::Cost,
        Kind::Perplexity,
        Kind::LlmRubric,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Equals => "equals",
            Kind::Contains => "contains",
            Kind::IContains => "icontains",
            Kind::ContainsAny => "contains-any",
            Kind::ContainsAll => "contains-all",
            Kind::IContainsAny => "icontains-any",
            Kind::IContainsAll => "icontains-all",
            Kind::StartsWith => "starts-with",
            Kind::Regex => "regex",
            Kind::IsJson => "is-json",
            Kind::ContainsJson => "contains-json",
            Kind::Levenshtein => "levenshtein",
            Kind::RougeN => "rouge-n",
            Kind::Bleu => "bleu",
            Kind::Similar => "similar",
            Kind::Latency => "latency",
            Kind::Cost => "cost",
            Kind::Perplexity => "perplexity",
            Kind::LlmRubric => "llm-rubric",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// promptfoo reads `not-` on these but ignores it; ferrolab refuses it.
    fn ignores_not(self) -> bool {
        matches!(
            self,
            Kind::Levenshtein | Kind::Latency | Kind::Cost | Kind::Perplexity | Kind::LlmRubric
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    pub kind: Kind,
    pub negate: bool,
    pub value: Option<Value>,
    pub threshold: Option<f64>,
    pub weight: f64,
    pub metric: Option<String>,
    /// The grader (`llm-rubric`) or embedder (`similar`) for this assertion alone.
    pub provider: Option<ProviderSpec>,
    pub rubric_prompt: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssertSet {
    pub asserts: Vec<Assertion>,
    pub threshold: Option<f64>,
    pub weight: f64,
    pub metric: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AssertItem {
    Single(Assertion),
    Set(AssertSet),
}

/// One assertion's verdict (or a whole test's, with its parts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grade {
    pub pass: bool,
    pub score: f64,
    pub reason: String,
    /// `type` and `value` of the assertion, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        rename = "componentResults"
    )]
    pub components: Vec<Grade>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        rename = "namedScores"
    )]
    pub named_scores: BTreeMap<String, f64>,
}

impl Grade {
    fn new(pass: bool, score: f64, reason: impl Into<String>) -> Grade {
        Grade {
            pass,
            score,
            reason: reason.into(),
            assertion: None,
            components: Vec::new(),
            named_scores: BTreeMap::new(),
        }
    }

    fn binary(pass: bool, fail_reason: impl FnOnce() -> String) -> Grade {
        if pass {
            Grade::new(true, 1.0, "Assertion passed")
        } else {
            Grade::new(false, 0.0, fail_reason())
        }
    }
}

/// What the assertions look at: the provider's answer and what it cost.
pub struct Observed<'a> {
    pub output: &'a str,
    pub vars: &'a BTreeMap<String, Value>,
    /// None when the answer came from the cache.
    pub latency_ms: Option<f64>,
    pub cost: Option<f64>,
    pub logprobs: Option<&'a [f32]>,
}

/// The model-backed services some assertions need.
pub trait Graders {
    /// Embeds `text` with `provider`.
    fn embed(&self, provider: &ProviderSpec, text: &str) -> Result<Vec<f32>>;
    /// Asks `provider` for a completion of `prompt` (text, or a JSON chat list).
    fn grade(&self, provider: &ProviderSpec, prompt: &str) -> Result<String>;
}

/// Who grades and embeds for a test: the assertion's own provider, else the
/// test's `options`.
pub struct TestGrading<'a> {
    pub provider: Option<&'a ProviderSpec>,
    pub embedding_provider: Option<&'a ProviderSpec>,
    pub rubric_prompt: Option<&'a str>,
}

impl Assertion {
    pub fn type_name(&self) -> String {
        format!(
            "{}{}",
            if self.negate { "not-" } else { "" },
            self.kind.name()
        )
    }

    /// The assertion as written (`type`, `value`, …), for reports.
    pub fn describe(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), Value::String(self.type_name()));
        if let Some(v) = &self.value {
            m.insert("value".into(), v.clone());
        }
        if let Some(t) = self.threshold {
            m.insert("threshold".into(), Value::from(t));
        }
        if self.weight != 1.0 {
            m.insert("weight".into(), Value::from(self.weight));
        }
        if let Some(metric) = &self.metric {
            m.insert("metric".into(), Value::String(metric.clone()));
        }
        Value::Object(m)
    }

    /// Checks what can be checked before any output exists: the value's type, the
    /// regex or JSON schema, the threshold, and the template's vars.
    pub fn check(&self, vars: &BTreeMap<String, Value>) -> Result<()> {
        if self.negate && self.kind.ignores_not() {
            bail!(
                "`not-{}` is not supported: promptfoo accepts it but ignores the `not-`; state the bound with `threshold` instead",
                self.kind.name()
            );
        }
        let value = self.rendered_value(vars)?;
        let need_string = |what: &str| -> Result<&str> {
            match &value {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
                Some(Value::String(_)) => {
                    bail!("`{}` needs {what}, got an empty string", self.kind.name())
                }
                Some(v) => bail!("`{}` needs {what}, got {}", self.kind.name(), kind_of(v)),
                None => bail!("`{}` needs a `value` ({what})", self.kind.name()),
            }
        };
        match self.kind {
            Kind::Contains | Kind::IContains => match &value {
                Some(Value::String(s)) if !s.is_empty() => {}
                Some(Value::Number(_)) => {}
                _ => bail!(
                    "`{}` needs a non-empty string or number value",
                    self.kind.name()
                ),
            },
            Kind::ContainsAny | Kind::ContainsAll | Kind::IContainsAny | Kind::IContainsAll => {
                match &value {
                    Some(Value::String(s)) if !s.is_empty() => {}
                    Some(Value::Array(_)) => {}
                    _ => bail!(
                        "`{}` needs a list (or a comma-separated string) value",
                        self.kind.name()
                    ),
                }
            }
            Kind::StartsWith | Kind::LlmRubric => {
                if self.kind == Kind::StartsWith || value.is_some() {
                    need_string("a string value")?;
                }
            }
            Kind::Regex => {
                let pattern = need_string("a regular expression")?;
                compiled_regex(pattern)?;
            }
            Kind::IsJson | Kind::ContainsJson => {
                if let Some(v) = &value {
                    if !is_falsy(v) {
                        compiled_schema(v)?;
                    }
                }
            }
            Kind::Levenshtein | Kind::RougeN => match &value {
                Some(Value::String(_)) => {}
                Some(v) => bail!(
                    "`{}` needs a string value, got {}",
                    self.kind.name(),
                    kind_of(v)
                ),
                None => bail!("`{}` needs a string `value`", self.kind.name()),
            },
            Kind::Bleu | Kind::Similar => match &value {
                Some(Value::String(_)) => {}
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
                _ => bail!("`{}` needs a string or a list of strings", self.kind.name()),
            },
            Kind::Equals => {
                if value.is_none() {
                    bail!("`equals` needs a `value`");
                }
            }
            Kind::Latency | Kind::Cost => {
                if self.threshold.is_none() {
                    bail!(
                        "`{}` needs a `threshold` ({})",
                        self.kind.name(),
                        if self.kind == Kind::Latency {
                            "milliseconds"
                        } else {
                            "the most a call may cost"
                        }
                    );
                }
            }
            Kind::Perplexity => {}
        }
        Ok(())
    }

    /// The value with `{{ vars }}` rendered (strings, and strings inside lists).
    fn rendered_value(&self, vars: &BTreeMap<String, Value>) -> Result<Option<Value>> {
        Ok(match &self.value {
            Some(Value::String(s)) => Some(Value::String(template::render(s, vars)?)),
            Some(Value::Array(items)) => Some(Value::Array(
                items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(Value::String(template::render(s, vars)?)),
                        other => Ok(other.clone()),
                    })
                    .collect::<Result<_>>()?,
            )),
            other => other.clone(),
        })
    }

    /// Grades one output. An `Err` is an error (a grader failed, a provider gave no
    /// cost), not a failed assertion.
    pub fn evaluate(
        &self,
        seen: &Observed<'_>,
        grading: &TestGrading<'_>,
        graders: &dyn Graders,
    ) -> Result<Grade> {
        let value = self.rendered_value(seen.vars)?;
        let out = seen.output;
        let inverse = self.negate;
        let not = if inverse { "not " } else { "" };
        let mut grade = match self.kind {
            Kind::Equals => {
                let value = value.unwrap_or(Value::Null);
                let (pass, shown) = match &value {
                    Value::Object(_) | Value::Array(_) | Value::Null => {
                        // promptfoo compares parsed JSON; output that is not JSON fails
                        // both `equals` and `not-equals`.
                        let pass = match serde_json::from_str::<Value>(out) {
                            Ok(parsed) => json_equal(&parsed, &value) != inverse,
                            Err(_) => false,
                        };
                        (pass, value.to_string())
                    }
                    other => {
                        let s = value_text(other);
                        ((s == out) != inverse, s)
                    }
                };
                Grade::binary(pass, || {
                    format!("Expected output \"{out}\" to {not}equal \"{shown}\"")
                })
            }
            Kind::Contains | Kind::IContains => {
                let v = value_text(&value.unwrap_or(Value::Null));
                let pass = if self.kind == Kind::Contains {
                    out.contains(&v)
                } else {
                    js_lower(out).contains(&js_lower(&v))
                } != inverse;
                Grade::binary(pass, || format!("Expected output to {not}contain \"{v}\""))
            }
            Kind::ContainsAny | Kind::IContainsAny => {
                let items = list_value(
                    &value.unwrap_or(Value::Null),
                    self.kind == Kind::ContainsAny,
                );
                let lower = self.kind == Kind::IContainsAny;
                let hay = if lower {
                    js_lower(out)
                } else {
                    out.to_string()
                };
                let pass = items.iter().any(|v| {
                    if lower {
                        hay.contains(&js_lower(v))
                    } else {
                        hay.contains(v.as_str())
                    }
                }) != inverse;
                Grade::binary(pass, || {
                    format!(
                        "Expected output to {not}contain one of \"{}\"",
                        items.join(", ")
                    )
                })
            }
            Kind::ContainsAll | Kind::IContainsAll => {
                let items = list_value(&value.unwrap_or(Value::Null), false);
                let lower = self.kind == Kind::IContainsAll;
                let hay = if lower {
                    js_lower(out)
                } else {
                    out.to_string()
                };
                let missing: Vec<&String> = items
                    .iter()
                    .filter(|v| {
                        !if lower {
                            hay.contains(&js_lower(v))
                        } else {
                            hay.contains(v.as_str())
                        }
                    })
                    .collect();
                let pass = missing.is_empty() != inverse;
                Grade::binary(pass, || {
                    format!(
                        "Expected output to {not}contain all of [{}]. Missing: [{}]",
                        items.join(", "),
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            }
            Kind::StartsWith => {
                let v = value_text(&value.unwrap_or(Value::Null));
                let pass = out.starts_with(&v) != inverse;
                Grade::binary(pass, || {
                    format!("Expected output to {not}start with \"{v}\"")
                })
            }
            Kind::Regex => {
                let pattern = value_text(&value.unwrap_or(Value::Null));
                let re = compiled_regex(&pattern)?;
                let found = re
                    .is_match(out)
                    .map_err(|e| anyhow!("the regex {pattern:?} gave up on this output: {e}"))?;
                let pass = found != inverse;
                Grade::binary(pass, || {
                    format!("Expected output to {not}match regex \"{pattern}\"")
                })
            }
            Kind::IsJson => {
                let parsed = serde_json::from_str::<Value>(out).ok();
                let mut pass = parsed.is_some() != inverse;
                let mut grade = None;
                if let (true, Some(schema)) = (pass, value.as_ref().filter(|v| !is_falsy(v))) {
                    // As in promptfoo, the schema is checked only when the verdict so
                    // far is a pass.
                    let validator = compiled_schema(schema)?;
                    let doc = parsed.unwrap_or(Value::Null);
                    pass = validator.is_valid(&doc);
                    if !pass {
                        grade = Some(Grade::new(
                            false,
                            0.0,
                            format!(
                                "JSON does not conform to the provided schema. Errors: {}",
                                schema_errors(&validator, &doc)
                            ),
                        ));
                    }
                }
                grade.unwrap_or_else(|| {
                    Grade::binary(pass, || "Expected output to be valid JSON".to_string())
                })
            }
            Kind::ContainsJson => {
                let objects = metrics::extract_json_objects(out);
                let mut pass = if inverse {
                    objects.is_empty()
                } else {
                    !objects.is_empty()
                };
                let mut reason = "Expected output to contain valid JSON".to_string();
                if let Some(schema) = value.as_ref().filter(|v| !is_falsy(v)) {
                    let validator = compiled_schema(schema)?;
                    for object in &objects {
                        pass = validator.is_valid(object);
                        if pass {
                            break;
                        }
                        reason = format!(
                            "JSON does not conform to the provided schema. Errors: {}",
                            schema_errors(&validator, object)
                        );
                    }
                }
                Grade::binary(pass, || reason)
            }
            Kind::Levenshtein => {
                let v = value_text(&value.unwrap_or(Value::Null));
                let distance = metrics::levenshtein(out, &v);
                let threshold = self.threshold.unwrap_or(5.0);
                Grade::binary(distance as f64 <= threshold, || {
                    format!("Levenshtein distance {distance} is greater than threshold {threshold}")
                })
            }
            Kind::RougeN => {
                let v = value_text(&value.unwrap_or(Value::Null));
                let score = metrics::rouge_n(out, &v)?;
                let threshold = self.threshold.unwrap_or(0.75);
                let pass = (score >= threshold) != inverse;
                Grade::new(
                    pass,
                    if inverse { 1.0 - score } else { score },
                    if pass {
                        format!(
                            "ROUGE-N score {score:.2} is greater than or equal to threshold {threshold}"
                        )
                    } else {
                        format!("ROUGE-N score {score:.2} is less than threshold {threshold}")
                    },
                )
            }
            Kind::Bleu => {
                let refs = string_list(&value.unwrap_or(Value::Null));
                if out.is_empty() {
                    bail!("bleu cannot score an empty output");
                }
                let score = metrics::bleu(out, &refs);
                let threshold = self.threshold.unwrap_or(0.5);
                let pass = (score >= threshold) != inverse;
                Grade::new(
                    pass,
                    if inverse { 1.0 - score } else { score },
                    if pass {
                        "Assertion passed".to_string()
                    } else {
                        format!(
                            "BLEU score {score:.4} is {} than threshold {threshold}",
                            if inverse { "greater" } else { "less" }
                        )
                    },
                )
            }
            Kind::Similar => self.similar(&value.unwrap_or(Value::Null), out, grading, graders)?,
            Kind::Latency => {
                let threshold = self.threshold.unwrap_or(0.0);
                let Some(ms) = seen.latency_ms else {
                    bail!("a latency assertion cannot judge a cached answer; run again with --no-cache");
                };
                Grade::binary(ms <= threshold, || {
                    format!("Latency {ms:.0}ms is greater than threshold {threshold}ms")
                })
            }
            Kind::Cost => {
                let threshold = self.threshold.unwrap_or(0.0);
                let Some(cost) = seen.cost else {
                    bail!("this provider reports no cost; give it a price (config.cost, or inputCost and outputCost per token)");
                };
                Grade::binary(cost <= threshold, || {
                    format!("Cost {cost:.2e} is greater than threshold {threshold}")
                })
            }
            Kind::Perplexity => {
                let logprobs = match seen.logprobs {
                    Some(l) if !l.is_empty() => l,
                    _ => bail!("perplexity needs log-probabilities, which only the ferrolab: provider returns"),
                };
                let mean = logprobs.iter().map(|&l| l as f64).sum::<f64>() / logprobs.len() as f64;
                let perplexity = (-mean).exp();
                let pass = self.threshold.is_none_or(|t| perplexity <= t);
                Grade::binary(pass, || {
                    format!(
                        "Perplexity {perplexity:.2} is greater than threshold {}",
                        self.threshold.unwrap_or_default()
                    )
                })
            }
            Kind::LlmRubric => self.llm_rubric(value, seen, grading, graders)?,
        };
        grade.assertion = Some(self.describe());
        if self.weight == 0.0 {
            grade.pass = true;
        }
        Ok(grade)
    }

    fn similar(
        &self,
        value: &Value,
        out: &str,
        grading: &TestGrading<'_>,
        graders: &dyn Graders,
    ) -> Result<Grade> {
        let provider = self
            .provider
            .as_ref()
            .or(grading.embedding_provider)
            .or(grading.provider)
            .ok_or_else(|| anyhow!("`similar` needs an embeddings provider: set `provider` on the assertion or defaultTest.options.provider.embedding (e.g. ferrolab:smollm2)"))?;
        let threshold = self.threshold.unwrap_or(0.75);
        let inverse = self.negate;
        let expected = string_list(value);
        let out_vec = graders.embed(provider, out)?;
        let mut min_score = f64::INFINITY;
        for e in &expected {
            let sim = metrics::cosine(&graders.embed(provider, e)?, &out_vec);
            let pass = if inverse {
                sim < threshold
            } else {
                sim >= threshold
            };
            let score = if inverse { 1.0 - sim } else { sim };
            if pass || expected.len() == 1 {
                let reason = if pass {
                    format!(
                        "Similarity {sim:.2} is {} than threshold {threshold}",
                        if inverse {
                            "less"
                        } else {
                            "greater than or equal to"
                        }
                    )
                    .replace("greater than or equal to than", "greater than or equal to")
                } else {
                    format!(
                        "Similarity {sim:.2} is {} than threshold {threshold}",
                        if inverse {
                            "greater than or equal to"
                        } else {
                            "less"
                        }
                    )
                    .replace("greater than or equal to than", "greater than or equal to")
                };
                return Ok(Grade::new(pass, score, reason));
            }
            min_score = min_score.min(score);
        }
        Ok(Grade::new(
            false,
            if min_score.is_finite() {
                min_score
            } else {
                0.0
            },
            "None of the provided values met the similarity threshold",
        ))
    }

    fn llm_rubric(
        &self,
        value: Option<Value>,
        seen: &Observed<'_>,
        grading: &TestGrading<'_>,
        graders: &dyn Graders,
    ) -> Result<Grade> {
        let provider = self
            .provider
            .as_ref()
            .or(grading.provider)
            .ok_or_else(|| anyhow!("`llm-rubric` needs a grader: set `provider` on the assertion or defaultTest.options.provider (any provider id, e.g. openai:chat:MODEL against ferrolab serve)"))?;
        let rubric = value.map(|v| value_text(&v)).unwrap_or_default();
        let template = self
            .rubric_prompt
            .as_deref()
            .or(grading.rubric_prompt)
            .unwrap_or(DEFAULT_RUBRIC_PROMPT);
        let mut context = seen.vars.clone();
        // As promptfoo: output that is JSON reaches the template parsed — numbers,
        // booleans and null as themselves, objects and lists as compact JSON text.
        let output = match serde_json::from_str::<Value>(seen.output) {
            Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => v,
            Ok(v) => Value::String(v.to_string()),
            Err(_) => Value::String(seen.output.to_string()),
        };
        context.insert("output".into(), output);
        context.insert("rubric".into(), Value::String(rubric));
        let prompt = render_rubric(template, &context)?;
        let answer = graders.grade(provider, &prompt)?;
        if answer.is_empty() {
            return Ok(Grade::new(false, 0.0, "No output"));
        }
        let objects = metrics::extract_json_objects(&answer);
        let Some(Value::Object(parsed)) = objects.into_iter().next() else {
            return Ok(Grade::new(
                false,
                0.0,
                "Could not extract JSON from llm-rubric response",
            ));
        };
        let mut pass = match parsed.get("pass") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                let s = value_text(other).to_ascii_lowercase();
                matches!(s.as_str(), "true" | "yes" | "pass" | "y")
            }
        };
        let score = match parsed.get("score") {
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            Some(Value::String(s)) => js_number(s).unwrap_or(if pass { 1.0 } else { 0.0 }),
            Some(Value::Bool(b)) => f64::from(u8::from(*b)),
            Some(Value::Null) => 0.0,
            _ => f64::from(u8::from(pass)),
        };
        if let Some(t) = self.threshold {
            pass = pass && score >= t;
        }
        let reason = match parsed.get("reason") {
            Some(r) if !is_falsy(r) => value_text(r),
            _ if pass => "Grading passed".to_string(),
            _ => format!(
                "Score {score} below threshold {}",
                self.threshold
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "undefined".into())
            ),
        };
        Ok(Grade::new(pass, score, reason))
    }
}

/// promptfoo's default grading prompt for `llm-rubric`.
pub const DEFAULT_RUBRIC_PROMPT: &str = r#"[{"role":"system","content":"You are grading output according to a user-specified rubric. If the statement in the rubric is true, then the output passes the test. You respond with a JSON object with this structure: {reason: string, pass: boolean, score: number}\n\nExamples:\n\n<Output>Hello world</Output>\n<Rubric>Content contains a greeting</Rubric>\n{\"reason\": \"the content contains the word 'Hello'\", \"pass\": true, \"score\": 1.0}\n\n<Output>Avast ye swabs, repel the invaders!</Output>\n<Rubric>Does not speak like a pirate</Rubric>\n{\"reason\": \"'avast ye' is a common pirate term\", \"pass\": false, \"score\": 0.0}"},{"role":"user","content":"<Output>\n{{ output }}\n</Output>\n<Rubric>\n{{ rubric }}\n</Rubric>"}]"#;

/// A rubric prompt that is JSON has each string rendered and is written back as
/// JSON (so outputs with quotes stay valid); anything else is rendered as text.
fn render_rubric(template: &str, vars: &BTreeMap<String, Value>) -> Result<String> {
    match serde_json::from_str::<Value>(template) {
        Ok(parsed) => Ok(template::render_json(parsed, vars)?.to_string()),
        Err(_) => template::render(template, vars),
    }
}

/// `Number(s)` in JavaScript, for the strings graders answer with.
fn js_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return Some(0.0);
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// JavaScript's `toLowerCase` for the cases that matter here (Unicode lower case).
fn js_lower(s: &str) -> String {
    s.to_lowercase()
}

/// A list value; a string is split on commas (for `contains-any`, promptfoo also
/// honours double-quoted items that contain commas).
fn list_value(v: &Value, quoted: bool) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(value_text).collect(),
        Value::String(s) if quoted => split_quoted(s),
        Value::String(s) => s.split(',').map(|p| p.trim().to_string()).collect(),
        other => vec![value_text(other)],
    }
}

/// promptfoo's `/(".*?"|[^,]+)(?=\s*,|\s*$)/g`, trimmed and unquoted.
fn split_quoted(s: &str) -> Vec<String> {
    static RE: std::sync::OnceLock<fancy_regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        fancy_regex::Regex::new(r#"(".*?"|[^,]+)(?=\s*,|\s*$)"#).expect("a fixed, valid pattern")
    });
    re.find_iter(s)
        .filter_map(|m| m.ok())
        .map(|m| {
            let t = m.as_str().trim();
            let t = t.strip_prefix('"').unwrap_or(t);
            t.strip_suffix('"').unwrap_or(t).to_string()
        })
        .collect()
}

fn string_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(value_text).collect(),
        other => vec![value_text(other)],
    }
}

/// Deep equality where 1 and 1.0 are the same number (as in JavaScript).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

thread_local! {
    static REGEXES: std::cell::RefCell<HashMap<String, Arc<fancy_regex::Regex>>> =
        std::cell::RefCell::new(HashMap::new());
    static SCHEMAS: std::cell::RefCell<HashMap<String, Arc<jsonschema::Validator>>> =
        std::cell::RefCell::new(HashMap::new());
}

/// A JavaScript-style regex (lookarounds and back-references included).
fn compiled_regex(pattern: &str) -> Result<Arc<fancy_regex::Regex>> {
    if let Some(re) = REGEXES.with(|c| c.borrow().get(pattern).cloned()) {
        return Ok(re);
    }
    let re = Arc::new(
        fancy_regex::Regex::new(pattern).map_err(|e| anyhow!("invalid regex {pattern:?}: {e}"))?,
    );
    REGEXES.with(|c| c.borrow_mut().insert(pattern.to_string(), re.clone()));
    Ok(re)
}

/// A JSON schema given as a mapping, or as JSON / YAML text.
fn compiled_schema(v: &Value) -> Result<Arc<jsonschema::Validator>> {
    let key = v.to_string();
    if let Some(s) = SCHEMAS.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(s);
    }
    let schema = match v {
        Value::String(text) => crate::spec::yaml_to_json(text)
            .map_err(|e| anyhow!("the JSON schema is not valid YAML or JSON: {e}"))?,
        Value::Object(_) | Value::Bool(_) => v.clone(),
        other => bail!(
            "a JSON schema is a mapping (or its text), got {}",
            kind_of(other)
        ),
    };
    let validator = Arc::new(
        jsonschema::validator_for(&schema).map_err(|e| anyhow!("invalid JSON schema: {e}"))?,
    );
    SCHEMAS.with(|c| c.borrow_mut().insert(key, validator.clone()));
    Ok(validator)
}

fn schema_errors(validator: &jsonschema::Validator, doc: &Value) -> String {
    validator
        .iter_errors(doc)
        .map(|e| {
            let path = e.instance_path().to_string();
            format!("data{} {e}", path.replace('/', "."))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Grades a whole test: a weighted mean of scores; pass when every assertion
/// passes, or (with a non-zero `threshold`) when the mean reaches it.
pub fn aggregate(parts: Vec<(Grade, f64, Option<String>)>, threshold: Option<f64>) -> Grade {
    if parts.is_empty() {
        return Grade::new(true, 1.0, "No assertions");
    }
    let mut total = 0.0;
    let mut weight_sum = 0.0;
    let mut failed: Option<String> = None;
    let mut named: BTreeMap<String, f64> = BTreeMap::new();
    let mut components = Vec::new();
    for (grade, weight, metric) in parts {
        total += grade.score * weight;
        weight_sum += weight;
        if let Some(m) = &metric {
            *named.entry(m.clone()).or_default() += grade.score;
        }
        for (m, s) in &grade.named_scores {
            if Some(m) != metric.as_ref() {
                *named.entry(m.clone()).or_default() += s;
            }
        }
        if !grade.pass {
            failed = Some(grade.reason.clone());
        }
        // As promptfoo: an assert-set is listed, then its parts.
        let parts = grade.components.clone();
        components.push(grade);
        components.extend(parts);
    }
    let score = if weight_sum > 0.0 {
        total / weight_sum
    } else {
        0.0
    };
    let (pass, reason) = match threshold.filter(|t| *t != 0.0) {
        Some(t) if score >= t => (true, format!("Aggregate score {score:.2} ≥ {t} threshold")),
        Some(t) => (false, format!("Aggregate score {score:.2} < {t} threshold")),
        None => match failed {
            Some(r) => (false, r),
            None => (true, "All assertions passed".to_string()),
        },
    };
    Grade {
        pass,
        score,
        reason,
        assertion: None,
        components,
        named_scores: named,
    }
}

/// Grades every assertion of a test (assert-sets grade as one part).
pub fn grade_test(
    asserts: &[AssertItem],
    threshold: Option<f64>,
    seen: &Observed<'_>,
    grading: &TestGrading<'_>,
    graders: &dyn Graders,
) -> Result<Grade> {
    let mut parts = Vec::new();
    for item in asserts {
        match item {
            AssertItem::Single(a) => parts.push((
                a.evaluate(seen, grading, graders)?,
                a.weight,
                a.metric.clone(),
            )),
            AssertItem::Set(set) => {
                let mut inner = Vec::new();
                for a in &set.asserts {
                    inner.push((
                        a.evaluate(seen, grading, graders)?,
                        a.weight,
                        a.metric.clone(),
                    ));
                }
                let mut g = aggregate(inner, set.threshold);
                g.assertion = Some(serde_json::json!({"type": "assert-set"}));
                parts.push((g, set.weight, set.metric.clone()));
            }
        }
    }
    Ok(aggregate(parts, threshold))
}

/// An assertion from a CSV `__expected` cell, as promptfoo reads it: `type: value`
/// prefixes (`contains:`, `not-regex:`, `levenshtein(3): …`, `grade:`), `is-json`,
/// and anything else meaning `equals`.
pub fn from_expected(cell: &str) -> Result<Value> {
    crate::expected::parse(cell)
}
