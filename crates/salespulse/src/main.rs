//! `salespulse`: live sales-team metrics from Kafka events, exported to Prometheus.
//!
//! The binary only wires the crates together: it reads the configuration, starts ingest on its
//! own thread and the HTTP exporter on tokio, and stops both on SIGINT or SIGTERM.

mod config;
mod daemon;
mod demo;

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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("salespulse: {error:#}");
            ExitCode::FAILURE
        }
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
    println!("  metrics: http://{}/metrics", settings.listen);
    Ok(())
}
