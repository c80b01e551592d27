//! The data magics' query path without the kernel: the same SQL through the
//! same catalog, in-memory copies and engine choice as `%%sql`, timed
//! in-process, so a gap to another engine can be told apart from the kernel's
//! round trip.
//!
//!     cargo run --example sql_speed -- NAME=PATH... REPS SQL...
//!
//! Each `NAME=PATH` is a `%load NAME PATH`. A SQL argument starting with `@` is
//! the name of a file holding the query. Waits until every table is in memory
//! (`FERROLAB_DATA_CACHE_MB=0` times the scans instead), then prints the median
//! of REPS runs (after one warm-up) per query, in ms, or the query's error.
//! `SQL_SPEED_PRINT=1` prints each result, `SQL_SPEED_PLAN=1` each query's
//! optimized plan. `SQL_SPEED_ENGINES=chosen,streaming,in-memory` times each
//! query on each of those (the engine `%%sql` picks, or one forced), the runs
//! interleaved so that a busy machine slows them alike, and prints one median
//! per engine.

use ferrolab_data::{register, run};
use ferrolab_magics::{MagicContext, NoHost, RecordingOutput, Registry};
use polars::prelude::Engine;
use std::time::Instant;

const USAGE: &str = "usage: sql_speed NAME=PATH... REPS SQL|@FILE...";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferrolab_data::tune_engine();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tables: Vec<(&str, &str)> = args.iter().map_while(|a| a.split_once('=')).collect();
    let [reps, queries @ ..] = &args[tables.len()..] else {
        return Err(USAGE.into());
    };
    let reps: usize = reps.parse().map_err(|_| USAGE)?;
    let mut registry = Registry::default();
    let catalog = register(&mut registry);
    let start = Instant::now();
    for (name, path) in tables {
        let invocation =
            ferrolab_magics::parse(&format!("%load {name} {path}"))?.ok_or("not a magic")?;
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
    while catalog.loading() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    println!("loaded in {:.0} ms", start.elapsed().as_secs_f64() * 1e3);
    let print = std::env::var("SQL_SPEED_PRINT").is_ok_and(|v| v == "1");
    let plan = std::env::var("SQL_SPEED_PLAN").is_ok_and(|v| v == "1");
    let engines: Vec<String> = std::env::var("SQL_SPEED_ENGINES")
        .unwrap_or_else(|_| "chosen".into())
        .split(',')
        .map(str::to_string)
        .collect();
    if engines.len() > 1 {
        println!("{}", engines.join("\t"));
    }
    for query in queries {
        let (label, query) = match query.strip_prefix('@') {
            Some(file) => (file.to_string(), std::fs::read_to_string(file)?),
            None => (
                query.split_whitespace().collect::<Vec<_>>().join(" "),
                query.clone(),
            ),
        };
        if plan {
            match catalog.query(&query) {
                Ok(frame) => println!("{label}:\n{}", frame.describe_optimized_plan()?),
                Err(error) => println!("error\t{label}\t{error}"),
            }
        }
        let time = |engine: &str| -> Result<f64, Box<dyn std::error::Error>> {
            let start = Instant::now();
            let frame = catalog.query(&query)?;
            let df = match engine {
                "streaming" => frame
                    .collect_with_engine(Engine::Streaming)?
                    .unwrap_single(),
                "in-memory" => frame.collect_with_engine(Engine::InMemory)?.unwrap_single(),
                _ => run(frame)?,
            };
            if print {
                println!("{df}");
            }
            std::hint::black_box(df);
            Ok(start.elapsed().as_secs_f64() * 1e3)
        };
        if let Err(error) = engines.iter().try_for_each(|e| time(e).map(|_| ())) {
            println!("error\t{label}\t{error}");
            continue;
        }
        let mut times = vec![Vec::new(); engines.len()];
        for _ in 0..reps {
            for (engine, times) in engines.iter().zip(&mut times) {
                times.push(time(engine)?);
            }
        }
        let medians: Vec<String> = times
            .iter_mut()
            .map(|times| {
                times.sort_by(f64::total_cmp);
                let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
                format!("{median:.0} ms")
            })
            .collect();
        println!("{}\t{label}", medians.join("\t"));
    }
    Ok(())
}
