//! The window core of salespulse: event-time sliding windows, the per-partition manager table,
//! de-duplication ledgers and the Prometheus exposition writer.
//!
//! Nothing here does I/O or awaits; every function is plain and synchronous so it can be called
//! from the ingest hot path and from a scrape alike.
//!
//! Main types:
//! - [`window::Windows`] — the configured windows, and [`window::Windowed`], one manager's
//!   bucket rings that serve all of them.
//! - [`table::ManagerTable`] — concurrent per-manager state, keyed by the partition the events came
//!   from, with a hard cap on the number of managers.
//! - [`ledger::Ledger`] — per-partition applied offset and event-id fingerprints.
//! - [`expo::MetricWriter`] — Prometheus text and OpenMetrics rendering.
//! - [`clock::Clock`] — wall-clock injection, so tests never sleep.
//!
//! ```
//! use salespulse_core::window::{Windows, Windowed};
//! let windows = Windows::parse(&["5m", "1h"]).unwrap();
//! let mut calls: Windowed<u64> = Windowed::new(&windows);
//! let now = 1_700_000_000_000;
//! calls.update(&windows, now - 1_000, now, |n| *n += 1);
//! let mut in_5m = 0;
//! calls.fold(&windows, 0, now, |n| in_5m += *n);
//! assert_eq!(in_5m, 1);
//! ```
#![deny(missing_docs)]

pub mod clock;
pub mod expo;
pub mod ledger;
pub mod table;
pub mod window;
