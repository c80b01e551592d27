//! Runs a suite: every test × prompt × provider (× repeat), on a bounded number of
//! threads, with a cache of answers keyed by provider, prompt and repeat. A provider
//! error marks that cell `error` and the rest goes on.

use crate::assertion::{self, Grade, Graders, Observed, TestGrading};
use crate::config::{PromptBody, ProviderSpec, Suite};
use crate::providers::{self, Provider, Response};
use crate::template;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Error,
}

/// One test case run against one prompt and one provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub test: usize,
    pub prompt: usize,
    pub provider: usize,
    pub repeat: usize,
    pub status: Status,
    pub score: f64,
    /// The rendered prompt sent to the provider.
    #[serde(rename = "renderedPrompt")]
    pub rendered_prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    pub cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(rename = "gradingResult", skip_serializing_if = "Option::is_none")]
    pub grade: Option<Grade>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub vars: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub successes: usize,
    pub failures: usize,
    pub errors: usize,
    #[serde(rename = "passRate")]
    pub pass_rate: f64,
    #[serde(rename = "promptTokens")]
    pub prompt_tokens: u64,
    #[serde(rename = "completionTokens")]
    pub completion_tokens: u64,
    /// Summed over the answers whose provider has a price.
    pub cost: f64,
    /// Mean provider latency over answers not taken from the cache.
    #[serde(rename = "latencyMsMean")]
    pub latency_ms_mean: f64,
    #[serde(rename = "durationMs")]
    pub duration_ms: f64,
    pub repeat: usize,
    /// With `repeat` > 1: the share of (test, prompt, provider) triples whose every
    /// repetition passed.
    #[serde(rename = "passAllRate", skip_serializing_if = "Option::is_none")]
    pub pass_all_rate: Option<f64>,
}

/// A finished run, as written to `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub version: u32,
    #[serde(rename = "runId")]
    pub run_id: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub prompts: Vec<String>,
    pub providers: Vec<String>,
    pub tests: Vec<TestInfo>,
    pub stats: Stats,
    pub results: Vec<Cell>,
}

pub struct RunOptions<'a> {
    pub max_concurrency: usize,
    pub repeat: usize,
    pub cache: bool,
    pub cache_dir: PathBuf,
    /// Called after each cell with (done, total).
    pub progress: Option<&'a (dyn Fn(usize, usize) + Sync)>,
    /// Polled between cells; true stops the run (finished cells are kept).
    pub interrupted: &'a (dyn Fn() -> bool + Sync),
}

impl RunOptions<'_> {
    pub fn default_cache_dir() -> PathBuf {
        ferrolab_llm::load::ferrolab_home()
            .join("prompt-tests")
            .join("cache")
    }
}

/// Providers built once per run: the suite's, and graders / embedders on demand.
struct Services {
    base_dir: PathBuf,
    made: Mutex<HashMap<String, Arc<dyn Provider>>>,
    embeddings: Mutex<HashMap<(String, String), Vec<f32>>>,
}

fn spec_key(spec: &ProviderSpec) -> String {
    format!("{}\u{0}{}", spec.id, Value::Object(spec.config.clone()))
}

impl Services {
    fn get(&self, spec: &ProviderSpec) -> Result<Arc<dyn Provider>> {
        let key = spec_key(spec);
        if let Some(p) = ferrolab_magics::lock(&self.made).get(&key) {
            return Ok(p.clone());
        }
        let p = providers::create(spec, &self.base_dir)?;
        ferrolab_magics::lock(&self.made).insert(key, p.clone());
        Ok(p)
    }
}

impl Graders for Services {
    fn embed(&self, provider: &ProviderSpec, text: &str) -> Result<Vec<f32>> {
        let key = (spec_key(provider), text.to_string());
        if let Some(v) = ferrolab_magics::lock(&self.embeddings).get(&key) {
            return Ok(v.clone());
        }
        let v = self.get(provider)?.embed(text)?;
        ferrolab_magics::lock(&self.embeddings).insert(key, v.clone());
        Ok(v)
    }

    fn grade(&self, provider: &ProviderSpec, prompt: &str) -> Result<String> {
        Ok(self.get(provider)?.call(prompt)?.output)
    }
}

/// The text a prompt renders to for a test's vars, as promptfoo renders it: each
/// string var loses one trailing newline; a template that is JSON (chat messages)
/// has each string rendered and is written back as JSON indented by two spaces.
pub fn render_prompt(body: &PromptBody, vars: &BTreeMap<String, Value>) -> Result<String> {
    let vars: BTreeMap<String, Value> = vars
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => (
                k.clone(),
                Value::String(s.strip_suffix('\n').unwrap_or(s).to_string()),
            ),
            other => (k.clone(), other.clone()),
        })
        .collect();
    let json = match body {
        PromptBody::Text(t) => match serde_json::from_str::<Value>(t) {
            Ok(v) => v,
            Err(_) => return template::render(t, &vars),
        },
        PromptBody::Chat(messages) => Value::Array(
            messages
                .iter()
                .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
                .collect(),
        ),
    };
    Ok(serde_json::to_string_pretty(&template::render_json(
        json, &vars,
    )?)?)
}

fn cache_key(spec: &ProviderSpec, prompt: &str, repeat: usize) -> String {
    let mut h = blake3::Hasher::new();
    h.update(spec_key(spec).as_bytes());
    h.update(&[0]);
    h.update(prompt.as_bytes());
    h.update(&(repeat as u64).to_le_bytes());
    h.finalize().to_hex().to_string()
}

fn cache_read(dir: &std::path::Path, key: &str) -> Option<Response> {
    let text = std::fs::read_to_string(dir.join(format!("{key}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn cache_write(dir: &std::path::Path, key: &str, response: &Response) {
    let result = (|| -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{key}.json"));
        ferrolab_llm::write_atomically(&path, |tmp| {
            std::fs::write(tmp, serde_json::to_vec(response)?)?;
            Ok(())
        })
    })();
    if let Err(e) = result {
        log::warn!(
            "cannot write the prompt-test cache in {}: {e:#}",
            dir.display()
        );
    }
}

/// Runs every cell of `suite`. Errors before any provider is called (a provider
/// that cannot be built) are returned; errors after are recorded in their cells.
pub fn run(suite: &Suite, options: &RunOptions<'_>) -> Result<RunResult> {
    let started = Instant::now();
    let services = Services {
        base_dir: suite.base_dir.clone(),
        made: Mutex::new(HashMap::new()),
        embeddings: Mutex::new(HashMap::new()),
    };
    let providers: Vec<Arc<dyn Provider>> = suite
        .providers
        .iter()
        .map(|spec| services.get(spec))
        .collect::<Result<_>>()?;
    let repeat = options.repeat.max(1);
    let mut plan = Vec::new();
    for t in 0..suite.tests.len() {
        for p in 0..suite.prompts.len() {
            for v in 0..providers.len() {
                for r in 0..repeat {
                    plan.push((t, p, v, r));
                }
            }
        }
    }
    let total = plan.len();
    let slots: Vec<Mutex<Option<Cell>>> = (0..total).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let workers = options.max_concurrency.clamp(1, total.max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if (options.interrupted)() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(t, p, v, r)) = plan.get(i) else {
                    break;
                };
                let cell = run_cell(suite, &services, &providers, options, (t, p, v, r));
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(cell);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(progress) = options.progress {
                    progress(n, total);
                }
            });
        }
    });
    let results: Vec<Cell> = slots
        .into_iter()
        .filter_map(|s| s.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    let stats = stats(&results, repeat, started.elapsed().as_secs_f64() * 1000.0);
    let now = chrono::Utc::now();
    Ok(RunResult {
        version: 1,
        run_id: now.format("%Y%m%d-%H%M%S-%3f").to_string(),
        created_at: now.to_rfc3339(),
        description: suite.description.clone(),
        prompts: suite.prompts.iter().map(|p| p.label.clone()).collect(),
        providers: suite
            .providers
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        tests: suite
            .tests
            .iter()
            .map(|t| TestInfo {
                name: t.name(),
                description: t.description.clone(),
                vars: t.vars.clone(),
            })
            .collect(),
        stats,
        results,
    })
}

fn run_cell(
    suite: &Suite,
    services: &Services,
    providers: &[Arc<dyn Provider>],
    options: &RunOptions<'_>,
    (t, p, v, r): (usize, usize, usize, usize),
) -> Cell {
    let test = &suite.tests[t];
    let mut cell = Cell {
        test: t,
        prompt: p,
        provider: v,
        repeat: r,
        status: Status::Error,
        score: 0.0,
        rendered_prompt: String::new(),
        response: None,
        cached: false,
        error: None,
        grade: None,
    };
    let outcome = (|| -> Result<()> {
        cell.rendered_prompt = render_prompt(&suite.prompts[p].body, &test.vars)
            .context("cannot render the prompt")?;
        let spec = &suite.providers[v];
        let key = cache_key(spec, &cell.rendered_prompt, r);
        let cached = if options.cache {
            cache_read(&options.cache_dir, &key)
        } else {
            None
        };
        let response = match cached {
            Some(hit) => {
                cell.cached = true;
                hit
            }
            None => {
                let answer = providers[v].call(&cell.rendered_prompt)?;
                if options.cache {
                    cache_write(&options.cache_dir, &key, &answer);
                }
                answer
            }
        };
        cell.response = Some(response);
        let response = cell
            .response
            .as_ref()
            .ok_or_else(|| anyhow!("no response"))?;
        let seen = Observed {
            output: &response.output,
            vars: &test.vars,
            latency_ms: (!cell.cached).then_some(response.latency_ms),
            cost: response.cost,
            logprobs: response.logprobs.as_deref(),
        };
        let grading = TestGrading {
            provider: test.options.provider.as_ref(),
            embedding_provider: test.options.embedding_provider.as_ref(),
            rubric_prompt: test.options.rubric_prompt.as_deref(),
        };
        let grade =
            assertion::grade_test(&test.asserts, test.threshold, &seen, &grading, services)?;
        cell.status = if grade.pass {
            Status::Pass
        } else {
            Status::Fail
        };
        cell.score = grade.score;
        cell.grade = Some(grade);
        Ok(())
    })();
    if let Err(e) = outcome {
        cell.status = Status::Error;
        cell.error = Some(format!("{e:#}"));
    }
    cell
}

fn stats(results: &[Cell], repeat: usize, duration_ms: f64) -> Stats {
    let mut s = Stats {
        repeat,
        duration_ms,
        ..Stats::default()
    };
    let mut latency = (0.0, 0usize);
    for c in results {
        match c.status {
            Status::Pass => s.successes += 1,
            Status::Fail => s.failures += 1,
            Status::Error => s.errors += 1,
        }
        if let Some(r) = &c.response {
            s.prompt_tokens += r.prompt_tokens;
            s.completion_tokens += r.completion_tokens;
            s.cost += r.cost.unwrap_or(0.0);
            if !c.cached {
                latency.0 += r.latency_ms;
                latency.1 += 1;
            }
        }
    }
    let n = results.len();
    s.pass_rate = if n == 0 {
        0.0
    } else {
        s.successes as f64 / n as f64
    };
    s.latency_ms_mean = if latency.1 == 0 {
        0.0
    } else {
        latency.0 / latency.1 as f64
    };
    if repeat > 1 {
        let mut groups: BTreeMap<(usize, usize, usize), (usize, usize)> = BTreeMap::new();
        for c in results {
            let e = groups.entry((c.test, c.prompt, c.provider)).or_default();
            e.1 += 1;
            if c.status == Status::Pass {
                e.0 += 1;
            }
        }
        let all = groups.values().filter(|(p, n)| p == n).count();
        s.pass_all_rate = Some(if groups.is_empty() {
            0.0
        } else {
            all as f64 / groups.len() as f64
        });
    }
    s
}
