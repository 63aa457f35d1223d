//! What ingest knows about the broker and its topics, for `/readyz` and the staleness gauges.
//!
//! `salespulse_kafka_up` follows librdkafka's own view of its broker connections (the statistics
//! it emits every second list each broker's state), and the ages are computed when scraped, so
//! they keep growing while the broker is away even though nothing else happens.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntGauge, Opts, Registry};

/// What the HTTP side reports about ingest (`/readyz`).
#[derive(Debug, Default)]
pub struct Health {
    pub(crate) joined: AtomicBool,
    pub(crate) assigned: AtomicU64,
    pub(crate) rebuilding: AtomicU64,
}

impl Health {
    /// Whether the consumer has joined its group and received an assignment.
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }

    /// Partitions assigned now.
    pub fn assigned(&self) -> u64 {
        self.assigned.load(Ordering::Relaxed)
    }

    /// Assigned partitions still replaying up to their committed offset.
    pub fn rebuilding(&self) -> u64 {
        self.rebuilding.load(Ordering::Relaxed)
    }

    /// Joined, and every assigned partition's state is rebuilt: the metrics are complete.
    pub fn ready(&self) -> bool {
        self.joined() && self.rebuilding() == 0
    }
}

/// Broker contact and per-topic record times, kept as milliseconds since `started`.
#[derive(Debug)]
pub(crate) struct Liveness {
    started: CoarseClock,
    up: AtomicBool,
    /// Milliseconds since `started` of the last successful broker contact; -1 before the first.
    last_contact_ms: AtomicI64,
    /// Per subscribed topic: milliseconds since `started` of its last record; -1 before the first.
    topics: Vec<(Box<str>, AtomicI64)>,
}

impl Liveness {
    pub(crate) fn new(topics: &[String]) -> Liveness {
        Liveness {
            started: CoarseClock::now(),
            up: AtomicBool::new(false),
            last_contact_ms: AtomicI64::new(-1),
            topics: topics.iter().map(|t| (Box::from(t.as_str()), AtomicI64::new(-1))).collect(),
        }
    }

    fn elapsed_ms(&self) -> i64 {
        self.started.elapsed_ms()
    }

    /// librdkafka's statistics, or an error, tell whether any broker connection is up.
    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        if up {
            self.last_contact_ms.store(self.elapsed_ms(), Ordering::Relaxed);
        }
    }

    /// A record of `topic` arrived (which is broker contact too).
    pub(crate) fn record(&self, topic: &str) {
        let now = self.elapsed_ms();
        if let Some((_, at)) = self.topics.iter().find(|(name, _)| name.as_ref() == topic) {
            at.store(now, Ordering::Relaxed);
        }
        self.last_contact_ms.store(now, Ordering::Relaxed);
    }

    /// Seconds since `at_ms`, or since start when it never happened.
    fn age_seconds(&self, at_ms: i64, now_ms: i64) -> f64 {
        (now_ms - at_ms.max(0)).max(0) as f64 / 1000.0
    }
}

/// A monotonic clock read once per polled record: the coarse clock where there is one (Linux:
/// `CLOCK_MONOTONIC_COARSE`, the time of the last tick, read from the vDSO without the TSC), as
/// the ages it feeds are exported in seconds. `Instant` (`CLOCK_MONOTONIC`) was 4 % of the polling
/// thread's time on the `make bench` topic.
#[derive(Debug, Clone, Copy)]
struct CoarseClock(i64);

impl CoarseClock {
    fn now() -> CoarseClock {
        CoarseClock(Self::read_ms())
    }

    fn elapsed_ms(self) -> i64 {
        (Self::read_ms() - self.0).max(0)
    }

    #[cfg(target_os = "linux")]
    fn read_ms() -> i64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists since Linux
        // 2.6.32 and cannot fail with a valid pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        #[allow(clippy::unnecessary_cast)] // `time_t` and `c_long` are 32-bit on 32-bit Linux.
        let (sec, nsec) = (ts.tv_sec as i64, ts.tv_nsec as i64);
        sec * 1_000 + nsec / 1_000_000
    }

    #[cfg(not(target_os = "linux"))]
    fn read_ms() -> i64 {
        use std::sync::OnceLock;
        use std::time::Instant;
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as i64
    }
}

/// The `salespulse_kafka_up` gauge and the staleness gauges, refreshed at each scrape.
pub(crate) struct LivenessCollector {
    liveness: Arc<Liveness>,
    up: IntGauge,
    contact_age: Gauge,
    record_age: GaugeVec,
    descs: Vec<Desc>,
}

impl LivenessCollector {
    pub(crate) fn register(liveness: Arc<Liveness>, registry: &Registry) -> prometheus::Result<()> {
        let up = IntGauge::new(
            "salespulse_kafka_up",
            "1 while librdkafka has a connection up to at least one broker, else 0.",
        )?;
        let contact_age = Gauge::new(
            "salespulse_kafka_contact_age_seconds",
            "Seconds since the last successful contact with a broker (since start if none yet).",
        )?;
        let record_age = GaugeVec::new(
            Opts::new(
                "salespulse_kafka_record_age_seconds",
                "Seconds since the last record arrived from the topic (since start if none yet).",
            ),
            &["topic"],
        )?;
        let descs = [up.desc(), contact_age.desc(), record_age.desc()].into_iter().flatten().cloned().collect();
        let collector = LivenessCollector { liveness, up, contact_age, record_age, descs };
        registry.register(Box::new(collector))
    }
}

impl Collector for LivenessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let liveness = &self.liveness;
        let now_ms = liveness.elapsed_ms();
        self.up.set(i64::from(liveness.up.load(Ordering::Relaxed)));
        self.contact_age.set(liveness.age_seconds(liveness.last_contact_ms.load(Ordering::Relaxed), now_ms));
        for (topic, at) in &liveness.topics {
            let age = liveness.age_seconds(at.load(Ordering::Relaxed), now_ms);
            self.record_age.with_label_values(&[topic.as_ref()]).set(age);
        }
        let mut families = self.up.collect();
        families.extend(self.contact_age.collect());
        families.extend(self.record_age.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_counts_milliseconds_like_instant() {
        let ms = |since: std::time::Instant| since.elapsed().as_millis() as i64;
        let before = std::time::Instant::now();
        let clock = CoarseClock::now();
        let after = std::time::Instant::now();
        let deadline = after + std::time::Duration::from_secs(5);
        // Await 50 ms on the coarse clock (its tick is 1-10 ms).
        while clock.elapsed_ms() < 50 {
            assert!(std::time::Instant::now() < deadline, "the coarse clock did not advance");
            std::hint::spin_loop();
        }
        // Bracketed by `Instant` readings, so a thread preempted between two reads cannot fail it;
        // 20 ms is the coarse clock's tick and the truncation to milliseconds, with room.
        let (shortest, coarse, longest) = (ms(after), clock.elapsed_ms(), ms(before));
        assert!(
            shortest - 20 <= coarse && coarse <= longest + 20,
            "coarse {coarse} ms, Instant {shortest}-{longest} ms"
        );
    }

    #[test]
    fn ages_count_from_start_until_something_happens() {
        let liveness = Liveness::new(&["calls".to_owned()]);
        assert_eq!(liveness.age_seconds(-1, 2_500), 2.5);
        assert_eq!(liveness.age_seconds(1_000, 2_500), 1.5);
        liveness.record("calls");
        liveness.record("not-subscribed");
        assert!(liveness.topics[0].1.load(Ordering::Relaxed) >= 0);
        assert!(liveness.last_contact_ms.load(Ordering::Relaxed) >= 0);
    }

    #[test]
    fn the_collector_reports_up_and_every_topic() {
        let liveness = Arc::new(Liveness::new(&["calls".to_owned(), "chat".to_owned()]));
        let registry = Registry::new();
        LivenessCollector::register(Arc::clone(&liveness), &registry).unwrap();
        let gauge = |families: &[MetricFamily], name: &str| {
            families.iter().find(|f| f.name() == name).map(|f| f.get_metric().len())
        };
        let families = registry.gather();
        assert_eq!(gauge(&families, "salespulse_kafka_up"), Some(1));
        assert_eq!(gauge(&families, "salespulse_kafka_record_age_seconds"), Some(2));
        liveness.set_up(true);
        let families = registry.gather();
        let up = families.iter().find(|f| f.name() == "salespulse_kafka_up").unwrap();
        assert_eq!(up.get_metric()[0].get_gauge().get_value(), 1.0);
    }
}
