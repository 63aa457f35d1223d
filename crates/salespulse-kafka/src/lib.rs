//! Kafka ingest: the only crate of salespulse that knows librdkafka.
//!
//! [`Ingest`] is a consumer-group member on a dedicated thread. It polls records, hands each to the
//! [`salespulse_engine::Engine`], and only then stores the record's offset; librdkafka commits
//! stored offsets in the background and on rebalance, and [`Ingest::run`] commits once more,
//! synchronously, when it stops. So a committed offset always means "applied" (at-least-once
//! delivery; the engine's ledger turns redeliveries into no-ops).
//!
//! Besides the consumer: [`MockKafka`], librdkafka's in-process mock cluster for the zero-setup
//! demo and fast tests, and [`EventProducer`], a small producer for simulators and fixtures.
//! [`DeadLetters`] sends what the engine rejects to a dead-letter topic without ever stalling
//! ingest; [`KafkaProperties`] are the pass-through librdkafka settings (security included), whose
//! secrets never appear in a `Debug` dump.
#![deny(missing_docs)]

mod admin;
mod consumer;
mod dlq;
mod mock;
mod pipeline;
mod producer;
mod properties;
mod raw;
mod rebuild;
mod status;

pub use admin::create_topics;
pub use consumer::{Ingest, IngestConfig, DEFAULT_APPLY_NICE};
pub use dlq::{
    DeadLetter, DeadLetterConfig, DeadLetters, HEADER_ERROR, HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON,
    HEADER_TIMESTAMP, HEADER_TOPIC, OVERFLOW_REASON,
};
pub use mock::MockKafka;
pub use producer::EventProducer;
pub use properties::KafkaProperties;
pub use raw::RawProducer;
pub use status::Health;

/// A Kafka client could not be created or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// librdkafka refused the configuration or an operation.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What was being done.
        context: &'static str,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// Registering the ingest metrics failed.
    #[error("registering kafka metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

pub(crate) fn kafka_error(context: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
    move |source| Error::Kafka { context, source }
}
