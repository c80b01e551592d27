//! Continuous batching: one engine thread owns the models; requests wait in a
//! bounded queue and join the running batch between decode steps.
//!
//! Each step the thread admits waiting requests up to `max_batch` (running the
//! prompt of each new one), then runs one decode step for every running sequence:
//! the sequences of one model go through the projections and the MLP together, as
//! one `[batch, hidden]` matrix, while attention reads each sequence's own KV cache.
//! A sequence whose client has gone (its event receiver was dropped) is removed
//! before the next step, so a vanished client frees its place at once.

use crate::metrics::Metrics;
use anyhow::Result;
use ferrolab_llm::generate::{sample, FinishReason, Sampling, TextStream};
use ferrolab_llm::model::KvCache;
use ferrolab_llm::Engine;
use rand::SeedableRng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What a generation reports, in order: pieces of text, then `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done(Summary),
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
    pub ttft: Option<Duration>,
}

pub struct GenerateJob {
    /// Index into the scheduler's models.
    pub model: usize,
    pub prompt_ids: Vec<u32>,
    pub sampling: Sampling,
    pub events: mpsc::UnboundedSender<Event>,
    pub arrived: Instant,
}

pub struct EmbedJob {
    pub model: usize,
    pub inputs: Vec<Vec<u32>>,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

pub enum Job {
    Generate(GenerateJob),
    Embed(EmbedJob),
}

/// The queue is full: the request should be answered with 429.
#[derive(Debug)]
pub struct QueueFull;

struct Shared {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    stop: AtomicBool,
    max_queue: usize,
    max_batch: usize,
    metrics: Arc<Metrics>,
}

#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

struct Sequence {
    model: usize,
    cache: KvCache,
    prompt_tokens: usize,
    sampling: Sampling,
    rng: rand::rngs::StdRng,
    stream: TextStream,
    /// The token to feed at the next step.
    last: u32,
    events: mpsc::UnboundedSender<Event>,
    arrived: Instant,
    ttft: Option<Duration>,
    last_token_at: Instant,
}

impl Scheduler {
    /// Starts the engine thread over `engines` (the base model first, then one per
    /// adapter).
    pub fn start(
        engines: Vec<Engine>,
        max_batch: usize,
        max_queue: usize,
        metrics: Arc<Metrics>,
    ) -> Scheduler {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            max_queue,
            max_batch: max_batch.max(1),
            metrics,
        });
        let thread_shared = shared.clone();
        // The engine loop runs on a worker of its own thread pool, the pool every
        // parallel op of the model then uses: a matrix product splits its rows
        // between this thread and the others, instead of handing all of them to
        // the pool and sleeping until they are done (a wake-up and a sleep per
        // product, some 200 per token, and a third thread on two cores). Its size
        // is rayon's default: RAYON_NUM_THREADS, else one per CPU.
        std::thread::Builder::new()
            .name("ferrolab-serve-engine".into())
            .spawn(move || {
                match rayon::ThreadPoolBuilder::new()
                    .thread_name(|i| format!("ferrolab-serve-{i}"))
                    .build()
                {
                    Ok(pool) => pool.install(|| run(&engines, &thread_shared)),
                    Err(e) => {
                        log::warn!(
                            "no thread pool of its own for the engine ({e}); using the global one"
                        );
                        run(&engines, &thread_shared)
                    }
                }
            })
            .expect("cannot start the engine thread");
        Scheduler { shared }
    }

    pub fn submit(&self, job: Job) -> Result<(), QueueFull> {
        let mut queue = self.lock();
        // Requests whose clients have gone hold no place.
        queue.retain(|job| match job {
            Job::Generate(job) => !job.events.is_closed(),
            Job::Embed(job) => !job.reply.is_closed(),
        });
        if queue.len() >= self.shared.max_queue {
            self.shared
                .metrics
                .queue_length
                .store(queue.len(), Ordering::Relaxed);
            return Err(QueueFull);
        }
        queue.push_back(job);
        self.shared
            .metrics
            .queue_length
            .store(queue.len(), Ordering::Relaxed);
        drop(queue);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Stops the engine thread after its current step; waiting requests fail.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.ready.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        ferrolab_magics::lock(&self.shared.queue)
    }
}

fn run(engines: &[Engine], shared: &Shared) {
    let mut running: Vec<Sequence> = Vec::new();
    loop {
        let mut admitted = Vec::new();
        {
            let mut queue = ferrolab_magics::lock(&shared.queue);
            while running.is_empty() && queue.is_empty() && !shared.stop.load(Ordering::SeqCst) {
                queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
            if shared.stop.load(Ordering::SeqCst) {
                for job in queue.drain(..) {
                    refuse(job, "the server is shutting down");
                }
                for seq in running.drain(..) {
                    let _ = seq
                        .events
                        .send(Event::Failed("the server is shutting down".into()));
                }
                shared.metrics.queue_length.store(0, Ordering::Relaxed);
                shared.metrics.running.store(0, Ordering::Relaxed);
                return;
            }
            while running.len() + admitted.len() < shared.max_batch {
                match queue.pop_front() {
                    Some(job) => admitted.push(job),
                    None => break,
                }
            }
            shared
                .metrics
                .queue_length
                .store(queue.len(), Ordering::Relaxed);
        }
        for job in admitted {
            match job {
                Job::Embed(job) => {
                    let result =
                        embed(&engines[job.model], &job.inputs).map_err(|e| format!("{e:#}"));
                    let _ = job.reply.send(result);
                }
                Job::Generate(job) => {
                    if job.events.is_closed() {
                        continue;
                    }
                    match prefill(&engines[job.model], job, &shared.metrics) {
                        Ok(Some(seq)) => running.push(seq),
                        Ok(None) => {}
                        Err((events, e)) => {
                            let _ = events.send(Event::Failed(format!("{e:#}")));
                        }
                    }
                }
            }
        }
        running.retain(|s| !s.events.is_closed());
        shared
            .metrics
            .running
            .store(running.len(), Ordering::Relaxed);
        if running.is_empty() {
            continue;
        }
        decode_step(engines, &mut running, &shared.metrics);
        shared
            .metrics
            .running
            .store(running.len(), Ordering::Relaxed);
    }
}

fn refuse(job: Job, why: &str) {
    match job {
        Job::Generate(job) => {
            let _ = job.events.send(Event::Failed(why.into()));
        }
        Job::Embed(job) => {
            let _ = job.reply.send(Err(why.into()));
        }
    }
}

type PrefillError = (mpsc::UnboundedSender<Event>, anyhow::Error);

/// Runs the prompt and samples the first token. `None` when the sequence already
/// finished.
fn prefill(
    engine: &Engine,
    job: GenerateJob,
    metrics: &Metrics,
) -> Result<Option<Sequence>, PrefillError> {
    let mut cache = KvCache::default();
    let logits = (|| -> Result<Vec<f32>> {
        let input = candle_core::Tensor::new(job.prompt_ids.as_slice(), engine.model.device())?
            .unsqueeze(0)?;
        Ok(engine
            .model
            .forward_last(&input, &mut cache)?
            .squeeze(0)?
            .to_vec1()?)
    })();
    let logits = match logits {
        Ok(l) => l,
        Err(e) => return Err((job.events, e)),
    };
    metrics
        .prompt_tokens
        .fetch_add(job.prompt_ids.len() as u64, Ordering::Relaxed);
    let mut seq = Sequence {
        model: job.model,
        cache,
        prompt_tokens: job.prompt_ids.len(),
        stream: TextStream::new(job.sampling.stop.clone()),
        rng: rand::rngs::StdRng::seed_from_u64(job.sampling.seed),
        sampling: job.sampling,
        last: 0,
        events: job.events,
        arrived: job.arrived,
        ttft: None,
        last_token_at: Instant::now(),
    };
    let token = sample(&logits, &seq.sampling, &mut seq.rng);
    match advance(engine, &mut seq, token, metrics) {
        Ok(true) => Ok(Some(seq)),
        Ok(false) => Ok(None),
        Err(e) => Err((seq.events, e)),
    }
}

/// One decode step for every running sequence, batched per model.
fn decode_step(engines: &[Engine], running: &mut Vec<Sequence>, metrics: &Metrics) {
    let mut models: Vec<usize> = running.iter().map(|s| s.model).collect();
    models.sort_unstable();
    models.dedup();
    let mut finished = vec![false; running.len()];
    for model in models {
        let engine = &engines[model];
        let members: Vec<usize> = (0..running.len())
            .filter(|&i| running[i].model == model)
            .collect();
        let tokens: Vec<u32> = members.iter().map(|&i| running[i].last).collect();
        metrics.decode_steps.fetch_add(1, Ordering::Relaxed);
        metrics
            .decoded_sequences
            .fetch_add(tokens.len() as u64, Ordering::Relaxed);
        let logits = {
            let mut caches: Vec<&mut KvCache> = running
                .iter_mut()
                .filter(|s| s.model == model)
                .map(|s| &mut s.cache)
                .collect();
            engine
                .model
                .decode_batch(&tokens, &mut caches)
                .and_then(|l| Ok(l.to_vec2::<f32>()?))
        };
        match logits {
            Ok(rows) => {
                for (row, &i) in rows.iter().zip(&members) {
                    let seq = &mut running[i];
                    let token = sample(row, &seq.sampling, &mut seq.rng);
                    match advance(engine, seq, token, metrics) {
                        Ok(true) => {}
                        Ok(false) => finished[i] = true,
                        Err(e) => {
                            let _ = seq.events.send(Event::Failed(format!("{e:#}")));
                            finished[i] = true;
                        }
                    }
                }
            }
            Err(e) => {
                for &i in &members {
                    let _ = running[i].events.send(Event::Failed(format!("{e:#}")));
                    finished[i] = true;
                }
            }
        }
    }
    let mut index = 0;
    running.retain(|_| {
        let keep = !finished[index];
        index += 1;
        keep
    });
}

/// Takes a sampled token: sends its text, and finishes the sequence on the end
/// token, a stop string, `max_tokens` or a full context. Returns whether it runs on.
fn advance(engine: &Engine, seq: &mut Sequence, token: u32, metrics: &Metrics) -> Result<bool> {
    let now = Instant::now();
    match seq.ttft {
        None => {
            let ttft = now - seq.arrived;
            seq.ttft = Some(ttft);
            metrics.time_to_first_token.observe(ttft.as_secs_f64());
        }
        Some(_) => metrics
            .inter_token_latency
            .observe((now - seq.last_token_at).as_secs_f64()),
    }
    seq.last_token_at = now;
    let finish = if Some(token) == engine.tokenizer.eos_id() {
        Some(FinishReason::Stop)
    } else {
        metrics.generation_tokens.fetch_add(1, Ordering::Relaxed);
        let step = seq.stream.push(&engine.tokenizer, token)?;
        if !step.text.is_empty() {
            let _ = seq.events.send(Event::Text(step.text));
        }
        let context = engine.model.config.max_position_embeddings;
        if step.stopped {
            Some(FinishReason::Stop)
        } else if seq.stream.ids().len() >= seq.sampling.max_tokens
            || seq.prompt_tokens + seq.stream.ids().len() >= context
        {
            Some(FinishReason::Length)
        } else {
            None
        }
    };
    seq.last = token;
    let Some(finish_reason) = finish else {
        return Ok(true);
    };
    let rest = seq.stream.finish();
    if !rest.is_empty() {
        let _ = seq.events.send(Event::Text(rest));
    }
    let _ = seq.events.send(Event::Done(Summary {
        text: seq.stream.text().to_string(),
        prompt_tokens: seq.prompt_tokens,
        completion_tokens: seq.stream.ids().len(),
        finish_reason,
        ttft: seq.ttft,
    }));
    Ok(false)
}

/// Mean-pooled final hidden states, one vector per input.
fn embed(engine: &Engine, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
    inputs.iter().map(|ids| engine.embed_ids(ids)).collect()
}
