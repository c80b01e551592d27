//! The decoding kernels alone: `cargo run -p ferrolab-llm --example decode_kernels`
//! prints GMAC/s of the 4-bit (Q4_1) and the int8 (Q8_0) layouts for the projection
//! shapes of SmolLM2-135M at the batch sizes the server runs (1, 8, 32 sequences),
//! on a worker of a rayon pool as `ferrolab serve`'s engine runs (RAYON_NUM_THREADS
//! threads).

use ferrolab_llm::model::DecodeWeights;
use std::time::Instant;

fn main() {
    let pool = rayon::ThreadPoolBuilder::new()
        .build()
        .expect("a thread pool");
    pool.install(run);
}

fn run() {
    let shapes = [
        ("q/o 576x576", 576, 576),
        ("gate/up 1536x576", 1536, 576),
        ("down 576x1536", 576, 1536),
    ];
    for n in [1usize, 8, 32] {
        for (name, rows, cols) in shapes {
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05)
                .collect();
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 104_729 % 997) as f32 / 498.0 - 1.0) * 2.0)
                .collect();
            // Random f32 weights take the int8 layout; the same rounded to Q4_1
            // values, as a Q4_1 GGUF file gives them, the 4-bit one.
            let q4 = ferrolab_llm::q4::round_trip(&w);
            for q in [&q4, &w].map(|w| DecodeWeights::new(w, rows, cols).expect("multiple of 32")) {
                measure(&q, &x, n, name, rows, cols);
            }
        }
    }
}

fn measure(q: &DecodeWeights, x: &[f32], n: usize, name: &str, rows: usize, cols: usize) {
    let mut sink = 0f32;
    for _ in 0..20 {
        sink += q.matmul(x, n)[0];
    }
    let reps = (2_000_000_000 / (rows * cols * n)).max(10);
    let start = Instant::now();
    for _ in 0..reps {
        sink += q.matmul(x, n)[0];
    }
    let secs = start.elapsed().as_secs_f64();
    let gmacs = (rows * cols * n * reps) as f64 / secs / 1e9;
    println!(
        "n={n:2} {name:18} {} {gmacs:6.2} GMAC/s  ({:.1} us per call) {}",
        q.layout(),
        secs / reps as f64 * 1e6,
        if sink.is_nan() { "nan" } else { "" }
    );
}
