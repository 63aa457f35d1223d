//! The window core of salespulse: event-time sliding windows, the per-partition manager table,
//! de-duplication ledgers and the Prometheus exposition writer.
//!
//! Nothing here does I/O or awaits; every function is plain and synchronous so it can be called
//! from the ingest hot path and from a scrape alike.
//!
//! Main types:
//! - [`window::Windows`] — the configured sliding and calendar windows and the levels (bucket
//!   resolutions) that serve them; [`window::Layout`] and [`window::Counters`], one manager's atomic
//!   bucket rings for one stream, serving all windows.
//! - [`table::ManagerTable`] — concurrent per-manager state, keyed by the partition the events came
//!   from, with a hard cap on the number of managers.
//! - [`ledger::Ledger`] — per-partition applied offset, watermark and event-id fingerprints.
//! - [`expo::MetricWriter`] — Prometheus text and OpenMetrics rendering.
//! - [`clock::Clock`] — wall-clock injection, so tests never sleep.
//!
//! ```
//! use salespulse_core::window::{Counters, Layout, Windows};
//! let windows = Windows::parse(&["5m", "1h"]).unwrap();
//! let layout = Layout::all(&windows, 1);
//! let calls = Counters::new(&layout);
//! let now = 1_700_000_000_000;
//! calls.add(&layout, &windows, now - 1_000, now, &[1]);
//! let mut per_window = [0u64; 2];
//! calls.read(&layout, &windows, &windows.plan(now), &mut per_window);
//! assert_eq!(per_window, [1, 1]);
//! ```
#![deny(missing_docs)]

pub mod clock;
pub mod expo;
pub mod histogram;
pub mod ledger;
pub mod single_writer;
pub mod table;
pub mod window;
