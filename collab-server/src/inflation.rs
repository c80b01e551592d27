//! How large the automerge chunks in a peer's sync message become once inflated,
//! counted before automerge sees them. automerge inflates DEFLATE data while it
//! loads changes (compressed change chunks, and deflated columns of document and
//! bundle chunks) with no limit, so a sync message of a few MiB could make the
//! server allocate gigabytes. The check streams each DEFLATE part through a decoder
//! into nothing, stopping at the budget, so it holds no inflated byte itself.
//!
//! Chunk layout (automerge's storage format): 4 magic bytes, a 4-byte checksum, a
//! type byte, the data's length (LEB128), the data. Type 0 is a document (actors,
//! heads, change and op column metadata, then the columns), 1 a change (its columns
//! are never deflated), 2 a change deflated whole, 3 a bundle (dependencies, actors,
//! change column metadata and columns, op column metadata and columns). A column's
//! specification has bit 3 set when its data is deflated.

use std::io::Read;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const DEFLATED_COLUMN: u32 = 0b1000;

/// Why a chunk is refused: over the budget, or not a chunk.
enum Refusal {
    Over,
    Bad(String),
}

impl From<String> for Refusal {
    fn from(why: String) -> Self {
        Refusal::Bad(why)
    }
}

/// The bytes the chunks in `bytes` (one or more, back to back) take once
/// inflated; an error naming the limit once they would take more than `budget`,
/// or when a chunk does not parse (automerge refuses those too).
pub fn inflated_size(bytes: &[u8], budget: u64) -> Result<u64, String> {
    measure(bytes, budget).map_err(|refusal| match refusal {
        Refusal::Over => format!(
            "the changes in this sync message inflate to more than {} MiB, the limit for one message",
            budget >> 20
        ),
        Refusal::Bad(why) => why,
    })
}

fn measure(mut bytes: &[u8], budget: u64) -> Result<u64, Refusal> {
    let mut total = 0u64;
    while !bytes.is_empty() {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(
                String::from("a change chunk does not start with automerge's magic bytes").into(),
            );
        }
        r.take(4)?;
        let kind = r.take(1)?[0];
        let len = usize::try_from(r.leb()?).map_err(|_| too_long())?;
        let data = r.take(len)?;
        bytes = r.0;
        let left = budget.saturating_sub(total);
        total += match kind {
            0 => columns(data, Layout::Document, left)?,
            1 => data.len() as u64,
            2 => inflate(data, left)?,
            3 => columns(data, Layout::Bundle, left)?,
            other => return Err(format!("unknown automerge chunk type {other}").into()),
        };
        if total > budget {
            return Err(Refusal::Over);
        }
    }
    Ok(total)
}

fn too_long() -> String {
    "a change chunk is longer than the message".into()
}

/// How many bytes DEFLATE data inflates to, reading at most `budget` + 1.
fn inflate(data: &[u8], budget: u64) -> Result<u64, Refusal> {
    let decoder = flate2::read::DeflateDecoder::new(data);
    let n = std::io::copy(&mut decoder.take(budget + 1), &mut std::io::sink())
        .map_err(|e| format!("a compressed change does not inflate: {e}"))?;
    if n > budget {
        return Err(Refusal::Over);
    }
    Ok(n)
}

enum Layout {
    Document,
    Bundle,
}

/// A document or bundle chunk's size with its deflated columns inflated.
fn columns(data: &[u8], layout: Layout, budget: u64) -> Result<u64, Refusal> {
    let mut r = Reader(data);
    let mut groups = Vec::new();
    match layout {
        Layout::Document => {
            r.actors()?;
            r.hashes()?;
            // Both metadata blocks come first, then both groups of columns.
            let changes = r.column_meta()?;
            let ops = r.column_meta()?;
            groups.push(changes);
            groups.push(ops);
        }
        Layout::Bundle => {
            r.hashes()?;
            r.actors()?;
            // Change metadata and columns, then op metadata and columns.
            let changes = r.column_meta()?;
            let changes_data = r.take(total_len(&changes)?)?;
            let ops = r.column_meta()?;
            let mut size = (data.len() - r.0.len()) as u64 - changes_data.len() as u64;
            size += group_size(&changes, changes_data, budget.saturating_sub(size))?;
            let ops_data = r.take(total_len(&ops)?)?;
            size += group_size(&ops, ops_data, budget.saturating_sub(size))?;
            return Ok(size + r.0.len() as u64);
        }
    }
    let mut size = (data.len() - r.0.len()) as u64;
    for group in &groups {
        let columns = r.take(total_len(group)?)?;
        size += group_size(group, columns, budget.saturating_sub(size))?;
    }
    Ok(size + r.0.len() as u64)
}

fn total_len(meta: &[(u32, u64)]) -> Result<usize, String> {
    meta.iter()
        .try_fold(0u64, |sum, (_, len)| sum.checked_add(*len))
        .and_then(|sum| usize::try_from(sum).ok())
        .ok_or_else(too_long)
}

/// The inflated size of one group of columns laid out back to back in `data`.
fn group_size(meta: &[(u32, u64)], mut data: &[u8], budget: u64) -> Result<u64, Refusal> {
    let mut size = 0u64;
    for (spec, len) in meta {
        let len = usize::try_from(*len).map_err(|_| too_long())?;
        let (column, rest) = data.split_at_checked(len).ok_or_else(too_long)?;
        data = rest;
        size += if spec & DEFLATED_COLUMN != 0 {
            inflate(column, budget.saturating_sub(size))?
        } else {
            column.len() as u64
        };
        if size > budget {
            return Err(Refusal::Over);
        }
    }
    Ok(size)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let (head, rest) = self.0.split_at_checked(n).ok_or_else(too_long)?;
        self.0 = rest;
        Ok(head)
    }

    fn leb(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a length in a change chunk is not a valid LEB128 number".into())
    }

    fn count(&mut self) -> Result<usize, String> {
        let n = self.leb()?;
        // Every counted item takes at least one byte.
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.0.len())
            .ok_or_else(too_long)
    }

    fn actors(&mut self) -> Result<(), String> {
        for _ in 0..self.count()? {
            let len = usize::try_from(self.leb()?).map_err(|_| too_long())?;
            self.take(len)?;
        }
        Ok(())
    }

    fn hashes(&mut self) -> Result<(), String> {
        let n = self.count()?;
        self.take(n.checked_mul(32).ok_or_else(too_long)?)?;
        Ok(())
    }

    fn column_meta(&mut self) -> Result<Vec<(u32, u64)>, String> {
        let n = self.count()?;
        let mut meta = Vec::with_capacity(n);
        for _ in 0..n {
            let spec = u32::try_from(self.leb()?)
                .map_err(|_| "a column specification is out of range".to_string())?;
            meta.push((spec, self.leb()?));
        }
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use std::io::Write;

    fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([0, 0, 0, 0, kind]);
        let mut len = data.len() as u64;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            out.push(if len == 0 { byte } else { byte | 0x80 });
            if len == 0 {
                break;
            }
        }
        out.extend(data);
        out
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("deflate");
        encoder.finish().expect("deflate")
    }

    #[test]
    fn real_documents_and_changes_are_measured_as_automerge_reads_them() {
        let mut doc = automerge::AutoCommit::new();
        let text = "a long line that repeats, so that columns are worth compressing. ".repeat(400);
        doc.put(automerge::ROOT, "text", text.as_str())
            .expect("put");
        doc.put(automerge::ROOT, "n", 7).expect("put");
        let saved = doc.save();
        let size = inflated_size(&saved, 1 << 30).expect("a saved document");
        assert!(
            size > saved.len() as u64,
            "its columns were deflated: {size}"
        );
        assert!(size >= text.len() as u64);
        let change = doc
            .get_last_local_change()
            .expect("a change")
            .raw_bytes()
            .to_vec();
        let measured = inflated_size(&change, 1 << 30).expect("a change");
        assert!(measured > 0 && measured < change.len() as u64, "{measured}");
        // Two chunks back to back, as load_incremental takes them.
        let both = [saved.clone(), change].concat();
        assert!(inflated_size(&both, 1 << 30).expect("both") > size);
    }

    #[test]
    fn a_bomb_is_refused_at_the_budget_without_inflating_it() {
        let bomb = chunk(2, &deflate(&vec![0u8; 64 << 20]));
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let err = inflated_size(&bomb, 16 << 20).expect_err("over budget");
        assert!(err.contains("more than 16 MiB"), "{err}");
        assert_eq!(inflated_size(&bomb, 64 << 20), Ok(64 << 20));
        // Deflated columns of a document chunk count too.
        let column = deflate(&vec![1u8; 32 << 20]);
        let mut data = vec![0, 0]; // no actors, no heads
        data.push(1); // one change column, deflated
        data.push(DEFLATED_COLUMN as u8);
        let mut len = column.len() as u64;
        while len >= 0x80 {
            data.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        data.push(len as u8);
        data.push(0); // no op columns
        data.extend(&column);
        let doc = chunk(0, &data);
        assert!(inflated_size(&doc, 8 << 20)
            .expect_err("over")
            .contains("more than 8 MiB"));
        assert!(inflated_size(&doc, 64 << 20).expect("under") >= 32 << 20);
    }

    #[test]
    fn malformed_chunks_are_errors_not_panics() {
        for bytes in [
            &b"\x85\x6f\x4a"[..],
            &b"nope-nope"[..],
            &[0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 9, 0][..],
            &[0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 0, 5, 0xff, 0xff][..],
            &[
                0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0x01,
            ][..],
        ] {
            assert!(inflated_size(bytes, 1 << 20).is_err(), "{bytes:?}");
        }
    }
}
