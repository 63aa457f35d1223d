//! Which per-manager families a scrape writes by default.
//!
//! Every per-manager series is multiplied by the number of managers: at 10,000 managers one more
//! series per manager is 10,000 more samples per scrape for Prometheus to ingest and store. The
//! families below are off unless `[export] include` names them: per-stage breakdowns, a
//! per-manager histogram and a ratio of two exported gauges, which no shipped dashboard, alert or
//! recording rule reads. The JSON API and the live page do not depend on them.

/// Per-manager families written only when `[export] include` names them (the exporter passes
/// the rest to `MetricWriter::skip_families`).
pub const OPTIONAL_FAMILIES: &[&str] = &[
    // Counters per (pipeline, stage_from, stage_to): up to (stages + 1)² series per manager.
    "salespulse_stage_transitions_total",
    // A one-hot gauge per manager; `topk` over `salespulse_deals_open` gives the same.
    "salespulse_deals_top_stage",
    // Per pipeline and stage.
    "salespulse_pipeline_amount",
    "salespulse_deals_stage_age_max_seconds",
    // 20 buckets + sum + count per outcome per manager once a deal closed.
    "salespulse_deal_duration_seconds",
    // salespulse_window_successful_contacts / salespulse_window_cards_touched, per window.
    "salespulse_window_successful_calls_per_card_touched",
];
