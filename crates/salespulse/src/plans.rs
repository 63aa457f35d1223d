//! The plans file: period targets per manager and per team, re-read on SIGHUP.
//!
//! ```toml
//! fact = "won"                  # or "payment_received": what counts as the fact
//! [managers.m-1042]
//! revenue = 1200000
//! margin = 300000
//! [teams.moscow-inbound]
//! revenue = 6000000
//! fact = "payment_received"     # this team (and its managers) counts paid invoices
//! ```
//!
//! A reload that fails (unreadable file, bad TOML, unknown key, negative target) keeps the plans
//! in force, logs why and counts `salespulse_plans_reloads_total{result="error"}`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use prometheus::{IntCounterVec, Opts, Registry};
use salespulse_cards::{FactSource, Plans, Target};
use salespulse_engine::Engine;
use serde::Deserialize;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlansFile {
    /// What counts as the fact for teams without their own: "won" or "payment_received".
    #[serde(default)]
    fact: Option<String>,
    /// Targets per manager id.
    #[serde(default)]
    managers: BTreeMap<String, TargetSection>,
    /// Targets (and optionally the fact source) per team.
    #[serde(default)]
    teams: BTreeMap<String, TeamSection>,
}

/// `[managers.<id>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSection {
    /// Revenue to reach in the period, in the configured currency.
    revenue: Option<f64>,
    /// Margin to reach in the period.
    margin: Option<f64>,
}

/// `[teams.<name>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamSection {
    /// Revenue to reach in the period.
    revenue: Option<f64>,
    /// Margin to reach in the period.
    margin: Option<f64>,
    /// The team's fact source, for the team and its managers.
    fact: Option<String>,
}

fn fact(value: &Option<String>, at: &str) -> anyhow::Result<Option<FactSource>> {
    match value {
        None => Ok(None),
        Some(text) => match FactSource::parse(text) {
            Some(source) => Ok(Some(source)),
            None => bail!("{at}: fact {text:?} must be \"won\" or \"payment_received\""),
        },
    }
}

fn target(revenue: Option<f64>, margin: Option<f64>, at: &str) -> anyhow::Result<Target> {
    for (name, value) in [("revenue", revenue), ("margin", margin)] {
        if let Some(value) = value {
            if !value.is_finite() || value < 0.0 {
                bail!("{at}: {name} must be a non-negative number");
            }
        }
    }
    Ok(Target { revenue, margin })
}

/// Reads and validates a plans file.
pub fn load(path: &Path) -> anyhow::Result<Plans> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading plans file {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid plans file {}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Plans> {
    let file: PlansFile = toml::from_str(text)?;
    let mut plans = Plans { fact: fact(&file.fact, "fact")?.unwrap_or_default(), ..Plans::default() };
    for (manager, section) in file.managers {
        let at = format!("managers.{manager}");
        plans.managers.insert(manager, target(section.revenue, section.margin, &at)?);
    }
    for (team, section) in file.teams {
        let at = format!("teams.{team}");
        let team_target = target(section.revenue, section.margin, &at)?;
        plans.teams.insert(team, (team_target, fact(&section.fact, &at)?));
    }
    Ok(plans)
}

/// Counts reloads by result.
#[derive(Clone)]
pub struct Reloads {
    counter: IntCounterVec,
}

impl Reloads {
    /// Registers `salespulse_plans_reloads_total{result}` (both series at 0).
    pub fn register(registry: &Registry) -> anyhow::Result<Reloads> {
        let counter = IntCounterVec::new(
            Opts::new("salespulse_plans_reloads_total", "Plans file loads (at start and on SIGHUP), by result."),
            &["result"],
        )?;
        registry.register(Box::new(counter.clone()))?;
        for result in ["ok", "error"] {
            counter.with_label_values(&[result]);
        }
        Ok(Reloads { counter })
    }

    /// Loads `path` into `engine`; on failure keeps the plans in force and logs why.
    pub fn reload(&self, engine: &Arc<Engine>, path: &Path) -> bool {
        match load(path) {
            Ok(plans) => {
                let (managers, teams) = (plans.managers.len(), plans.teams.len());
                engine.set_plans(plans);
                self.counter.with_label_values(&["ok"]).inc();
                tracing::info!(path = %path.display(), managers, teams, "plans loaded");
                true
            }
            Err(error) => {
                self.counter.with_label_values(&["error"]).inc();
                tracing::warn!(path = %path.display(), "plans not reloaded, the previous plans stay: {error:#}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parse_and_bad_ones_are_refused() {
        let plans = parse(
            r#"
            fact = "payment_received"
            [managers.m-1]
            revenue = 1000
            [managers.m-2]
            margin = 5.5
            [teams.north]
            revenue = 9000
            fact = "won"
            "#,
        )
        .unwrap();
        assert_eq!(plans.fact, FactSource::PaymentReceived);
        assert_eq!(plans.managers["m-1"], Target { revenue: Some(1000.0), margin: None });
        assert_eq!(plans.managers["m-2"], Target { revenue: None, margin: Some(5.5) });
        assert_eq!(plans.teams["north"], (Target { revenue: Some(9000.0), margin: None }, Some(FactSource::Won)));
        assert_eq!(plans.fact_for(Some("north")), FactSource::Won);
        assert_eq!(plans.fact_for(Some("south")), FactSource::PaymentReceived);
        assert_eq!(parse("").unwrap(), Plans::default());
        let example = parse(include_str!("../../../deploy/plans.toml")).expect("deploy/plans.toml parses");
        assert_eq!(example.fact_for(Some("spb-outbound")), FactSource::PaymentReceived);
        for bad in [
            "fact = \"paid\"",
            "[managers.m]\nrevenue = -1",
            "[managers.m]\nrevenu = 1",
            "[teams.t]\nfact = \"x\"",
            "[managers.m]\nrevenue = \"1000\"",
            "managers = 3",
            "[managers.m\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
