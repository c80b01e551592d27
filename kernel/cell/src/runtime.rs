//! evcxr's variable store, compiled once here instead of in every cell: evcxr puts
//! a copy of this module's source into each cell's crate, where its `HashMap`
//! code is compiled again every time; with the prepared crates, cells name this
//! one (`kernel/evcxr/PATCHES.md`, change 2). The API and the two markers are
//! evcxr's (`evcxr_internal_runtime.rs`); the generic methods are thin, so that a
//! cell compiles only a type check and a box for each variable.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// What the store prints when a variable's type was redefined (evcxr reads it).
pub const VARIABLE_CHANGED_TYPE: &str = "EVCXR_VARIABLE_CHANGED_TYPE:";
/// What a cell prints when its `?` returned an error (evcxr reads it).
pub const USER_ERROR_OCCURRED: &str = "EVCXR_ERROR_OCCURRED";

type Value = Box<dyn Any + 'static>;

/// The variables cells keep between them, by name.
#[derive(Default)]
pub struct VariableStore {
    variables: HashMap<String, Value>,
}

impl VariableStore {
    /// An empty store.
    pub fn new() -> VariableStore {
        VariableStore::default()
    }

    /// Keeps `value` as `name`.
    pub fn put_variable<T: 'static>(&mut self, name: &str, value: T) {
        self.put(name, Box::new(value));
    }

    /// Whether `name`, if kept, is still a `T` (if not, it is reported as lost).
    pub fn check_variable<T: 'static>(&mut self, name: &str) -> bool {
        self.check(name, TypeId::of::<T>())
    }

    /// Takes `name` out of the store (put back by the cell when it ends).
    pub fn take_variable<T: 'static>(&mut self, name: &str) -> T {
        match self.take(name).downcast::<T>() {
            Ok(value) => *value,
            // Cannot happen once check_variable said yes.
            Err(_) => panic!("Variable changed type"),
        }
    }

    /// The `Arc<T>` kept as `name`, made with `create` the first time.
    pub fn lazy_arc<T: 'static, F: FnOnce() -> T>(&mut self, name: &str, create: F) -> Arc<T> {
        let mut create = Some(create);
        let mut make = || -> Value {
            let create = create.take().expect("an entry is made once");
            Box::new(Arc::new(create()))
        };
        match self.entry(name, &mut make).downcast_ref::<Arc<T>>() {
            Some(value) => Arc::clone(value),
            None => panic!("lazy_arc {name} changed type"),
        }
    }

    /// Moves every variable of `other` into this store.
    #[inline(never)]
    pub fn merge(&mut self, mut other: VariableStore) {
        self.variables.extend(other.variables.drain());
    }

    #[inline(never)]
    fn put(&mut self, name: &str, value: Value) {
        self.variables.insert(name.to_owned(), value);
    }

    #[inline(never)]
    fn check(&mut self, name: &str, id: TypeId) -> bool {
        if let Some(value) = self.variables.get(name) {
            if Any::type_id(&**value) != id {
                eprintln!("The type of the variable {name} was redefined, so was lost.");
                println!("{VARIABLE_CHANGED_TYPE}{name}");
                return false;
            }
        }
        true
    }

    #[inline(never)]
    fn take(&mut self, name: &str) -> Value {
        match self.variables.remove(name) {
            Some(value) => value,
            None => panic!("Variable '{name}' has gone missing"),
        }
    }

    #[inline(never)]
    fn entry(&mut self, name: &str, create: &mut dyn FnMut() -> Value) -> &Value {
        self.variables.entry(name.to_owned()).or_insert_with(create)
    }
}

/// A new store, as evcxr's generated code makes one in the session's first cell.
pub fn create_variable_store() -> *mut VariableStore {
    Box::into_raw(Box::new(VariableStore::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_keep_their_types_and_a_changed_type_is_reported() {
        let mut store = VariableStore::new();
        store.put_variable("a", 5_i32);
        store.put_variable("s", String::from("text"));
        assert!(store.check_variable::<i32>("a"));
        assert!(!store.check_variable::<u8>("a"));
        assert!(store.check_variable::<f64>("never_kept"));
        assert_eq!(store.take_variable::<i32>("a"), 5);
        assert_eq!(store.take_variable::<String>("s"), "text");

        let first = store.lazy_arc("runtime", || 7_u64);
        let again = store.lazy_arc("runtime", || 8_u64);
        assert_eq!((*first, *again), (7, 7));
        assert!(Arc::ptr_eq(&first, &again));

        let mut other = VariableStore::new();
        other.put_variable("b", 1.5_f64);
        store.merge(other);
        assert_eq!(store.take_variable::<f64>("b"), 1.5);
    }

    #[test]
    fn the_markers_are_evcxrs() {
        let evcxr = include_str!("../../evcxr/src/evcxr_internal_runtime.rs");
        for (name, value) in [
            ("VARIABLE_CHANGED_TYPE", VARIABLE_CHANGED_TYPE),
            ("USER_ERROR_OCCURRED", USER_ERROR_OCCURRED),
        ] {
            assert!(
                evcxr.contains(&format!("pub const {name}: &str = {value:?};")),
                "{name} differs from evcxr's"
            );
        }
    }
}
