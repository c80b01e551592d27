//! The data magics' query path without the kernel: the same SQL through the
//! same catalog and engine choice as `%%sql`, timed in-process, so a gap to
//! another engine can be told apart from the kernel's round trip.
//!
//!     cargo run --example sql_speed -- REQUESTS.parquet USERS.parquet REPS SQL...
//!
//! Prints the median of REPS runs (after one warm-up) per query, in ms.

use ferrolab_data::{register, run};
use ferrolab_magics::{MagicContext, NoHost, RecordingOutput, Registry};
use polars::prelude::*;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [requests, users, reps, queries @ ..] = args.as_slice() else {
        return Err("usage: sql_speed REQUESTS.parquet USERS.parquet REPS SQL...".into());
    };
    let reps: usize = reps.parse()?;
    let mut registry = Registry::default();
    let catalog = register(&mut registry);
    for line in [
        format!("%load requests {requests}"),
        format!("%load users {users}"),
    ] {
        let invocation = ferrolab_magics::parse(&line)?.ok_or("not a magic")?;
        let magic = registry
            .get(&invocation.name)
            .ok_or("no load magic")?
            .clone();
        let mut out = RecordingOutput::default();
        let mut host = NoHost;
        let mut cx = MagicContext {
            out: &mut out,
            host: &mut host,
            registry: &registry,
        };
        magic.run(&invocation, &mut cx)?;
    }
    // SQL_SPEED_CACHED=1: the tables decoded into memory first.
    let cached = std::env::var("SQL_SPEED_CACHED").is_ok_and(|v| v == "1");
    let mut tables = Vec::new();
    if cached {
        for (name, path) in [("requests", requests), ("users", users)] {
            let start = Instant::now();
            let df = run(LazyFrame::scan_parquet(
                path.as_str().into(),
                Default::default(),
            )?)?;
            println!(
                "cached {name} in {:.0} ms, {} MB",
                start.elapsed().as_secs_f64() * 1e3,
                df.estimated_size() >> 20
            );
            tables.push((name, df));
        }
    }
    for query in queries {
        let time = || -> Result<f64, Box<dyn std::error::Error>> {
            let start = Instant::now();
            let frame = if cached {
                let mut context = polars::sql::SQLContext::new();
                for (name, df) in &tables {
                    context.register(name, df.clone().lazy());
                }
                context.execute(query)?
            } else {
                catalog.query(query)?
            };
            let df = run(frame)?;
            std::hint::black_box(df);
            Ok(start.elapsed().as_secs_f64() * 1e3)
        };
        time()?;
        let mut times = (0..reps).map(|_| time()).collect::<Result<Vec<_>, _>>()?;
        times.sort_by(f64::total_cmp);
        println!(
            "{:.0} ms\t{}",
            times[times.len() / 2],
            query.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}
