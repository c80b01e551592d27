//! A Rust peer for the cross-language tests: connects to a server, types
//! `COUNT` one-character markers at random places of one cell, then answers
//! commands on stdin: `text` prints the cell's source as a JSON string,
//! `quit` leaves.
//!
//! usage: splice_peer WS_URL DOC_ID CELL_ID COUNT FIRST_CODE_POINT SEED

use automerge::AutomergeError;
use ferrolab_collab::{client::WsDialer, notebook};
use std::io::BufRead;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, doc, cell, count, first, seed] = args.as_slice() else {
        anyhow::bail!("usage: splice_peer WS_URL DOC_ID CELL_ID COUNT FIRST_CODE_POINT SEED");
    };
    let (count, first, mut seed): (usize, u32, u64) =
        (count.parse()?, first.parse()?, seed.parse()?);
    let repo = samod::Repo::build_tokio().load().await;
    repo.dial(
        samod::BackoffConfig::default(),
        Arc::new(WsDialer::new(url)?),
    )?
    .established()
    .await?;
    let handle = repo
        .find(samod::DocumentId::from_str(doc)?)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the server does not have document {doc}"))?;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..count {
        let marker = char::from_u32(first + i as u32).unwrap_or('?').to_string();
        let at = random();
        handle.with_document(|d| {
            let encoding = d.text_encoding();
            let len = notebook::source(d, cell).map_or(0, |s| s.encode_utf16().count());
            let at = (at % (len as u64 + 1)) as usize;
            d.transact::<_, _, AutomergeError>(|tx| {
                notebook::splice_source(tx, encoding, cell, at, 0, &marker)
            })
            .map(|_| ())
            .map_err(|f| f.error)
        })?;
        tokio::time::sleep(Duration::from_millis(random() % 15)).await;
    }
    println!("done");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        match line.trim() {
            "text" => {
                let text = handle
                    .with_document(|d| notebook::source(d, cell))
                    .unwrap_or_default();
                println!("{}", serde_json::to_string(&text)?);
            }
            "quit" => break,
            _ => {}
        }
    }
    repo.stop().await;
    Ok(())
}
