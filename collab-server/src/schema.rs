//! The document schema: workspace index, notebook and runtime documents.
//!
//! The root of each document type is created by one change built with a fixed
//! actor and timestamp, so every peer that creates it produces the very same
//! change (same hash): merging two copies is a no-op and `cells` can never exist
//! twice. Edits after that use a fresh actor. The full schema is in
//! `docs/collab.md`.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, Automerge, AutomergeError, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT,
};
use serde_json::{Map, Number, Value as Json};

pub const NOTEBOOK_SCHEMA: &str = "ferrolab.notebook";
pub const RUNTIME_SCHEMA: &str = "ferrolab.runtime";
pub const WORKSPACE_SCHEMA: &str = "ferrolab.workspace";
pub const SCHEMA_VERSION: i64 = 1;

/// The actor of the schema change; the same bytes in every implementation.
fn schema_actor() -> ActorId {
    ActorId::from(b"ferrolab-schema-v1".as_slice())
}

fn skeleton(schema: &str, maps: &[&str], extra: &[(&str, i64)]) -> Automerge {
    let mut doc = Automerge::new().with_actor(schema_actor());
    let result = doc.transact_with::<_, _, AutomergeError, _>(
        |_| CommitOptions::default().with_time(0),
        |tx| {
            tx.put(ROOT, "schema", schema)?;
            tx.put(ROOT, "schema_version", SCHEMA_VERSION)?;
            for key in maps {
                tx.put_object(ROOT, *key, ObjType::Map)?;
            }
            for (key, value) in extra {
                tx.put(ROOT, *key, *value)?;
            }
            Ok(())
        },
    );
    debug_assert!(result.is_ok(), "building a fixed skeleton cannot fail");
    doc.set_actor(ActorId::random());
    doc
}

/// A new, empty notebook document (nbformat 4.5).
pub fn notebook_skeleton() -> Automerge {
    skeleton(
        NOTEBOOK_SCHEMA,
        &["cells", "metadata"],
        &[("nbformat", 4), ("nbformat_minor", 5)],
    )
}

/// A new runtime document (outputs and execution state by cell id).
pub fn runtime_skeleton() -> Automerge {
    skeleton(RUNTIME_SCHEMA, &["cells"], &[])
}

/// A new workspace index document.
pub fn workspace_skeleton() -> Automerge {
    skeleton(WORKSPACE_SCHEMA, &["notebooks"], &[])
}

/// Makes sure `doc` has the root schema of `kind`; a no-op when it does.
pub fn ensure_schema(doc: &mut Automerge, kind: fn() -> Automerge) -> Result<(), AutomergeError> {
    let mut fresh = kind();
    doc.merge(&mut fresh)?;
    Ok(())
}

// ---------------------------------------------------------------- positions

const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn digit_value(c: u8) -> Option<usize> {
    DIGITS.iter().position(|d| *d == c)
}

/// A position string strictly between `before` and `after` (either may be
/// absent). Positions are base-62 fractions compared as plain strings; none ends
/// in `0`. Two peers inserting at the same place may pick the same string;
/// ties are ordered by cell id.
pub fn position_between(before: Option<&str>, after: Option<&str>) -> String {
    let a = before.unwrap_or("").as_bytes();
    let b = after.map(str::as_bytes);
    if let Some(b) = b {
        if a >= b {
            // Not a valid interval: fall back to just after `a`.
            return position_between(before, None);
        }
    }
    String::from_utf8(midpoint(a, b)).unwrap_or_else(|_| "V".to_string())
}

fn midpoint(a: &[u8], b: Option<&[u8]>) -> Vec<u8> {
    if let Some(b) = b {
        // Length of the common prefix, reading `a` as padded with zeros.
        let mut n = 0;
        while n < b.len() && a.get(n).copied().unwrap_or(b'0') == b[n] {
            n += 1;
        }
        if n > 0 {
            let mut out = b[..n].to_vec();
            let rest_a = if n <= a.len() { &a[n..] } else { &[][..] };
            out.extend(midpoint(rest_a, Some(&b[n..])));
            return out;
        }
    }
    let da = a.first().and_then(|c| digit_value(*c)).unwrap_or(0);
    let db = b
        .and_then(|b| b.first())
        .and_then(|c| digit_value(*c))
        .unwrap_or(DIGITS.len());
    if db - da > 1 {
        return vec![DIGITS[(da + db) / 2]];
    }
    match b {
        Some(b) if b.len() > 1 => vec![b[0]],
        _ => {
            let mut out = vec![DIGITS[da]];
            out.extend(midpoint(a.get(1..).unwrap_or(&[]), None));
            out
        }
    }
}

/// `count` evenly spaced positions, all the same short length.
pub fn spaced_positions(count: usize) -> Vec<String> {
    let mut width = 1u32;
    while 62u128.pow(width) <= count as u128 * 4 {
        width += 1;
    }
    let span = 62u128.pow(width);
    (0..count)
        .map(|i| {
            let mut value = (i as u128 + 1) * span / (count as u128 + 1);
            let mut digits = vec![b'0'; width as usize];
            for slot in digits.iter_mut().rev() {
                *slot = DIGITS[(value % 62) as usize];
                value /= 62;
            }
            while digits.len() > 1 && digits.last() == Some(&b'0') {
                digits.pop();
            }
            String::from_utf8(digits).unwrap_or_default()
        })
        .collect()
}

// ---------------------------------------------------------------- JSON <-> automerge

/// Writes a JSON value under `key` of the map `obj`.
pub fn put_json<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Json,
) -> Result<(), AutomergeError> {
    match value {
        Json::Object(map) => {
            let child = tx.put_object(obj, key, ObjType::Map)?;
            fill_map(tx, &child, map)
        }
        Json::Array(items) => {
            let child = tx.put_object(obj, key, ObjType::List)?;
            fill_list(tx, &child, items)
        }
        scalar => tx.put(obj, key, to_scalar(scalar)),
    }
}

fn fill_map<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    map: &Map<String, Json>,
) -> Result<(), AutomergeError> {
    for (key, value) in map {
        put_json(tx, obj, key, value)?;
    }
    Ok(())
}

fn fill_list<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    items: &[Json],
) -> Result<(), AutomergeError> {
    for (index, value) in items.iter().enumerate() {
        insert_json(tx, obj, index, value)?;
    }
    Ok(())
}

/// Inserts a JSON value at `index` of the list `obj`.
pub fn insert_json<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    index: usize,
    value: &Json,
) -> Result<(), AutomergeError> {
    match value {
        Json::Object(map) => {
            let child = tx.insert_object(obj, index, ObjType::Map)?;
            fill_map(tx, &child, map)
        }
        Json::Array(inner) => {
            let child = tx.insert_object(obj, index, ObjType::List)?;
            fill_list(tx, &child, inner)
        }
        scalar => tx.insert(obj, index, to_scalar(scalar)),
    }
}

fn to_scalar(value: &Json) -> ScalarValue {
    match value {
        Json::Null => ScalarValue::Null,
        Json::Bool(b) => ScalarValue::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::String(s) => ScalarValue::Str(s.as_str().into()),
        Json::Array(_) | Json::Object(_) => ScalarValue::Null,
    }
}

/// Reads the object or value at `obj` back as JSON (Text becomes a string).
pub fn read_json<R: ReadDoc>(doc: &R, value: &Value<'_>, id: &ObjId) -> Json {
    match value {
        Value::Object(ObjType::Map | ObjType::Table) => {
            let mut map = Map::new();
            for item in doc.map_range(id, ..) {
                let child = item.id();
                let key = item.key.to_string();
                let value: Value<'static> = item.value.into();
                map.insert(key, read_json(doc, &value, &child));
            }
            Json::Object(map)
        }
        Value::Object(ObjType::List) => Json::Array(
            doc.list_range(id, ..)
                .map(|item| {
                    let child = item.id();
                    let value: Value<'static> = item.value.into();
                    read_json(doc, &value, &child)
                })
                .collect(),
        ),
        Value::Object(ObjType::Text) => Json::String(doc.text(id).unwrap_or_default()),
        Value::Scalar(scalar) => from_scalar(scalar),
    }
}

fn from_scalar(value: &ScalarValue) -> Json {
    match value {
        ScalarValue::Null => Json::Null,
        ScalarValue::Boolean(b) => Json::Bool(*b),
        ScalarValue::Int(i) => Json::from(*i),
        ScalarValue::Uint(u) => Json::from(*u),
        ScalarValue::F64(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        ScalarValue::Str(s) => Json::String(s.to_string()),
        ScalarValue::Counter(c) => Json::from(i64::from(c)),
        ScalarValue::Timestamp(t) => Json::from(*t),
        ScalarValue::Bytes(_) | ScalarValue::Unknown { .. } => Json::Null,
    }
}

/// The JSON value of `key` in map `obj`, if present.
pub fn get_json<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<Json> {
    let (value, id) = doc.get(obj, key).ok()??;
    Some(read_json(doc, &value, &id))
}

/// The object id of the map at `key` in `obj`.
pub fn get_map<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(obj, key).ok()?? {
        (Value::Object(ObjType::Map), id) => Some(id),
        _ => None,
    }
}

/// A string scalar at `key` in `obj`.
pub fn get_str<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<String> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        (Value::Object(ObjType::Text), id) => doc.text(&id).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeletons_are_identical_changes() {
        let mut a = notebook_skeleton();
        let mut b = notebook_skeleton();
        assert_eq!(a.get_heads(), b.get_heads(), "same change, same hash");
        a.merge(&mut b).expect("merge");
        assert_eq!(
            a.get_changes(&[]).len(),
            1,
            "merging a second skeleton adds nothing"
        );
        ensure_schema(&mut a, notebook_skeleton).expect("ensure");
        assert_eq!(a.get_changes(&[]).len(), 1);
    }

    #[test]
    fn positions_sort_between_their_neighbours() {
        let mut keys = vec![position_between(None, None)];
        for _ in 0..200 {
            let last = keys.last().cloned();
            keys.push(position_between(last.as_deref(), None));
        }
        for _ in 0..200 {
            let first = keys.first().cloned();
            keys.insert(0, position_between(None, first.as_deref()));
        }
        for _ in 0..200 {
            let (a, b) = (keys[10].clone(), keys[11].clone());
            keys.insert(11, position_between(Some(&a), Some(&b)));
        }
        for pair in keys.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
            assert!(!pair[1].ends_with('0'));
        }
    }

    #[test]
    fn spaced_positions_are_ordered_and_short() {
        for count in [0, 1, 2, 61, 62, 1000] {
            let keys = spaced_positions(count);
            assert_eq!(keys.len(), count);
            for pair in keys.windows(2) {
                assert!(pair[0] < pair[1]);
            }
            assert!(keys.iter().all(|k| k.len() <= 3));
        }
    }
}
