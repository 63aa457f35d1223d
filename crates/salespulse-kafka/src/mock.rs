//! librdkafka's in-process mock cluster: a broker without a broker, for the demo and fast tests.
//! It supports consumer groups and commits but keeps little history and does not answer timestamp
//! look-ups, so anything that replays history is tested against a real broker.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::{kafka_error, Error};

/// A running mock cluster; it stops when dropped.
pub struct MockKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl std::fmt::Debug for MockKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockKafka").field("bootstrap", &self.bootstrap_servers()).finish()
    }
}

impl MockKafka {
    /// Starts a one-broker mock cluster.
    pub fn start() -> Result<MockKafka, Error> {
        let cluster = MockCluster::new(1).map_err(kafka_error("starting the mock cluster"))?;
        Ok(MockKafka { cluster })
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), Error> {
        self.cluster.create_topic(topic, partitions, 1).map_err(kafka_error("creating a mock topic"))
    }

    /// The address clients connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}
