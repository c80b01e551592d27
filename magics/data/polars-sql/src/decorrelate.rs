//! ferrolab: subqueries that refer to the outer query, decorrelated into joins
//! (PATCHES.md, 1).
//!
//! - `lhs OP (SELECT agg FROM … WHERE inner.k = outer.k AND …)`, an AND-ed
//!   WHERE condition: the subquery is grouped by its correlation keys (after a
//!   semi join with the outer query's keys, so only groups that can match are
//!   aggregated), left-joined to the outer rows, and the comparison filters.
//! - `[NOT] EXISTS (SELECT … WHERE inner.k = outer.k AND <any condition on inner
//!   and outer columns>)`: the outer values the subquery depends on are
//!   joined with its rows on the equalities, the other conditions filter, and
//!   the outer rows are kept (semi join) or dropped (anti join) by those values.
//!
//! Names resolve as in SQL: an unqualified column is the subquery's own when
//! its FROM has it, else the outer query's; a qualified one belongs to the
//! subquery when the qualifier names one of its tables.
use std::ops::ControlFlow;

use polars_core::prelude::*;
use polars_lazy::prelude::*;
use polars_ops::frame::JoinCoalesce;
use polars_utils::aliases::PlHashSet;
use polars_utils::unique_column_name;
use sqlparser::ast::{
    BinaryOperator as SQLBinaryOperator, Expr as SQLExpr, FunctionArguments, GroupByExpr, Ident,
    Query, Select, SelectItem, SetExpr, WildcardAdditionalOptions, visit_expressions,
    visit_expressions_mut,
};

use crate::SQLContext;
use crate::context::get_table_name;
use crate::sql_expr::parse_sql_expr;
use crate::subquery::MintermIter;

/// Where a column named inside a subquery comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Inner,
    Outer,
}

/// The subquery's own tables and columns, and the outer query's columns.
struct Scope {
    inner_names: PlHashSet<String>,
    inner_schema: SchemaRef,
    outer_schema: SchemaRef,
}

/// A subquery's WHERE, split by what each AND-ed condition refers to.
#[derive(Default)]
struct Split {
    /// `inner = outer` equalities: the outer side, then the inner side.
    outer_keys: Vec<SQLExpr>,
    inner_keys: Vec<SQLExpr>,
    /// Conditions on the subquery's own columns only.
    local: Vec<SQLExpr>,
    /// Other conditions that name outer columns.
    mixed: Vec<SQLExpr>,
}

impl Scope {
    fn side(&self, expr: &SQLExpr) -> Option<Side> {
        match expr {
            SQLExpr::Identifier(ident) => {
                if self.inner_schema.contains(ident.value.as_str()) {
                    Some(Side::Inner)
                } else if self.outer_schema.contains(ident.value.as_str()) {
                    Some(Side::Outer)
                } else {
                    None
                }
            },
            SQLExpr::CompoundIdentifier(parts) => {
                let (last, init) = parts.split_last()?;
                let qualifier = init.last()?;
                if self.inner_names.contains(qualifier.value.as_str()) {
                    Some(Side::Inner)
                } else if self.outer_schema.contains(last.value.as_str()) {
                    Some(Side::Outer)
                } else {
                    None
                }
            },
            _ => None,
        }
    }

    /// The column references in `expr` that belong to the outer query.
    fn outer_refs(&self, expr: &SQLExpr) -> Vec<SQLExpr> {
        let mut refs = Vec::new();
        let _ = visit_expressions(expr, |e| {
            if self.side(e) == Some(Side::Outer) && !refs.contains(e) {
                refs.push(e.clone());
            }
            ControlFlow::<()>::Continue(())
        });
        refs
    }

    fn split(&self, selection: &SQLExpr) -> Split {
        let mut split = Split::default();
        for conjunct in MintermIter::new(selection) {
            if let SQLExpr::BinaryOp {
                left,
                op: SQLBinaryOperator::Eq,
                right,
            } = conjunct
            {
                match (self.side(left), self.side(right)) {
                    (Some(Side::Outer), Some(Side::Inner)) => {
                        split.outer_keys.push((**left).clone());
                        split.inner_keys.push((**right).clone());
                        continue;
                    },
                    (Some(Side::Inner), Some(Side::Outer)) => {
                        split.outer_keys.push((**right).clone());
                        split.inner_keys.push((**left).clone());
                        continue;
                    },
                    _ => {},
                }
            }
            if self.outer_refs(conjunct).is_empty() {
                split.local.push(conjunct.clone());
            } else {
                split.mixed.push(conjunct.clone());
            }
        }
        split
    }
}

/// The SELECT of a subquery whose rows are just its FROM filtered by its WHERE
/// (no CTE, grouping, HAVING, DISTINCT, LIMIT or set operation), with a WHERE.
fn filtered_select(subquery: &Query) -> Option<&Select> {
    if subquery.with.is_some()
        || subquery.limit_clause.is_some()
        || subquery.fetch.is_some()
        || !subquery.pipe_operators.is_empty()
    {
        return None;
    }
    let SetExpr::Select(select) = subquery.body.as_ref() else {
        return None;
    };
    let no_group_by = matches!(
        &select.group_by,
        GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty()
    );
    let plain = no_group_by
        && select.having.is_none()
        && select.qualify.is_none()
        && select.top.is_none()
        && select.into.is_none()
        && select.prewhere.is_none()
        && select.lateral_views.is_empty()
        && select.connect_by.is_empty()
        && !select.from.is_empty()
        && select.selection.is_some();
    plain.then_some(select.as_ref())
}

/// The subquery with its projection replaced by `*` and its WHERE by `selection`.
fn rows_query(subquery: &Query, selection: Option<SQLExpr>) -> Query {
    let mut query = subquery.clone();
    query.order_by = None;
    if let SetExpr::Select(select) = query.body.as_mut() {
        select.projection = vec![SelectItem::Wildcard(
            WildcardAdditionalOptions::default(),
        )];
        select.selection = selection;
        select.distinct = None;
    }
    query
}

fn and_all(conditions: Vec<SQLExpr>) -> Option<SQLExpr> {
    conditions.into_iter().reduce(|left, right| SQLExpr::BinaryOp {
        left: Box::new(left),
        op: SQLBinaryOperator::And,
        right: Box::new(right),
    })
}

fn unnested(mut expr: &SQLExpr) -> &SQLExpr {
    while let SQLExpr::Nested(inner) = expr {
        expr = inner;
    }
    expr
}

/// Whether `expr` is `COUNT(…)`, whose value over no rows is 0 rather than NULL.
fn is_count(expr: &SQLExpr) -> bool {
    matches!(unnested(expr), SQLExpr::Function(f)
        if f.name.to_string().eq_ignore_ascii_case("count")
            && !matches!(f.args, FunctionArguments::None))
}

fn mentions_count(expr: &SQLExpr) -> bool {
    visit_expressions(expr, |e| {
        if is_count(e) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

fn drop_columns(lf: LazyFrame, names: Vec<PlSmallStr>) -> LazyFrame {
    lf.drop(Selector::ByName {
        names: names.into(),
        strict: false,
    })
}

/// A correlated subquery's rows (its FROM with its own conditions), parsed in
/// its own scope, and its correlation keys: each inner key under a new name, and
/// the matching outer expressions.
struct Correlated {
    ctx: SQLContext,
    rows: LazyFrame,
    rows_schema: SchemaRef,
    key_names: Vec<PlSmallStr>,
    inner_keys: Vec<Expr>,
    outer_keys: Vec<Expr>,
}

impl SQLContext {
    fn correlated_rows(
        &mut self,
        subquery: &Query,
        split: &Split,
        outer_schema: &Schema,
    ) -> PolarsResult<Correlated> {
        let mut ctx = self.isolated();
        let mut rows =
            ctx.execute_query_no_ctes(&rows_query(subquery, and_all(split.local.clone())))?;
        let rows_schema = ctx.get_frame_schema(&mut rows)?;
        let key_names: Vec<PlSmallStr> =
            split.inner_keys.iter().map(|_| unique_column_name()).collect();
        let inner_keys = split
            .inner_keys
            .iter()
            .zip(&key_names)
            .map(|(k, name)| Ok(parse_sql_expr(k, &mut ctx, Some(&rows_schema))?.alias(name.clone())))
            .collect::<PolarsResult<Vec<_>>>()?;
        let outer_keys = split
            .outer_keys
            .iter()
            .map(|k| parse_sql_expr(k, self, Some(outer_schema)))
            .collect::<PolarsResult<Vec<_>>>()?;
        Ok(Correlated {
            ctx,
            rows,
            rows_schema,
            key_names,
            inner_keys,
            outer_keys,
        })
    }

    /// The subquery's table names (or aliases) and the columns of its FROM.
    fn subquery_scope(
        &mut self,
        subquery: &Query,
        select: &Select,
        outer_schema: &Schema,
    ) -> PolarsResult<Option<Scope>> {
        let Some(inner_names) = select
            .from
            .iter()
            .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
            .map(get_table_name)
            .collect::<Option<PlHashSet<_>>>()
        else {
            return Ok(None);
        };
        let mut ctx = self.isolated();
        let mut all_rows = ctx.execute_query_no_ctes(&rows_query(subquery, None))?;
        let inner_schema = ctx.get_frame_schema(&mut all_rows)?;
        Ok(Some(Scope {
            inner_names,
            inner_schema,
            outer_schema: Arc::new(outer_schema.clone()),
        }))
    }

    /// `lhs OP (SELECT one value FROM … WHERE <correlated>)` as one AND-ed WHERE
    /// condition, decorrelated; `None` when the subquery does not refer to the
    /// outer query (the scalar-subquery path evaluates it once) or has another
    /// shape.
    pub(crate) fn try_decorrelate_scalar_comparison(
        &mut self,
        lf: &LazyFrame,
        conjunct: &SQLExpr,
        outer_schema: &Schema,
    ) -> PolarsResult<Option<LazyFrame>> {
        let SQLExpr::BinaryOp { left, op, right } = conjunct else {
            return Ok(None);
        };
        use SQLBinaryOperator::*;
        if !matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq) {
            return Ok(None);
        }
        let (subquery, subquery_on_left) = match (unnested(left), unnested(right)) {
            (_, SQLExpr::Subquery(q)) => (q, false),
            (SQLExpr::Subquery(q), _) => (q, true),
            _ => return Ok(None),
        };
        let Some(select) = filtered_select(subquery) else {
            return Ok(None);
        };
        let [SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. }] =
            select.projection.as_slice()
        else {
            return Ok(None);
        };
        let Some(scope) = self.subquery_scope(subquery, select, outer_schema)? else {
            return Ok(None);
        };
        let split = scope.split(select.selection.as_ref().expect("filtered_select"));
        if split.outer_keys.is_empty() && split.mixed.is_empty() {
            return Ok(None);
        }
        if let Some(mixed) = split.mixed.first() {
            polars_bail!(
                SQLInterface:
                "a scalar subquery may refer to the outer query only through equalities \
                 (`inner.column = outer.column`); `{mixed}` is not supported"
            );
        }
        if !scope.outer_refs(value).is_empty() {
            polars_bail!(
                SQLInterface:
                "a scalar subquery whose value uses the outer query's columns (`{value}`) is not supported"
            );
        }
        let count = is_count(value);
        if !count && mentions_count(value) {
            polars_bail!(
                SQLInterface:
                "a correlated scalar subquery with COUNT inside an expression (`{value}`) is not \
                 supported; compare with the COUNT alone"
            );
        }

        // The subquery's rows, its keys and its value, parsed in its own scope.
        let Correlated {
            mut ctx,
            rows,
            rows_schema,
            key_names,
            inner_keys,
            outer_keys,
        } = self.correlated_rows(subquery, &split, outer_schema)?;
        let value_name = unique_column_name();
        let value_sql = value;
        let value = parse_sql_expr(value, &mut ctx, Some(&rows_schema))?;
        // Grouped by the keys, a value that is not an aggregate would be a list
        // per outer row, where SQL wants one value or an error.
        if !polars_plan::utils::has_expr(&value, |e| matches!(e, Expr::Agg(_) | Expr::Len)) {
            polars_bail!(
                SQLInterface:
                "a scalar subquery that uses the outer query must aggregate its rows (MIN, MAX, \
                 SUM, AVG, COUNT, …); `{value_sql}` does not, which is not supported"
            );
        }
        let value = value.alias(value_name.clone());
        let key_cols: Vec<Expr> = key_names.iter().map(|n| col(n.clone())).collect();

        // Only the groups some outer row can meet are aggregated.
        let wanted = lf
            .clone()
            .select(
                outer_keys
                    .iter()
                    .zip(&key_names)
                    .map(|(k, n)| k.clone().alias(n.clone()))
                    .collect::<Vec<_>>(),
            )
            .unique(None, UniqueKeepStrategy::Any);
        let groups = rows
            .with_columns(inner_keys)
            .join_builder()
            .with(wanted)
            .left_on(key_cols.clone())
            .right_on(key_cols.clone())
            .how(JoinType::Semi)
            .finish()
            .group_by(key_cols.clone())
            .agg([value]);
        let mut joined = lf
            .clone()
            .join_builder()
            .with(groups)
            .left_on(outer_keys)
            .right_on(key_cols)
            .how(JoinType::Left)
            .coalesce(JoinCoalesce::KeepColumns)
            .finish();
        if count {
            joined = joined.with_column(col(value_name.clone()).fill_null(lit(0)));
        }
        let value_ident = SQLExpr::Identifier(Ident::new(value_name.as_str()));
        let comparison = if subquery_on_left {
            SQLExpr::BinaryOp {
                left: Box::new(value_ident),
                op: op.clone(),
                right: right.clone(),
            }
        } else {
            SQLExpr::BinaryOp {
                left: left.clone(),
                op: op.clone(),
                right: Box::new(value_ident),
            }
        };
        let joined_schema = self.get_frame_schema(&mut joined)?;
        let filter = parse_sql_expr(&comparison, self, Some(&joined_schema))?;
        let mut added = key_names;
        added.push(value_name);
        Ok(Some(drop_columns(joined.filter(filter), added)))
    }

    /// `x IN (SELECT one column …)` whose subquery does not use the outer query,
    /// as a semi join with the subquery's rows; `None` when the subquery fails on
    /// its own (it may refer to the outer query: the generic path says why) or
    /// its column's type is not `x`'s.
    pub(crate) fn try_in_as_semi_join(
        &mut self,
        lf: &LazyFrame,
        lhs: &SQLExpr,
        subquery: &Query,
        outer_schema: &Schema,
    ) -> PolarsResult<Option<LazyFrame>> {
        if subquery.with.is_some() {
            return Ok(None);
        }
        let Ok(mut values) = self.execute_isolated(|ctx| ctx.execute_query_no_ctes(subquery)) else {
            return Ok(None);
        };
        let Ok(values_schema) = values.collect_schema() else {
            return Ok(None);
        };
        let [(name, dtype)] = values_schema.iter().collect::<Vec<_>>()[..] else {
            return Ok(None);
        };
        let left = parse_sql_expr(lhs, self, Some(outer_schema))?;
        if polars_plan::utils::has_expr(&left, |e| matches!(e, Expr::SubPlan(..))) {
            return Ok(None);
        }
        if !left.to_field(outer_schema).is_ok_and(|f| &f.dtype == dtype) {
            return Ok(None);
        }
        let key = unique_column_name();
        let values = values.select([col(name.clone()).alias(key.clone())]);
        Ok(Some(
            lf.clone()
                .join_builder()
                .with(values)
                .left_on([left])
                .right_on([col(key)])
                .how(JoinType::Semi)
                .finish(),
        ))
    }

    /// `[NOT] EXISTS (SELECT … WHERE <correlated>)` whose correlation is more
    /// than equalities, or whose FROM has several tables; `None` when it does not
    /// refer to the outer query or has another shape.
    pub(crate) fn try_decorrelate_exists(
        &mut self,
        lf: &LazyFrame,
        subquery: &Query,
        negated: bool,
        outer_schema: &Schema,
    ) -> PolarsResult<Option<LazyFrame>> {
        let Some(select) = filtered_select(subquery) else {
            return Ok(None);
        };
        let Some(scope) = self.subquery_scope(subquery, select, outer_schema)? else {
            return Ok(None);
        };
        let split = scope.split(select.selection.as_ref().expect("filtered_select"));
        if split.outer_keys.is_empty() && split.mixed.is_empty() {
            return Ok(None);
        }
        let how = if negated {
            JoinType::Anti
        } else {
            JoinType::Semi
        };

        // The outer columns the mixed conditions read, each under a new name.
        let mut outer_refs: Vec<(SQLExpr, PlSmallStr)> = Vec::new();
        let mut mixed = and_all(split.mixed.clone());
        if let Some(mixed) = mixed.as_mut() {
            let _ = visit_expressions_mut(mixed, |e| {
                if scope.side(e) == Some(Side::Outer) {
                    let name = match outer_refs.iter().find(|(r, _)| r == e) {
                        Some((_, name)) => name.clone(),
                        None => {
                            let name = unique_column_name();
                            outer_refs.push((e.clone(), name.clone()));
                            name
                        },
                    };
                    *e = SQLExpr::Identifier(Ident::new(name.as_str()));
                }
                ControlFlow::<()>::Continue(())
            });
        }

        let Correlated {
            mut ctx,
            rows,
            key_names,
            inner_keys,
            outer_keys: mut outer_values,
            ..
        } = self.correlated_rows(subquery, &split, outer_schema)?;
        let key_cols: Vec<Expr> = key_names.iter().map(|n| col(n.clone())).collect();

        let Some(mixed) = mixed else {
            // Equalities only: a semi or anti join on them.
            let rows = rows.select(inner_keys);
            return Ok(Some(
                lf.clone()
                    .join_builder()
                    .with(rows)
                    .left_on(outer_values)
                    .right_on(key_cols)
                    .how(how)
                    .finish(),
            ));
        };

        // The distinct outer values the subquery depends on, the ones for which
        // some subquery row passes, then the outer rows joined on those values.
        let mut value_names = key_names.clone();
        for (outer_ref, name) in &outer_refs {
            outer_values.push(parse_sql_expr(outer_ref, self, Some(outer_schema))?);
            value_names.push(name.clone());
        }
        let probe = lf
            .clone()
            .select(
                outer_values
                    .iter()
                    .zip(&value_names)
                    .map(|(v, n)| v.clone().alias(n.clone()))
                    .collect::<Vec<_>>(),
            )
            .unique(None, UniqueKeepStrategy::Any);
        let mut candidates = if key_cols.is_empty() {
            probe.cross_join(rows, None)
        } else {
            probe
                .join_builder()
                .with(rows.with_columns(inner_keys))
                .left_on(key_cols.clone())
                .right_on(key_cols)
                .how(JoinType::Inner)
                .finish()
        };
        let candidates_schema = ctx.get_frame_schema(&mut candidates)?;
        let condition = parse_sql_expr(&mixed, &mut ctx, Some(&candidates_schema))?;
        let value_cols: Vec<Expr> = value_names.iter().map(|n| col(n.clone())).collect();
        let matched = candidates
            .filter(condition)
            .select(value_cols.clone())
            .unique(None, UniqueKeepStrategy::Any);
        Ok(Some(
            lf.clone()
                .join_builder()
                .with(matched)
                .left_on(outer_values)
                .right_on(value_cols)
                .how(how)
                .finish(),
        ))
    }
}
