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
//! `SQL_SPEED_PRINT=1` prints each result.

use ferrolab_data::{register, run};
use ferrolab_magics::{MagicContext, NoHost, RecordingOutput, Registry};
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
    for query in queries {
        let (label, query) = match query.strip_prefix('@') {
            Some(file) => (file.to_string(), std::fs::read_to_string(file)?),
            None => (
                query.split_whitespace().collect::<Vec<_>>().join(" "),
                query.clone(),
            ),
        };
        let time = || -> Result<f64, Box<dyn std::error::Error>> {
            let start = Instant::now();
            let df = run(catalog.query(&query)?)?;
            if print {
                println!("{df}");
            }
            std::hint::black_box(df);
            Ok(start.elapsed().as_secs_f64() * 1e3)
        };
        if let Err(error) = time() {
            println!("error\t{label}\t{error}");
            continue;
        }
        let mut times = (0..reps).map(|_| time()).collect::<Result<Vec<_>, _>>()?;
        times.sort_by(f64::total_cmp);
        println!(
            "{:.0} ms\t{label}",
            times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        );
    }
    Ok(())
}
