//! Providers: `echo` (the rendered prompt back, as in promptfoo), `ferrolab:PATH[+ADAPTER]`
//! (the model engine in this process), and `openai:chat:MODEL`,
//! `openai:completion:MODEL`, `openai:embedding:MODEL` (any OpenAI-compatible
//! server, `ferrolab serve` included).

use crate::spec::{kind_of, ProviderSpec};
use anyhow::{anyhow, bail, Context, Result};
use ferrolab_llm::generate::Sampling;
use ferrolab_llm::tokenizer::Message;
use ferrolab_llm::Engine;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What a provider answered.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Response {
    pub output: String,
    #[serde(rename = "promptTokens")]
    pub prompt_tokens: u64,
    #[serde(rename = "completionTokens")]
    pub completion_tokens: u64,
    /// None when the provider has no price.
    pub cost: Option<f64>,
    #[serde(rename = "logProbs", skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<f32>>,
    #[serde(rename = "latencyMs")]
    pub latency_ms: f64,
}

pub trait Provider: Send + Sync {
    /// Answers `prompt`: rendered text, or a JSON list of chat messages.
    fn call(&self, prompt: &str) -> Result<Response>;
    fn embed(&self, text: &str) -> Result<Vec<f32>>;
}

/// Per-token prices from `config.cost` (both directions) or `inputCost` and
/// `outputCost`.
#[derive(Debug, Clone, Copy, Default)]
struct Price {
    input: f64,
    output: f64,
}

fn price(config: &Map<String, Value>, id: &str) -> Result<Option<Price>> {
    let get = |k: &str| -> Result<Option<f64>> {
        match config.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().filter(|f| *f >= 0.0).map(Some).ok_or_else(|| {
                anyhow!("{id}: config.{k} must be a price per token (a number ≥ 0), got {v}")
            }),
        }
    };
    let both = get("cost")?;
    let (input, output) = (get("inputCost")?.or(both), get("outputCost")?.or(both));
    Ok(match (input, output) {
        (None, None) => None,
        (i, o) => Some(Price {
            input: i.unwrap_or(0.0),
            output: o.unwrap_or(0.0),
        }),
    })
}

fn check_config(spec: &ProviderSpec, allowed: &[&str]) -> Result<()> {
    for key in spec.config.keys() {
        if !allowed.contains(&key.as_str()) {
            bail!(
                "provider {}: config.{key} is not supported (supported: {})",
                spec.id,
                allowed.join(", ")
            );
        }
    }
    Ok(())
}

/// Builds the provider a spec names; relative model paths resolve from `base_dir`.
pub fn create(spec: &ProviderSpec, base_dir: &Path) -> Result<Arc<dyn Provider>> {
    let id = spec.id.as_str();
    if id == "echo" {
        check_config(spec, &[])?;
        return Ok(Arc::new(Echo));
    }
    if let Some(rest) = id.strip_prefix("ferrolab:") {
        return Ok(Arc::new(Local::new(rest, spec, base_dir)?));
    }
    if let Some(rest) = id.strip_prefix("openai:") {
        return Ok(Arc::new(OpenAi::new(rest, spec)?));
    }
    bail!(
        "unknown provider `{id}`; ferrolab runs `echo`, `ferrolab:MODEL[+ADAPTER]`, `openai:chat:MODEL`, `openai:completion:MODEL` and `openai:embedding:MODEL`"
    )
}

/// The rendered prompt back, with no tokens and no cost.
pub struct Echo;

impl Provider for Echo {
    fn call(&self, prompt: &str) -> Result<Response> {
        Ok(Response {
            output: prompt.to_string(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cost: Some(0.0),
            logprobs: None,
            latency_ms: 0.0,
        })
    }

    fn embed(&self, _text: &str) -> Result<Vec<f32>> {
        bail!("the echo provider gives no embeddings; use ferrolab:MODEL or openai:embedding:MODEL")
    }
}

/// A prompt as chat messages, if it is a JSON list of `{role, content}`.
pub fn as_messages(prompt: &str) -> Option<Vec<Message>> {
    let t = prompt.trim_start();
    if !t.starts_with('[') {
        return None;
    }
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(t) else {
        return None;
    };
    items
        .iter()
        .map(|m| {
            Some(Message::new(
                m.get("role")?.as_str()?,
                m.get("content")?.as_str()?,
            ))
        })
        .collect()
}

fn sampling(config: &Map<String, Value>, id: &str) -> Result<Sampling> {
    let mut s = Sampling::greedy(256);
    let num = |k: &str| -> Result<Option<f64>> {
        match config.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| anyhow!("{id}: config.{k} must be a number, got {}", kind_of(v))),
        }
    };
    if let Some(t) = num("temperature")? {
        s.temperature = t;
    }
    if let Some(m) = num("max_tokens")? {
        if m < 1.0 || m.fract() != 0.0 {
            bail!("{id}: config.max_tokens must be a whole number ≥ 1, got {m}");
        }
        s.max_tokens = m as usize;
    }
    if let Some(p) = num("top_p")? {
        s.top_p = p;
    }
    if let Some(k) = num("top_k")? {
        s.top_k = k.max(0.0) as usize;
    }
    if let Some(seed) = num("seed")? {
        s.seed = seed.max(0.0) as u64;
    }
    match config.get("stop") {
        None => {}
        Some(Value::String(one)) => s.stop = vec![one.clone()],
        Some(Value::Array(list)) => {
            s.stop = list
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| anyhow!("{id}: config.stop holds strings"))
                })
                .collect::<Result<_>>()?
        }
        Some(v) => bail!(
            "{id}: config.stop must be a string or a list, got {}",
            kind_of(v)
        ),
    }
    s.validate().with_context(|| format!("{id}: config"))?;
    Ok(s)
}

/// The model engine in this process. Models stay loaded for the life of the
/// process (a kernel keeps them between cells); one answer is computed at a time.
pub struct Local {
    id: String,
    engine: Arc<Mutex<Engine>>,
    sampling: Sampling,
    price: Option<Price>,
    raw: bool,
}

type EngineKey = (PathBuf, Option<PathBuf>, String);

fn engines() -> &'static Mutex<HashMap<EngineKey, Arc<Mutex<Engine>>>> {
    static ENGINES: OnceLock<Mutex<HashMap<EngineKey, Arc<Mutex<Engine>>>>> = OnceLock::new();
    ENGINES.get_or_init(Default::default)
}

impl Local {
    fn new(target: &str, spec: &ProviderSpec, base_dir: &Path) -> Result<Local> {
        check_config(
            spec,
            &[
                "temperature",
                "max_tokens",
                "top_p",
                "top_k",
                "seed",
                "stop",
                "weights",
                "raw",
                "cost",
                "inputCost",
                "outputCost",
            ],
        )?;
        let id = &spec.id;
        let (model, adapter) = match target.split_once('+') {
            Some((m, a)) => (m, Some(a)),
            None => (target, None),
        };
        if model.is_empty() {
            bail!("{id}: name a model after `ferrolab:` (smollm2, a .gguf file or a model folder)");
        }
        let resolve = |p: &str| -> PathBuf {
            let path = Path::new(p);
            if path.is_absolute() || p == "smollm2" || !base_dir.join(path).exists() {
                path.to_path_buf()
            } else {
                base_dir.join(path)
            }
        };
        let weights = match spec.config.get("weights") {
            None => "q8".to_string(),
            Some(Value::String(w)) if w == "q8" || w == "f32" => w.clone(),
            Some(v) => bail!("{id}: config.weights takes \"q8\" or \"f32\", got {v}"),
        };
        let model_path = resolve(model);
        let adapter_path = adapter.map(resolve);
        let key = (model_path.clone(), adapter_path.clone(), weights.clone());
        let existing = ferrolab_magics::lock(engines()).get(&key).cloned();
        let engine = match existing {
            Some(e) => e,
            None => {
                let device = candle_core::Device::Cpu;
                let mut engine = Engine::load(
                    &model_path.to_string_lossy(),
                    &device,
                    candle_core::DType::F32,
                )
                .with_context(|| format!("{id}: cannot load the model"))?;
                if weights == "q8" {
                    engine.quantize_for_decoding()?;
                }
                if let Some(dir) = &adapter_path {
                    engine = engine.with_adapter(dir).with_context(|| {
                        format!("{id}: cannot load the adapter {}", dir.display())
                    })?;
                }
                let engine = Arc::new(Mutex::new(engine));
                ferrolab_magics::lock(engines()).insert(key, engine.clone());
                engine
            }
        };
        let raw = match spec.config.get("raw") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => bail!("{id}: config.raw must be true or false, got {v}"),
        };
        Ok(Local {
            id: id.clone(),
            engine,
            sampling: sampling(&spec.config, id)?,
            price: price(&spec.config, id)?,
            raw,
        })
    }
}

impl Provider for Local {
    fn call(&self, prompt: &str) -> Result<Response> {
        let start = Instant::now();
        let engine = ferrolab_magics::lock(&self.engine);
        let text = match as_messages(prompt) {
            Some(messages) => engine.chat_prompt(&messages)?,
            None if self.raw || !engine.tokenizer.has_chat_template() => prompt.to_string(),
            None => engine.chat_prompt(&[Message::new("user", prompt)])?,
        };
        let generation = engine
            .generate(&text, &self.sampling, |_| {})
            .with_context(|| format!("{}: generation failed", self.id))?;
        let completion = generation.completion_tokens.len() as u64;
        let prompt_tokens = generation.prompt_tokens as u64;
        Ok(Response {
            output: generation.text,
            prompt_tokens,
            completion_tokens: completion,
            cost: self
                .price
                .map(|p| p.input * prompt_tokens as f64 + p.output * completion as f64),
            logprobs: Some(generation.token_logprobs),
            latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        })
    }

    fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let engine = ferrolab_magics::lock(&self.engine);
        engine.embed(text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Endpoint {
    Chat,
    Completion,
    Embedding,
}

/// Any OpenAI-compatible server.
pub struct OpenAi {
    id: String,
    endpoint: Endpoint,
    model: String,
    base_url: String,
    api_key: Option<String>,
    body: Map<String, Value>,
    price: Option<Price>,
    agent: ureq::Agent,
}

impl OpenAi {
    fn new(rest: &str, spec: &ProviderSpec) -> Result<OpenAi> {
        check_config(
            spec,
            &[
                "apiBaseUrl",
                "apiKey",
                "apiKeyEnvar",
                "temperature",
                "max_tokens",
                "top_p",
                "seed",
                "stop",
                "cost",
                "inputCost",
                "outputCost",
            ],
        )?;
        let id = &spec.id;
        let (endpoint, model) = match rest.split_once(':') {
            Some(("chat", m)) => (Endpoint::Chat, m),
            Some(("completion", m)) => (Endpoint::Completion, m),
            Some(("embedding" | "embeddings", m)) => (Endpoint::Embedding, m),
            _ => (Endpoint::Chat, rest),
        };
        if model.is_empty() {
            bail!("{id}: name the model, e.g. openai:chat:smollm2");
        }
        let config = &spec.config;
        let text = |k: &str| -> Result<Option<String>> {
            match config.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => bail!("{id}: config.{k} must be a string, got {}", kind_of(v)),
            }
        };
        let base_url = text("apiBaseUrl")?
            .or_else(|| {
                std::env::var("OPENAI_BASE_URL")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| {
                std::env::var("OPENAI_API_BASE_URL")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "https://api.openai.com/v1".to_string());
        let key_env = text("apiKeyEnvar")?.unwrap_or_else(|| "OPENAI_API_KEY".to_string());
        let api_key =
            text("apiKey")?.or_else(|| std::env::var(&key_env).ok().filter(|s| !s.is_empty()));
        let mut body = Map::new();
        for k in ["temperature", "max_tokens", "top_p", "seed", "stop"] {
            if let Some(v) = config.get(k) {
                body.insert(k.to_string(), v.clone());
            }
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Ok(OpenAi {
            id: id.clone(),
            endpoint,
            model: model.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            body,
            price: price(config, id)?,
            agent,
        })
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = request.send(body.to_string()).map_err(|e| {
            anyhow!(
                "{}: cannot reach {url}: {e} (is the server running? check config.apiBaseUrl)",
                self.id
            )
        })?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| anyhow!("{}: cannot read the answer from {url}: {e}", self.id))?;
        let parsed: Value = serde_json::from_str(&text).map_err(|_| {
            anyhow!(
                "{}: {url} answered {status} with something that is not JSON: {}",
                self.id,
                text.chars().take(200).collect::<String>()
            )
        })?;
        if !status.is_success() {
            let message = parsed
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or(&text);
            bail!("{}: {url} answered {status}: {message}", self.id);
        }
        Ok(parsed)
    }
}

impl Provider for OpenAi {
    fn call(&self, prompt: &str) -> Result<Response> {
        let start = Instant::now();
        let mut body = self.body.clone();
        body.insert("model".into(), Value::String(self.model.clone()));
        let (path, read): (&str, fn(&Value) -> Option<String>) = match self.endpoint {
            Endpoint::Chat => {
                let messages = match as_messages(prompt) {
                    Some(m) => serde_json::to_value(m)?,
                    None => json!([{"role": "user", "content": prompt}]),
                };
                body.insert("messages".into(), messages);
                ("/chat/completions", |v| {
                    v.pointer("/choices/0/message/content")
                        .map(|c| c.as_str().unwrap_or_default().to_string())
                })
            }
            Endpoint::Completion => {
                body.insert("prompt".into(), Value::String(prompt.to_string()));
                ("/completions", |v| {
                    v.pointer("/choices/0/text")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
            }
            Endpoint::Embedding => bail!("{} gives embeddings, not completions", self.id),
        };
        let answer = self.post(path, &Value::Object(body))?;
        let output = read(&answer)
            .ok_or_else(|| anyhow!("{}: the answer has no choices: {answer}", self.id))?;
        let usage = |k: &str| {
            answer
                .pointer(&format!("/usage/{k}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let (prompt_tokens, completion_tokens) =
            (usage("prompt_tokens"), usage("completion_tokens"));
        Ok(Response {
            output,
            prompt_tokens,
            completion_tokens,
            cost: self
                .price
                .map(|p| p.input * prompt_tokens as f64 + p.output * completion_tokens as f64),
            logprobs: None,
            latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        })
    }

    fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let answer = self.post("/embeddings", &json!({"model": self.model, "input": text}))?;
        let vector = answer
            .pointer("/data/0/embedding")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                anyhow!(
                    "{}: the embeddings answer has no data[0].embedding",
                    self.id
                )
            })?;
        vector
            .iter()
            .map(|v| {
                v.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| anyhow!("{}: an embedding holds a non-number", self.id))
            })
            .collect()
    }
}
