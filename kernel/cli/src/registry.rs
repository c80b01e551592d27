//! Which magics a kernel offers: the built-ins and every family's, wired together.
//!
//! This is the one place that knows every magic crate, so that the kernel itself
//! depends on none of them and no family depends on another.

use ferrolab_magics::{MagicError, Registry};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The magics a kernel starts with.
pub fn registry() -> Registry {
    let mut registry = Registry::with_builtins();
    // One place runs go for every family: `%track connect` moves them all.
    let tracking = ferrolab_track::local_tracking();
    let catalog = ferrolab_data::register(&mut registry);
    ferrolab_llm::magic::register(
        &mut registry,
        Arc::new(CatalogRows(catalog)),
        tracking.clone(),
    );
    ferrolab_serve::magic::register(&mut registry, tracking.clone());
    ferrolab_prompt::magic::register(&mut registry, tracking.clone());
    ferrolab_track::magic::register(&mut registry, tracking);
    registry
}

/// `%finetune --table NAME` reads the tables the data magics loaded.
struct CatalogRows(Arc<ferrolab_data::Catalog>);

impl ferrolab_llm::magic::TableRows for CatalogRows {
    fn rows(&self, table: &str) -> Result<Vec<Map<String, Value>>, MagicError> {
        self.0.rows(table)
    }
}

#[cfg(test)]
mod tests {
    /// Every family is wired in: a magic of each is in the kernel's registry.
    #[test]
    fn every_family_is_registered() {
        let registry = super::registry();
        for name in [
            "lsmagic",
            "load",
            "sql",
            "finetune",
            "serve",
            "prompt_test",
            "track",
        ] {
            assert!(registry.get(name).is_some(), "%{name} is not registered");
        }
    }
}
