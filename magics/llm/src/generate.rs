//! Text generation with a KV cache: greedy, temperature, top-k, top-p, seed, stop
//! strings, max tokens.

use crate::model::KvCache;
use crate::tokenizer::TextTokenizer;
use crate::Engine;
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    pub max_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// 0 means no limit.
    pub top_k: usize,
    /// 1.0 means no limit.
    pub top_p: f64,
    pub seed: u64,
    /// Generation stops before the first of these strings; it is not returned.
    pub stop: Vec<String>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            max_tokens: 128,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

impl Sampling {
    pub fn greedy(max_tokens: usize) -> Self {
        Sampling {
            max_tokens,
            ..Sampling::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!(
                "temperature must be 0 (greedy) or positive, got {}",
                self.temperature
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its answer (end-of-sequence token) or a stop string appeared.
    Stop,
    /// `max_tokens` was reached (or the context filled up).
    Length,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: Vec<u32>,
    /// The natural log-probability of each completion token under the model's
    /// distribution at that step (before temperature and truncation).
    pub token_logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

impl Engine {
    /// Continues `prompt` (already templated text). `on_text` sees each new piece of
    /// text as soon as it is final (stop strings are held back until ruled out).
    pub fn generate(
        &self,
        prompt: &str,
        sampling: &Sampling,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        sampling.validate()?;
        let prompt_ids = self.tokenizer.encode(prompt)?;
        if prompt_ids.is_empty() {
            bail!("the prompt is empty");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(sampling.seed);
        let mut cache = KvCache::default();
        let context = self.model.config.max_position_embeddings;
        let eos = self.tokenizer.eos_id();
        let mut stream = TextStream::new(sampling.stop.clone());
        let mut input = prompt_ids.clone();
        let mut finish = FinishReason::Length;
        let mut logprobs = Vec::new();
        while stream.ids().len() < sampling.max_tokens
            && prompt_ids.len() + stream.ids().len() < context
        {
            // The prompt in one pass, then one token at a time through the same
            // batched decode step the server uses (so both give the same tokens).
            let logits = if cache.is_empty() {
                let tensor = Tensor::new(input.as_slice(), self.model.device())?.unsqueeze(0)?;
                self.model.forward_last(&tensor, &mut cache)?
            } else {
                self.model.decode_batch(&input, &mut [&mut cache])?
            };
            let logits: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
            let next = sample(&logits, sampling, &mut rng);
            if Some(next) == eos {
                finish = FinishReason::Stop;
                break;
            }
            logprobs.push(log_softmax_at(&logits, next as usize));
            input = vec![next];
            let step = stream.push(&self.tokenizer, next)?;
            if !step.text.is_empty() {
                on_text(&step.text);
            }
            if step.stopped {
                finish = FinishReason::Stop;
                break;
            }
        }
        let rest = stream.finish();
        if !rest.is_empty() {
            on_text(&rest);
        }
        Ok(Generation {
            text: stream.text().to_string(),
            prompt_tokens: prompt_ids.len(),
            completion_tokens: stream.ids().to_vec(),
            token_logprobs: logprobs,
            finish_reason: finish,
        })
    }
}

/// `log softmax(logits)[index]`, computed stably.
pub fn log_softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    logits[index] - max - sum.ln() as f32
}

/// Generated tokens to text, as it becomes final: a piece is released once no stop
/// string can start in it and it ends on a whole character. One per sequence; the
/// engine's `generate` and the server's scheduler both use it.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    stop: Vec<String>,
    ids: Vec<u32>,
    text: String,
    /// Bytes of `text` already released.
    sent: usize,
}

/// What one more token released.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStep {
    /// New final text (may be empty).
    pub text: String,
    /// A stop string appeared: the sequence is over, the text was cut before it.
    pub stopped: bool,
}

impl TextStream {
    pub fn new(stop: Vec<String>) -> Self {
        TextStream {
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            ..TextStream::default()
        }
    }

    pub fn push(&mut self, tokenizer: &TextTokenizer, token: u32) -> Result<StreamStep> {
        self.ids.push(token);
        self.text = tokenizer.decode(&self.ids, true)?;
        if let Some(cut) = first_stop(&self.text, &self.stop) {
            self.text.truncate(cut);
            // What is left before the stop string is final now.
            return Ok(StreamStep {
                text: self.release(self.text.len()),
                stopped: true,
            });
        }
        // Hold back a possible start of a stop string, and a half-decoded character.
        let mut safe = self.text.len() - held_back(&self.text, &self.stop);
        while safe > self.sent && self.text[..safe].ends_with('\u{FFFD}') {
            safe -= '\u{FFFD}'.len_utf8();
        }
        Ok(StreamStep {
            text: self.release(safe),
            stopped: false,
        })
    }

    /// The sequence ended: whatever was held back is final.
    pub fn finish(&mut self) -> String {
        self.release(self.text.len())
    }

    fn release(&mut self, upto: usize) -> String {
        if upto <= self.sent {
            return String::new();
        }
        let piece = self.text[self.sent..upto].to_string();
        self.sent = upto;
        piece
    }

    /// The completion so far (after a stop: without the stop string).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// Bytes at the end of `text` that could be the start of a stop string.
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut hold = 0;
    for stop in stops {
        for (i, _) in stop.char_indices().skip(1) {
            if text.ends_with(&stop[..i]) {
                hold = hold.max(i);
            }
        }
    }
    hold
}

/// Picks the next token: argmax when greedy, else temperature, top-k, then top-p.
pub fn sample(logits: &[f32], sampling: &Sampling, rng: &mut impl Rng) -> u32 {
    if sampling.temperature == 0.0 {
        return argmax(logits);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if sampling.top_k > 0 {
        order.truncate(sampling.top_k);
    }
    let max = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / sampling.temperature).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if sampling.top_p < 1.0 {
        let mut mass = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            mass += p;
            if mass >= sampling.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut draw = rng.random::<f64>() * total;
    for (i, p) in probs.iter().enumerate() {
        draw -= p;
        if draw <= 0.0 {
            return order[i] as u32;
        }
    }
    order[order.len() - 1] as u32
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let sampling = Sampling {
            temperature: 1.0,
            top_k: 1,
            ..Sampling::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20 {
            assert_eq!(sample(&[0.0, 2.0, 1.0], &sampling, &mut rng), 1);
        }
    }

    #[test]
    fn small_top_p_keeps_only_the_head() {
        let sampling = Sampling {
            temperature: 1.0,
            top_p: 0.5,
            ..Sampling::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20 {
            assert_eq!(sample(&[0.0, 5.0, 1.0], &sampling, &mut rng), 1);
        }
    }

    #[test]
    fn sampling_is_reproducible_with_a_seed() {
        let sampling = Sampling {
            temperature: 1.0,
            ..Sampling::default()
        };
        let logits = [0.5f32, 0.4, 0.3, 0.2, 0.1];
        let draw = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..16)
                .map(|_| sample(&logits, &sampling, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn stop_strings_are_held_back_until_ruled_out() {
        let stops = vec!["\nUser:".to_string()];
        assert_eq!(held_back("Paris.\nUs", &stops), 3);
        assert_eq!(held_back("Paris.", &stops), 0);
        assert_eq!(first_stop("Paris.\nUser: hi", &stops), Some(6));
    }
}
