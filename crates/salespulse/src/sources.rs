//! `salespulse sources test|check`: develop and validate source mappings offline.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use salespulse_sources::{Directory, Position, Source, Sources};

/// Maps each payload file in turn with the mapping at `mapping` (remembered values carry from one
/// payload to the next, as on live traffic) and prints the canonical events as JSON lines, or the
/// errors with the offending values. Fails when any payload had an error.
pub fn test(mapping: &Path, directory: Option<&Path>, payloads: &[PathBuf]) -> anyhow::Result<()> {
    let directory = match directory {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Directory::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => Directory::default(),
    };
    let source = Source::load(mapping, Arc::new(directory))?;
    let mut failed = 0;
    for path in payloads {
        let payload = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mapped = source.map(&payload);
        println!("# {}: {} event(s), {} error(s)", path.display(), mapped.events.len(), mapped.errors.len());
        for event in &mapped.events {
            println!("{}", String::from_utf8_lossy(&salespulse_events::encode_json(event)));
        }
        for error in &mapped.errors {
            println!("error: {}", error.detailed());
        }
        failed += mapped.errors.len();
    }
    if failed > 0 {
        bail!("{failed} error(s)");
    }
    Ok(())
}

/// Compiles every mapping the configuration names and checks that every mapped topic names one.
pub fn check(config: &Path) -> anyhow::Result<()> {
    let settings = crate::config::load(config)?.settings()?;
    let Some(sources) = &settings.sources else {
        bail!("{}: no [sources] section", config.display());
    };
    let loaded = Sources::load(&sources.dir, sources.directory.as_deref())?;
    for source in loaded.iter() {
        let rules: Vec<&str> = source.rule_names().collect();
        println!("{}: {} decoder, rules {rules:?}", source.name(), source.decoder().name());
    }
    for (topic, name) in &sources.topics {
        if loaded.get(name).is_none() {
            bail!("topic {topic:?} names mapping {name:?}, which is not in {}", sources.dir.display());
        }
        println!("topic {topic:?} -> {name}");
    }
    Ok(())
}

/// A topic's source mapping as the engine sees it.
pub struct MappedTopic(pub Arc<Source>);

type MapResult = (Vec<salespulse_events::Event>, Option<Box<dyn std::error::Error + Send + Sync>>);

impl MappedTopic {
    fn result(mapped: salespulse_sources::Mapped) -> MapResult {
        let error = mapped.errors.into_iter().next().map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
        (mapped.events, error)
    }
}

impl salespulse_engine::RecordMapper for MappedTopic {
    fn map(&self, payload: &[u8]) -> MapResult {
        MappedTopic::result(self.0.map(payload))
    }

    /// Remembered values are read and stored at the record's log position, so a rebuild's
    /// replay sees what the first pass saw.
    fn map_record(&self, record: &salespulse_engine::Record<'_>) -> MapResult {
        let at = Position::new(record.topic, record.partition, record.offset);
        MappedTopic::result(self.0.map_at(record.payload.unwrap_or_default(), Some(at)))
    }
}

/// Compiles the configured mappings, registers their counters, restores remembered values from
/// the snapshot (if configured), and hands each mapped topic's mapping to the engine. Fails (so
/// the daemon does not start) on any invalid mapping; an unreadable snapshot is logged and the
/// values start empty.
pub fn install(
    settings: &crate::config::SourcesSettings,
    engine: &salespulse_engine::Engine,
    registry: &prometheus::Registry,
) -> anyhow::Result<Sources> {
    let sources = Sources::load(&settings.dir, settings.directory.as_deref())?;
    sources.register_metrics(registry).context("registering source metrics")?;
    for (topic, name) in &settings.topics {
        let Some(source) = sources.get(name) else {
            bail!("topic {topic:?} names mapping {name:?}, which is not in {}", settings.dir.display());
        };
        engine.set_mapper(topic, Arc::new(MappedTopic(Arc::clone(source))));
        tracing::info!(topic, mapping = name, "topic decoded with a source mapping");
    }
    if let Some(path) = &settings.memory_snapshot {
        let restored = std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| sources.restore_memory(&bytes).map_err(anyhow::Error::from));
        match restored {
            Ok(restored) => tracing::info!(restored, path = %path.display(), "remembered source values restored"),
            Err(error)
                if error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
            {
                tracing::info!(path = %path.display(), "no snapshot of remembered source values yet")
            }
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "remembered source values unreadable; they start empty")
            }
        }
    }
    Ok(sources)
}

/// Writes the remembered values to the configured snapshot file, if any.
pub fn save_memory(sources: &Sources, settings: &crate::config::SourcesSettings) {
    let Some(path) = &settings.memory_snapshot else { return };
    let (snapshot, entities) = sources.memory_snapshot();
    match salespulse_anomaly::write_atomically(path, &snapshot) {
        Ok(()) => tracing::debug!(entities, path = %path.display(), "remembered source values saved"),
        Err(error) => tracing::warn!(%error, path = %path.display(), "could not save remembered source values"),
    }
}
