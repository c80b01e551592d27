//! MLflow's run filter and ordering: `metrics.acc > 0.9 and params.lr = '0.01' and
//! tags.team = 'nlp' and attributes.status != 'FAILED'`, with `=`, `!=`, `<`, `<=`,
//! `>`, `>=`, `LIKE`, `ILIKE`, `IN`, `NOT IN`; `order_by` such as
//! `metrics.acc DESC`. Errors name the position where parsing stopped.

use crate::error::TrackingError;
use crate::model::{KeyValue, Run};
use std::cmp::Ordering;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
    List(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub entity: Entity,
    pub key: String,
    pub op: String,
    pub value: Literal,
}

/// `at` is a byte offset; people count characters, so the message does too.
fn err(filter: &str, at: usize, what: &str) -> String {
    let at = filter.get(..at).map_or(at, |head| head.chars().count());
    format!("Invalid filter '{filter}' at position {at}: {what}")
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn skip(&mut self) {
        while self.text[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.text[self.pos..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
        }
    }
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }
    fn word(&mut self) -> Option<String> {
        self.skip();
        let r = self.rest();
        let len = r
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':')))
            .unwrap_or(r.len());
        if len == 0 {
            return None;
        }
        self.pos += len;
        Some(r[..len].to_string())
    }
    fn quoted(&mut self, quote: char) -> Result<String, String> {
        let start = self.pos;
        self.pos += 1;
        let r = self.rest();
        match r.find(quote) {
            Some(end) => {
                self.pos += end + 1;
                Ok(r[..end].to_string())
            }
            None => Err(err(self.text, start, "this quote is never closed")),
        }
    }
}

fn entity_of(name: &str) -> Option<Entity> {
    match name.to_ascii_lowercase().as_str() {
        "metric" | "metrics" => Some(Entity::Metric),
        "param" | "params" | "parameter" | "parameters" => Some(Entity::Param),
        "tag" | "tags" => Some(Entity::Tag),
        "attribute" | "attributes" | "attr" | "run" => Some(Entity::Attribute),
        _ => None,
    }
}

const ATTRIBUTES: &[&str] = &[
    "run_id",
    "run_name",
    "user_id",
    "status",
    "start_time",
    "end_time",
    "lifecycle_stage",
];

fn attribute_name(key: &str) -> &str {
    match key {
        "run_uuid" | "id" => "run_id",
        "name" => "run_name",
        "created" | "Created" => "start_time",
        other => other,
    }
}

/// An identifier: `entity.key`, `entity.\`key with spaces\``, `entity."key"`, or a
/// bare attribute name.
fn identifier(lx: &mut Lexer<'_>, filter: &str) -> Result<(Entity, String), String> {
    lx.skip();
    let start = lx.pos;
    let Some(word) = lx.word() else {
        return Err(err(
            filter,
            start,
            "expected metrics.KEY, params.KEY, tags.KEY or attributes.KEY",
        ));
    };
    let (entity, key) = match word.split_once('.') {
        Some((e, k)) => match entity_of(e) {
            Some(entity) => {
                let key = if k.is_empty() {
                    match lx.rest().chars().next() {
                        Some(q @ ('`' | '"')) => lx.quoted(q)?,
                        _ => return Err(err(filter, lx.pos, "expected a key after the dot")),
                    }
                } else {
                    k.to_string()
                };
                (entity, key)
            }
            None => {
                return Err(err(
                    filter,
                    start,
                    &format!("'{e}' is not one of metrics, params, tags, attributes"),
                ))
            }
        },
        None => (Entity::Attribute, word.clone()),
    };
    if entity == Entity::Attribute {
        let name = attribute_name(&key).to_string();
        if !ATTRIBUTES.contains(&name.as_str()) {
            return Err(err(
                filter,
                start,
                &format!(
                    "unknown attribute '{key}' (known: {})",
                    ATTRIBUTES.join(", ")
                ),
            ));
        }
        return Ok((entity, name));
    }
    Ok((entity, key))
}

fn operator(lx: &mut Lexer<'_>, filter: &str) -> Result<String, String> {
    lx.skip();
    let start = lx.pos;
    for op in ["!=", ">=", "<=", "=", ">", "<"] {
        if lx.rest().starts_with(op) {
            lx.pos += op.len();
            return Ok(op.to_string());
        }
    }
    let word = lx.word().unwrap_or_default().to_ascii_uppercase();
    match word.as_str() {
        "LIKE" | "ILIKE" | "IN" => Ok(word),
        "NOT" => {
            let next = lx.word().unwrap_or_default().to_ascii_uppercase();
            if next == "IN" {
                Ok("NOT IN".into())
            } else {
                Err(err(filter, start, "expected NOT IN"))
            }
        }
        _ => Err(err(
            filter,
            start,
            "expected a comparison: =, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN",
        )),
    }
}

fn literal(lx: &mut Lexer<'_>, filter: &str) -> Result<Literal, String> {
    lx.skip();
    let start = lx.pos;
    match lx.rest().chars().next() {
        Some(q @ ('\'' | '"')) => Ok(Literal::Text(lx.quoted(q)?)),
        Some('(') => {
            lx.pos += 1;
            let mut items = Vec::new();
            loop {
                lx.skip();
                match lx.rest().chars().next() {
                    Some(q @ ('\'' | '"')) => items.push(lx.quoted(q)?),
                    _ => return Err(err(filter, lx.pos, "expected a quoted value in the list")),
                }
                lx.skip();
                match lx.rest().chars().next() {
                    Some(',') => lx.pos += 1,
                    Some(')') => {
                        lx.pos += 1;
                        break;
                    }
                    _ => return Err(err(filter, lx.pos, "expected ',' or ')'")),
                }
            }
            Ok(Literal::List(items))
        }
        _ => {
            let word = lx.word().unwrap_or_default();
            word.parse::<f64>().map(Literal::Number).map_err(|_| {
                err(
                    filter,
                    start,
                    "expected a number, a quoted string or a (list)",
                )
            })
        }
    }
}

/// Parses a whole filter; an empty one matches every run.
pub fn parse(filter: &str) -> Result<Vec<Clause>, String> {
    let mut lx = Lexer {
        text: filter,
        pos: 0,
    };
    let mut clauses = Vec::new();
    lx.skip();
    if lx.rest().is_empty() {
        return Ok(clauses);
    }
    loop {
        let (entity, key) = identifier(&mut lx, filter)?;
        let op_at = lx.pos;
        let op = operator(&mut lx, filter)?;
        let value = literal(&mut lx, filter)?;
        let allowed: &[&str] = match (&entity, &value) {
            (_, Literal::List(_)) => &["IN", "NOT IN"],
            (Entity::Metric, _) => &["=", "!=", "<", "<=", ">", ">="],
            (Entity::Attribute, Literal::Number(_)) => &["=", "!=", "<", "<=", ">", ">="],
            _ => &["=", "!=", "LIKE", "ILIKE"],
        };
        if !allowed.contains(&op.as_str()) {
            return Err(err(
                filter,
                op_at,
                &format!("'{op}' does not apply here (use {})", allowed.join(", ")),
            ));
        }
        if entity == Entity::Metric && !matches!(value, Literal::Number(_)) {
            return Err(err(filter, op_at, "metrics compare with numbers"));
        }
        clauses.push(Clause {
            entity,
            key,
            op,
            value,
        });
        lx.skip();
        if lx.rest().is_empty() {
            return Ok(clauses);
        }
        let at = lx.pos;
        match lx.word() {
            Some(w) if w.eq_ignore_ascii_case("and") => {}
            _ => {
                return Err(err(
                    filter,
                    at,
                    "expected AND (MLflow filters join clauses with AND only)",
                ))
            }
        }
    }
}

/// SQL `LIKE` with `%` and `_`, in time linear in the text for each `%`-free piece
/// of the pattern: the pieces between `%`s are matched leftmost-first in order,
/// which is exact for `LIKE` (a later piece can only gain from an earlier match),
/// so no pattern backtracks — `'%%%…%!'` costs what `'%!'` costs.
pub(crate) fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let pieces: Vec<&[char]> = p.split(|&c| c == '%').collect();
    let fits = |at: usize, piece: &[char]| {
        t.len() >= at + piece.len()
            && piece
                .iter()
                .zip(&t[at..])
                .all(|(&pc, &tc)| pc == '_' || pc == tc)
    };
    let Some((first, rest)) = pieces.split_first() else {
        return t.is_empty();
    };
    let Some((last, middle)) = rest.split_last() else {
        // No `%`: the whole text is one piece.
        return t.len() == first.len() && fits(0, first);
    };
    if !fits(0, first) {
        return false;
    }
    let mut at = first.len();
    for piece in middle.iter().filter(|piece| !piece.is_empty()) {
        match (at..=t.len().saturating_sub(piece.len())).find(|&i| fits(i, piece)) {
            Some(i) => at = i + piece.len(),
            None => return false,
        }
    }
    t.len() >= at + last.len() && fits(t.len() - last.len(), last)
}

fn compare_text(text: &str, op: &str, value: &Literal) -> bool {
    match (op, value) {
        ("=", Literal::Text(v)) => text == v,
        ("!=", Literal::Text(v)) => text != v,
        ("LIKE", Literal::Text(v)) => like(text, v),
        ("ILIKE", Literal::Text(v)) => like(&text.to_lowercase(), &v.to_lowercase()),
        ("IN", Literal::List(items)) => items.iter().any(|i| i == text),
        ("NOT IN", Literal::List(items)) => !items.iter().any(|i| i == text),
        ("=", Literal::Number(n)) => text.parse::<f64>().is_ok_and(|t| t == *n),
        ("!=", Literal::Number(n)) => text.parse::<f64>().ok() != Some(*n),
        _ => false,
    }
}

fn compare_number(x: f64, op: &str, n: f64) -> bool {
    match op {
        "=" => x == n,
        "!=" => x != n,
        "<" => x < n,
        "<=" => x <= n,
        ">" => x > n,
        ">=" => x >= n,
        _ => false,
    }
}

pub fn matches(run: &RunRecord, clauses: &[Clause]) -> bool {
    clauses.iter().all(|c| match c.entity {
        Entity::Metric => match (run.metrics.get(&c.key), &c.value) {
            (Some(x), Literal::Number(n)) => compare_number(*x, &c.op, *n),
            _ => false,
        },
        Entity::Param => run
            .params
            .get(&c.key)
            .is_some_and(|v| compare_text(v, &c.op, &c.value)),
        Entity::Tag => run
            .tags
            .get(&c.key)
            .is_some_and(|v| compare_text(v, &c.op, &c.value)),
        Entity::Attribute => match (run.attributes.get(&c.key), &c.value) {
            (Some(AttrValue::Number(x)), Literal::Number(n)) => compare_number(*x, &c.op, *n),
            (Some(AttrValue::Text(t)), v) => compare_text(t, &c.op, v),
            _ => false,
        },
    })
}

/// One `order_by` term.
#[derive(Debug, Clone)]
pub struct Order {
    entity: Entity,
    key: String,
    descending: bool,
}

pub fn parse_order(term: &str) -> Result<Order, String> {
    let mut lx = Lexer { text: term, pos: 0 };
    let (entity, key) = identifier(&mut lx, term)
        .map_err(|e| e.replace("Invalid filter", "Invalid order_by clause"))?;
    lx.skip();
    let at = lx.pos;
    let descending = match lx.word().map(|w| w.to_ascii_uppercase()).as_deref() {
        None => false,
        Some("ASC") => false,
        Some("DESC") => true,
        Some(_) => {
            return Err(format!(
                "Invalid order_by clause '{term}' at position {at}: expected ASC or DESC"
            ))
        }
    };
    lx.skip();
    if !lx.rest().is_empty() {
        return Err(format!(
            "Invalid order_by clause '{term}' at position {}: unexpected text",
            lx.pos
        ));
    }
    Ok(Order {
        entity,
        key,
        descending,
    })
}

#[derive(PartialEq, PartialOrd)]
enum Key<'a> {
    Missing,
    Number(f64),
    Text(&'a str),
}

fn key_of<'a>(run: &'a RunRecord, o: &Order) -> Key<'a> {
    match o.entity {
        Entity::Metric => run
            .metrics
            .get(&o.key)
            .filter(|v| !v.is_nan())
            .map_or(Key::Missing, |v| Key::Number(*v)),
        Entity::Param => run
            .params
            .get(&o.key)
            .map_or(Key::Missing, |v| Key::Text(v)),
        Entity::Tag => run.tags.get(&o.key).map_or(Key::Missing, |v| Key::Text(v)),
        Entity::Attribute => match run.attributes.get(&o.key) {
            Some(AttrValue::Number(n)) => Key::Number(*n),
            Some(AttrValue::Text(t)) => Key::Text(t),
            _ => Key::Missing,
        },
    }
}

/// Orders runs by the terms, then (as MLflow) by start time descending and run id;
/// runs without the value come last.
pub fn sort<R>(runs: &mut [R], record: impl Fn(&R) -> &RunRecord, orders: &[Order]) {
    let start = Order {
        entity: Entity::Attribute,
        key: "start_time".into(),
        descending: true,
    };
    let id = Order {
        entity: Entity::Attribute,
        key: "run_id".into(),
        descending: false,
    };
    runs.sort_by(|a, b| {
        for o in orders.iter().chain([&start, &id]) {
            let (x, y) = (key_of(record(a), o), key_of(record(b), o));
            let ord = match (&x, &y) {
                (Key::Missing, Key::Missing) => Ordering::Equal,
                (Key::Missing, _) => Ordering::Greater,
                (_, Key::Missing) => Ordering::Less,
                _ => {
                    let o2 = x.partial_cmp(&y).unwrap_or(Ordering::Equal);
                    if o.descending {
                        o2.reverse()
                    } else {
                        o2
                    }
                }
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}

/// A filter of `name = 'x'`, `name LIKE 'x%'`, `name ILIKE`, `run_id = 'x'`,
/// `source = 'x'` and `tags.\`KEY\` != 'x'` clauses joined by AND: what the
/// registry's search endpoints take. A missing tag reads as ''.
pub(crate) fn registry_filter(
    filter: &str,
    allowed: &[&str],
) -> Result<Vec<(String, String, String)>, TrackingError> {
    let mut clauses = Vec::new();
    let trimmed = filter.trim();
    if trimmed.is_empty() {
        return Ok(clauses);
    }
    let mut rest = trimmed;
    loop {
        let (clause, tail) = split_and(rest);
        let clause = clause.trim();
        let mut in_tick = false;
        let end = clause
            .char_indices()
            .find(|&(_, c)| {
                if c == '`' {
                    in_tick = !in_tick;
                }
                !in_tick && (c.is_whitespace() || c == '=' || c == '!')
            })
            .map(|(i, _)| i)
            .ok_or_else(|| bad_filter(filter, clause))?;
        let raw = &clause[..end];
        let key = match raw.split_once('.') {
            Some(("tag" | "tags", tag)) if allowed.contains(&"tags") => {
                format!("tag:{}", tag.trim_matches('`'))
            }
            _ => raw.trim_matches('`').to_string(),
        };
        if !key.starts_with("tag:") && !allowed.contains(&key.as_str()) {
            return Err(TrackingError::invalid(format!(
                "invalid filter '{filter}': '{key}' cannot be searched; use {} (tags as tags.`KEY`)",
                allowed.join(", ")
            )));
        }
        let after = clause[end..].trim();
        let (op, value) = if let Some(v) = after.strip_prefix("!=") {
            ("!=", v)
        } else if let Some(v) = after.strip_prefix('=') {
            ("=", v)
        } else if let Some(v) = strip_word(after, "ILIKE") {
            ("ILIKE", v)
        } else if let Some(v) = strip_word(after, "LIKE") {
            ("LIKE", v)
        } else {
            return Err(bad_filter(filter, clause));
        };
        let value = value.trim();
        let unquoted = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .ok_or_else(|| {
                TrackingError::invalid(format!(
                    "invalid filter '{filter}': the value in '{clause}' must be quoted"
                ))
            })?;
        clauses.push((key, op.to_string(), unquoted.to_string()));
        match tail {
            Some(t) => rest = t,
            None => break,
        }
    }
    Ok(clauses)
}

/// Splits at the first ` AND ` outside quotes (any case), by characters.
fn split_and(s: &str) -> (&str, Option<&str>) {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if s
                .get(i..i + 5)
                .is_some_and(|w| w.eq_ignore_ascii_case(" AND ")) =>
            {
                return (&s[..i], Some(&s[i + 5..]));
            }
            None => {}
        }
    }
    (s, None)
}

/// `s` without a leading `word` in any case, if it starts with it.
fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    head.eq_ignore_ascii_case(word).then(|| &s[word.len()..])
}

fn bad_filter(filter: &str, clause: &str) -> TrackingError {
    TrackingError::invalid(format!(
        "invalid filter '{filter}': cannot read '{clause}'; write KEY = 'VALUE', KEY != 'VALUE' or KEY LIKE 'PATTERN'"
    ))
}

/// A model's name, or one of its tags ('' when missing), for a filter key.
pub(crate) fn field(key: &str, name: &str, tags: &[KeyValue]) -> String {
    match key.strip_prefix("tag:") {
        Some(tag) => tags
            .iter()
            .find(|t| t.key == tag)
            .map(|t| t.value.clone())
            .unwrap_or_default(),
        None => name.to_string(),
    }
}

pub(crate) fn filter_matches(
    clauses: &[(String, String, String)],
    field: impl Fn(&str) -> String,
) -> bool {
    clauses.iter().all(|(key, op, value)| {
        let text = field(key);
        match op.as_str() {
            "=" => &text == value,
            "!=" => &text != value,
            "LIKE" => like(&text, value),
            _ => like(&text.to_lowercase(), &value.to_lowercase()),
        }
    })
}

/// A run attribute's value, as filters and orders compare it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Text(String),
    Number(f64),
    Null,
}

impl RunRecord {
    /// The record of a run, as filters and orders read it.
    pub fn from_run(run: &Run) -> RunRecord {
        let info = &run.info;
        let text = |v: &str| AttrValue::Text(v.to_string());
        let pairs = |list: &[KeyValue]| -> BTreeMap<String, String> {
            list.iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect()
        };
        RunRecord {
            run_id: info.run_id.clone(),
            attributes: BTreeMap::from([
                ("run_id".to_string(), text(&info.run_id)),
                ("run_name".to_string(), text(&info.run_name)),
                ("user_id".to_string(), text(&info.user_id)),
                ("status".to_string(), text(&info.status)),
                (
                    "start_time".to_string(),
                    AttrValue::Number(info.start_time as f64),
                ),
                (
                    "end_time".to_string(),
                    info.end_time
                        .map_or(AttrValue::Null, |t| AttrValue::Number(t as f64)),
                ),
                ("lifecycle_stage".to_string(), text(&info.lifecycle_stage)),
            ]),
            metrics: run
                .data
                .metrics
                .iter()
                .map(|m| (m.key.clone(), m.value))
                .collect(),
            params: pairs(&run.data.params),
            tags: pairs(&run.data.tags),
        }
    }
}

/// A run as search sees it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: String,
    pub attributes: BTreeMap<String, AttrValue>,
    pub metrics: BTreeMap<String, f64>,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run(acc: f64, lr: &str, status: &str) -> RunRecord {
        RunRecord {
            run_id: format!("{acc}{lr}"),
            attributes: BTreeMap::from([
                ("status".to_string(), AttrValue::Text(status.into())),
                ("start_time".to_string(), AttrValue::Number(acc * 10.0)),
                ("run_id".to_string(), AttrValue::Text(format!("{acc}{lr}"))),
            ]),
            metrics: BTreeMap::from([("acc".to_string(), acc)]),
            params: BTreeMap::from([("lr".to_string(), lr.to_string())]),
            tags: BTreeMap::from([("mlflow.runName".to_string(), format!("run-{lr}"))]),
        }
    }

    #[test]
    fn filters_select_as_mlflow() {
        let runs = [
            run(0.9, "0.01", "FINISHED"),
            run(0.5, "0.1", "FAILED"),
            run(0.95, "0.001", "FINISHED"),
        ];
        let pick = |f: &str| -> Vec<f64> {
            let c = parse(f).unwrap_or_else(|e| panic!("{e}"));
            runs.iter()
                .filter(|r| matches(r, &c))
                .map(|r| r.metrics["acc"])
                .collect()
        };
        assert_eq!(pick(""), [0.9, 0.5, 0.95]);
        assert_eq!(pick("metrics.acc > 0.8"), [0.9, 0.95]);
        assert_eq!(pick("metrics.acc >= 0.9 AND params.lr = '0.01'"), [0.9]);
        assert_eq!(
            pick("attributes.status != 'FAILED' and tags.`mlflow.runName` LIKE 'run-0.0%'"),
            [0.9, 0.95]
        );
        assert_eq!(pick("status IN ('FAILED', 'KILLED')"), [0.5]);
        assert_eq!(pick("params.lr ILIKE '%1'"), [0.9, 0.5, 0.95]);
        assert_eq!(pick("metrics.missing > 0"), Vec::<f64>::new());
    }

    #[test]
    fn bad_filters_name_the_position() {
        let e = parse("metrics.acc >> 1").unwrap_err();
        assert!(e.contains("position 13"), "{e}");
        let e = parse("metrics.acc > 1 or params.x = 'y'").unwrap_err();
        assert!(e.contains("position 16") && e.contains("AND"), "{e}");
        let e = parse("foo.bar = 'x'").unwrap_err();
        assert!(e.contains("'foo' is not one of"), "{e}");
        let e = parse("params.lr = 'unclosed").unwrap_err();
        assert!(e.contains("never closed"), "{e}");
        let e = parse("metrics.acc LIKE 'x'").unwrap_err();
        assert!(e.contains("does not apply"), "{e}");
    }

    #[test]
    fn order_by_terms_then_start_time() {
        let mut runs = vec![
            run(0.9, "a", "FINISHED"),
            run(0.5, "b", "FINISHED"),
            run(0.95, "c", "FINISHED"),
        ];
        sort(
            &mut runs,
            |r| r,
            &[parse_order("metrics.acc DESC").unwrap()],
        );
        assert_eq!(
            runs.iter().map(|r| r.metrics["acc"]).collect::<Vec<_>>(),
            [0.95, 0.9, 0.5]
        );
        sort(&mut runs, |r| r, &[parse_order("params.lr").unwrap()]);
        assert_eq!(runs[0].params["lr"], "a");
        sort(&mut runs, |r| r, &[]);
        assert_eq!(runs[0].metrics["acc"], 0.95);
        assert!(parse_order("metrics.acc SIDEWAYS").is_err());
    }

    /// Every parser, fed every filter below with a multi-byte character put at each
    /// position: an answer, never a panic (`filter=é` used to be a 500).
    #[test]
    fn filters_are_read_by_characters() {
        let filters = [
            "params.lr = 'a' AND tags.`x` LIKE 'b%'",
            "name ILIKE 'm%' and tags.k != 'v'",
            "metrics.acc > 0.5",
            "attributes.status IN ('A', 'B')",
        ];
        for f in filters {
            let chars: Vec<char> = f.chars().collect();
            for i in 0..=chars.len() {
                for ins in ["é", "日本", "🦀"] {
                    let mut s: String = chars[..i].iter().collect();
                    s.push_str(ins);
                    s.extend(&chars[i..]);
                    let _ = parse(&s);
                    let _ = parse_order(&s);
                    let _ = registry_filter(&s, &["name", "tags"]);
                    let _ = like(&s, &s);
                }
            }
        }
        let e = registry_filter("é", &["name"]).unwrap_err();
        assert!(e.to_string().contains("cannot read 'é'"), "{e}");
        let e = parse("params.lr = 'x' é").unwrap_err();
        assert!(e.contains("position 16"), "{e}");
    }

    #[test]
    fn like_is_sql_like() {
        for (text, pattern, want) in [
            ("abc", "abc", true),
            ("abc", "ab", false),
            ("abc", "a%", true),
            ("abc", "%c", true),
            ("abc", "%b%", true),
            ("abc", "a_c", true),
            ("abc", "a__c", false),
            ("", "%", true),
            ("", "", true),
            ("", "_", false),
            ("aXbXc", "a%b%c", true),
            ("aaa", "a%aa", true),
            ("aa", "a%aa", false),
            ("abcabd", "%ab_", true),
            ("abcab", "%ab_%d", false),
            ("run-0.05", "run-0.0%", true),
            ("日本語", "_本%", true),
        ] {
            assert_eq!(like(text, pattern), want, "{text:?} LIKE {pattern:?}");
        }
    }

    /// A pattern of many `%`s used to backtrack exponentially while the store was
    /// locked; it now costs a pass per piece. (Counted in steps, not timed: 400
    /// `%`s against 60 characters finish at all only if nothing backtracks.)
    #[test]
    fn like_does_not_backtrack() {
        let text = "a".repeat(60);
        let pattern = format!("{}!", "%".repeat(400));
        assert!(!like(&text, &pattern));
        let pattern = format!("{}a", "%a".repeat(200));
        assert!(!like(&text, &pattern));
        assert!(like(&text, &"%a".repeat(60)));
    }
}
