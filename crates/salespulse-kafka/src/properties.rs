//! librdkafka properties passed through from the configuration, with secrets kept out of logs.

use std::collections::BTreeMap;

/// librdkafka properties (`"security.protocol" = "SASL_SSL"`, ...), passed to the clients as they
/// are. Its `Debug` form shows every key but replaces the values of secret ones (passwords, client
/// secrets, private keys, JAAS configs) with `<redacted>`, so a config dump never prints them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl KafkaProperties {
    /// Whether the value of `key` is a secret: it is never logged.
    pub fn is_secret(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        ["password", "secret", "jaas", "token", "key.pem", "ssl.key", "keystore.", "credential"]
            .iter()
            .any(|needle| key.contains(needle))
    }

    /// The properties in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

impl From<BTreeMap<String, String>> for KafkaProperties {
    fn from(map: BTreeMap<String, String>) -> Self {
        KafkaProperties(map)
    }
}

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in self.iter() {
            if KafkaProperties::is_secret(key) {
                map.entry(&key, &"<redacted>");
            } else {
                map.entry(&key, &value);
            }
        }
        map.finish()
    }
}

/// Prefixes of consumer-only properties: the shared `[kafka.properties]` carry them for the
/// consumer, and a producer would log a warning for each.
const CONSUMER_ONLY: &[&str] = &[
    "group.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.",
    "enable.auto.",
    "partition.assignment.strategy",
    "fetch.",
    "queued.",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "coordinator.query.interval.ms",
    "consume.callback.max.messages",
    "offset.store.",
];

/// The properties a producer takes from `properties`: all but the consumer-only ones.
pub(crate) fn producer_properties(properties: &KafkaProperties) -> impl Iterator<Item = (&str, &str)> {
    properties.iter().filter(|(key, _)| !CONSUMER_ONLY.iter().any(|prefix| key.starts_with(prefix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_consumer_keys_left_to_the_consumer() {
        let properties = KafkaProperties(
            [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "salespulse"),
                ("sasl.password", "hunter2-secret-value"),
                ("ssl.key.password", "pem-pass-value"),
                ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----xyz"),
                ("sasl.oauthbearer.client.secret", "oauth-value"),
                ("session.timeout.ms", "6000"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let dump = format!("{properties:?}");
        for secret in ["hunter2-secret-value", "pem-pass-value", "BEGIN PRIVATE KEY", "oauth-value"] {
            assert!(!dump.contains(secret), "{secret} in {dump}");
        }
        for shown in ["SASL_SSL", "SCRAM-SHA-512", "salespulse", "sasl.password", "6000"] {
            assert!(dump.contains(shown), "{shown} missing from {dump}");
        }
        let producer: Vec<&str> = producer_properties(&properties).map(|(key, _)| key).collect();
        assert!(producer.contains(&"sasl.password"));
        assert!(producer.contains(&"security.protocol"));
        assert!(!producer.contains(&"session.timeout.ms"));
    }
}
