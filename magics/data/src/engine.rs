//! Which of polars' two engines runs a query.
//!
//! polars has a streaming engine (the plan runs as pipelines over batches) and
//! an in-memory engine (each node runs over its whole input). Measured on this
//! project's two benchmarks (docs/benchmarks.md), neither wins everywhere:
//!
//! - a large aggregation (a group-by straight over a table of millions of rows,
//!   with or without one join in front) runs 2.5–4× faster streaming: TPC-H Q1,
//!   Q13 and Q18 and every query of `make bench-data`;
//! - a chain of joins over tables that are, or are filtered down to, moderate
//!   sizes runs up to 3× faster in memory: TPC-H Q3, Q7, Q8, Q10, Q21 and most
//!   of the others with two joins or more.
//!
//! So the choice goes by the plan's shape: in memory when it joins at least
//! [`JOINS_FOR_IN_MEMORY`] times and has no large aggregation over a table
//! (that would dominate its time), streaming otherwise. A plan that reads a
//! table from its files (one larger than the in-memory copies' budget, or
//! one whose copy is not ready) always streams: the streaming engine keeps
//! memory bounded on tables larger than RAM, the in-memory engine does not.
//!
//! `FERROLAB_SQL_ENGINE=streaming` or `in-memory` forces one engine, for
//! comparing them (`examples/sql_speed.rs`).

use polars::prelude::{DslPlan, Engine};

/// Joins (of any kind: inner, left, semi, anti) from which a plan runs in memory.
pub const JOINS_FOR_IN_MEMORY: usize = 2;

/// Rows of a table from which a group-by straight over it counts as large.
pub const LARGE_TABLE_ROWS: usize = 1_000_000;

/// The engine for `plan`, as the module documentation describes.
pub fn choose(plan: &DslPlan) -> Engine {
    match std::env::var("FERROLAB_SQL_ENGINE").as_deref() {
        Ok("streaming") => return Engine::Streaming,
        Ok("in-memory") => return Engine::InMemory,
        _ => {}
    }
    if plan
        .into_iter()
        .any(|node| matches!(node, DslPlan::Scan { .. }))
    {
        return Engine::Streaming;
    }
    let joins = plan
        .into_iter()
        .filter(|node| matches!(node, DslPlan::Join { .. }))
        .count();
    let large_aggregation = plan.into_iter().any(|node| match node {
        DslPlan::GroupBy { input, .. } => over_large_table(input),
        _ => false,
    });
    if joins >= JOINS_FOR_IN_MEMORY && !large_aggregation {
        Engine::InMemory
    } else {
        Engine::Streaming
    }
}

/// Whether `input` reads a large table without a join on the way (a join
/// changes how many rows reach the group-by in ways the plan does not tell).
fn over_large_table(input: &DslPlan) -> bool {
    let mut large = false;
    for node in input {
        match node {
            DslPlan::Join { .. } => return false,
            DslPlan::DataFrameScan { df, .. } => large |= df.height() >= LARGE_TABLE_ROWS,
            _ => {}
        }
    }
    large
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    fn table(rows: usize) -> LazyFrame {
        let keys: Vec<i64> = (0..rows as i64).collect();
        df!("k" => keys.clone(), "v" => keys)
            .expect("a frame")
            .lazy()
    }

    fn engine(frame: &LazyFrame) -> Engine {
        choose(&frame.logical_plan)
    }

    fn join(left: LazyFrame, right: LazyFrame) -> LazyFrame {
        left.join(right, [col("k")], [col("k")], JoinType::Inner.into())
    }

    #[test]
    fn a_chain_of_joins_runs_in_memory() {
        let chain = join(join(table(10), table(10)), table(10));
        assert!(matches!(engine(&chain), Engine::InMemory));
        // One join alone streams (a large probe into a small table streams best).
        assert!(matches!(
            engine(&join(table(10), table(10))),
            Engine::Streaming
        ));
    }

    #[test]
    fn a_large_aggregation_streams_even_among_joins() {
        let big = LARGE_TABLE_ROWS;
        let grouped = table(big).group_by([col("k")]).agg([col("v").sum()]);
        assert!(matches!(engine(&grouped), Engine::Streaming));
        let among_joins = join(join(table(10), table(10)), grouped);
        assert!(matches!(engine(&among_joins), Engine::Streaming));
        // A group-by of a small table among joins does not count.
        let small = table(10).group_by([col("k")]).agg([col("v").sum()]);
        let chain = join(join(table(10), table(10)), small);
        assert!(matches!(engine(&chain), Engine::InMemory));
        // Nor does a group-by after a join: the join decides its size.
        let after_join = join(table(big), table(10))
            .group_by([col("k")])
            .agg([col("v").sum()]);
        let chain = join(after_join, table(10));
        assert!(matches!(engine(&chain), Engine::InMemory));
    }

    #[test]
    fn a_table_read_from_its_files_streams() -> Result<(), Box<dyn std::error::Error>> {
        let folder = tempfile::tempdir()?;
        let path = folder.path().join("t.parquet");
        let mut small = table(10).collect()?;
        ParquetWriter::new(std::fs::File::create(&path)?).finish(&mut small)?;
        let path = PlRefPath::new(path.to_str().ok_or("a path")?);
        let scanned = LazyFrame::scan_parquet(path, ScanArgsParquet::default())?;
        let chain = join(join(table(10), table(10)), scanned);
        assert!(matches!(engine(&chain), Engine::Streaming));
        Ok(())
    }
}
