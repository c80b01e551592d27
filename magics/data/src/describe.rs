//! `%describe NAME`: summary statistics per column, the same numbers (and the
//! same layout) as `describe()` of Python polars: count, null_count, mean, std,
//! min, 25%, 50%, 75% (nearest-rank quantiles) and max. Numeric, boolean and
//! null columns give floats; the others give their values as text.

use crate::{frame_bundle, polars_error, table_arg, Catalog, LINE};
use ferrolab_magics::{Invocation, Magic, MagicContext, MagicError, MagicKind, MimeBundle};
use polars::prelude::*;
use std::sync::Arc;

/// The statistics, in the order of the rows of the summary.
pub const METRICS: [&str; 9] = [
    "count",
    "null_count",
    "mean",
    "std",
    "min",
    "25%",
    "50%",
    "75%",
    "max",
];
const QUANTILES: [f64; 3] = [0.25, 0.5, 0.75];

/// Whether min and max mean nothing for a type (as in Python polars).
fn skip_min_max(dtype: &DataType) -> bool {
    dtype.is_nested()
        || dtype.is_extension()
        || dtype.is_categorical()
        || dtype.is_enum()
        || dtype.is_null()
        || dtype.is_object()
        || dtype.is_unknown()
}

/// Whether a column's statistics are shown as floats rather than text.
fn numeric_result(dtype: &DataType) -> bool {
    dtype.is_numeric() || dtype.is_nested() || dtype.is_null() || dtype.is_bool()
}

/// The expressions of one column, one per metric, in [`METRICS`] order.
fn column_exprs(index: usize, name: &str, dtype: &DataType) -> Vec<Expr> {
    let numeric = dtype.is_numeric();
    let temporal = !numeric && dtype.is_temporal();
    let column = || col(name);
    let null = || lit(NULL);
    let mut exprs = vec![
        column().count(),
        column().null_count(),
        if numeric || temporal || dtype.is_bool() {
            column().mean()
        } else {
            null()
        },
        if numeric { column().std(1) } else { null() },
        if skip_min_max(dtype) {
            null()
        } else {
            column().min()
        },
    ];
    for q in QUANTILES {
        exprs.push(if numeric {
            column().quantile(lit(q), QuantileMethod::Nearest)
        } else if temporal {
            column()
                .to_physical()
                .quantile(lit(q), QuantileMethod::Nearest)
                .cast(dtype.clone())
        } else {
            null()
        });
    }
    exprs.push(if skip_min_max(dtype) {
        null()
    } else {
        column().max()
    });
    exprs
        .into_iter()
        .enumerate()
        .map(|(metric, expr)| expr.alias(format!("{index}:{metric}")))
        .collect()
}

fn as_float(value: &AnyValue<'_>) -> Option<f64> {
    match value {
        AnyValue::Null => None,
        AnyValue::Boolean(b) => Some(if *b { 1.0 } else { 0.0 }),
        v => v.extract::<f64>(),
    }
}

/// The summary of a table: a `statistic` column, then one column per column of
/// the table (f64 for numeric, boolean and null columns, text otherwise).
/// All statistics come from one aggregation over the table.
pub fn describe(mut frame: LazyFrame) -> PolarsResult<DataFrame> {
    let schema = frame.collect_schema()?;
    polars_ensure!(!schema.is_empty(), InvalidOperation: "the table has no columns");
    let exprs: Vec<Expr> = schema
        .iter()
        .enumerate()
        .flat_map(|(index, (name, dtype))| column_exprs(index, name, dtype))
        .collect();
    let stats = crate::run(frame.select(exprs))?;
    let mut columns = vec![Column::new("statistic".into(), METRICS.to_vec())];
    for (index, (name, dtype)) in schema.iter().enumerate() {
        let values = (0..METRICS.len()).map(|metric| {
            stats
                .column(&format!("{index}:{metric}"))
                .and_then(|c| c.get(0).map(|v| v.into_static()))
        });
        let values: Vec<AnyValue<'static>> = values.collect::<PolarsResult<_>>()?;
        columns.push(if numeric_result(dtype) {
            Column::new(
                name.clone(),
                values.iter().map(as_float).collect::<Vec<_>>(),
            )
        } else {
            Column::new(
                name.clone(),
                values
                    .iter()
                    .map(crate::render::value_text)
                    .collect::<Vec<_>>(),
            )
        });
    }
    DataFrame::new_infer_height(columns)
}

pub(crate) struct Describe(pub(crate) Arc<Catalog>);

impl Magic for Describe {
    fn name(&self) -> &str {
        "describe"
    }
    fn summary(&self) -> &str {
        "Summary statistics per column (as polars' describe())"
    }
    fn usage(&self) -> &str {
        "%describe NAME\n\n\
         Per column of table NAME: count, null_count, mean, std, min, 25%, 50%, 75%, max,\n\
         the same numbers as `describe()` in Python polars (nearest-rank quantiles,\n\
         sample standard deviation). One pass over the table."
    }
    fn kinds(&self) -> &[MagicKind] {
        LINE
    }
    fn run(
        &self,
        invocation: &Invocation,
        _cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let name = table_arg(invocation)?;
        let table = self.0.get(name)?;
        let summary =
            describe(table.frame).map_err(|e| polars_error(&format!("describing `{name}`"), e))?;
        Ok(Some(frame_bundle(&summary)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_polars_describe() {
        // The example of Python polars' own documentation.
        let df = df!(
            "float" => [1.0f64, 2.8, 3.0],
            "int" => [Some(40i64), None, Some(50)],
            "bool" => [true, false, true],
            "str" => ["zz", "xx", "yy"],
        )
        .expect("df");
        let summary = describe(df.lazy()).expect("describe");
        let float = |name: &str| -> Vec<Option<f64>> {
            summary
                .column(name)
                .expect("column")
                .f64()
                .expect("f64")
                .iter()
                .collect()
        };
        let close = |got: Vec<Option<f64>>, want: [Option<f64>; 9]| {
            for (g, w) in got.iter().zip(want) {
                match (g, w) {
                    (Some(g), Some(w)) => assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}"),
                    (g, w) => assert_eq!(*g, w, "{got:?} vs {want:?}"),
                }
            }
        };
        close(
            float("float"),
            [
                Some(3.0),
                Some(0.0),
                Some(2.266667),
                Some(1.101514),
                Some(1.0),
                Some(2.8),
                Some(2.8),
                Some(3.0),
                Some(3.0),
            ],
        );
        close(
            float("int"),
            [
                Some(2.0),
                Some(1.0),
                Some(45.0),
                Some(7.071068),
                Some(40.0),
                Some(40.0),
                Some(50.0),
                Some(50.0),
                Some(50.0),
            ],
        );
        close(
            float("bool"),
            [
                Some(3.0),
                Some(0.0),
                Some(0.666667),
                None,
                Some(0.0),
                None,
                None,
                None,
                Some(1.0),
            ],
        );
        let text: Vec<Option<&str>> = summary
            .column("str")
            .expect("str")
            .str()
            .expect("text")
            .iter()
            .collect();
        assert_eq!(
            text,
            [
                Some("3"),
                Some("0"),
                None,
                None,
                Some("xx"),
                None,
                None,
                None,
                Some("zz")
            ]
        );
    }

    #[test]
    fn a_table_without_columns_is_refused() {
        assert!(describe(DataFrame::empty().lazy()).is_err());
    }
}
