//! Editing a notebook document the way every client must: cells keyed by id,
//! ordered by `position`, sources spliced with UTF-16 indexes (what JavaScript
//! and CodeMirror count), whatever text encoding the local document uses.

use crate::ipynb::ordered_cells;
use crate::schema::{self, get_map, get_str};
use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjId, ObjType, ReadDoc, TextEncoding, ROOT};

fn cells_map<D: ReadDoc>(doc: &D) -> Result<ObjId, AutomergeError> {
    get_map(doc, &ROOT, "cells").ok_or(AutomergeError::Fail)
}

/// The ids of the cells in display order.
pub fn cell_ids<D: ReadDoc>(doc: &D) -> Vec<String> {
    ordered_cells(doc).into_iter().map(|(id, _)| id).collect()
}

/// The source of cell `id`.
pub fn source<D: ReadDoc>(doc: &D, id: &str) -> Option<String> {
    let cells = cells_map(doc).ok()?;
    let cell = get_map(doc, &cells, id)?;
    get_str(doc, &cell, "source")
}

/// The type of cell `id` (`code`, `markdown`, `raw`).
pub fn cell_type<D: ReadDoc>(doc: &D, id: &str) -> Option<String> {
    let cells = cells_map(doc).ok()?;
    let cell = get_map(doc, &cells, id)?;
    get_str(doc, &cell, "cell_type")
}

fn position_of<D: ReadDoc>(doc: &D, id: &str) -> Option<String> {
    let cells = cells_map(doc).ok()?;
    let cell = get_map(doc, &cells, id)?;
    get_str(doc, &cell, "position")
}

/// A position for a cell placed right after `after` (or first, when `None`).
fn position_after<D: ReadDoc>(doc: &D, after: Option<&str>) -> String {
    let order = cell_ids(doc);
    let (before, next) = match after {
        None => (None, order.first().cloned()),
        Some(after) => {
            let index = order.iter().position(|id| id == after);
            match index {
                Some(i) => (Some(after.to_string()), order.get(i + 1).cloned()),
                None => (order.last().cloned(), None),
            }
        }
    };
    let before = before.and_then(|id| position_of(doc, &id));
    let next = next.and_then(|id| position_of(doc, &id));
    schema::position_between(before.as_deref(), next.as_deref())
}

/// Inserts a new cell after `after` (first when `None`); returns its id.
pub fn insert_cell<T: Transactable>(
    tx: &mut T,
    after: Option<&str>,
    cell_type: &str,
    text: &str,
) -> Result<String, AutomergeError> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let position = position_after(tx, after);
    let cells = cells_map(tx)?;
    let cell = tx.put_object(&cells, id.as_str(), ObjType::Map)?;
    tx.put(&cell, "id", id.as_str())?;
    tx.put(&cell, "cell_type", cell_type)?;
    tx.put(&cell, "position", position)?;
    tx.put_object(&cell, "metadata", ObjType::Map)?;
    let source = tx.put_object(&cell, "source", ObjType::Text)?;
    tx.splice_text(&source, 0, 0, text)?;
    Ok(id)
}

/// Moves cell `id` to right after `after` (first when `None`): only its
/// `position` changes, so concurrent moves never duplicate it.
pub fn move_cell<T: Transactable>(
    tx: &mut T,
    id: &str,
    after: Option<&str>,
) -> Result<(), AutomergeError> {
    if after == Some(id) {
        return Ok(());
    }
    let cells = cells_map(tx)?;
    let Some(cell) = get_map(tx, &cells, id) else {
        return Ok(());
    };
    let position = position_after(tx, after);
    tx.put(&cell, "position", position)
}

/// Deletes cell `id` (a no-op when it is already gone).
pub fn delete_cell<T: Transactable>(tx: &mut T, id: &str) -> Result<(), AutomergeError> {
    let cells = cells_map(tx)?;
    if tx.get(&cells, id)?.is_some() {
        tx.delete(&cells, id)?;
    }
    Ok(())
}

/// Converts a UTF-16 offset in `text` into the unit `encoding` counts in.
fn convert_offset(text: &str, utf16: usize, encoding: TextEncoding) -> usize {
    let mut units = 0;
    for (byte, ch) in text.char_indices() {
        if units >= utf16 {
            return match encoding {
                TextEncoding::Utf16CodeUnit => units,
                TextEncoding::Utf8CodeUnit => byte,
                _ => text[..byte].chars().count(),
            };
        }
        units += ch.len_utf16();
    }
    match encoding {
        TextEncoding::Utf16CodeUnit => units,
        TextEncoding::Utf8CodeUnit => text.len(),
        _ => text.chars().count(),
    }
}

/// Splices the source of cell `id` at a UTF-16 `index`, deleting `delete`
/// UTF-16 units and inserting `insert`. Indexes past the end are clamped.
pub fn splice_source<T: Transactable>(
    tx: &mut T,
    encoding: TextEncoding,
    id: &str,
    index: usize,
    delete: usize,
    insert: &str,
) -> Result<(), AutomergeError> {
    let cells = cells_map(tx)?;
    let cell = get_map(tx, &cells, id).ok_or(AutomergeError::Fail)?;
    let Some((automerge::Value::Object(ObjType::Text), text_obj)) = tx.get(&cell, "source")? else {
        return Err(AutomergeError::Fail);
    };
    let text = tx.text(&text_obj)?;
    let start = convert_offset(&text, index, encoding);
    let end = convert_offset(&text, index.saturating_add(delete), encoding);
    tx.splice_text(&text_obj, start, end as isize - start as isize, insert)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::Automerge;

    #[test]
    fn utf16_offsets_land_between_the_right_characters() {
        let mut doc = schema::notebook_skeleton();
        let encoding = doc.text_encoding();
        let id = doc
            .transact::<_, _, AutomergeError>(|tx| insert_cell(tx, None, "code", "a😀b"))
            .expect("insert")
            .result;
        // "a" is 1 unit, the emoji 2: index 3 is just before "b".
        doc.transact::<_, _, AutomergeError>(|tx| splice_source(tx, encoding, &id, 3, 1, "c"))
            .expect("splice");
        assert_eq!(source(&doc, &id).as_deref(), Some("a😀c"));
    }

    #[test]
    fn concurrent_moves_never_duplicate_a_cell() {
        let mut a = schema::notebook_skeleton();
        let (x, y) = a
            .transact::<_, _, AutomergeError>(|tx| {
                let x = insert_cell(tx, None, "code", "x")?;
                let y = insert_cell(tx, Some(&x), "code", "y")?;
                Ok((x, y))
            })
            .expect("insert")
            .result;
        let mut b: Automerge = a.fork();
        a.transact::<_, _, AutomergeError>(|tx| move_cell(tx, &x, Some(&y)))
            .expect("move");
        b.transact::<_, _, AutomergeError>(|tx| move_cell(tx, &x, None))
            .expect("move");
        a.merge(&mut b).expect("merge");
        b.merge(&mut a).expect("merge");
        assert_eq!(cell_ids(&a), cell_ids(&b));
        assert_eq!(cell_ids(&a).len(), 2);
    }
}
