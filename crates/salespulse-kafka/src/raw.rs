//! A producer that waits for each record's acknowledgement: the webhook gateway answers a vendor
//! only once the raw payload is in the log.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{kafka_error, Error};

/// Sends raw records (key, payload, headers) and reports when the brokers have them.
pub struct RawProducer {
    producer: FutureProducer,
}

impl std::fmt::Debug for RawProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawProducer").finish_non_exhaustive()
    }
}

impl RawProducer {
    /// A producer for `bootstrap_servers` that waits for every in-sync replica and is idempotent
    /// (librdkafka's retries do not duplicate records); a record not acknowledged within
    /// `delivery_timeout` fails. `properties` pass through to librdkafka.
    pub fn new(
        bootstrap_servers: &str,
        properties: &BTreeMap<String, String>,
        delivery_timeout: Duration,
    ) -> Result<RawProducer, Error> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap_servers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("client.id", "salespulse-gateway")
            .set("message.timeout.ms", delivery_timeout.as_millis().clamp(1, i32::MAX as u128).to_string());
        for (key, value) in properties {
            config.set(key, value);
        }
        let producer = config.create().map_err(kafka_error("creating the gateway producer"))?;
        Ok(RawProducer { producer })
    }

    /// Sends one record and waits until it is acknowledged or fails (at most the delivery
    /// timeout): `(partition, offset)` on success.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(i32, i64), Error> {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (name, value) in headers {
            owned = owned.insert(Header { key: name, value: Some(*value) });
        }
        let record = FutureRecord::to(topic).key(key).payload(payload).headers(owned);
        // A full local queue fails at once rather than waiting: the vendor retries later.
        match self.producer.send(record, Duration::ZERO).await {
            Ok(delivery) => Ok((delivery.partition, delivery.offset)),
            Err((source, _)) => Err(Error::Kafka { context: "producing a raw record", source }),
        }
    }
}
