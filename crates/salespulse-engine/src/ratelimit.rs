//! Logging at a rate limit: the first occurrence logs, then at most one line per interval with
//! the number suppressed in between, so a flood of bad input cannot flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Allows one log line per interval (shared with the ingest crate, whose client errors repeat
/// every few milliseconds while a broker is away).
#[derive(Debug)]
pub struct RateLimited {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimited {
    /// A limiter allowing one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        RateLimited { interval, last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }

    /// `Some(n)` when a line may be logged now (`n` lines were suppressed since the last one).
    pub fn check(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock();
        match *last {
            Some(at) if now.duration_since(at) < self.interval => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval() {
        let limiter = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(limiter.check(), Some(0));
        assert_eq!(limiter.check(), None);
        assert_eq!(limiter.check(), None);
        let open = RateLimited::new(Duration::ZERO);
        assert_eq!(open.check(), Some(0));
        assert_eq!(open.check(), Some(0));
    }
}
