//! Wiring: engine, ingest thread, exporter, shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use salespulse_core::clock::SystemClock;
use salespulse_engine::Engine;
use salespulse_exporter::Exporter;
use salespulse_kafka::{DeadLetters, Health, Ingest};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSection, Settings};

/// How long a stop may take before the process exits anyway: a consumer closing against an
/// unreachable broker can otherwise hang.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How often idle managers are evicted.
const EVICT_EVERY: Duration = Duration::from_secs(60);

/// How often completed slots are folded into the anomaly baselines: well within the two minutes a
/// slot stays readable in its window's ring.
const TICK_EVERY: Duration = Duration::from_secs(20);

/// How often baselines are written to the snapshot file.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(300);

/// Sets up logging to standard error.
pub fn init_logging(log: &LogSection) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .with_context(|| format!("[log] level {:?}", log.level))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (the demo after a test harness, say) keeps the first subscriber.
    let _ = result;
    Ok(())
}

/// Runs `future` on a fresh multi-threaded runtime.
pub fn block_on<F: Future<Output = anyhow::Result<()>>>(future: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("salespulse-rt")
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the daemon");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown requested");
}

/// Runs the daemon until `shutdown` completes: consume, apply, serve; then stop consuming,
/// commit what was applied, and stop serving.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
        .context("registering process metrics")?;
    let engine = Arc::new(Engine::new(settings.engine.clone(), Arc::new(SystemClock), &registry)?);
    let sources = match &settings.sources {
        Some(sources_settings) => {
            Some((Arc::new(crate::sources::install(sources_settings, &engine, &registry)?), sources_settings.clone()))
        }
        None => None,
    };
    if let Some(path) = &settings.baseline_snapshot {
        match salespulse_anomaly::read_snapshot(path) {
            Ok(Some(snapshot)) => {
                let restored = engine.restore_baselines(snapshot);
                tracing::info!(restored, path = %path.display(), "anomaly baselines restored");
            }
            Ok(None) => tracing::info!(path = %path.display(), "no baseline snapshot yet; baselines start empty"),
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "baseline snapshot unreadable; baselines start empty")
            }
        }
    }
    let reloads = crate::plans::Reloads::register(&registry)?;
    if let Some(path) = &settings.plans_file {
        if !reloads.reload(&engine, path) {
            anyhow::bail!("the plans file {} cannot be loaded", path.display());
        }
    }
    let health = Arc::new(Health::default());
    let mut ingest = Ingest::new(&settings.ingest, Arc::clone(&engine), Arc::clone(&health), &registry)?;
    if let Some(dead_letter) = &settings.dead_letter {
        ingest = ingest.with_dead_letters(DeadLetters::new(dead_letter, &registry)?);
        tracing::info!(topic = %dead_letter.topic, "rejected records go to the dead-letter topic");
    }

    let listener =
        tokio::net::TcpListener::bind(settings.listen).await.with_context(|| format!("binding {}", settings.listen))?;
    let address = listener.local_addr()?;
    // Installed before the daemon says it listens, so a SIGHUP from then on is a reload, never
    // the default action (terminate).
    #[cfg(unix)]
    let hangup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("listening for SIGHUP")?;
    #[cfg(not(unix))]
    let hangup = ();
    let ready = Arc::clone(&health);
    let http_registry = registry.clone();
    let exporter = Exporter::new(Arc::clone(&engine), registry, Arc::new(move || ready.ready()))?;
    let exporter = Arc::new(exporter.with_options(&settings.export));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let security = settings.http_security.clone();
    let server = tokio::spawn(async move {
        let stopped = async {
            let _ = http_stopped.await;
        };
        salespulse_exporter::serve_with(listener, exporter, &security, &http_registry, stopped).await
    });
    tracing::info!(
        bootstrap = %settings.ingest.bootstrap_servers,
        group = %settings.ingest.group_id,
        topics = ?settings.ingest.topics,
        "salespulse listening on {}://{address}/metrics",
        if settings.http_security.tls.is_some() { "https" } else { "http" }
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (ingest_done, ingest_stopped) = tokio::sync::oneshot::channel::<()>();
    let ingest_stop = Arc::clone(&stop);
    std::thread::Builder::new().name("ingest".into()).spawn(move || {
        ingest.run(&ingest_stop);
        // Closing the consumer leaves the group; it happens here, off the async runtime.
        drop(ingest);
        let _ = ingest_done.send(());
    })?;

    let reload_task = tokio::spawn(reload_on_hangup(Arc::clone(&engine), settings.plans_file.clone(), reloads, hangup));

    let maintenance_engine = Arc::clone(&engine);
    let snapshot_path = settings.baseline_snapshot.clone();
    let maintenance_sources = sources.clone();
    let maintenance = tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK_EVERY);
        let mut evict = tokio::time::interval(EVICT_EVERY);
        let mut snapshot = tokio::time::interval(SNAPSHOT_EVERY);
        snapshot.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => maintenance_engine.tick(),
                _ = evict.tick() => {
                    let evicted = maintenance_engine.evict_idle();
                    if evicted > 0 {
                        tracing::info!(evicted, "evicted idle managers");
                    }
                }
                _ = snapshot.tick() => {
                    if let Some(path) = &snapshot_path {
                        save_baselines(&maintenance_engine, path);
                    }
                    if let Some((sources, sources_settings)) = &maintenance_sources {
                        crate::sources::save_memory(sources, sources_settings);
                    }
                }
            }
        }
    });

    shutdown.await;
    stop.store(true, Ordering::Relaxed);
    maintenance.abort();
    reload_task.abort();
    if tokio::time::timeout(STOP_TIMEOUT, ingest_stopped).await.is_err() {
        tracing::warn!("ingest did not stop within {STOP_TIMEOUT:?}; exiting anyway");
    }
    let _ = stop_http.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "HTTP server failed"),
        Ok(Err(error)) => tracing::warn!(%error, "HTTP server task failed"),
        Err(_) => tracing::warn!("HTTP server did not stop within 5s"),
    }
    if let Some(path) = &settings.baseline_snapshot {
        save_baselines(&engine, path);
    }
    // After the ingest thread stopped: nothing maps any more, so the file holds every value.
    if let Some((sources, sources_settings)) = &sources {
        crate::sources::save_memory(sources, sources_settings);
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

/// Re-reads the plans file on every SIGHUP, until aborted.
async fn reload_on_hangup(
    engine: Arc<Engine>,
    path: Option<std::path::PathBuf>,
    reloads: crate::plans::Reloads,
    hangup: Hangup,
) {
    #[cfg(unix)]
    {
        let mut hangup = hangup;
        while hangup.recv().await.is_some() {
            match &path {
                Some(path) => {
                    reloads.reload(&engine, path);
                }
                None => tracing::info!("SIGHUP: no [plans] file configured, nothing to reload"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (engine, path, reloads, hangup);
}

fn save_baselines(engine: &Engine, path: &std::path::Path) {
    let snapshot = engine.baseline_snapshot();
    let managers = snapshot.managers.len();
    match salespulse_anomaly::write_snapshot(path, &snapshot) {
        Ok(()) => tracing::debug!(managers, path = %path.display(), "baselines saved"),
        Err(error) => tracing::warn!(%error, path = %path.display(), "could not save baselines"),
    }
}
