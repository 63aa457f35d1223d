//! A small producer for simulators, fixtures and tests.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::{kafka_error, Error};

/// Sends records with a key and a `content-type` header.
pub struct EventProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer").finish_non_exhaustive()
    }
}

impl EventProducer {
    /// A producer for `bootstrap_servers` that waits for every in-sync replica.
    pub fn new(bootstrap_servers: &str) -> Result<EventProducer, Error> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("client.id", "salespulse-producer")
            .create()
            .map_err(kafka_error("creating the producer"))?;
        Ok(EventProducer { producer })
    }

    /// Queues one record; `content_type` goes into the `content-type` header when given.
    pub fn send(&self, topic: &str, key: &str, payload: &[u8], content_type: Option<&str>) -> Result<(), Error> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(value) = content_type {
            record = record.headers(OwnedHeaders::new().insert(Header { key: "content-type", value: Some(value) }));
        }
        self.producer.send(record).map_err(|(source, _)| Error::Kafka { context: "queueing a record", source })
    }

    /// A producer tuned for bulk loading (benchmarks, fixtures of millions of records): larger
    /// batches and a deep local queue; [`EventProducer::send_waiting`] blocks when it is full.
    pub fn bulk(bootstrap_servers: &str) -> Result<EventProducer, Error> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            .set("acks", "all")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("client.id", "salespulse-loadgen")
            .create()
            .map_err(kafka_error("creating the producer"))?;
        Ok(EventProducer { producer })
    }

    /// Like [`EventProducer::send`], but waits (up to `timeout`) while the local queue is full
    /// instead of failing, so a generator can push records as fast as the broker takes them.
    pub fn send_waiting(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        content_type: Option<&str>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut record = BaseRecord::to(topic).key(key).payload(payload);
            if let Some(value) = content_type {
                record = record.headers(OwnedHeaders::new().insert(Header { key: "content-type", value: Some(value) }));
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if std::time::Instant::now() < deadline =>
                {
                    // The background thread drains the queue as the broker acknowledges.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((source, _)) => return Err(Error::Kafka { context: "queueing a record", source }),
            }
        }
    }

    /// Waits until every queued record is acknowledged, or `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.producer.flush(timeout).map_err(kafka_error("flushing the producer"))
    }
}
