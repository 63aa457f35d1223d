//! `salespulse`: live sales-team metrics from Kafka events, exported to Prometheus.
//!
//! The binary only wires the crates together: it reads the configuration, starts ingest on its
//! own thread and the HTTP exporter on tokio, and stops both on SIGINT or SIGTERM.

mod config;
mod daemon;
mod demo;
mod gateway;
mod loadgen;
mod plans;
mod secrets;
mod sources;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "salespulse", version, about = "Live sales-team metrics from Kafka events, exported to Prometheus")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume the configured topics and serve /metrics.
    Run {
        /// The TOML configuration file.
        #[arg(long, short, default_value = "salespulse.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and print the settings it gives; exit 1 if invalid.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short, default_value = "salespulse.toml")]
        config: PathBuf,
    },
    /// Run on an in-process Kafka with a simulated sales team; needs nothing installed.
    Demo {
        /// Address for /metrics.
        #[arg(long, default_value = "127.0.0.1:9898")]
        listen: std::net::SocketAddr,
        /// Managers in the simulated team.
        #[arg(long, default_value_t = 8)]
        managers: usize,
        /// Average events a second (calls, messages, CRM changes) produced by the whole team.
        #[arg(long, default_value_t = 4.0)]
        events_per_second: f64,
    },
    /// Fill a topic with a realistic event mix for the end-to-end benchmark (`make bench`).
    Loadgen {
        /// Kafka bootstrap servers.
        #[arg(long)]
        bootstrap: String,
        /// Topic to fill; created if missing.
        #[arg(long)]
        topic: String,
        /// Partitions of a newly created topic.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// Events to produce.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Managers in the simulated team (activity follows a Zipf law).
        #[arg(long, default_value_t = 10_000)]
        managers: usize,
        /// `json` or `protobuf`.
        #[arg(long, default_value = "protobuf", value_parser = parse_encoding)]
        encoding: salespulse_events::Encoding,
        /// Event times are spread over this span before now, e.g. `1h`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        span: std::time::Duration,
        /// Generator seed: the same seed gives the same events.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Receive webhooks at /hooks/<source> and write them to the sources' raw Kafka topics.
    Gateway {
        /// The TOML configuration file ([gateway], [sources], and topics with a `mapping`).
        #[arg(long, short, default_value = "salespulse.toml")]
        config: PathBuf,
    },
    /// Develop and validate declarative source mappings (docs/sources/README.md).
    Sources {
        #[command(subcommand)]
        command: SourcesCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SourcesCommand {
    /// Print the canonical events that payload files produce with a mapping (or the precise errors).
    Test {
        /// The mapping file.
        mapping: PathBuf,
        /// Payload files, mapped in order (remembered values carry over from one to the next).
        #[arg(required = true)]
        payloads: Vec<PathBuf>,
        /// The manager directory (CSV `source,key,manager_id[,team]`).
        #[arg(long)]
        directory: Option<PathBuf>,
    },
    /// Compile every mapping the configuration's [sources] names; exit 1 if any is invalid.
    Check {
        /// The TOML configuration file.
        #[arg(long, short, default_value = "salespulse.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => config::load(&config).and_then(|file| file.settings()).and_then(|settings| {
            daemon::init_logging(&settings.log)?;
            daemon::block_on(daemon::run(settings, daemon::shutdown_signal()))
        }),
        Command::CheckConfig { config } => check_config(&config),
        Command::Demo { listen, managers, events_per_second } => demo::run(listen, managers, events_per_second),
        Command::Loadgen { bootstrap, topic, partitions, events, managers, encoding, span, seed } => {
            loadgen::run(&loadgen::LoadgenOptions {
                bootstrap,
                topic,
                partitions,
                events,
                managers,
                encoding,
                span,
                seed,
            })
        }
        Command::Sources { command: SourcesCommand::Test { mapping, payloads, directory } } => {
            sources::test(&mapping, directory.as_deref(), &payloads)
        }
        Command::Sources { command: SourcesCommand::Check { config } } => sources::check(&config),
        Command::Gateway { config } => config::load(&config).and_then(|file| {
            let settings = file.settings()?;
            daemon::init_logging(&settings.log)?;
            daemon::block_on(gateway::run(settings, file.gateway.clone(), daemon::shutdown_signal()))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("salespulse: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_encoding(value: &str) -> Result<salespulse_events::Encoding, String> {
    match value {
        "json" => Ok(salespulse_events::Encoding::Json),
        "protobuf" | "proto" => Ok(salespulse_events::Encoding::Protobuf),
        other => Err(format!("unknown encoding {other:?}: json or protobuf")),
    }
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let settings = config::load(path)?.settings()?;
    println!("{}: ok", path.display());
    println!(
        "  kafka: {} group {:?} topics {:?}",
        settings.ingest.bootstrap_servers, settings.ingest.group_id, settings.ingest.topics
    );
    let windows: Vec<&str> = settings.engine.windows.specs().iter().map(|s| s.label.as_str()).collect();
    println!("  windows: {windows:?}");
    let scheme = if settings.http_security.tls.is_some() { "https" } else { "http" };
    let auth =
        if settings.http_security.basic_auth.is_some() { " (basic auth; /healthz and /readyz open)" } else { "" };
    println!("  metrics: {scheme}://{}/metrics{auth}", settings.listen);
    // Every key, secrets redacted.
    println!("  kafka properties: {:?}", settings.ingest.properties);
    match &settings.dead_letter {
        Some(dead_letter) => println!("  dead letters: topic {:?}", dead_letter.topic),
        None => println!("  dead letters: off"),
    }
    Ok(())
}
