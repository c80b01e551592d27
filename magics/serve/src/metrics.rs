//! Prometheus metrics in the text exposition format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Latency buckets in seconds, from a fast token to a long generation.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
];

pub struct Histogram {
    counts: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in nanoseconds, so it can be atomic.
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[derive(Default)]
pub struct Metrics {
    /// (route, status) → count.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub request_latency: Histogram,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub queue_length: AtomicUsize,
    pub running: AtomicUsize,
    /// Decode steps, and the sequences they advanced: their ratio is the mean batch.
    pub decode_steps: AtomicU64,
    pub decoded_sequences: AtomicU64,
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        let mut requests = ferrolab_magics::lock(&self.requests);
        *requests.entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP ferrolab_requests_total HTTP requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE ferrolab_requests_total counter");
        for ((route, status), n) in ferrolab_magics::lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "ferrolab_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        self.time_to_first_token.render(
            &mut out,
            "ferrolab_time_to_first_token_seconds",
            "Time from a generation request's arrival to its first token.",
        );
        self.inter_token_latency.render(
            &mut out,
            "ferrolab_inter_token_latency_seconds",
            "Time between consecutive generated tokens of one request.",
        );
        self.request_latency.render(
            &mut out,
            "ferrolab_request_latency_seconds",
            "End-to-end time of a generation or embedding request.",
        );
        for (name, help, value) in [
            (
                "ferrolab_prompt_tokens_total",
                "Prompt tokens processed.",
                self.prompt_tokens.load(Ordering::Relaxed),
            ),
            (
                "ferrolab_generation_tokens_total",
                "Tokens generated.",
                self.generation_tokens.load(Ordering::Relaxed),
            ),
            (
                "ferrolab_decode_steps_total",
                "Batched decode steps run (one per model per step).",
                self.decode_steps.load(Ordering::Relaxed),
            ),
            (
                "ferrolab_decoded_sequences_total",
                "Sequences advanced by decode steps; divided by the steps, the mean batch size.",
                self.decoded_sequences.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        for (name, help, value) in [
            (
                "ferrolab_queue_length",
                "Requests waiting for a place in the running batch.",
                self.queue_length.load(Ordering::Relaxed),
            ),
            (
                "ferrolab_running_batch_size",
                "Sequences in the running batch.",
                self.running.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.request_latency.observe(0.02);
        m.request_latency.observe(3.0);
        m.count_request("/v1/completions", 200);
        m.count_request("/v1/completions", 200);
        let text = m.render();
        assert!(text.contains("ferrolab_request_latency_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("ferrolab_request_latency_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("ferrolab_request_latency_seconds_count 2"));
        assert!(
            text.contains("ferrolab_requests_total{route=\"/v1/completions\",status=\"200\"} 2")
        );
    }
}
