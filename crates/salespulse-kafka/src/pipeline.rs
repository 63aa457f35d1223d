//! Parallel apply: the polling thread copies records into per-worker batches; worker threads
//! decode and apply them and store their offsets.
//!
//! Invariants:
//! - Partition `p` of every topic always goes to worker `p % workers`, so a partition group (the
//!   state that partition `p` of every topic shares) has one writer, and a partition's records are
//!   applied in offset order.
//! - An offset is stored only after its record, and every record before it in the partition, is
//!   applied; replayed records (a rebuild) are never stored.
//! - [`Dispatcher::quiesce`] returns once every record polled so far is applied and its offset
//!   stored: the rebalance callback calls it before it drops or rebuilds state, and before
//!   librdkafka commits on revoke.

use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use parking_lot::{Condvar, Mutex};

use rdkafka::message::{Header, Headers, Message, Timestamp};

use crate::dlq::Source;

/// Records per batch: large enough to amortise the hand-over (one channel send and one wake-up
/// per batch), small enough that a batch is a few hundred microseconds of work.
const BATCH_RECORDS: usize = 512;
/// Batches queued per worker before the polling thread waits: bounds memory, and with it how far
/// polling runs ahead of applying.
const QUEUED_BATCHES: usize = 4;

/// Records copied out of librdkafka's buffers: one byte arena and a table of ranges into it.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    data: Vec<u8>,
    topics: Vec<String>,
    records: Vec<Meta>,
    headers: Vec<(Range<usize>, Option<Range<usize>>)>,
}

#[derive(Debug)]
struct Meta {
    topic: usize,
    partition: i32,
    offset: i64,
    timestamp: Timestamp,
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
    headers: Range<usize>,
}

impl Batch {
    /// Copies `message`, which came from `topic` (its name, read once by the caller).
    fn push<M: Message>(&mut self, message: &M, topic: &str) {
        let topic = match self.topics.iter().position(|t| t == topic) {
            Some(index) => index,
            None => {
                self.topics.push(topic.to_owned());
                self.topics.len() - 1
            }
        };
        let key = message.key().map(|bytes| self.copy(bytes));
        let payload = message.payload().map(|bytes| self.copy(bytes));
        let first_header = self.headers.len();
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                let key = self.copy(header.key.as_bytes());
                let value = header.value.map(|value| self.copy(value));
                self.headers.push((key, value));
            }
        }
        self.records.push(Meta {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp(),
            key,
            payload,
            headers: first_header..self.headers.len(),
        });
    }

    fn copy(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        start..self.data.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    fn clear(&mut self) {
        self.data.clear();
        self.topics.clear();
        self.records.clear();
        self.headers.clear();
    }

    /// The records, in the order they were polled.
    pub(crate) fn iter(&self) -> impl Iterator<Item = BatchRecord<'_>> {
        self.records.iter().map(move |meta| BatchRecord {
            batch: self,
            meta,
            headers: BatchHeaders { batch: self, range: meta.headers.clone() },
        })
    }
}

/// One record of a [`Batch`], readable like the message it was copied from.
pub(crate) struct BatchRecord<'a> {
    batch: &'a Batch,
    meta: &'a Meta,
    headers: BatchHeaders<'a>,
}

impl<'a> BatchRecord<'a> {
    /// The value of the first header named `name` (ASCII case-insensitively).
    pub(crate) fn header(&self, name: &str) -> Option<&'a [u8]> {
        let batch = self.batch;
        batch.headers[self.meta.headers.clone()]
            .iter()
            .find(|(key, _)| batch.data[key.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|(_, value)| value.clone().map(|range| &batch.data[range]))
    }

    /// Where the record came from and what it held, as a dead letter would carry it.
    pub(crate) fn source(&self) -> Source<'a> {
        Source {
            topic: self.topic(),
            partition: self.partition(),
            offset: self.offset(),
            timestamp_ms: self.timestamp().to_millis(),
            key: self.key(),
            payload: self.payload(),
        }
    }

    pub(crate) fn key(&self) -> Option<&'a [u8]> {
        self.meta.key.clone().map(|range| &self.batch.data[range])
    }

    pub(crate) fn payload(&self) -> Option<&'a [u8]> {
        self.meta.payload.clone().map(|range| &self.batch.data[range])
    }

    pub(crate) fn topic(&self) -> &'a str {
        &self.batch.topics[self.meta.topic]
    }

    pub(crate) fn partition(&self) -> i32 {
        self.meta.partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.meta.offset
    }

    pub(crate) fn timestamp(&self) -> Timestamp {
        self.meta.timestamp
    }

    /// The record's headers, as they came.
    pub(crate) fn headers(&self) -> &BatchHeaders<'a> {
        &self.headers
    }
}

/// The headers of one [`BatchRecord`].
pub(crate) struct BatchHeaders<'a> {
    batch: &'a Batch,
    range: Range<usize>,
}

impl Headers for BatchHeaders<'_> {
    fn count(&self) -> usize {
        self.range.len()
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        if idx >= self.range.len() {
            return None;
        }
        let (key, value) = &self.batch.headers[self.range.start + idx];
        // Keys were copied from `&str`s, so they are UTF-8.
        let key = std::str::from_utf8(&self.batch.data[key.clone()]).unwrap_or_default();
        Some(Header { key, value: value.clone().map(|range| &self.batch.data[range]) })
    }
}

/// Records polled and records applied, so a rebalance can wait until both are equal.
#[derive(Debug, Default)]
struct Progress {
    /// (records handed to workers, records applied)
    counts: Mutex<(u64, u64)>,
    applied: Condvar,
}

/// The polling side: fills one batch per worker and hands full ones over.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    lanes: Mutex<Vec<Lane>>,
    progress: Progress,
    /// Emptied batches come back to be reused, so the arenas stop allocating once warm.
    spare: Mutex<Vec<Batch>>,
}

#[derive(Debug)]
struct Lane {
    sender: Option<SyncSender<Batch>>,
    filling: Batch,
}

/// One worker's end of the pipeline.
#[derive(Debug)]
pub(crate) struct Worker {
    receiver: Receiver<Batch>,
}

impl Dispatcher {
    /// A dispatcher for `workers` worker threads, and the workers' ends.
    pub(crate) fn new(workers: usize) -> (Dispatcher, Vec<Worker>) {
        let mut lanes = Vec::with_capacity(workers);
        let mut ends = Vec::with_capacity(workers);
        for _ in 0..workers.max(1) {
            let (sender, receiver) = sync_channel(QUEUED_BATCHES);
            lanes.push(Lane { sender: Some(sender), filling: Batch::default() });
            ends.push(Worker { receiver });
        }
        let dispatcher =
            Dispatcher { lanes: Mutex::new(lanes), progress: Progress::default(), spare: Mutex::new(Vec::new()) };
        (dispatcher, ends)
    }

    /// Copies `message` into its worker's batch; hands the batch over when it is full.
    pub(crate) fn push<M: Message>(&self, message: &M, topic: &str) {
        let mut lanes = self.lanes.lock();
        let count = lanes.len();
        let lane = &mut lanes[message.partition().unsigned_abs() as usize % count];
        lane.filling.push(message, topic);
        if lane.filling.len() >= BATCH_RECORDS {
            self.send(lane);
        }
    }

    /// Hands every partly filled batch over (when polling finds nothing more to read).
    pub(crate) fn flush(&self) {
        let mut lanes = self.lanes.lock();
        for lane in lanes.iter_mut() {
            if lane.filling.len() > 0 {
                self.send(lane);
            }
        }
    }

    fn send(&self, lane: &mut Lane) {
        let next = self.spare.lock().pop().unwrap_or_default();
        let full = std::mem::replace(&mut lane.filling, next);
        self.progress.counts.lock().0 += full.len() as u64;
        if let Some(sender) = &lane.sender {
            // A worker only goes away when the pipeline closes; blocking here is the back-pressure
            // that keeps polling at most QUEUED_BATCHES ahead.
            if sender.send(full).is_err() {
                tracing::error!("an ingest worker is gone; records of its partitions are not applied");
            }
        }
    }

    /// Flushes, then waits until every record handed over so far is applied and its offset
    /// stored.
    pub(crate) fn quiesce(&self) {
        self.flush();
        let mut counts = self.progress.counts.lock();
        while counts.1 < counts.0 {
            self.progress.applied.wait(&mut counts);
        }
    }

    /// Flushes and closes the lanes: workers finish what they hold and return.
    pub(crate) fn close(&self) {
        self.flush();
        for lane in self.lanes.lock().iter_mut() {
            lane.sender = None;
        }
    }

    /// Runs `apply` on every batch `worker` receives until the pipeline closes.
    pub(crate) fn work(&self, worker: Worker, mut apply: impl FnMut(&Batch)) {
        while let Ok(mut batch) = worker.receiver.recv() {
            apply(&batch);
            let done = batch.len() as u64;
            batch.clear();
            self.spare.lock().push(batch);
            let mut counts = self.progress.counts.lock();
            counts.1 += done;
            if counts.1 >= counts.0 {
                self.progress.applied.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use rdkafka::message::{OwnedHeaders, OwnedMessage};

    use super::*;

    fn message(topic: &str, partition: i32, offset: i64, headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            Some(format!("payload {offset}").into_bytes()),
            (offset % 2 == 0).then(|| b"manager-1".to_vec()),
            topic.to_owned(),
            Timestamp::CreateTime(1_000 + offset),
            partition,
            offset,
            headers,
        )
    }

    #[test]
    fn a_batch_reads_back_what_was_copied_in() {
        let mut batch = Batch::default();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "Content-Type", value: Some("application/x-protobuf") })
            .insert(Header { key: "trace", value: None::<&str> });
        batch.push(&message("calls", 3, 10, Some(headers)), "calls");
        batch.push(&message("crm", 3, 11, None), "crm");
        let records: Vec<_> = batch.iter().collect();
        assert_eq!(records.len(), 2);
        let first = &records[0];
        assert_eq!((first.topic(), first.partition(), first.offset()), ("calls", 3, 10));
        assert_eq!(first.payload(), Some(&b"payload 10"[..]));
        assert_eq!(first.key(), Some(&b"manager-1"[..]));
        assert_eq!(first.timestamp().to_millis(), Some(1_010));
        assert_eq!(first.header("content-type"), Some(&b"application/x-protobuf"[..]));
        assert_eq!(first.headers().count(), 2);
        let trace = first.headers().get(1);
        assert_eq!((trace.key, trace.value), ("trace", None));
        assert!(first.headers().try_get(2).is_none());
        let second = &records[1];
        assert_eq!((second.topic(), second.offset(), second.key()), ("crm", 11, None));
        assert_eq!(second.headers().count(), 0);
        assert_eq!(second.header("content-type"), None);
    }

    #[test]
    fn partitions_keep_their_worker_and_their_order_and_quiesce_waits_for_all() {
        const WORKERS: usize = 3;
        const RECORDS: i64 = 5_000;
        let (dispatcher, workers) = Dispatcher::new(WORKERS);
        let applied = AtomicU64::new(0);
        // What each worker saw: (partition, offset) in order.
        let seen: Vec<Mutex<Vec<(i32, i64)>>> = (0..WORKERS).map(|_| Mutex::new(Vec::new())).collect();
        std::thread::scope(|scope| {
            for (index, worker) in workers.into_iter().enumerate() {
                let (dispatcher, applied, seen) = (&dispatcher, &applied, &seen);
                scope.spawn(move || {
                    dispatcher.work(worker, |batch| {
                        for record in batch.iter() {
                            seen[index].lock().push((record.partition(), record.offset()));
                            applied.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                });
            }
            for offset in 0..RECORDS {
                dispatcher.push(&message("calls", (offset % 8) as i32, offset, None), "calls");
                if offset == RECORDS / 2 {
                    dispatcher.quiesce();
                    // Everything pushed so far is applied, not just handed over.
                    assert_eq!(applied.load(Ordering::Relaxed), (RECORDS / 2 + 1) as u64);
                }
            }
            dispatcher.quiesce();
            assert_eq!(applied.load(Ordering::Relaxed), RECORDS as u64);
            dispatcher.close();
        });
        for (index, seen) in seen.iter().enumerate() {
            let seen = seen.lock();
            assert!(seen.iter().all(|(partition, _)| *partition as usize % WORKERS == index));
            for partition in 0..8 {
                let offsets: Vec<i64> = seen.iter().filter(|(p, _)| *p == partition).map(|(_, o)| *o).collect();
                assert!(offsets.windows(2).all(|pair| pair[0] < pair[1]), "partition {partition} out of order");
            }
        }
    }
}
