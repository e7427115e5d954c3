//! What the program running a connector offers it beyond its own section:
//! typed values the runtime puts in every [`crate::ConnectorContext`].
//!
//! Most connectors need nothing here. A connector that is itself a plugin
//! (`type = "wasm"`) needs the host's Wasm engine and the pipeline's
//! `[connections]` and limits; the runtime provides them by type, so this
//! crate names none of them.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Values by type; cheap to clone.
#[derive(Clone, Default)]
pub struct Services {
    values: Arc<BTreeMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services").field("values", &self.values.len()).finish()
    }
}

impl Services {
    /// These services and `value` (replacing one of the same type).
    pub fn with<T: Any + Send + Sync>(&self, value: T) -> Self {
        let mut values = (*self.values).clone();
        values.insert(TypeId::of::<T>(), Arc::new(value));
        Self { values: Arc::new(values) }
    }

    /// The value of type `T`, if the runtime provides one.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values.get(&TypeId::of::<T>()).and_then(|v| v.downcast_ref::<T>())
    }
}

#[cfg(test)]
mod tests {
    use super::Services;

    #[test]
    fn values_are_found_by_type() {
        let s = Services::default().with(7u32).with(String::from("engine"));
        assert_eq!(s.get::<u32>(), Some(&7));
        assert_eq!(s.get::<String>().map(String::as_str), Some("engine"));
        assert_eq!(s.get::<u64>(), None);
        assert_eq!(s.with(8u32).get::<u32>(), Some(&8));
        assert_eq!(s.get::<u32>(), Some(&7), "with makes a new set");
    }
}
