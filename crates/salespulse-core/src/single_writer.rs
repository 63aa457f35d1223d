//! Adding to counters that have one writer at a time (see `window::Counters`): a plain load and
//! store, no read-modify-write instruction, saturating instead of wrapping. Readers on other
//! threads see every value whole.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds `delta` to `cell`. Only one thread may add to a given cell at a time.
pub fn add(cell: &AtomicU64, delta: u64) {
    cell.store(cell.load(Ordering::Relaxed).saturating_add(delta), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_saturates() {
        let cell = AtomicU64::new(5);
        add(&cell, 3);
        assert_eq!(cell.load(Ordering::Relaxed), 8);
        add(&cell, u64::MAX);
        assert_eq!(cell.load(Ordering::Relaxed), u64::MAX);
    }
}
