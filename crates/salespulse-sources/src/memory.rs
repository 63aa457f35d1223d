//! Remembered previous values per (rule, entity), for sources that send only the new value.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// A bounded map from an entity's fingerprint to its last value, kept in two generations: when
/// the young one is full it becomes the old one and the previous old one is dropped. Memory is
/// therefore at most `capacity` entries, and an entity seen within the last `capacity / 2`
/// distinct entities is always remembered.
#[derive(Debug)]
pub(crate) struct Memory {
    young: HashMap<u64, String>,
    old: HashMap<u64, String>,
    half: usize,
}

impl Memory {
    pub(crate) fn new(capacity: usize) -> Memory {
        Memory { young: HashMap::new(), old: HashMap::new(), half: (capacity / 2).max(1) }
    }

    /// The fingerprint of `(rule, entity)`; `DefaultHasher::new()` has fixed keys, so it is
    /// stable within a process, which is all the memory needs.
    pub(crate) fn key(rule: &str, entity: &str) -> u64 {
        let mut hasher = DefaultHasher::new();
        rule.hash(&mut hasher);
        entity.hash(&mut hasher);
        hasher.finish()
    }

    pub(crate) fn get(&self, key: u64) -> Option<&str> {
        self.young.get(&key).or_else(|| self.old.get(&key)).map(String::as_str)
    }

    pub(crate) fn put(&mut self, key: u64, value: String) {
        self.old.remove(&key);
        if self.young.len() >= self.half && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_recent_entities_survive() {
        let mut memory = Memory::new(10);
        for i in 0..1000u64 {
            memory.put(i, i.to_string());
            assert!(memory.len() <= 10);
            // The last five entities are always there.
            for j in i.saturating_sub(4)..=i {
                assert_eq!(memory.get(j), Some(j.to_string().as_str()));
            }
        }
        assert_eq!(memory.get(0), None);
        memory.put(999, "new".into());
        assert_eq!(memory.get(999), Some("new"));
        assert_ne!(Memory::key("a", "b"), Memory::key("ab", ""));
    }
}
