//! Which documents peers may change over `/sync`: a service below both the
//! workspace (which says which documents are notebooks) and sync (which enforces
//! it), so neither imports the other for it.

/// Which documents peers may change: notebook documents (editors) and run notes.
/// Everything else — the workspace index, runtime documents, run summaries — is
/// written by the server alone; a peer's change to one closes its connection.
/// samod asks the share policy about a document as soon as it exists — before
/// the workspace has said it is a notebook — so every decision follows later
/// changes here (`changed` counts them).
pub struct DocRights {
    editable: std::sync::RwLock<std::collections::HashSet<String>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl DocRights {
    /// A receiver told of every change to the rights.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl Default for DocRights {
    fn default() -> Self {
        DocRights {
            editable: Default::default(),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

impl DocRights {
    /// Lets writers change document `id` (a bare document id or an automerge URL).
    pub fn allow_edits(&self, id: &str) {
        if let Ok(mut editable) = self.editable.write() {
            editable.insert(bare(id).to_string());
        }
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn forbid_edits(&self, id: &str) {
        if let Ok(mut editable) = self.editable.write() {
            editable.remove(bare(id));
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Whether writers may change document `id`.
    pub fn is_editable(&self, id: &str) -> bool {
        self.editable
            .read()
            .map(|editable| editable.contains(bare(id)))
            .unwrap_or(false)
    }
}

pub fn bare(id: &str) -> &str {
    id.trim_start_matches("automerge:")
}
