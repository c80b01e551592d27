//! Serving: an OpenAI-compatible HTTP API on axum over the model engine, with
//! continuous batching, Prometheus metrics, a request log and human feedback.
//!
//! `ferrolab serve` runs [`run`] in the foreground; `%serve` starts the same server
//! on a thread of its own with [`spawn`].

pub mod api;
pub mod cli;
pub mod dataset;
pub mod deployment;
pub mod magic;
pub mod metrics;
pub mod openapi;
pub mod scheduler;
pub mod store;

use anyhow::{bail, Context, Result};
use api::{AppState, ServedModel};
use metrics::Metrics;
use scheduler::Scheduler;
use std::path::PathBuf;
use std::sync::Arc;
use store::Store;

/// What `ferrolab serve` and `%serve` take.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `smollm2`, a `.gguf` file or a model folder.
    pub model: String,
    /// The name requests use for the base model (default: from `model`).
    pub model_name: Option<String>,
    /// `(name, PEFT adapter folder)`: each is served as its own model name.
    pub adapters: Vec<(String, PathBuf)>,
    pub bind: String,
    pub max_batch: usize,
    pub max_queue: usize,
    pub api_key: Option<String>,
    /// The largest `max_tokens` a request may ask for (default: the context).
    pub max_tokens: Option<usize>,
    pub device: String,
    /// `q8` (default): decode with quantized copies of the weights on the CPU (the
    /// file's 4-bit blocks where it has them, int8 otherwise); `f32`.
    pub weights: String,
    /// Names the server in `%serve list` and its request log folder.
    pub name: String,
    /// The request log; default `$FERROLAB_HOME/serve/NAME/requests.sqlite`.
    pub log: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            model: "smollm2".into(),
            model_name: None,
            adapters: Vec::new(),
            bind: "127.0.0.1:8000".into(),
            max_batch: 8,
            max_queue: 64,
            api_key: None,
            max_tokens: None,
            device: "cpu".into(),
            weights: "q8".into(),
            name: "default".into(),
            log: None,
        }
    }
}

/// Where a named server keeps its request log.
pub fn log_path(name: &str) -> PathBuf {
    ferrolab_llm::load::ferrolab_home()
        .join("serve")
        .join(name)
        .join("requests.sqlite")
}

/// The name a model path is served as: `smollm2` stays, a file or folder gives its
/// stem.
pub fn default_model_name(model: &str) -> String {
    let path = std::path::Path::new(model);
    if path.components().count() <= 1 && !model.contains('.') {
        return model.to_string();
    }
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| model.to_string())
}

/// A loaded model and an open log, ready to listen.
pub struct Prepared {
    state: Arc<AppState>,
    listener: std::net::TcpListener,
    pub url: String,
    pub log: PathBuf,
    /// How decoding reads the weights: "f32", or the quantized layouts and how many
    /// matrices took each ("q4_1 ×210, q8_0 ×1").
    pub weights: String,
}

/// Loads the model and adapters, opens the request log and binds the address.
/// Everything that can fail for a user's reason fails here, before serving.
pub fn prepare(config: &ServeConfig) -> Result<Prepared> {
    if config.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    if config.max_queue == 0 {
        bail!("--max-queue must be at least 1");
    }
    let device = ferrolab_llm::device(&config.device)?;
    let dtype = if device.is_cuda() {
        candle_core::DType::BF16
    } else {
        candle_core::DType::F32
    };
    let mut base = ferrolab_llm::Engine::load(&config.model, &device, dtype)?;
    let layouts = match config.weights.as_str() {
        "q8" => base.quantize_for_decoding()?,
        "f32" => String::new(),
        other => bail!("--weights takes q8 or f32, not '{other}'"),
    };
    let base_name = config
        .model_name
        .clone()
        .unwrap_or_else(|| default_model_name(&config.model));
    let context = base.model.config.max_position_embeddings;
    let created = chrono::Utc::now().timestamp();
    let mut models = vec![ServedModel {
        name: base_name.clone(),
        tokenizer: Arc::new(base.tokenizer.clone()),
        context,
        created,
        parent: None,
    }];
    let mut engines = vec![base];
    for (name, dir) in &config.adapters {
        if models.iter().any(|m| &m.name == name) {
            bail!("the model name '{name}' is used twice; give each adapter its own name");
        }
        let engine = engines[0]
            .with_adapter(dir)
            .with_context(|| format!("cannot load adapter '{name}' from {}", dir.display()))?;
        models.push(ServedModel {
            name: name.clone(),
            tokenizer: models[0].tokenizer.clone(),
            context,
            created,
            parent: Some(base_name.clone()),
        });
        engines.push(engine);
    }
    let log = config.log.clone().unwrap_or_else(|| log_path(&config.name));
    let store = Store::open(&log)?;
    let listener = std::net::TcpListener::bind(&config.bind).with_context(|| {
        format!(
            "cannot listen on {}; is another server using it? choose another with --bind",
            config.bind
        )
    })?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let max_tokens = config.max_tokens.unwrap_or(context).clamp(1, context);
    let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    let openapi = openapi::spec(&openapi::SpecInput {
        models: &names,
        max_tokens,
        vocab_size: models[0].tokenizer.vocab_size(),
        api_key: config.api_key.is_some(),
        version: env!("CARGO_PKG_VERSION"),
    });
    let metrics = Arc::new(Metrics::default());
    let scheduler = Scheduler::start(engines, config.max_batch, config.max_queue, metrics.clone());
    let state = Arc::new(AppState {
        models,
        scheduler,
        store,
        metrics,
        api_key: config.api_key.clone(),
        max_tokens,
        openapi,
    });
    Ok(Prepared {
        state,
        listener,
        url: format!("http://{address}"),
        log,
        weights: if layouts.is_empty() {
            "f32".into()
        } else {
            layouts
        },
    })
}

impl Prepared {
    pub fn model_names(&self) -> Vec<String> {
        self.state.models.iter().map(|m| m.name.clone()).collect()
    }

    /// Serves until `shutdown` resolves, then stops the engine thread.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let scheduler = self.state.scheduler.clone();
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let app = api::router(self.state);
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        scheduler.shutdown();
        result.context("the server stopped with an error")
    }
}

/// `ferrolab serve`: serves in the foreground until Ctrl-C.
pub fn run(config: &ServeConfig) -> Result<()> {
    let prepared = prepare(config)?;
    eprintln!(
        "ferrolab serve: {} at {}/v1 (models: {}); decoding weights: {}; request log {}",
        config.model,
        prepared.url,
        prepared.model_names().join(", "),
        prepared.weights,
        prepared.log.display()
    );
    // The URL alone on stdout, for scripts.
    println!("{}", prepared.url);
    runtime()?.block_on(prepared.serve(async {
        let _ = tokio::signal::ctrl_c().await;
    }))
}

/// The HTTP side needs little: the engine thread does the work.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// A server running on its own thread (for `%serve`).
pub struct Handle {
    pub name: String,
    pub url: String,
    pub log: PathBuf,
    pub models: Vec<String>,
    pub config: ServeConfig,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Handle {
    /// Stops serving (requests in flight are answered first) and waits.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))?,
            None => Ok(()),
        }
    }

    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Starts a server on a thread of its own; returns once it is listening.
pub fn spawn(config: ServeConfig) -> Result<Handle> {
    let prepared = prepare(&config)?;
    let url = prepared.url.clone();
    let log = prepared.log.clone();
    let models = prepared.model_names();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("ferrolab-serve-{}", config.name))
        .spawn(move || -> Result<()> {
            runtime()?.block_on(prepared.serve(async {
                let _ = stopped.await;
            }))
        })?;
    Ok(Handle {
        name: config.name.clone(),
        url,
        log,
        models,
        config,
        stop: Some(stop),
        thread: Some(thread),
    })
}
